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
	d, err := demoenv.NewDaemon(daemonRedis, prefix, broker, user)
	if err != nil {
		return err
	}
	defer d.Close()
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
	if _, err := d.Login(ctx); err != nil {
		return err
	}
	if err := <-done; err != nil {
		return err
	}
	fmt.Fprintf(w, "broker logins: %d (by the daemon; the fetcher never logs in)\n", broker.Logins(user))
	return nil
}
