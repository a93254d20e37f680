// Command streamer is a market-data websocket client that keeps streaming across token
// changes. It reads its token from the shared cache (read-only: the daemon logs in),
// authorizes the socket with the market-data token, subscribes to quotes, sends a
// heartbeat every 2.5 s, and reconnects exactly once per new market-data token: the
// cache's Watch tells it the moment any process stores one. It re-subscribes what it
// had, reports a token the server rejects, and never sends that token again.
//
//	go run ./examples/streamer
//
// With no -url it runs a self-contained demo: an embedded Redis (or REDIS_URL), an
// in-process fake of Tradovate's login and of its market-data socket, and a stand-in
// for the daemon that logs in again every few seconds. Against real services:
//
//	REDIS_URL=rediss://:PASSWORD@host:6380/0 go run ./examples/streamer \
//	    -url wss://md.tradovateapi.com/v1/websocket -user APEX_272045 -symbols ESZ6,NQZ6
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/demoenv"
	"github.com/brokertoken/brokertoken/tokencache"
)

// config is what the streamer needs. Zero durations take the defaults given.
type config struct {
	Redis     redis.UniversalClient // where the daemon stores tokens; required
	Prefix    string                // key namespace, as the daemon's (default "brokertoken")
	User      string                // login user whose token to use; required
	URL       string                // market-data websocket; required
	Symbols   []string              // default ESZ6
	Heartbeat time.Duration         // client heartbeat "[]" (default 2.5 s)
	Silence   time.Duration         // reconnect when the server sends nothing this long (default 10 s)
	RetryMin  time.Duration         // first wait before reconnecting after a drop (default 500 ms)
	RetryMax  time.Duration         // longest such wait (default 30 s)
}

func (c *config) defaults() error {
	if c.Redis == nil || c.User == "" || c.URL == "" {
		return errors.New("streamer: Redis, User and URL are required")
	}
	if len(c.Symbols) == 0 {
		c.Symbols = []string{"ESZ6"}
	}
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	set(&c.Heartbeat, 2500*time.Millisecond)
	set(&c.Silence, 10*time.Second)
	set(&c.RetryMin, 500*time.Millisecond)
	set(&c.RetryMax, 30*time.Second)
	return nil
}

// run streams quotes to w until ctx ends; it returns nil then.
func run(ctx context.Context, w io.Writer, cfg config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	// Read-only: no Authenticator. The daemon (or any writer) stores tokens; this cache
	// serves them from memory and hears of every new one through Redis pub/sub.
	cache, err := tokencache.New(tokencache.Options{Redis: cfg.Redis, Prefix: cfg.Prefix})
	if err != nil {
		return err
	}
	defer cache.Close()
	s := &streamer{cfg: cfg, cache: cache, out: w}
	return s.run(ctx)
}

func main() {
	url := flag.String("url", "", "market-data websocket, e.g. wss://md.tradovateapi.com/v1/websocket (empty: demo with in-process fakes)")
	user := flag.String("user", "APEX_272045", "login user whose token the daemon keeps")
	symbols := flag.String("symbols", "ESZ6,NQZ6", "comma-separated symbols to subscribe to")
	prefix := flag.String("prefix", "", "key prefix the daemon uses (default brokertoken)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *url == "" {
		redisOpts, stopRedis, err := demoenv.RedisOptions()
		if err != nil {
			log.Fatal(err)
		}
		defer stopRedis()
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := demo(ctx, os.Stdout, redisOpts, *prefix, 3*time.Second); err != nil {
			log.Fatal(err)
		}
		return
	}
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		log.Fatal("streamer: set REDIS_URL to the Redis the daemon writes to")
	}
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	err = run(ctx, os.Stdout, config{
		Redis: rdb, Prefix: *prefix, User: *user, URL: *url, Symbols: strings.Split(*symbols, ","),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
