package oauthbroker_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/oauthbroker/schwab"
	"github.com/brokertoken/brokertoken/tokencache"
)

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{}) // go-redis logs the dials of the outage tests
	goleak.VerifyTestMain(m, testutil.LeakOptions()...)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

const (
	appKey    = "fixture-app-key"
	appSecret = "fixture-app-secret-7c1e9b"
)

// fixture is a fake provider, a Redis, and the web process that answers the redirect
// (a Broker with its own cache), logging to logs.
type fixture struct {
	fake  *oauthfake.Server
	redis *testutil.Server
	addr  string // where brokers reach Redis (the server, or a proxy)
	web   *httptest.Server
	b     *oauthbroker.Broker
	cache *tokencache.Cache
	opts  oauthbroker.Options // the web broker's options, for more brokers
	logs  *testutil.Buffer
}

// fixtureConfig adjusts a fixture before it starts.
type fixtureConfig struct {
	fake   oauthfake.Options
	redis  *testutil.Server // default testutil.Redis
	addr   string           // default the server's address
	broker func(*oauthbroker.Options)
}

func newFixture(t *testing.T, cfg fixtureConfig) *fixture {
	t.Helper()
	if cfg.fake.AccessTokenLifetime == 0 {
		cfg.fake.AccessTokenLifetime = 30 * time.Minute
	}
	f := &fixture{fake: oauthfake.New(t, cfg.fake), redis: cfg.redis, addr: cfg.addr, logs: &testutil.Buffer{}}
	if f.redis == nil {
		f.redis = testutil.Redis(t)
	}
	if f.addr == "" {
		f.addr = f.redis.Addr()
	}
	mux := http.NewServeMux()
	f.web = httptest.NewServer(mux)
	t.Cleanup(f.web.Close)
	f.fake.AddClient(appKey, appSecret, f.web.URL+"/callback")
	f.opts = oauthbroker.Options{
		Provider:       schwab.ProviderAt(f.fake.URL()),
		ClientID:       appKey,
		ClientSecret:   appSecret,
		RedirectURL:    f.web.URL + "/callback",
		User:           f.redis.Name("schwab"),
		Prefix:         f.redis.Prefix,
		RequestTimeout: 2 * time.Second,
		Logger:         slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	f.opts.Provider.AccessTokenLifetime = 0 // the fake always says expires_in
	if cfg.broker != nil {
		cfg.broker(&f.opts)
	}
	f.b = f.broker(t, nil)
	f.cache = f.newCache(t, f.b, nil)
	mux.Handle("/callback", f.b.RedirectHandler(f.cache))
	mux.Handle("/login", f.b.LoginHandler())
	return f
}

// client returns a new Redis client to the fixture's Redis (through the proxy when
// there is one), closed at cleanup.
func (f *fixture) client(t *testing.T) *redis.Client {
	t.Helper()
	o := f.redis.Options()
	o.Addr = f.addr
	o.MaxRetries = -1
	o.ContextTimeoutEnabled = true
	rdb := redis.NewClient(o)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// broker returns another process's Broker for the same user (own Redis client).
func (f *fixture) broker(t *testing.T, edit func(*oauthbroker.Options)) *oauthbroker.Broker {
	t.Helper()
	o := f.opts
	o.Redis = f.client(t)
	if edit != nil {
		edit(&o)
	}
	b, err := oauthbroker.New(o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// newCache returns a writer cache refreshing with b.
func (f *fixture) newCache(t *testing.T, b *oauthbroker.Broker, edit func(*tokencache.Options)) *tokencache.Cache {
	t.Helper()
	o := tokencache.Options{Redis: f.client(t), Prefix: f.redis.Prefix, Authenticator: b.Authenticator(),
		RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	if edit != nil {
		edit(&o)
	}
	c, err := tokencache.New(o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// authorize plays the human: opens the login page and follows the provider's
// redirect back to the callback; it returns the final page.
func (f *fixture) authorize(t *testing.T) (int, string) {
	t.Helper()
	resp, err := browser(t, true).Get(f.web.URL + "/login")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// browser returns an HTTP client with its own cookie jar, as a browser; follow says
// whether it follows redirects.
func browser(t *testing.T, follow bool) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

// mustAuthorize authorizes and fails the test unless it worked.
func (f *fixture) mustAuthorize(t *testing.T) {
	t.Helper()
	status, page := f.authorize(t)
	require.Equal(t, http.StatusOK, status, page)
	require.Contains(t, page, "Authorized")
}

// secret reads the raw secret record (the writer's view).
func (f *fixture) secret(t *testing.T) string {
	t.Helper()
	v, err := f.redis.Client(t).Get(context.Background(), f.redis.Prefix+":secret:{"+f.opts.User+"}:oauth").Result()
	if err == redis.Nil {
		return ""
	}
	require.NoError(t, err)
	return v
}

// storedRefreshToken returns the refresh token in the secret record ("" none).
func (f *fixture) storedRefreshToken(t *testing.T) string {
	t.Helper()
	return refreshTokenIn(f.secret(t))
}

// refreshTokenIn returns the refresh token in a raw secret record ("" none).
func refreshTokenIn(s string) string {
	_, rest, ok := strings.Cut(s, `"refresh_token":"`)
	if !ok {
		return ""
	}
	rt, _, _ := strings.Cut(rest, `"`)
	return rt
}

// accessTokenIn returns the access token in a raw secret record ("" none).
func accessTokenIn(s string) string {
	_, rest, ok := strings.Cut(s, `"access_token":"`)
	if !ok {
		return ""
	}
	at, _, _ := strings.Cut(rest, `"`)
	return at
}
