// Command kite-feed shows a Zerodha Kite market-data feed that reconnects by itself when
// a human logs in to Kite again: no restart, no file, no cache to clear by hand.
//
//	go run ./examples/kite-feed
//
// Two "processes" share one Redis: the web process serves the login link and Kite's
// redirect (zerodha.App.LoginHandler and RedirectHandler) and stores each login with
// Cache.Set; the feed service (Feed, in feed.go: the part to copy) streams ticks with
// the newest token. A simulated human logs in three times: at the start, after Kite's
// morning expiry (the feed, refused with a 403, waits instead of looping), and once more
// while the feed is connected. The feed connects exactly once per login.
//
// It runs against the fake Kite of internal/testutil/kitefake, whose /feed streams
// "tick N" lines in place of Kite's websocket, and an embedded Redis (miniredis) unless
// REDIS_URL names a real one.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/demoenv"
	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/zerodha"
)

func main() {
	redisOpts, stop, err := demoenv.RedisOptions()
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout, redisOpts, "kite-feed-demo"); err != nil {
		log.Fatal(err)
	}
}

// The demo app's credentials, registered with the fake Kite.
const (
	demoAPIKey    = "demo_api_key"
	demoAPISecret = "demo-api-secret-do-not-print"
)

// demo is the running scenario: the fake Kite, the two processes and the human.
type demo struct {
	w        io.Writer
	kite     *kitefake.Server
	startURL string
	human    *http.Client
	feed     *Feed
	events   chan Event
	ticks    atomic.Int64
}

// run plays the scenario, printing what happens to w. prefix namespaces the Redis keys,
// so a shared Redis is not disturbed.
func run(ctx context.Context, w io.Writer, redisOpts *redis.Options, prefix string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kite := kitefake.Start(kitefake.Options{TickInterval: 20 * time.Millisecond})
	defer kite.Close()

	// The web process: login link, Kite's redirect, and a cache to store logins with.
	webRDB := redis.NewClient(redisOpts)
	defer webRDB.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	webURL := "http://" + ln.Addr().String()
	kiteAddrs := zerodha.Options{LoginURL: kite.LoginURL(), APIURL: kite.URL(), StartURL: webURL + "/kite/login", Prefix: prefix}
	webOpts := kiteAddrs
	webOpts.APIKey, webOpts.APISecret, webOpts.Redis = demoAPIKey, demoAPISecret, webRDB
	webApp, err := zerodha.New(webOpts)
	if err != nil {
		ln.Close()
		return err
	}
	webCache, err := tokencache.New(tokencache.Options{Redis: webRDB, Prefix: prefix}) // read-only: it only stores logins
	if err != nil {
		ln.Close()
		return err
	}
	defer webCache.Close()
	mux := http.NewServeMux()
	mux.Handle("/kite/login", webApp.LoginHandler())
	mux.Handle("/kite/redirect", webApp.RedirectHandler(webCache))
	web := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() { defer close(served); _ = web.Serve(ln) }()
	defer func() { web.Close(); <-served }()
	kite.AddApp(demoAPIKey, demoAPISecret, webURL+"/kite/redirect")

	// The feed service: its own Redis connection and cache, and no API secret.
	feedRDB := redis.NewClient(redisOpts)
	defer feedRDB.Close()
	feedOpts := kiteAddrs
	feedOpts.APIKey, feedOpts.Redis = demoAPIKey, feedRDB
	feedApp, err := zerodha.New(feedOpts)
	if err != nil {
		return err
	}
	feedCache, err := tokencache.New(tokencache.Options{Redis: feedRDB, Prefix: prefix,
		Authenticator: feedApp.Authenticator(), RetryMax: 2 * time.Second})
	if err != nil {
		return err
	}
	defer feedCache.Close()
	feedHTTP := &http.Transport{}
	defer feedHTTP.CloseIdleConnections()
	humanHTTP := &http.Transport{}
	defer humanHTTP.CloseIdleConnections()

	d := &demo{w: w, kite: kite, startURL: webURL + "/kite/login", events: make(chan Event, 256),
		human: &http.Client{Transport: humanHTTP, Timeout: 10 * time.Second}}
	d.feed = &Feed{
		Cache:   feedCache,
		User:    feedApp.User(),
		Dial:    HTTPDialer(&http.Client{Transport: feedHTTP}, kite.FeedURL(), feedApp.APIKey()),
		OnTick:  func(string) { d.ticks.Add(1) },
		OnEvent: func(e Event) { d.events <- e },
		Recheck: 2 * time.Second,
	}
	feedDone := make(chan error, 1)
	go func() { feedDone <- d.feed.Run(ctx) }()
	defer func() { cancel(); <-feedDone }()

	fmt.Fprintf(w, "fake Kite at %s; Redis at %s; login page at %s\n", kite.URL(), redisOpts.Addr, d.startURL)
	return d.play(ctx)
}

// play is the scenario proper.
func (d *demo) play(ctx context.Context) error {
	e, err := d.next(ctx, EventWaiting)
	if err != nil {
		return err
	}
	var login *zerodha.LoginRequiredError
	if errors.As(e.Err, &login) {
		fmt.Fprintf(d.w, "feed: no token yet; waiting for a human to log in at %s\n", login.URL)
	}

	if err := d.login(ctx); err != nil {
		return err
	}
	if err := d.connected(ctx); err != nil {
		return err
	}

	fmt.Fprintln(d.w, "Kite: 06:00 IST, every access token expires")
	d.kite.ExpireAccessTokens()
	if e, err = d.next(ctx, EventRejected); err != nil {
		return err
	}
	fmt.Fprintf(d.w, "feed: Kite refused token %s (%v); reported to the cache\n", e.Token, e.Err)
	if _, err = d.next(ctx, EventWaiting); err != nil {
		return err
	}
	before := len(d.kite.FeedAttempts())
	time.Sleep(500 * time.Millisecond)
	fmt.Fprintf(d.w, "feed: waiting for the next login; feed attempts in the last 500ms: %d\n", len(d.kite.FeedAttempts())-before)

	if err := d.login(ctx); err != nil {
		return err
	}
	if err := d.connected(ctx); err != nil {
		return err
	}
	fmt.Fprintln(d.w, "human: logs in again while the feed is connected (Kite kills the old token)")
	if err := d.login(ctx); err != nil {
		return err
	}
	if err := d.connected(ctx); err != nil {
		return err
	}

	connections, refused := 0, 0
	for _, a := range d.kite.FeedAttempts() {
		if a.Status == http.StatusOK {
			connections++
		} else {
			refused++
		}
	}
	fmt.Fprintf(d.w, "done: %d logins, %d feed connections, %d refused attempts, %d ticks, no restart\n",
		len(d.kite.AccessTokens()), connections, refused, d.ticks.Load())
	return nil
}

// login is the human opening the login page: the browser goes to Kite, which sends it
// back to the redirect URL, whose page says how it went.
func (d *demo) login(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.startURL, nil)
	if err != nil {
		return err
	}
	resp, err := d.human.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	page, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	_, title, _ := strings.Cut(string(page), "<h1>")
	title, _, _ = strings.Cut(title, "</h1>")
	fmt.Fprintf(d.w, "human: logs in -> HTTP %d %q\n", resp.StatusCode, title)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("login failed: HTTP %d", resp.StatusCode)
	}
	return nil
}

// connected waits for the feed to connect and a few ticks to arrive.
func (d *demo) connected(ctx context.Context) error {
	e, err := d.next(ctx, EventConnected)
	if err != nil {
		return err
	}
	start := d.ticks.Load()
	for d.ticks.Load() < start+3 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	fmt.Fprintf(d.w, "feed: connected with token %s (version %d); ticks flowing\n", e.Token, e.Version)
	return nil
}

// next returns the feed's next event of kind, skipping others.
func (d *demo) next(ctx context.Context, kind EventKind) (Event, error) {
	for {
		select {
		case e := <-d.events:
			if e.Kind == kind {
				return e, nil
			}
		case <-ctx.Done():
			return Event{}, fmt.Errorf("waiting for the feed to report %s: %w", kind, ctx.Err())
		}
	}
}
