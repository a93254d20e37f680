package zerodha_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/zerodha"
)

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{}) // go-redis logs failed dials of the closed-cache tests
	goleak.VerifyTestMain(m, testutil.LeakOptions()...)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

const (
	apiKey    = "fixturekey"
	apiSecret = "fixture-API-secret-3f9a7c21d4"
)

// fixture is a fake Kite, a real Redis, the app's web process (LoginHandler and
// RedirectHandler in front of its own cache) and a log of everything.
type fixture struct {
	kite  *kitefake.Server
	redis *testutil.Server
	app   *zerodha.App
	opts  zerodha.Options
	cache *tokencache.Cache // the web process's cache
	web   *httptest.Server
	logs  *testutil.Buffer
}

// newFixture starts everything; edit adjusts the App's options before New.
func newFixture(t *testing.T, kiteOpts kitefake.Options, edit func(*zerodha.Options)) *fixture {
	t.Helper()
	f := &fixture{kite: kitefake.New(t, kiteOpts), redis: testutil.Redis(t), logs: &testutil.Buffer{}}
	logger := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mux := http.NewServeMux()
	f.web = httptest.NewServer(mux)
	t.Cleanup(f.web.Close)
	f.kite.AddApp(apiKey, apiSecret, f.web.URL+"/kite/redirect")

	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	f.opts = zerodha.Options{
		APIKey:     apiKey,
		APISecret:  apiSecret,
		Redis:      f.redis.Client(t),
		Prefix:     f.redis.Prefix,
		LoginURL:   f.kite.LoginURL(),
		APIURL:     f.kite.URL(),
		StartURL:   f.web.URL + "/kite/login",
		HTTPClient: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		Logger:     logger,
	}
	if edit != nil {
		edit(&f.opts)
	}
	app, err := zerodha.New(f.opts)
	require.NoError(t, err)
	f.app = app
	f.cache = f.newCache(t, nil)
	mux.Handle("/kite/login", app.LoginHandler())
	mux.Handle("/kite/redirect", app.RedirectHandler(f.cache))
	return f
}

// newCache starts another "process": its own Redis connection and cache.
func (f *fixture) newCache(t *testing.T, auth tokencache.Authenticator) *tokencache.Cache {
	t.Helper()
	opts := tokencache.Options{Redis: f.redis.Client(t), Prefix: f.redis.Prefix, RetryMin: 50 * time.Millisecond,
		RetryMax: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(f.logs, nil))}
	if auth != nil {
		opts.Authenticator = auth
	}
	channel := f.redis.Prefix + ":invalidate"
	subscribers := func() int64 {
		n, err := opts.Redis.PubSubNumSub(context.Background(), channel).Result()
		require.NoError(t, err)
		return n[channel]
	}
	before := subscribers()
	c, err := tokencache.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	// New subscribes in the background; a login published before that is missed (the
	// cache rereads Redis once subscribed), so the tests wait for it, as long-lived
	// processes in production effectively do.
	require.Eventually(t, func() bool { return subscribers() > before }, 5*time.Second, time.Millisecond)
	return c
}

// browser is the human's browser: it follows redirects.
func browser(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// visit GETs u with the browser and returns the final status and page.
func visit(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := browser(t).Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// login is the human logging in through the app's start URL.
func (f *fixture) login(t *testing.T) (int, string) {
	t.Helper()
	return visit(t, f.web.URL+"/kite/login")
}

// secrets returns every value that must never appear in a page, log or error.
func (f *fixture) secrets() []string {
	s := []string{apiSecret}
	s = append(s, f.kite.AccessTokens()...)
	return s
}

// assertNoSecrets fails if text contains a secret.
func (f *fixture) assertNoSecrets(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range f.secrets() {
		if strings.Contains(text, s) {
			t.Errorf("%s contains a secret (%s...)", what, s[:6])
		}
	}
}

// clock is a settable clock for kitefake.Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
