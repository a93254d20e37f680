// Command trading-service is a REST client of Tradovate built on tokencache.Transport:
// every request carries "Authorization: Bearer <token>" from the shared cache, and when
// the broker answers 401 (the token was dropped, e.g. because a login elsewhere closed
// the session) the transport reports the token with Cache.Invalidate and retries once
// with the next token. Concurrent requests that all see the same 401 cause one refresh.
//
// This service may log in itself (it has credentials): the cache makes sure that one
// process in the fleet does so at a time, and that everyone else reads the result.
//
//	go run ./examples/trading-service
//
// With no -credentials and no TRADOVATE_USERNAME it runs a self-contained demo: an
// embedded Redis (or REDIS_URL) and an in-process fake of Tradovate's REST API. Against
// the real demo environment (it only reads the account list):
//
//	REDIS_URL=redis://localhost:6379/0 go run ./examples/trading-service -credentials credentials.json -env demo
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/demoenv"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// config is what the service needs.
type config struct {
	Redis  redis.UniversalClient // the shared store; required
	Prefix string                // key namespace (default "brokertoken")
	User   string                // login user; required
	// Tradovate configures the authenticator: Credentials (required), Environment or
	// RESTURL, ... run fills in Redis, Prefix and Logger.
	Tradovate tradovate.Options
	// Workers is how many requests the third round sends at once (default 5).
	Workers int
	// Disrupt, when set, runs before the second and the third round. The demo uses it to
	// make the broker drop the service's session, as two logins elsewhere do.
	Disrupt func(ctx context.Context) error
}

// run sends three rounds of requests (one request, one request, cfg.Workers concurrent
// requests), calling cfg.Disrupt before the second and the third, and prints every
// request, the cache's log and a summary to w.
func run(ctx context.Context, w io.Writer, cfg config) error {
	if cfg.Redis == nil || cfg.User == "" {
		return errors.New("trading-service: Redis and User are required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 5
	}
	out := &lockedWriter{w: w}
	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{ReplaceAttr: withoutTime}))

	topts := cfg.Tradovate
	topts.Redis, topts.Logger = cfg.Redis, logger
	auth, err := tradovate.New(topts)
	if err != nil {
		return err
	}
	var logins atomic.Int64
	cache, err := tokencache.New(tokencache.Options{
		Redis:         cfg.Redis,
		Prefix:        cfg.Prefix,
		Authenticator: auth,
		Logger:        logger, // tokens appear redacted only
		Hooks: tokencache.Hooks{Refreshed: func(_, op string, _ *tokencache.Token) {
			if op == "login" {
				logins.Add(1)
			}
		}},
	})
	if err != nil {
		return err
	}
	defer cache.Close()

	// The whole integration: an http.Client whose transport is tokencache.Transport.
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &tokencache.Transport{
			Cache:   cache,
			Account: cfg.User,
			Base:    &printingTransport{out: out}, // default http.DefaultTransport; this one prints each try
		},
	}
	api := &restAPI{client: client, baseURL: restURL(cfg.Tradovate)}

	// round sends n concurrent requests and prints how many succeeded.
	round := func(name string, n int) error {
		var wg sync.WaitGroup
		var ok atomic.Int64
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				accounts, err := api.accountList(ctx)
				if err != nil {
					fmt.Fprintf(out, "%s: %v\n", name, err)
					return
				}
				if n == 1 {
					fmt.Fprintf(out, "%s: accounts %s\n", name, strings.Join(accounts, ", "))
				}
				ok.Add(1)
			}()
		}
		wg.Wait()
		fmt.Fprintf(out, "%s: %d/%d calls succeeded\n", name, ok.Load(), n)
		if int(ok.Load()) != n {
			return fmt.Errorf("%s: %d calls failed", name, n-int(ok.Load()))
		}
		return nil
	}
	disrupt := func() error {
		if cfg.Disrupt == nil {
			return nil
		}
		return cfg.Disrupt(ctx)
	}

	if err := round("round 1", 1); err != nil {
		return err
	}
	if err := disrupt(); err != nil {
		return err
	}
	if err := round("round 2", 1); err != nil { // a 401, one Invalidate, a refresh, the retry
		return err
	}
	if err := disrupt(); err != nil {
		return err
	}
	if err := round("round 3", cfg.Workers); err != nil { // several 401s at once, one refresh
		return err
	}
	fmt.Fprintf(out, "logins by this service: %d\n", logins.Load())
	return nil
}

// restURL is the REST base URL Options select.
func restURL(o tradovate.Options) string {
	switch {
	case o.RESTURL != "":
		return strings.TrimSuffix(o.RESTURL, "/")
	case o.Environment == tradovate.Live:
		return tradovate.LiveRESTURL
	default:
		return tradovate.DemoRESTURL
	}
}

// restAPI is the service's client of Tradovate's REST API.
type restAPI struct {
	client  *http.Client
	baseURL string
}

// accountList returns the names of the user's accounts (GET /account/list).
func (a *restAPI) accountList(ctx context.Context) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.baseURL+"/account/list", nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("account/list: HTTP %d", resp.StatusCode)
	}
	var list []struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("account/list: %w", err)
	}
	names := make([]string, len(list))
	for i, a := range list {
		names[i] = fmt.Sprintf("%s (id %d)", a.Name, a.ID)
	}
	return names, nil
}

// printingTransport sends requests with http.DefaultTransport and prints each one with
// a hash of its token (never the token) and the answer's status.
type printingTransport struct{ out io.Writer }

func (p *printingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	bearer := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		fmt.Fprintf(p.out, "%s %s with token %s: %v\n", req.Method, req.URL.Path, tokenID(bearer), err)
		return nil, err
	}
	fmt.Fprintf(p.out, "%s %s with token %s: %d\n", req.Method, req.URL.Path, tokenID(bearer), resp.StatusCode)
	return resp, nil
}

// tokenID is a short hash that tells tokens apart in logs without revealing them.
func tokenID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:4])
}

// lockedWriter serializes the writes of concurrent requests and log lines.
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// withoutTime drops slog's time attribute, to keep the output short.
func withoutTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

func main() {
	credsPath := flag.String("credentials", "", "credentials.json (else TRADOVATE_* variables; neither: demo with in-process fakes)")
	env := flag.String("env", "demo", "Tradovate environment: demo or live")
	user := flag.String("user", "", "login user (default: the first credential)")
	prefix := flag.String("prefix", "", "key prefix (default brokertoken)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	var creds *tradovate.Credentials
	var err error
	if *credsPath != "" {
		creds, err = tradovate.LoadCredentials(*credsPath)
	} else {
		creds, err = tradovate.CredentialsFromEnv()
	}
	if errors.Is(err, tradovate.ErrNoEnvCredential) {
		redisOpts, stopRedis, err := demoenv.RedisOptions()
		if err != nil {
			log.Fatal(err)
		}
		defer stopRedis()
		if err := demo(ctx, os.Stdout, redisOpts, *prefix); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	redisURL := os.Getenv("REDIS_URL")
	if redisURL == "" {
		log.Fatal("trading-service: set REDIS_URL")
	}
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		log.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	if *user == "" {
		*user = creds.Users()[0]
	}
	err = run(ctx, os.Stdout, config{
		Redis: rdb, Prefix: *prefix, User: *user,
		Tradovate: tradovate.Options{Environment: tradovate.Environment(*env), Credentials: creds},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
