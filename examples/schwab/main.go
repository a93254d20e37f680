// Command schwab shows services reading Charles Schwab tokens through the shared cache:
// a human authorizes the app once, the writer process refreshes the 30-minute access
// token with the refresh token for the whole fleet, and a read-only service calls the
// Trader API with whatever token is newest, never seeing the refresh token.
//
//	go run ./examples/schwab
//
// By default it runs against the fake Schwab of internal/testutil/oauthfake (access
// tokens shortened to 2 seconds, so a few refreshes happen in seconds) and an embedded
// Redis (miniredis) unless REDIS_URL names a real one; a simulated human opens the
// login page. With -real it talks to Schwab instead:
//
//	SCHWAB_APP_KEY=… SCHWAB_APP_SECRET=… SCHWAB_CALLBACK_URL=https://127.0.0.1:8182/callback \
//	  REDIS_URL=redis://localhost:6379/0 go run ./examples/schwab -real -listen 127.0.0.1:8182
//
// then open the printed login URL in a browser (the callback URL must be the app's, and
// served by -listen, behind TLS if it says https: put your reverse proxy in front).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/demoenv"
	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/oauthbroker/schwab"
	"github.com/brokertoken/brokertoken/tokencache"
)

func main() {
	useReal := flag.Bool("real", false, "talk to Schwab (SCHWAB_APP_KEY, SCHWAB_APP_SECRET, SCHWAB_CALLBACK_URL)")
	listen := flag.String("listen", "127.0.0.1:0", "where the login page and the callback are served")
	flag.Parse()
	redisOpts, stop, err := demoenv.RedisOptions()
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	if *useReal {
		err = runReal(ctx, os.Stdout, redisOpts, *listen)
	} else {
		ctx, cancelDemo := context.WithTimeout(ctx, time.Minute)
		defer cancelDemo()
		err = run(ctx, os.Stdout, redisOpts, "schwab-demo")
	}
	if err != nil {
		log.Fatal(err)
	}
}

// The demo app's credentials, registered with the fake Schwab.
const (
	demoAppKey    = "demo-app-key"
	demoAppSecret = "demo-app-secret-do-not-print"
	demoUser      = "schwab-main"
)

// run is the demo: the fake Schwab, the writer (web) process, a read-only service, and
// the human, sharing one Redis under prefix.
func run(ctx context.Context, w io.Writer, redisOpts *redis.Options, prefix string) error {
	fake := oauthfake.Start(oauthfake.Options{AccessTokenLifetime: 2 * time.Second})
	defer fake.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	fake.AddClient(demoAppKey, demoAppSecret, base+"/schwab/callback")

	// The writer: the only process with the app's secret (the daemon, in production).
	wdb := redis.NewClient(redisOpts)
	defer wdb.Close()
	b, err := oauthbroker.New(oauthbroker.Options{
		Provider:     schwab.ProviderAt(fake.URL()),
		ClientID:     demoAppKey,
		ClientSecret: demoAppSecret,
		RedirectURL:  base + "/schwab/callback",
		StartURL:     base + "/schwab/login",
		User:         demoUser,
		Redis:        wdb,
		Prefix:       prefix,
	})
	if err != nil {
		return err
	}
	defer b.Close() // after the writer's cache: stores a rotation Redis has not taken yet
	writer, err := tokencache.New(tokencache.Options{Redis: wdb, Prefix: prefix, Authenticator: b.Authenticator()})
	if err != nil {
		return err
	}
	defer writer.Close()
	srv := serveLogin(ln, b, writer)
	defer srv.Close()

	// The service: read-only, no secret, no refresh token.
	sdb := redis.NewClient(redisOpts)
	defer sdb.Close()
	svc, err := tokencache.New(tokencache.Options{Redis: sdb, Prefix: prefix})
	if err != nil {
		return err
	}
	defer svc.Close()
	api := &http.Client{Transport: &tokencache.Transport{Cache: svc, Account: demoUser}}

	changes := svc.Watch(ctx, demoUser) // before Token, so the first token is not missed
	_, err = svc.Token(ctx, demoUser)
	fmt.Fprintf(w, "service: no token yet (%v); a human authorizes at %s\n", errors.Is(err, tokencache.ErrNoToken), base+"/schwab/login")
	status, err := humanAuthorizes(ctx, base+"/schwab/login")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "human: authorizes the app -> HTTP %d\n", status)
	select { // the service hears of the token (the cache's announcement)
	case <-changes:
	case <-ctx.Done():
		return ctx.Err()
	}

	// The writer keeps the token fresh; the service just uses it.
	fctx, stopFresh := context.WithCancel(ctx)
	freshDone := make(chan struct{})
	go func() {
		defer close(freshDone)
		keepFresh(fctx, writer)
	}()
	defer func() { stopFresh(); <-freshDone }() // before the writer closes
	seen := map[string]bool{}
	calls := 0
	for len(seen) < 4 {
		accounts, tok, err := listAccounts(ctx, api, svc, fake.URL())
		if err != nil {
			return err
		}
		calls++
		if !seen[tok] {
			seen[tok] = true
			fmt.Fprintf(w, "service: GET /trader/v1/accounts/accountNumbers with token %s -> %s\n", tokencache.Redact(tok), accounts)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	st, err := oauthbroker.ReadStatus(ctx, sdb, prefix, demoUser) // a reader's view
	if err != nil {
		return err
	}
	stats := fake.Stats()
	fmt.Fprintf(w, "status: %s, generation %d, %d refreshes, refresh token expires in %s\n",
		st.State, st.Generation, st.Rotations, time.Until(st.RefreshExpiry).Round(time.Hour))
	fmt.Fprintf(w, "done: 1 authorization, %d refreshes at Schwab (%d reused), %d API calls, %d refused\n",
		stats.Refreshes, stats.ReuseDetections, calls, stats.APIRejected)
	return nil
}

// serveLogin serves the login page and the callback on ln.
func serveLogin(ln net.Listener, b *oauthbroker.Broker, store oauthbroker.Store) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/schwab/login", b.LoginHandler())            // behind your operators' authentication
	mux.Handle("/schwab/callback", b.RedirectHandler(store)) // the app's callback URL
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv
}

// humanAuthorizes opens the login page and follows the redirects, as a browser would.
func humanAuthorizes(ctx context.Context, loginURL string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loginURL, nil)
	if err != nil {
		return 0, err
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		return 0, err
	}
	browser := &http.Client{Jar: jar} // the login binds the authorization to the browser's cookie
	resp, err := browser.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	browser.CloseIdleConnections()
	return resp.StatusCode, nil
}

// keepFresh asks the writer's cache for the token now and then, as the daemon does for
// each of its users: the cache refreshes before expiry.
func keepFresh(ctx context.Context, c *tokencache.Cache) {
	for ctx.Err() == nil {
		_, _ = c.Token(ctx, demoUser)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// listAccounts calls the Trader API through the cache's transport and returns the
// account numbers and the token it was served with.
func listAccounts(ctx context.Context, api *http.Client, c *tokencache.Cache, base string) (string, string, error) {
	tok, err := c.Token(ctx, demoUser)
	if err != nil {
		return "", "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+schwab.TraderPath+"/accounts/accountNumbers", nil)
	if err != nil {
		return "", "", err
	}
	resp, err := api.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("accountNumbers: HTTP %d", resp.StatusCode)
	}
	var accounts []struct {
		AccountNumber string `json:"accountNumber"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&accounts); err != nil {
		return "", "", err
	}
	var nums []string
	for _, a := range accounts {
		nums = append(nums, a.AccountNumber)
	}
	return fmt.Sprintf("HTTP 200 %v", nums), tok.AccessToken, nil
}

// runReal serves the login page and the callback for Schwab itself, and lists the
// accounts with the newest token every minute until interrupted.
func runReal(ctx context.Context, w io.Writer, redisOpts *redis.Options, listen string) error {
	key, secret, callback := os.Getenv("SCHWAB_APP_KEY"), os.Getenv("SCHWAB_APP_SECRET"), os.Getenv("SCHWAB_CALLBACK_URL")
	if key == "" || secret == "" || callback == "" {
		return errors.New("-real needs SCHWAB_APP_KEY, SCHWAB_APP_SECRET and SCHWAB_CALLBACK_URL")
	}
	rdb := redis.NewClient(redisOpts)
	defer rdb.Close()
	b, err := oauthbroker.New(oauthbroker.Options{Provider: schwab.Provider(), ClientID: key, ClientSecret: secret,
		RedirectURL: callback, User: demoUser, Redis: rdb,
		Logger: slog.New(slog.NewTextHandler(w, nil)),
		Hooks: oauthbroker.Hooks{Revoked: func(user string, err *oauthbroker.LoginRequiredError) {
			fmt.Fprintf(w, "ALERT: %v: restart this example to authorize again\n", err)
		}}})
	if err != nil {
		return err
	}
	defer b.Close()
	c, err := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: b.Authenticator()})
	if err != nil {
		return err
	}
	defer c.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", b.RedirectHandler(c)) // the callback URL's path, whatever it is
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	link, err := b.LoginURL(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "open in a browser (valid 10 minutes): %s\n", link)
	api := &http.Client{Transport: &tokencache.Transport{Cache: c, Account: demoUser}}
	for {
		if accounts, _, err := listAccounts(ctx, api, c, schwab.BaseURL); err != nil {
			fmt.Fprintf(w, "service: %v\n", strings.TrimSpace(err.Error()))
		} else {
			fmt.Fprintf(w, "service: %s\n", accounts)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Minute):
		}
	}
}
