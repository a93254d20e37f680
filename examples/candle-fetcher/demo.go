package main

// This file holds the demo's stand-ins: an embedded Redis, the fake broker and fake
// market-data socket of internal/testutil, and a stand-in for the daemon. A service of
// your own needs none of it: it calls run with its Redis, user and socket URL.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/demoenv"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/internal/testutil/wsfake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// demo runs the fetcher against in-process fakes. The fetcher starts before the daemon
// has stored any token: it says so once and waits; the daemon logs in after 2.5 paces,
// and the fetcher fetches three times, one pace apart.
func demo(ctx context.Context, w io.Writer, redisOpts *redis.Options, prefix string, pace time.Duration) error {
	fakes := &demoenv.Process{}
	defer fakes.Close()
	broker := tradovatefake.New(fakes, tradovatefake.Options{})
	const user = "APEX_272045"
	broker.AddUser(user, "demo-password")
	md := wsfake.New(wsfake.Options{Valid: broker.Valid})
	defer md.Close()
	fmt.Fprintf(w, "Redis at %s, fake broker at %s, fake market-data socket at %s\n", redisOpts.Addr, broker.RESTURL(), md.URL())

	daemonRedis := redis.NewClient(redisOpts)
	defer daemonRedis.Close()
	d, err := newDaemon(daemonRedis, prefix, broker, user)
	if err != nil {
		return err
	}
	defer d.close()
	fetcherRedis := redis.NewClient(redisOpts) // its own connection, as another process
	defer fetcherRedis.Close()

	done := make(chan error, 1)
	go func() {
		done <- run(ctx, w, config{
			Redis: fetcherRedis, Prefix: prefix, User: user, URL: md.URL(),
			Symbols: []string{"ESZ6", "NQZ6"}, Interval: pace, Rounds: 3,
		})
	}()
	select {
	case <-time.After(5 * pace / 2):
	case err := <-done:
		return fmt.Errorf("the fetcher stopped early: %v", err)
	}
	fmt.Fprintln(w, "[daemon] starts: logs in and stores the token")
	if _, err := d.login(ctx); err != nil {
		return err
	}
	if err := <-done; err != nil {
		return err
	}
	fmt.Fprintf(w, "broker logins: %d (by the daemon; the fetcher never logs in)\n", broker.Logins(user))
	return nil
}

// daemon stands in for `brokertoken run`: it logs the user in at the (fake) broker and
// stores the token in Redis, where every cache sharing the Redis finds it.
type daemon struct {
	auth  *tradovate.Authenticator
	cache *tokencache.Cache
	user  string
}

func newDaemon(rdb redis.UniversalClient, prefix string, broker *tradovatefake.Server, user string) (*daemon, error) {
	creds, err := tradovate.NewCredentials(tradovate.Credential{Username: user, Password: "demo-password"})
	if err != nil {
		return nil, err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	auth, err := tradovate.New(tradovate.Options{
		RESTURL:        broker.RESTURL(),
		TradingViewURL: broker.TradingViewURL(),
		Method:         tradovate.MethodOfficial,
		Credentials:    creds,
		DeviceID:       "brokertoken-demo",
		Redis:          rdb,
		Prefix:         prefix,
		Logger:         quiet,
	})
	if err != nil {
		return nil, err
	}
	cache, err := tokencache.New(tokencache.Options{Redis: rdb, Prefix: prefix, Authenticator: auth, Logger: quiet})
	if err != nil {
		return nil, err
	}
	return &daemon{auth: auth, cache: cache, user: user}, nil
}

// login opens a new broker session and stores its token.
func (d *daemon) login(ctx context.Context) (*tokencache.Token, error) {
	t, err := d.auth.Login(ctx, d.user)
	if err != nil {
		return nil, err
	}
	return d.cache.Set(ctx, d.user, t)
}

func (d *daemon) close() { d.cache.Close() }
