package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/zerodha"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

func TestKiteFeedDemo(t *testing.T) {
	srv := testutil.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, srv.Options(), srv.Prefix), out.String())
	got := out.String()
	t.Log("\n" + got)
	for _, want := range []string{
		`feed: no token yet; waiting for a human to log in at http://127\.0\.0\.1:\d+/kite/login`,
		`human: logs in -> HTTP 200 "Logged in to Kite"`,
		`feed: connected with token \w{6}…\(32\) \(version \d+\); ticks flowing`,
		`feed: Kite refused token \w{6}…\(32\) \(zerodha: /feed: HTTP 403 TokenException: .*\); reported to the cache`,
		`feed: waiting for the next login; feed attempts in the last 500ms: 0`,
		`done: 3 logins, 3 feed connections, [12] refused attempts, \d+ ticks, no restart`,
	} {
		assert.Regexp(t, regexp.MustCompile(want), got)
	}
	assert.NotContains(t, got, demoAPISecret)
	assert.NotRegexp(t, `[A-Za-z0-9]{32}`, got, "a whole token was printed")
}

// world is one end-to-end setup: a fake Kite, a real Redis, the web process (handlers
// in front of its own cache), and the feed service with its own cache and a Feed.
type world struct {
	kite     *kitefake.Server
	redis    *testutil.Server
	startURL string
	web      *httptest.Server
	auth     *countingAuth
	cache    *tokencache.Cache // the feed service's
	feed     *Feed
	logs     *testutil.Buffer

	mu     sync.Mutex // guards events
	events []Event
	ticks  atomic.Int64
}

// countingAuth counts the feed cache's calls to the Authenticator; gate, when set,
// holds each call until it is closed.
type countingAuth struct {
	tokencache.Authenticator
	n       atomic.Int64
	entered chan struct{}
	gate    chan struct{}
}

func (c *countingAuth) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	c.n.Add(1)
	if c.gate != nil {
		c.entered <- struct{}{}
		<-c.gate
	}
	return c.Authenticator.Login(ctx, user)
}

const (
	testKey    = "feedtestkey"
	testSecret = "feed-test-secret-7d1e0b"
)

// newWorld builds everything; recheck is the Feed's, and the feed cache's RetryMax.
func newWorld(t *testing.T, recheck time.Duration, gated bool) *world {
	t.Helper()
	w := &world{kite: kitefake.New(t, kitefake.Options{TickInterval: 10 * time.Millisecond}),
		redis: testutil.Redis(t), logs: &testutil.Buffer{}}
	logger := slog.New(slog.NewTextHandler(w.logs, nil))
	mux := http.NewServeMux()
	w.web = httptest.NewServer(mux)
	t.Cleanup(w.web.Close)
	w.startURL = w.web.URL + "/kite/login"
	w.kite.AddApp(testKey, testSecret, w.web.URL+"/kite/redirect")
	kiteHTTP := &http.Transport{}
	t.Cleanup(kiteHTTP.CloseIdleConnections)
	base := zerodha.Options{APIKey: testKey, Prefix: w.redis.Prefix, LoginURL: w.kite.LoginURL(), APIURL: w.kite.URL(),
		StartURL: w.startURL, Logger: logger, HTTPClient: &http.Client{Transport: kiteHTTP}}

	// The web process.
	webOpts := base
	webOpts.APISecret, webOpts.Redis = testSecret, w.redis.Client(t)
	webApp, err := zerodha.New(webOpts)
	require.NoError(t, err)
	webCache, err := tokencache.New(tokencache.Options{Redis: webOpts.Redis, Prefix: w.redis.Prefix, Logger: logger})
	require.NoError(t, err)
	t.Cleanup(func() { webCache.Close() })
	mux.Handle("/kite/login", webApp.LoginHandler())
	mux.Handle("/kite/redirect", webApp.RedirectHandler(webCache))

	// The feed service.
	feedOpts := base
	feedOpts.Redis = w.redis.Client(t)
	feedApp, err := zerodha.New(feedOpts)
	require.NoError(t, err)
	w.auth = &countingAuth{Authenticator: feedApp.Authenticator()}
	if gated {
		w.auth.entered, w.auth.gate = make(chan struct{}, 1), make(chan struct{})
	}
	w.cache, err = tokencache.New(tokencache.Options{Redis: feedOpts.Redis, Prefix: w.redis.Prefix,
		Authenticator: w.auth, RetryMin: recheck / 2, RetryMax: recheck, Logger: logger})
	require.NoError(t, err)
	t.Cleanup(func() { w.cache.Close() })
	feedHTTP := &http.Transport{}
	t.Cleanup(feedHTTP.CloseIdleConnections)
	w.feed = &Feed{
		Cache:    w.cache,
		User:     feedApp.User(),
		Dial:     HTTPDialer(&http.Client{Transport: feedHTTP}, w.kite.FeedURL(), testKey),
		OnTick:   func(string) { w.ticks.Add(1) },
		OnEvent:  func(e Event) { w.mu.Lock(); w.events = append(w.events, e); w.mu.Unlock() },
		Recheck:  recheck,
		RetryMin: 20 * time.Millisecond,
		RetryMax: 200 * time.Millisecond,
		Logger:   logger,
	}
	return w
}

// start runs the feed until the test ends, and checks it stops with its context.
func (w *world) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.feed.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.ErrorIs(t, err, context.Canceled)
		case <-time.After(5 * time.Second):
			t.Error("the feed did not stop with its context")
		}
	})
}

// count returns how many events of kind the feed reported.
func (w *world) count(kind EventKind) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, e := range w.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// connectedWith returns the tokens (redacted) of the feed's connections, in order.
func (w *world) connectedWith() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, e := range w.events {
		if e.Kind == EventConnected {
			out = append(out, e.Token)
		}
	}
	return out
}

// awaitCount waits until the feed reported n events of kind.
func (w *world) awaitCount(t *testing.T, kind EventKind, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for w.count(kind) < n {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %d %s events; events so far: %v", n, kind, w.kinds())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (w *world) kinds() []EventKind {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []EventKind
	for _, e := range w.events {
		out = append(out, e.Kind)
	}
	return out
}

// login is the simulated human logging in through the web process.
func (w *world) login(t *testing.T) {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(w.startURL)
	require.NoError(t, err)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(page))
}

// successfulFeeds returns the tokens of the fake's successful feed connections.
func (w *world) successfulFeeds() []string {
	var out []string
	for _, a := range w.kite.FeedAttempts() {
		if a.Status == http.StatusOK {
			out = append(out, a.AccessToken)
		}
	}
	return out
}

func redactAll(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, s := range tokens {
		out[i] = tokencache.Redact(s)
	}
	return out
}

// The scenario: logins by a human through the handler make the running feed
// reconnect exactly once each, with the new token; a 403 in between makes it wait for
// the next login without looping.
func TestFeedReconnectsOncePerLoginAndWaitsAfterARejection(t *testing.T) {
	w := newWorld(t, 300*time.Millisecond, false)
	w.start(t)
	w.awaitCount(t, EventWaiting, 1)
	assert.Empty(t, w.kite.FeedAttempts(), "no token, no dial")

	w.login(t)
	w.awaitCount(t, EventConnected, 1)
	require.Equal(t, w.kite.AccessTokens(), w.successfulFeeds())

	// The morning flush: the stream ends, the redial is refused, the feed waits.
	w.kite.ExpireAccessTokens()
	w.awaitCount(t, EventRejected, 1)
	w.awaitCount(t, EventWaiting, 2)
	attempts, logins := len(w.kite.FeedAttempts()), w.auth.n.Load()
	time.Sleep(time.Second) // a loop would show here
	assert.Equal(t, attempts, len(w.kite.FeedAttempts()), "no feed attempt while waiting for a login")
	assert.Equal(t, 2, attempts, "one connection, one refused redial")
	assert.LessOrEqual(t, w.auth.n.Load()-logins, int64(4), "the cache asks at most once per RetryMax (300 ms)")
	assert.Equal(t, 1, w.count(EventConnected))
	assert.Equal(t, 1, w.count(EventRejected))

	// The next login: one reconnection, with the new token.
	w.login(t)
	w.awaitCount(t, EventConnected, 2)

	// Logins while connected: each kills the token in use; each gives one reconnection.
	for i := 3; i <= 5; i++ {
		w.login(t)
		w.awaitCount(t, EventConnected, i)
	}
	time.Sleep(200 * time.Millisecond) // room for an extra, wrong reconnection to show
	issued := w.kite.AccessTokens()
	require.Len(t, issued, 5)
	assert.Equal(t, issued, w.successfulFeeds(), "exactly one connection per login, each with that login's token")
	assert.Equal(t, redactAll(issued), w.connectedWith())
	assert.Equal(t, 5, w.count(EventConnected))
	assert.Equal(t, 1, w.kite.ActiveFeeds())
	assert.Greater(t, w.ticks.Load(), int64(0))
	refused := len(w.kite.FeedAttempts()) - len(issued)
	assert.LessOrEqual(t, refused, 1+3, "at most one refused redial per killed token")

	logs := w.logs.String()
	for _, s := range append(issued, testSecret) {
		assert.NotContains(t, logs, s)
	}
	assert.Contains(t, logs, "feed: waiting for a human to log in to Kite")
}

// A stream that ends while its token is still good is dialled again with the same token.
func TestFeedRedialsADroppedStream(t *testing.T) {
	w := newWorld(t, 300*time.Millisecond, false)
	w.login(t)
	w.start(t)
	w.awaitCount(t, EventConnected, 1)
	w.kite.DropFeeds()
	w.awaitCount(t, EventDropped, 1)
	w.awaitCount(t, EventConnected, 2)
	tok := w.kite.AccessTokens()[0]
	assert.Equal(t, []string{tok, tok}, w.successfulFeeds())
	assert.Zero(t, w.count(EventRejected))
}

// tokencache gap: a login stored while the cache's (failing) login attempt runs joins
// that attempt, so Watch stays silent and Token keeps answering the failure until
// RetryMax. The feed's Recheck picks the login up anyway.
func TestFeedRecoversFromALoginDuringAFailedRefresh(t *testing.T) {
	w := newWorld(t, 300*time.Millisecond, true)
	w.start(t)
	<-w.auth.entered // the cache is asking the Authenticator, which will say "log in"
	w.login(t)
	time.Sleep(50 * time.Millisecond) // the announcement arrives meanwhile
	close(w.auth.gate)
	w.awaitCount(t, EventConnected, 1)
	assert.Equal(t, w.kite.AccessTokens(), w.successfulFeeds())
}

func TestFeedStopsWhenTheCacheCloses(t *testing.T) {
	w := newWorld(t, time.Minute, false)
	w.login(t)
	done := make(chan error, 1)
	go func() { done <- w.feed.Run(context.Background()) }()
	w.awaitCount(t, EventConnected, 1)
	require.NoError(t, w.cache.Close())
	select {
	case err := <-done:
		assert.ErrorIs(t, err, tokencache.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("the feed did not stop when its cache closed")
	}
	require.Eventually(t, func() bool { return w.kite.ActiveFeeds() == 0 }, 5*time.Second, 5*time.Millisecond)
}
