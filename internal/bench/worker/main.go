// Command worker is the helper process of the benchmark harness (go run ./internal/bench).
// The harness builds it and runs many copies; each talks to the harness over stdin and
// stdout, one line per message, and to Redis. It is not meant to be run by hand.
//
// Modes:
//
//	herd   -addrs A -prefix P -user U -goroutines G -latency D
//	       prints "ready", waits for a line on stdin, then G goroutines call Cache.Token(U)
//	       at once; the Authenticator counts the login (INCR P:bench:logins:U) and sleeps
//	       D. Prints "result <errors> <logins> <login begin> <login end> <woke> <start>:<end> ..."
//	       (unix ns; login times 0 when this process did not log in; woke is when it
//	       stopped waiting for another process's login, 0 if it did not wait), then
//	       exits when stdin closes.
//	inval  -addrs A -prefix P -user U
//	       read-only cache; prints "ready <version>", then for each new version prints
//	       "v <version> <stopped> <served>": unix ns when the cache stopped serving the
//	       old token (Hooks.Invalidated) and when Watch delivered the new one, until
//	       stdin closes.
//	sub    -addrs A -channel C [-get K]
//	       subscribes to C; prints "ready", then "m <payload> <unix ns>" per message
//	       (with -get, GETs K and adds the unix ns of the reply), until stdin closes.
//	start  -addrs A -goroutines G -get K
//	       prints "ready"; for each line on stdin, G goroutines start at once and the
//	       first makes two round trips (GET K twice) while the others wait; prints
//	       "result <first start> <last start> <second reply>" (unix ns).
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: worker herd|inval|sub|start [flags]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	addrs := fs.String("addrs", "", "comma-separated Redis addresses; several mean a cluster")
	prefix := fs.String("prefix", "brokertoken", "key prefix")
	user := fs.String("user", "", "login user")
	goroutines := fs.Int("goroutines", 50, "herd: concurrent callers")
	latency := fs.Duration("latency", 100*time.Millisecond, "herd: broker latency")
	channel := fs.String("channel", "", "sub: channel")
	key := fs.String("get", "", "sub: a key to GET after each message (the herd's read after its wake-up); start: the key to GET")
	_ = fs.Parse(os.Args[2:])

	var rdb redis.UniversalClient
	if a := strings.Split(*addrs, ","); len(a) > 1 {
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: a})
	} else {
		rdb = redis.NewClient(&redis.Options{Addr: a[0]})
	}
	defer rdb.Close()
	var err error
	switch mode {
	case "herd":
		err = herd(rdb, *prefix, *user, *goroutines, *latency)
	case "inval":
		err = inval(rdb, *prefix, *user)
	case "sub":
		err = sub(rdb, *channel, *key)
	case "start":
		err = start(rdb, *key, *goroutines)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

// auth is the broker: every login is counted in Redis and takes latency.
type auth struct {
	rdb     redis.UniversalClient
	key     string
	latency time.Duration
	logins  atomic.Int64
	begin   atomic.Int64 // unix ns the last login began
	end     atomic.Int64 // unix ns the last login returned
}

func (a *auth) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	a.logins.Add(1)
	a.begin.Store(time.Now().UnixNano())
	defer func() { a.end.Store(time.Now().UnixNano()) }()
	if err := a.rdb.Incr(ctx, a.key).Err(); err != nil {
		return nil, err
	}
	select {
	case <-time.After(a.latency):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	now := time.Now()
	return &tokencache.Token{AccessToken: "herd-" + hex.EncodeToString(b[:]), ObtainedAt: now, Expiry: now.Add(time.Hour)}, nil
}

func herd(rdb redis.UniversalClient, prefix, user string, g int, latency time.Duration) error {
	ctx := context.Background()
	a := &auth{rdb: rdb, key: prefix + ":bench:logins:{" + user + "}", latency: latency}
	var woke atomic.Int64 // unix ns this process last stopped waiting for another's login
	c, err := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: a, Prefix: prefix,
		Hooks: tokencache.Hooks{LeaseWait: func(string, time.Duration) { woke.Store(time.Now().UnixNano()) }}})
	if err != nil {
		return err
	}
	defer c.Close()
	// Warm the connection pool so the herd measures the cache, not dialling.
	var wg sync.WaitGroup
	for range min(g, 10) {
		wg.Add(1)
		go func() { defer wg.Done(); _ = rdb.Ping(ctx).Err() }()
	}
	wg.Wait()
	if _, err := c.Status(ctx, user); err != nil {
		return err
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		return fmt.Errorf("stdin closed before go")
	}
	starts := make([]int64, g)
	ends := make([]int64, g)
	var errs atomic.Int64
	start := make(chan struct{})
	for i := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			starts[i] = time.Now().UnixNano()
			tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if _, err := c.Token(tctx, user); err != nil {
				errs.Add(1)
				fmt.Fprintln(os.Stderr, "worker: Token:", err)
			}
			ends[i] = time.Now().UnixNano()
		}()
	}
	close(start)
	wg.Wait()
	var b strings.Builder
	fmt.Fprintf(&b, "result %d %d %d %d %d", errs.Load(), a.logins.Load(), a.begin.Load(), a.end.Load(), woke.Load())
	for i := range starts {
		fmt.Fprintf(&b, " %d:%d", starts[i], ends[i])
	}
	fmt.Println(b.String())
	// Stay up until the harness has every process's result: a process tearing down
	// (Close, exit) would take CPU from the ones still waking, which a fleet of
	// long-running services never does.
	for in.Scan() {
	}
	return nil
}

// untilEOF closes the returned channel when stdin closes.
func untilEOF() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := os.Stdin.Read(buf); err != nil {
				close(done)
				return
			}
		}
	}()
	return done
}

func inval(rdb redis.UniversalClient, prefix, user string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The Invalidated hook runs at the instant the cache stops serving the old token
	// (under the entry's lock, before the fresh pointer is cleared); Watch hears the new
	// token once it is installed and served.
	type stop struct{ v, ns int64 }
	stops := make(chan stop, 1024)
	c, err := tokencache.New(tokencache.Options{Redis: rdb, Prefix: prefix, Hooks: tokencache.Hooks{
		Invalidated: func(_ string, v int64) {
			select {
			case stops <- stop{v, time.Now().UnixNano()}:
			default:
			}
		},
	}})
	if err != nil {
		return err
	}
	defer c.Close()
	src := c.Source(user)
	watch := c.Watch(ctx, user)
	var t *tokencache.Token
	for deadline := time.Now().Add(10 * time.Second); ; {
		if t, err = src.Token(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Let the subscription settle before the harness starts writing.
	time.Sleep(200 * time.Millisecond)
	initial := t.Version
	fmt.Printf("ready %d\n", initial)
	done := untilEOF()
	out := bufio.NewWriter(os.Stdout)
	for {
		select {
		case <-done:
			return nil
		case t, ok := <-watch:
			if !ok {
				return nil
			}
			if t.Version <= initial {
				continue // the token held before the harness started writing
			}
			served := time.Now().UnixNano()
			if cur, err := src.Token(ctx); err != nil || cur.Version < t.Version {
				return fmt.Errorf("watch sent version %d but Token serves %v (%v)", t.Version, cur, err)
			}
			var stopped int64
		drain:
			for {
				select {
				case s := <-stops:
					if s.v == t.Version {
						stopped = s.ns
						break drain
					}
					fmt.Fprintf(os.Stderr, "worker: version %d: stopped serving the old token but Watch never delivered it (next delivered: %d)\n", s.v, t.Version)
				case <-time.After(time.Second):
					break drain
				}
			}
			fmt.Fprintf(out, "v %d %d %d\n", t.Version, stopped, served)
			_ = out.Flush()
		}
	}
}

func sub(rdb redis.UniversalClient, channel, key string) error {
	ctx := context.Background()
	ps := rdb.Subscribe(ctx, channel)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		return err
	}
	ch := ps.Channel()
	fmt.Println("ready")
	done := untilEOF()
	out := bufio.NewWriter(os.Stdout)
	for {
		select {
		case <-done:
			return nil
		case m := <-ch:
			now := time.Now().UnixNano()
			if key == "" {
				fmt.Fprintf(out, "m %s %d\n", m.Payload, now)
			} else {
				if err := rdb.Get(ctx, key).Err(); err != nil && !errors.Is(err, redis.Nil) {
					return err
				}
				fmt.Fprintf(out, "m %s %d %d\n", m.Payload, now, time.Now().UnixNano())
			}
			_ = out.Flush()
		}
	}
}

// start is the floor of a herd's start: on every "go" line, goroutines start at once and
// the first of them makes two round trips (two GETs: a cold cache's read, then its lease
// script) while the others wait for it, as a cache's callers wait for its one refresh.
// It prints "result <first start> <last start> <second reply>" in unix ns.
func start(rdb redis.UniversalClient, key string, g int) error {
	if g < 1 {
		return fmt.Errorf("start: -goroutines %d, want at least 1", g)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for range min(g, 10) {
		wg.Add(1)
		go func() { defer wg.Done(); _ = rdb.Ping(ctx).Err() }()
	}
	wg.Wait()
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		starts := make([]int64, g)
		var once sync.Once
		var done int64
		var rtErr error
		begin := make(chan struct{})
		for i := range g {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-begin
				starts[i] = time.Now().UnixNano()
				once.Do(func() {
					for range 2 {
						if err := rdb.Get(ctx, key).Err(); err != nil && !errors.Is(err, redis.Nil) {
							rtErr = err
						}
					}
					done = time.Now().UnixNano()
				})
			}()
		}
		close(begin)
		wg.Wait()
		if rtErr != nil {
			return rtErr
		}
		fmt.Printf("result %d %d %d\n", slices.Min(starts), slices.Max(starts), done)
	}
	return nil
}
