// Command quickstart shows brokertoken's cache at work with nothing but Go installed:
// two services share one broker login through Redis, the token is renewed before it
// expires, and a token stored by one service reaches the other at once.
//
//	go run ./examples/quickstart
//
// It starts an embedded Redis (miniredis) unless REDIS_URL names a real one, and uses a
// small in-process broker that issues JWTs living a few seconds.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/demoenv"
	"github.com/brokertoken/brokertoken/tokencache"
)

func main() {
	redisOpts, stop, err := demoenv.RedisOptions()
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout, redisOpts, "demo"); err != nil {
		log.Fatal(err)
	}
}

// run plays the scenario, printing what each service sees to w. prefix namespaces the
// keys, so a shared Redis is not disturbed.
func run(ctx context.Context, w io.Writer, redisOpts *redis.Options, prefix string) error {
	broker := &demoBroker{lifetime: 4 * time.Second}
	// Two services, each with its own Redis connection, as two processes would have.
	newService := func() (*tokencache.Cache, func(), error) {
		rdb := redis.NewClient(redisOpts)
		c, err := tokencache.New(tokencache.Options{
			Redis:         rdb,
			Authenticator: broker,
			Prefix:        prefix,
			RefreshBefore: 2 * time.Second, // renew 2 s before expiry (default 15 min)
		})
		if err != nil {
			rdb.Close()
			return nil, nil, err
		}
		return c, func() { c.Close(); rdb.Close() }, nil
	}
	a, closeA, err := newService()
	if err != nil {
		return err
	}
	defer closeA()
	b, closeB, err := newService()
	if err != nil {
		return err
	}
	defer closeB()
	const user = "APEX_272045"

	fmt.Fprintf(w, "Redis at %s; the broker issues tokens that live %s\n", redisOpts.Addr, broker.lifetime)
	tokA, err := a.Token(ctx, user)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "service A: %s (broker logins so far: %d)\n", describe(tokA), broker.logins.Load())
	tokB, err := b.Token(ctx, user)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "service B: %s (broker logins so far: %d): same token, read from Redis\n",
		describe(tokB), broker.logins.Load())

	// Service B watches for new tokens, as a websocket streamer would to reconnect.
	changes := b.Watch(ctx, user)

	fmt.Fprintf(w, "waiting for the token to turn stale (%s before expiry)...\n", 2*time.Second)
	for {
		t, err := a.Token(ctx, user) // stale tokens are served while one renewal runs
		if err != nil {
			return err
		}
		if t.Version > tokA.Version {
			fmt.Fprintf(w, "service A: %s (logins: %d, renewals: %d)\n", describe(t), broker.logins.Load(), broker.renewals.Load())
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case t := <-changes:
		fmt.Fprintf(w, "service B: told of version %d by Watch; it would reconnect its websocket now\n", t.Version)
	case <-ctx.Done():
		return ctx.Err()
	}

	// A token obtained elsewhere (a login callback, the daemon) is stored with Set.
	set, err := a.Set(ctx, user, &tokencache.Token{AccessToken: broker.issue(user, "manual").AccessToken})
	if err != nil {
		return err
	}
	start := time.Now()
	for {
		t, err := b.Token(ctx, user)
		if err != nil {
			return err
		}
		if t.Version == set.Version {
			fmt.Fprintf(w, "service B: sees the token service A stored after %s\n", time.Since(start).Round(100*time.Microsecond))
			break
		}
		if time.Since(start) > 5*time.Second {
			return fmt.Errorf("service B never saw version %d", set.Version)
		}
	}
	fmt.Fprintf(w, "done: two services, %d login, %d renewal\n", broker.logins.Load(), broker.renewals.Load())
	return nil
}

func describe(t *tokencache.Token) string {
	return fmt.Sprintf("token %s version %d, expires in %s", tokencache.Redact(t.AccessToken), t.Version,
		time.Until(t.Expiry).Round(100*time.Millisecond))
}

// demoBroker stands in for Tradovate: it issues signed JWTs whose exp claim is the only
// place their expiry is written, as with Tradovate's TradingView-style login.
type demoBroker struct {
	lifetime         time.Duration
	logins, renewals atomic.Int64
	seq              atomic.Int64
}

var demoKey = []byte("quickstart-demo-key")

func (d *demoBroker) issue(user, kind string) *tokencache.Token {
	claims := jwt.MapClaims{
		"sub": user,
		"exp": time.Now().Add(d.lifetime).Unix(),
		"jti": fmt.Sprintf("%s-%d", kind, d.seq.Add(1)),
	}
	s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(demoKey) // HS256 with a fixed key cannot fail
	return &tokencache.Token{AccessToken: s}                                        // expiry: read from the JWT by the cache
}

func (d *demoBroker) Login(_ context.Context, user string) (*tokencache.Token, error) {
	d.logins.Add(1)
	return d.issue(user, "login"), nil
}

func (d *demoBroker) Renew(_ context.Context, user string, _ *tokencache.Token) (*tokencache.Token, error) {
	d.renewals.Add(1)
	return d.issue(user, "renew"), nil
}
