// Command candle-fetcher fetches one-minute bars periodically over Tradovate's
// market-data websocket (md/getChart), with a read-only token cache: it never logs in
// (the daemon does), so it never spends a login or opens a broker session.
//
// When no token is stored yet (the daemon has not run, or the token it stored was
// rejected), the cache answers tokencache.ErrNoToken: the fetcher says so once, waits
// for the cache's Watch to announce a token (checking again every interval as a
// backstop), and fetches as soon as one arrives. A token the socket refuses is reported
// with Invalidate and never used again.
//
//	go run ./examples/candle-fetcher
//
// With no -url it runs a self-contained demo: an embedded Redis (or REDIS_URL), an
// in-process fake of Tradovate's login and market-data socket, and a stand-in for the
// daemon that stores the first token a few seconds late. Against real services:
//
//	REDIS_URL=rediss://:PASSWORD@host:6380/0 go run ./examples/candle-fetcher \
//	    -url wss://md.tradovateapi.com/v1/websocket -user APEX_272045 -interval 1m
package main

import (
	"context"
	"encoding/json"
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

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/demoenv"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// config is what the fetcher needs. Zero values take the defaults given.
type config struct {
	Redis    redis.UniversalClient // where the daemon stores tokens; required
	Prefix   string                // key namespace, as the daemon's (default "brokertoken")
	User     string                // login user whose token to use; required
	URL      string                // market-data websocket; required
	Symbols  []string              // default ESZ6
	Bars     int                   // bars per symbol and fetch (default 10)
	Interval time.Duration         // between fetches, and between checks for a token (default 1 min)
	Rounds   int                   // stop after this many fetches (default 0: until ctx ends)
	Timeout  time.Duration         // bound on one fetch (default 30 s)
}

func (c *config) defaults() error {
	if c.Redis == nil || c.User == "" || c.URL == "" {
		return errors.New("candle-fetcher: Redis, User and URL are required")
	}
	if len(c.Symbols) == 0 {
		c.Symbols = []string{"ESZ6"}
	}
	if c.Bars <= 0 {
		c.Bars = 10
	}
	if c.Interval <= 0 {
		c.Interval = time.Minute
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	return nil
}

// errRejected means the socket refused the token.
var errRejected = errors.New("market-data token rejected")

// run fetches every cfg.Interval until ctx ends (then it returns nil) or cfg.Rounds
// fetches are done.
func run(ctx context.Context, w io.Writer, cfg config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	// Read-only: no Authenticator, so this process never logs in.
	cache, err := tokencache.New(tokencache.Options{Redis: cfg.Redis, Prefix: cfg.Prefix})
	if err != nil {
		return err
	}
	defer cache.Close()
	changes := cache.Watch(ctx, cfg.User) // wakes the wait below when a token is stored

	wait := func() bool {
		select {
		case <-changes:
		case <-time.After(cfg.Interval):
		case <-ctx.Done():
		}
		return ctx.Err() == nil
	}
	var waitingSince time.Time
	checks, rejected := 0, false
	for done := 0; cfg.Rounds == 0 || done < cfg.Rounds; {
		tok, err := cache.Token(ctx, cfg.User)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, tokencache.ErrNoToken), errors.Is(err, tokencache.ErrRedisUnavailable):
			checks++
			if waitingSince.IsZero() { // say it once, not at every check
				waitingSince = time.Now()
				why := "none stored yet"
				switch {
				case errors.Is(err, tokencache.ErrRedisUnavailable):
					why = "Redis unreachable"
				case rejected:
					why = "the stored one was rejected"
				}
				fmt.Fprintf(w, "no token for %s (%s): waiting for the daemon (brokertoken run) to store one\n", cfg.User, why)
			}
			if !wait() {
				return nil
			}
			continue
		case err != nil:
			return err
		}
		if !waitingSince.IsZero() {
			fmt.Fprintf(w, "token version %d arrived after %d checks\n", tok.Version, checks)
			waitingSince, checks, rejected = time.Time{}, 0, false
		}

		err = fetch(ctx, w, cfg, tok, done+1)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errRejected):
			// Never use it again; a cache that may log in would refresh at once. Report the
			// token the socket refused: the market-data one when there is one.
			fmt.Fprintf(w, "fetch %d: %v: reported\n", done+1, err)
			_ = cache.Invalidate(ctx, cfg.User, socketToken(tok))
			rejected = true
			continue
		case err != nil:
			fmt.Fprintf(w, "fetch %d failed: %v\n", done+1, err) // try again next interval
		default:
			done++
		}
		if (cfg.Rounds == 0 || done < cfg.Rounds) && !sleep(ctx, cfg.Interval) {
			return nil
		}
	}
	fmt.Fprintf(w, "done: %d fetches\n", cfg.Rounds)
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// bar is one candle of an md/getChart answer.
type bar struct {
	Timestamp string  `json:"timestamp"`
	Open      float64 `json:"open"`
	High      float64 `json:"high"`
	Low       float64 `json:"low"`
	Close     float64 `json:"close"`
}

// fetch opens a socket with tok's market-data token, gets cfg.Bars bars of every
// symbol, prints a line per symbol and closes the socket. A fetch takes well under the
// 2.5 s heartbeat period; a longer-lived client sends heartbeats, as the streamer does.
func fetch(ctx context.Context, w io.Writer, cfg config, tok *tokencache.Token, n int) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, cfg.URL, nil)
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	next := func() (tradovate.Frame, error) {
		for {
			_, data, err := ws.Read(ctx)
			if websocket.CloseStatus(err) == websocket.StatusPolicyViolation {
				return tradovate.Frame{}, fmt.Errorf("%w: socket closed with 1008", errRejected)
			}
			if err != nil {
				return tradovate.Frame{}, err
			}
			f, err := tradovate.ParseFrame(data)
			if err != nil || f.Type == tradovate.FrameHeartbeat {
				continue // skip what cannot be read, and heartbeats
			}
			if f.Type == tradovate.FrameClose {
				if f.CloseCode == int(websocket.StatusPolicyViolation) {
					return f, fmt.Errorf("%w: %s", errRejected, f.CloseReason)
				}
				return f, fmt.Errorf("server closed the socket: %d %s", f.CloseCode, f.CloseReason)
			}
			return f, nil
		}
	}
	send := func(op string, id int64, body any) error {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		req, err := tradovate.RequestFrame(op, id, "", string(b))
		if err != nil {
			return err
		}
		return ws.Write(ctx, websocket.MessageText, req)
	}

	if f, err := next(); err != nil {
		return err
	} else if f.Type != tradovate.FrameOpen {
		return fmt.Errorf("expected the open frame, got %q", f.Type)
	}
	if err := ws.Write(ctx, websocket.MessageText, tradovate.AuthorizeFrame(socketToken(tok))); err != nil {
		return err
	}
	if m, err := response(next, 0); err != nil {
		return err
	} else if !m.OK() {
		return fmt.Errorf("%w: authorize answered %d %s", errRejected, m.Status, m.Text())
	}

	for i, sym := range cfg.Symbols {
		id := int64(i + 1)
		err := send("md/getChart", id, map[string]any{
			"symbol": sym,
			"chartDescription": map[string]any{
				"underlyingType": "MinuteBar", "elementSize": 1, "elementSizeUnit": "UnderlyingUnits", "withHistogram": false,
			},
			"timeRange": map[string]any{"asMuchAsElements": cfg.Bars},
		})
		if err != nil {
			return err
		}
		m, err := response(next, id)
		if err != nil {
			return err
		}
		if !m.OK() {
			return fmt.Errorf("getChart %s: %d %s", sym, m.Status, m.Text())
		}
		var ids struct {
			HistoricalID int64 `json:"historicalId"`
		}
		if err := json.Unmarshal(m.Data, &ids); err != nil {
			return fmt.Errorf("getChart %s: %w", sym, err)
		}
		bars, err := history(next, ids.HistoricalID)
		if err != nil {
			return err
		}
		if err := send("md/cancelChart", id+100, map[string]int64{"subscriptionId": ids.HistoricalID}); err != nil {
			return err
		}
		if len(bars) == 0 {
			fmt.Fprintf(w, "fetch %d: %s: no bars\n", n, sym)
			continue
		}
		first, last := bars[0], bars[len(bars)-1]
		fmt.Fprintf(w, "fetch %d: %s %d one-minute bars %s..%s, last close %.2f\n",
			n, sym, len(bars), first.Timestamp, last.Timestamp, last.Close)
	}
	return ws.Close(websocket.StatusNormalClosure, "done")
}

// response reads frames until the response to request id, skipping events.
func response(next func() (tradovate.Frame, error), id int64) (tradovate.Message, error) {
	for {
		f, err := next()
		if err != nil {
			return tradovate.Message{}, err
		}
		for _, m := range f.Messages {
			if m.IsResponse() && m.ID == id {
				return m, nil
			}
		}
	}
}

// history collects the bars of chart id until its end-of-history marker.
func history(next func() (tradovate.Frame, error), id int64) ([]bar, error) {
	var bars []bar
	for {
		f, err := next()
		if err != nil {
			return nil, err
		}
		for _, m := range f.Messages {
			if m.Event != "chart" {
				continue
			}
			var d struct {
				Charts []struct {
					ID   int64 `json:"id"`
					EOH  bool  `json:"eoh"`
					Bars []bar `json:"bars"`
				} `json:"charts"`
			}
			if json.Unmarshal(m.Data, &d) != nil {
				continue
			}
			for _, c := range d.Charts {
				if c.ID != id {
					continue
				}
				bars = append(bars, c.Bars...)
				if c.EOH {
					return bars, nil
				}
			}
		}
	}
}

func main() {
	url := flag.String("url", "", "market-data websocket, e.g. wss://md.tradovateapi.com/v1/websocket (empty: demo with in-process fakes)")
	user := flag.String("user", "APEX_272045", "login user whose token the daemon keeps")
	symbols := flag.String("symbols", "ESZ6,NQZ6", "comma-separated symbols")
	interval := flag.Duration("interval", time.Minute, "time between fetches")
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
		if err := demo(ctx, os.Stdout, redisOpts, *prefix, time.Second); err != nil {
			log.Fatal(err)
		}
		return
	}
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		log.Fatal("candle-fetcher: set REDIS_URL to the Redis the daemon writes to")
	}
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	err = run(ctx, os.Stdout, config{
		Redis: rdb, Prefix: *prefix, User: *user, URL: *url,
		Symbols: strings.Split(*symbols, ","), Interval: *interval,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// socketToken is the token the market-data socket is authorized with: the market-data
// token, or the access token of a TradingView-style login not exchanged for a REST pair.
func socketToken(t *tokencache.Token) string {
	if t.MDAccessToken != "" {
		return t.MDAccessToken
	}
	return t.AccessToken
}
