package main

// This file holds the demo's stand-ins: an embedded Redis, the fake broker and fake
// market-data socket of internal/testutil, and a stand-in for the daemon. A service of
// your own needs none of it: it calls run with its Redis, user and socket URL.

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/demoenv"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/internal/testutil/wsfake"
)

// demo plays the streamer against in-process fakes: the daemon logs in, the streamer
// connects; then every pace the token changes (a new login; the broker revoking the
// market-data token before the next login; another login), and the streamer follows
// each change with one reconnect.
func demo(ctx context.Context, w io.Writer, redisOpts *redis.Options, prefix string, pace time.Duration) error {
	fakes := &demoenv.Process{}
	defer fakes.Close()
	broker := tradovatefake.New(fakes, tradovatefake.Options{})
	const user = "APEX_272045"
	broker.AddUser(user, "demo-password")
	md := wsfake.New(wsfake.Options{Valid: broker.Valid, QuoteInterval: pace / 4})
	defer md.Close()

	daemonRedis := redis.NewClient(redisOpts)
	defer daemonRedis.Close()
	d, err := demoenv.NewDaemon(daemonRedis, prefix, broker, user)
	if err != nil {
		return err
	}
	defer d.Close()
	fmt.Fprintf(w, "Redis at %s, fake broker at %s, fake market-data socket at %s\n", redisOpts.Addr, broker.RESTURL(), md.URL())

	streamerRedis := redis.NewClient(redisOpts) // its own connection, as another process
	defer streamerRedis.Close()
	streamCtx, stopStreamer := context.WithCancel(ctx)
	defer stopStreamer()
	done := make(chan error, 1)
	go func() {
		done <- run(streamCtx, w, config{
			Redis: streamerRedis, Prefix: prefix, User: user, URL: md.URL(),
			Symbols: []string{"ESZ6", "NQZ6"}, Heartbeat: pace / 3, RetryMin: pace / 10,
		})
	}()

	pause := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case err := <-done:
			return fmt.Errorf("the streamer stopped early: %v", err)
		}
	}
	login := func(why string) error {
		t, err := d.Login(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "[daemon] %s: stored version %d\n", why, t.Version)
		return nil
	}

	steps := []func() error{
		func() error { return login("logged in again") },
		func() error {
			cur, err := d.Cache.Token(ctx, user)
			if err != nil {
				return err
			}
			broker.Revoke(cur.MDAccessToken)
			fmt.Fprintln(w, "[broker] revoked the market-data token (as when a login elsewhere closes the session)")
			// The streamer reports the rejected token with Invalidate; its read-only cache
			// passes the report to the daemon's, which logs in once for everybody.
			for {
				next, err := d.Cache.Token(ctx, user)
				if err == nil && next.Version > cur.Version {
					fmt.Fprintf(w, "[daemon] replaced the reported token: stored version %d\n", next.Version)
					return nil
				}
				if err := pause(10 * time.Millisecond); err != nil {
					return err
				}
			}
		},
		func() error { return login("logged in again") },
	}
	if err := pause(pace / 3); err != nil { // the streamer starts with no token: it waits
		return err
	}
	if err := login("first login"); err != nil {
		return err
	}
	for _, step := range steps {
		if err := pause(pace); err != nil {
			return err
		}
		if err := step(); err != nil {
			return err
		}
	}
	if err := pause(pace); err != nil {
		return err
	}
	stopStreamer()
	if err := <-done; err != nil {
		return err
	}
	rejected := 0
	for _, a := range md.Authorizations() {
		if !a.Accepted {
			rejected++
		}
	}
	fmt.Fprintf(w, "market-data socket: %d connections, %d authorizations refused\n", md.Connections(), rejected)
	return nil
}
