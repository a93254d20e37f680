package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/tokencache"
)

// fakeClock is a settable clock for the reminder.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// istTime is a time in India: 2026-11-30 is a Monday.
func istTime(day, hour, minute int) time.Time {
	return time.Date(2026, 11, day, hour, minute, 0, 0, ist)
}

// kiteSecretOf is the distinctive API secret of a Kite app of these tests.
func kiteSecretOf(name string) string { return kiteSecret + "-" + url.PathEscape(name) }

// kiteSetup is a fake Kite, a Redis, and the daemon's Kite pieces on them without the
// rest of the daemon: the login page on an httptest server, a writer cache with the
// daemon's Authenticator, a real alerter posting to a webhook, and a settable clock.
type kiteSetup struct {
	t      *testing.T
	rdb    *redis.Client
	prefix string
	fake   *kitefake.Server
	page   *httptest.Server
	cfg    *config
	deps   *deps
	cache  *tokencache.Cache
	desk   *loginDesk
	hook   *webhook
	clock  *fakeClock
	logs   *testutil.Buffer
	names  []string
}

type kiteSetupOptions struct {
	names  []string
	fake   kitefake.Options
	login  func(*loginConfig) // adjusts the page's configuration
	redis  *testutil.Server   // default: a new one
	noHook bool
}

func newKiteSetup(t *testing.T, o kiteSetupOptions) *kiteSetup {
	t.Helper()
	srv := o.redis
	if srv == nil {
		srv = testutil.Redis(t)
	}
	s := &kiteSetup{t: t, rdb: srv.Client(t), prefix: srv.Prefix, fake: kitefake.New(t, o.fake),
		hook: newWebhook(t), clock: &fakeClock{now: istTime(30, 7, 0)}, logs: &testutil.Buffer{}, names: o.names}
	var handler http.Handler = http.NotFoundHandler()
	var hmu sync.Mutex
	s.page = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hmu.Lock()
		h := handler
		hmu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(s.page.Close)

	var entries []map[string]string
	for i, n := range o.names {
		key := fmt.Sprintf("key%d", i)
		entries = append(entries, map[string]string{"broker": "kite", "name": n, "api_key": key, "api_secret": kiteSecretOf(n)})
		s.fake.AddApp(key, kiteSecretOf(n), s.page.URL+"/login/"+url.PathEscape(n)+"/redirect")
	}
	raw, err := json.Marshal(entries)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "credentials.json")
	require.NoError(t, os.WriteFile(path, raw, 0o600))

	s.cfg = &config{cmd: "run", prefix: s.prefix, credentials: path, alertWebhook: s.hook.srv.URL, alertFormat: "json",
		login: loginConfig{pageURL: s.page.URL + "/login", pagePath: "/login", served: s.page.Listener.Addr().String(), remind: defaultReminder,
			kiteAPIURL: s.fake.URL(), kiteLoginURL: s.fake.LoginURL()}}
	if o.noHook {
		s.cfg.alertWebhook = ""
	}
	if o.login != nil {
		o.login(&s.cfg.login)
	}
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	scrub := &scrubber{}
	file, err := loadCredentials(path)
	require.NoError(t, err)
	for _, k := range file.kite {
		scrub.add(k.APISecret)
	}
	kite, err := newKiteUsers(file.kite, s.rdb, s.cfg, log)
	require.NoError(t, err)
	s.deps = &deps{file: file, kite: kite, rdb: s.rdb}
	s.desk = newLoginDesk(s.cfg.login, s.prefix, log, scrub, s.clock.Now)
	s.cache, err = tokencache.New(tokencache.Options{Redis: s.rdb, Prefix: s.prefix, Authenticator: s.deps.authenticator(2, log, s.desk.checked),
		RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond, Logger: log,
		Hooks: tokencache.Hooks{RefreshFailed: func(user, op string, err error) { s.desk.noteFailure(user, op, err) }}})
	require.NoError(t, err)
	alerts := newAlerter(s.cfg, s.rdb, log, scrub, testMetrics(t))
	s.desk.attach(s.deps.browserUsers(), s.cache, alerts)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); alerts.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = s.cache.Close()
		if t.Failed() {
			t.Logf("logs:\n%s", s.logs.String())
		}
	})
	hmu.Lock()
	handler = s.desk.handler()
	hmu.Unlock()
	return s
}

// handleEvents runs the desk's event loop (as run does, without the reminder's ticks)
// until the test ends.
func (s *kiteSetup) handleEvents() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-s.desk.events:
				s.desk.handle(ctx, ev)
			}
		}
	}()
	s.t.Cleanup(func() { cancel(); <-done })
}

// noRedirects is an HTTP client that shows each redirect instead of following it.
func noRedirects(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// fetch sends req and returns the status, the Location header and the body.
func fetch(t *testing.T, c *http.Client, req *http.Request) (int, string, string) {
	t.Helper()
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}

// login goes through a login as a browser would, by HTTP: the page's button (with
// auth, when given), Kite's login (the fake completes it at once), Kite's redirect to
// the daemon. It returns the redirect URL and the page it answered.
func (s *kiteSetup) login(name string, auth func(*http.Request)) (redirect string, code int, body string) {
	t := s.t
	t.Helper()
	c := noRedirects(t)
	req, _ := http.NewRequest(http.MethodPost, s.page.URL+"/login/"+url.PathEscape(name)+"/start", nil)
	if auth != nil {
		auth(req)
	}
	code, loc, body := fetch(t, c, req)
	require.Equal(t, http.StatusSeeOther, code, body)
	require.True(t, strings.HasPrefix(loc, s.fake.LoginURL()+"?"), loc)
	req, _ = http.NewRequest(http.MethodGet, loc, nil)
	code, redirect, body = fetch(t, c, req)
	require.Equal(t, http.StatusFound, code, body)
	require.True(t, strings.HasPrefix(redirect, s.page.URL+"/login/"), redirect)
	req, _ = http.NewRequest(http.MethodGet, redirect, nil)
	code, _, body = fetch(t, c, req)
	return redirect, code, body
}

// stored returns the token Redis holds for name (nil if none).
func (s *kiteSetup) stored(name string) *tokencache.Token {
	s.t.Helper()
	st, err := s.cache.Status(context.Background(), name)
	require.NoError(s.t, err)
	return st.Token
}

// flushAlerts waits until every alert queued so far has been handled: it queues a
// redis_up alert (always sent) and waits for it to arrive.
func (s *kiteSetup) flushAlerts() map[string]int {
	s.t.Helper()
	before := s.hook.events()[eventRedisUp]
	s.desk.alerts.enqueue(alertEvent{Event: eventRedisUp, Time: time.Now()})
	require.Eventually(s.t, func() bool { return s.hook.events()[eventRedisUp] > before }, 20*time.Second, 10*time.Millisecond)
	ev := s.hook.events()
	delete(ev, eventRedisUp)
	return ev
}

// The human path over HTTP: the page's button starts Kite's login with a single-use
// state, Kite's redirect is exchanged once and stored with the cache (every Watch
// channel hears of it), and replaying the redirect shows an error page and stores
// nothing.
func TestLoginFromThePageStoresTheTokenOnce(t *testing.T) {
	s := newKiteSetup(t, kiteSetupOptions{names: []string{"kite_main"}, fake: kitefake.Options{RefreshTokens: true}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reader, err := tokencache.New(tokencache.Options{Redis: s.rdb, Prefix: s.prefix, MaxStaleness: time.Hour})
	require.NoError(t, err)
	defer reader.Close()
	changes := reader.Watch(ctx, "kite_main")

	redirect, code, body := s.login("kite_main", nil)
	require.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, "Logged in to Kite")
	tok := s.stored("kite_main")
	require.NotNil(t, tok)
	assert.True(t, s.fake.Valid(tok.AccessToken))
	select {
	case got := <-changes:
		assert.Equal(t, tok.Version, got.Version)
		assert.Equal(t, tok.AccessToken, got.AccessToken)
	case <-ctx.Done():
		t.Fatal("the watcher heard of no token")
	}

	// The redirect again: the state was used; nothing is exchanged or stored.
	exchanges := s.fake.Calls(kitefake.SessionToken, http.MethodPost, 0)
	req, _ := http.NewRequest(http.MethodGet, redirect, nil)
	code, _, body = fetch(t, noRedirects(t), req)
	assert.Equal(t, http.StatusBadRequest, code)
	assert.Contains(t, body, "expired or was already used")
	assert.Contains(t, body, `href="`+s.cfg.login.pageURL+`"`, "the error page links back to the login page")
	assert.Equal(t, exchanges, s.fake.Calls(kitefake.SessionToken, http.MethodPost, 0))
	assert.Equal(t, tok.Version, s.stored("kite_main").Version)

	// An exchange Kite refuses shows its words and stores nothing.
	s.fake.Script(kitefake.SessionToken, kitefake.ErrorAnswer(http.StatusForbidden, "TokenException", kitefake.MsgInvalidToken))
	_, code, body = s.login("kite_main", nil)
	assert.Equal(t, http.StatusBadGateway, code)
	assert.Contains(t, body, "Kite refused the login")
	assert.Equal(t, tok.Version, s.stored("kite_main").Version)

	// The page now shows the token as valid.
	c := noRedirects(t)
	req, _ = http.NewRequest(http.MethodGet, s.page.URL+"/login", nil)
	code, _, body = fetch(t, c, req)
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, `data-state="valid"`)
	assert.Contains(t, body, "AB1234 (Kite Fake)")
	assert.Contains(t, body, s.page.URL+"/login/kite_main/redirect", "the redirect URL to register")

	// Unknown users and methods.
	req, _ = http.NewRequest(http.MethodPost, s.page.URL+"/login/nobody/start", nil)
	code, _, _ = fetch(t, c, req)
	assert.Equal(t, http.StatusNotFound, code)
	req, _ = http.NewRequest(http.MethodGet, s.page.URL+"/login/kite_main/start", nil)
	code, _, _ = fetch(t, c, req)
	assert.Equal(t, http.StatusMethodNotAllowed, code)
}

// The page's protection: HTTP basic auth, or a shared secret typed into the page's form
// (then a cookie) or sent by a proxy in a header. A login cannot be started from
// another site; Kite's redirect needs no credentials (its single-use state is the proof).
func TestLoginPageProtection(t *testing.T) {
	const secret = "shared-secret-0123456789"
	t.Run("basic auth", func(t *testing.T) {
		s := newKiteSetup(t, kiteSetupOptions{names: []string{"kite_main"}, noHook: true,
			login: func(l *loginConfig) { l.basicUser, l.basicPassword = "ops", "pw-page-S3cr3t" }})
		c := noRedirects(t)
		for _, creds := range [][2]string{{"", ""}, {"ops", "wrong"}, {"other", "pw-page-S3cr3t"}} {
			req, _ := http.NewRequest(http.MethodGet, s.page.URL+"/login", nil)
			if creds[0] != "" {
				req.SetBasicAuth(creds[0], creds[1])
			}
			resp, err := c.Do(req)
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `Basic realm=`)
			assert.NotContains(t, string(b), "pw-page-S3cr3t")
			req, _ = http.NewRequest(http.MethodPost, s.page.URL+"/login/kite_main/start", nil)
			if creds[0] != "" {
				req.SetBasicAuth(creds[0], creds[1])
			}
			code, _, _ := fetch(t, c, req)
			assert.Equal(t, http.StatusUnauthorized, code, "no login without the credentials")
		}
		auth := func(r *http.Request) { r.SetBasicAuth("ops", "pw-page-S3cr3t") }
		req, _ := http.NewRequest(http.MethodGet, s.page.URL+"/login", nil)
		auth(req)
		code, _, body := fetch(t, c, req)
		assert.Equal(t, http.StatusOK, code)
		assert.Contains(t, body, "Log in with Kite")
		_, code, body = s.login("kite_main", auth)
		assert.Equal(t, http.StatusOK, code, body)
		assert.Contains(t, body, "Logged in to Kite")
	})
	t.Run("shared secret", func(t *testing.T) {
		s := newKiteSetup(t, kiteSetupOptions{names: []string{"kite_main"}, noHook: true,
			login: func(l *loginConfig) { l.secret = secret }})
		c := noRedirects(t)
		get := func(mod func(*http.Request)) (int, string) {
			req, _ := http.NewRequest(http.MethodGet, s.page.URL+"/login", nil)
			if mod != nil {
				mod(req)
			}
			code, _, body := fetch(t, c, req)
			return code, body
		}
		code, body := get(nil)
		assert.Equal(t, http.StatusForbidden, code)
		assert.Contains(t, body, `name="secret"`, "the form asks for it")
		assert.NotContains(t, body, "Log in with Kite")
		code, body = get(func(r *http.Request) { r.Header.Set(secretHeader, secret) })
		assert.Equal(t, http.StatusOK, code, "a proxy's header")
		assert.Contains(t, body, "Log in with Kite")
		code, _ = get(func(r *http.Request) { r.Header.Set(secretHeader, secret+"x") })
		assert.Equal(t, http.StatusForbidden, code)

		// Starting a login needs the secret too: without it (no header, no cookie, a
		// wrong one or a forged cookie) nothing is minted in Redis.
		states := func() []string {
			keys, err := s.rdb.Keys(context.Background(), s.prefix+":zerodha:*:state:*").Result()
			require.NoError(t, err)
			return keys
		}
		for i, mod := range []func(*http.Request){
			nil,
			func(r *http.Request) { r.Header.Set(secretHeader, secret+"x") },
			func(r *http.Request) { r.AddCookie(&http.Cookie{Name: secretCookie, Value: "0123456789abcdef"}) },
			func(r *http.Request) {
				r.Header.Set("Sec-Fetch-Site", "same-origin")
				r.Header.Set("Origin", s.page.URL)
			},
		} {
			req, _ := http.NewRequest(http.MethodPost, s.page.URL+"/login/kite_main/start", nil)
			if mod != nil {
				mod(req)
			}
			code, loc, body := fetch(t, c, req)
			assert.Equal(t, http.StatusForbidden, code, "start %d", i)
			assert.Empty(t, loc, "start %d", i)
			assert.Contains(t, body, `name="secret"`, "start %d", i)
		}
		assert.Empty(t, states(), "no login state minted without the secret")

		unlock := func(value string, mod func(*http.Request)) *http.Response {
			req, _ := http.NewRequest(http.MethodPost, s.page.URL+"/login/unlock", strings.NewReader(url.Values{"secret": {value}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if mod != nil {
				mod(req)
			}
			resp, err := c.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			return resp
		}
		assert.Equal(t, http.StatusForbidden, unlock("wrong", nil).StatusCode)
		assert.Equal(t, http.StatusForbidden, unlock(secret, func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", "cross-site") }).StatusCode)
		// A browser's own form: Sec-Fetch-Site same-origin (whatever its Origin says).
		resp := unlock(secret, func(r *http.Request) {
			r.Header.Set("Sec-Fetch-Site", "same-origin")
			r.Header.Set("Origin", "null")
		})
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		// A browser without fetch metadata: its Origin.
		assert.Equal(t, http.StatusForbidden, unlock(secret, func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") }).StatusCode)
		resp = unlock(secret, func(r *http.Request) { r.Header.Set("Origin", s.page.URL) })
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		assert.Equal(t, "/login", resp.Header.Get("Location"))
		cookies := resp.Cookies()
		require.Len(t, cookies, 1)
		ck := cookies[0]
		assert.Equal(t, secretCookie, ck.Name)
		assert.True(t, ck.HttpOnly)
		assert.Equal(t, http.SameSiteLaxMode, ck.SameSite)
		assert.False(t, ck.Secure, "the page is served over http here")
		assert.NotContains(t, ck.Value, secret, "the cookie is not the secret")
		withCookie := func(r *http.Request) { r.AddCookie(ck) }
		code, body = get(withCookie)
		assert.Equal(t, http.StatusOK, code)
		assert.NotContains(t, body, secret)

		// A login started from another site is refused, even with the cookie.
		req, _ := http.NewRequest(http.MethodPost, s.page.URL+"/login/kite_main/start", nil)
		withCookie(req)
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		code, _, _ = fetch(t, c, req)
		assert.Equal(t, http.StatusForbidden, code)
		req, _ = http.NewRequest(http.MethodPost, s.page.URL+"/login/kite_main/start", nil)
		withCookie(req)
		req.Header.Set("Origin", "https://evil.example")
		code, _, _ = fetch(t, c, req)
		assert.Equal(t, http.StatusForbidden, code)

		// The whole login with the cookie; the redirect itself needs nothing.
		_, code, body = s.login("kite_main", withCookie)
		assert.Equal(t, http.StatusOK, code, body)
		assert.Contains(t, body, "Logged in to Kite")
	})
}

// The unlock cookie of an https page is Secure (whatever the scheme's case), and it
// carries its issue time under the MAC: the page refuses it after 30 days, or with a
// forged time, whatever the browser kept.
func TestUnlockCookieIsSecureAndLapses(t *testing.T) {
	const secret = "shared-secret-0123456789"
	s := newKiteSetup(t, kiteSetupOptions{names: []string{"kite_main"}, noHook: true,
		login: func(l *loginConfig) { l.secret, l.pageURL = secret, "HTTPS://ops.example.com/login" }})
	c := noRedirects(t)
	req, _ := http.NewRequest(http.MethodPost, s.page.URL+"/login/unlock", strings.NewReader(url.Values{"secret": {secret}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Len(t, resp.Cookies(), 1)
	ck := resp.Cookies()[0]
	assert.True(t, ck.Secure, "an https page's cookie goes over https only")
	assert.True(t, ck.HttpOnly)
	assert.Equal(t, 30*24*60*60, ck.MaxAge)
	assert.NotContains(t, ck.Value, secret)

	page := func(value string) int {
		req, _ := http.NewRequest(http.MethodGet, s.page.URL+"/login", nil)
		req.AddCookie(&http.Cookie{Name: secretCookie, Value: value})
		code, _, _ := fetch(t, c, req)
		return code
	}
	now := time.Now()
	assert.Equal(t, http.StatusOK, page(ck.Value))
	assert.Equal(t, http.StatusOK, page(s.desk.cookieValue(now.Add(-29*24*time.Hour))), "29 days old")
	assert.Equal(t, http.StatusForbidden, page(s.desk.cookieValue(now.Add(-31*24*time.Hour))), "31 days old")
	assert.Equal(t, http.StatusForbidden, page(s.desk.cookieValue(now.Add(time.Hour))), "issued in the future")
	old := s.desk.cookieValue(now.Add(-31 * 24 * time.Hour))
	parts := strings.Split(old, ".")
	require.Len(t, parts, 3)
	forged := parts[0] + "." + fmt.Sprint(now.Unix()) + "." + parts[2]
	assert.Equal(t, http.StatusForbidden, page(forged), "an old cookie with a new time")
	other := &loginDesk{cfg: loginConfig{secret: "another-secret-0123456789"}}
	assert.Equal(t, http.StatusForbidden, page(other.cookieValue(now)), "another secret's cookie")
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("brokertoken login page v1"))
	assert.Equal(t, http.StatusForbidden, page(hex.EncodeToString(m.Sum(nil))), "the old cookie without a time")
	for _, junk := range []string{"", "v2", "v2..", "v2.x." + parts[2], "v2." + fmt.Sprint(now.Unix()) + ".", "v3." + parts[1] + "." + parts[2]} {
		assert.Equal(t, http.StatusForbidden, page(junk), junk)
	}
	assert.True(t, equalSecret("a", "a"))
	assert.False(t, equalSecret("a", "ab"))
	assert.False(t, equalSecret("", "a"))
}

// The page answers only at its own names: a browser sent to it under another name (DNS
// rebinding makes an attacker's name point at the daemon's address, and the browser
// then treats the page as the attacker's site, same-origin) gets 421 and no login
// starts; the redirect refuses it too.
func TestLoginPageRefusesUnknownHostNames(t *testing.T) {
	s := newKiteSetup(t, kiteSetupOptions{names: []string{"kite_main"}, noHook: true})
	c := noRedirects(t)
	_, port, err := net.SplitHostPort(s.page.Listener.Addr().String())
	require.NoError(t, err)
	send := func(method, path, host string) (int, string) {
		req, _ := http.NewRequest(method, s.page.URL+path, nil)
		req.Host = host
		if method == http.MethodPost {
			// What a browser sends for the attacker's page: to it, the same origin.
			req.Header.Set("Sec-Fetch-Site", "same-origin")
			req.Header.Set("Origin", "http://"+host)
		}
		code, _, body := fetch(t, c, req)
		return code, body
	}
	for _, host := range []string{"rebound.example:" + port, "rebound.example", "127.0.0.1.nip.example:" + port, "localhost.example:" + port} {
		code, body := send(http.MethodGet, "/login", host)
		assert.Equal(t, http.StatusMisdirectedRequest, code, host)
		assert.NotContains(t, body, "Log in with Kite", host)
		assert.NotContains(t, body, "rebound.example", "the page does not echo the name")
		code, _ = send(http.MethodPost, "/login/kite_main/start", host)
		assert.Equal(t, http.StatusMisdirectedRequest, code, host)
		code, _ = send(http.MethodGet, "/login/kite_main/redirect?status=success&request_token=x&state=y", host)
		assert.Equal(t, http.StatusMisdirectedRequest, code, host)
	}
	keys, err := s.rdb.Keys(context.Background(), s.prefix+":zerodha:*:state:*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys, "no login state minted")
	assert.Contains(t, s.logs.String(), "refused a request for an unknown host name")

	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST", "[::1]:" + port} {
		code, body := send(http.MethodGet, "/login", host)
		assert.Equal(t, http.StatusOK, code, host)
		assert.Contains(t, body, "Log in with Kite", host)
	}
}

func TestLoginPageHostNames(t *testing.T) {
	host, err := os.Hostname()
	require.NoError(t, err)
	tests := []struct {
		name            string
		pageURL, served string
		allowed, denied []string
	}{
		{"behind a proxy, on loopback", "https://ops.example.com/brokertoken", "127.0.0.1:9465",
			[]string{"ops.example.com", "OPS.Example.com:443", "ops.example.com.", "127.0.0.1:9465", "localhost:9465", "10.1.2.3", "[::1]:9465"},
			[]string{"", "evil.example", "ops.example.com.evil.example", "example.com", host + ":9465"}},
		{"on every address", "http://" + host + ":9464/login", ":9464",
			[]string{host + ":9464", "localhost:9464", "192.168.1.20:9464", "[fe80::1]:9464"},
			[]string{"evil.example:9464", "attacker.localhost:9464"}},
		{"on a named address", "http://box.lan:9464/login", "box.lan:9464",
			[]string{"box.lan:9464", "BOX.LAN"},
			[]string{"localhost:9464", "other.lan:9464"}},
		{"on 0.0.0.0", "https://ops.example.com/login", "0.0.0.0:9464",
			[]string{"ops.example.com", "localhost", host},
			[]string{"evil.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := loginConfig{pageURL: tt.pageURL, served: tt.served}
			for _, h := range tt.allowed {
				assert.True(t, l.hostAllowed(h), "%q should be allowed", h)
			}
			for _, h := range tt.denied {
				assert.False(t, l.hostAllowed(h), "%q should be refused", h)
			}
		})
	}
}

// A page served at the root of its own listener links back to "/" from its error
// pages (an unknown user's start or redirect).
func TestLoginPageAtTheRootLinksBackToIt(t *testing.T) {
	s := newKiteSetup(t, kiteSetupOptions{names: []string{"kite_main"}, noHook: true,
		login: func(l *loginConfig) { l.pagePath, l.pageURL = "", strings.TrimSuffix(l.pageURL, "/login") }})
	c := noRedirects(t)
	req, _ := http.NewRequest(http.MethodGet, s.page.URL+"/", nil)
	code, _, body := fetch(t, c, req)
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, `action="/kite_main/start"`)
	for _, r := range []struct{ method, path string }{{http.MethodGet, "/nobody/redirect"}, {http.MethodPost, "/nobody/start"}} {
		req, _ := http.NewRequest(r.method, s.page.URL+r.path, nil)
		code, _, body := fetch(t, c, req)
		assert.Equal(t, http.StatusNotFound, code, r.path)
		assert.Contains(t, body, `<a href="/">Back to the logins</a>`, r.path)
	}
}

// hostileName is a user name every process accepts (tokencache.CheckName) that is
// also HTML.
const hostileName = `<script>alert("n")</script>&'`

// The page escapes everything it shows (user names, Kite's answers, errors) and shows
// no secret: checked on the rendered HTML of every page, with hostile names and texts.
func TestLoginPagesEscapeEverythingAndShowNoSecret(t *testing.T) {
	const pagePassword, pageSecret = "pw-page-S3cr3t", "shared-secret-0123456789"
	s := newKiteSetup(t, kiteSetupOptions{names: []string{hostileName, "kite_plain"},
		fake: kitefake.Options{RefreshTokens: true, UserName: `<img src=x onerror=alert("u")>`},
		login: func(l *loginConfig) {
			l.basicUser, l.basicPassword = "ops", pagePassword
			l.secret = pageSecret
		}})
	auth := func(r *http.Request) {
		r.SetBasicAuth("ops", pagePassword)
		r.Header.Set(secretHeader, pageSecret)
	}
	_, code, body := s.login(hostileName, auth)
	require.Equal(t, http.StatusOK, code, body)
	pages := []string{body}

	// Kite refusing the next login with a hostile message: zerodha's error page.
	s.fake.Script(kitefake.SessionToken, kitefake.ErrorAnswer(http.StatusForbidden, "InputException", `<script>alert("kite")</script>`))
	_, code, body = s.login("kite_plain", auth)
	require.Equal(t, http.StatusBadGateway, code)
	pages = append(pages, body)

	// A failing user, with a hostile error, and one whose refresh token Kite refused.
	s.desk.failure = func(user string) (bool, string, string) {
		if user == "kite_plain" {
			return true, "unavailable", `zerodha: /session/refresh_token: HTTP 503: <b onmouseover=alert("e")>down</b>`
		}
		return false, "", ""
	}
	s.desk.mu.Lock()
	s.desk.state[hostileName].renewErr = `<iframe src="javascript:alert('r')">`
	s.desk.state[hostileName].needed = true
	s.desk.mu.Unlock()

	c := noRedirects(t)
	for _, target := range []struct {
		method, path string
		auth         bool
	}{
		{http.MethodGet, "/login", true},
		{http.MethodGet, "/login", false},
		{http.MethodPost, "/login/" + url.PathEscape(hostileName) + "/start?x=<script>", false},
		{http.MethodPost, "/login/%3Cscript%3Enobody/start", true},
		{http.MethodGet, "/login/%3Cscript%3Enobody/redirect?state=<script>", false},
		{http.MethodGet, "/login/" + url.PathEscape(hostileName) + "/redirect?state=<script>&status=<b>", false},
	} {
		req, _ := http.NewRequest(target.method, s.page.URL+target.path, nil)
		if target.auth {
			auth(req)
		}
		_, _, body := fetch(t, c, req)
		pages = append(pages, body)
	}

	var secrets []string
	secrets = append(secrets, s.fake.AccessTokens()...)
	for _, n := range s.names {
		secrets = append(secrets, kiteSecretOf(n))
		if rt, err := s.rdb.Get(context.Background(), s.prefix+":secret:{"+n+"}:refresh").Result(); err == nil {
			secrets = append(secrets, rt)
		}
	}
	require.Greater(t, len(secrets), 3, "there are tokens and a refresh token to look for")
	secrets = append(secrets, pagePassword, pageSecret)
	for i, html := range pages {
		for _, raw := range []string{"<script>", "<img src=x", "<b onmouseover", "<iframe", "<b>"} {
			assert.NotContains(t, html, raw, "page %d shows unescaped HTML", i)
		}
		for _, secret := range secrets {
			assert.NotContains(t, html, secret, "page %d shows a secret", i)
		}
	}
	main := pages[2]
	assert.Contains(t, main, "&lt;script&gt;alert(&#34;n&#34;)&lt;/script&gt;&amp;&#39;", "the user's name, escaped")
	assert.Contains(t, main, "&lt;img src=x onerror=alert(&#34;u&#34;)&gt;", "Kite's name of the user, escaped")
	assert.Contains(t, main, "&lt;b onmouseover=alert(&#34;e&#34;)&gt;down&lt;/b&gt;", "the failure, escaped")
	assert.Contains(t, main, "&lt;iframe src=&#34;javascript:alert(&#39;r&#39;)&#34;&gt;", "the renewal's error, escaped")
	assert.Contains(t, main, `action="/login/%3Cscript%3Ealert%28%22n%22%29%3C%2Fscript%3E&amp;%27/start"`)
	assert.Contains(t, pages[1], "&lt;script&gt;alert(&#34;kite&#34;)&lt;/script&gt;", "Kite's message, escaped")
}

// The reminder: at the configured time on a trading day, one alert with the page's URL
// for a Kite user without a valid token, none for a user whose token is valid, none on
// other days or before the time, none again the same day (in any daemon), and one
// recovery when the human has logged in.
func TestReminderAlertsOncePerDayForAUserWithoutAToken(t *testing.T) {
	srv := testutil.Redis(t)
	s := newKiteSetup(t, kiteSetupOptions{names: []string{"kite_none", "kite_valid"}, redis: srv})
	ctx := context.Background()
	_, code, body := s.login("kite_valid", nil)
	require.Equal(t, http.StatusOK, code, body)

	tick := func(at time.Time) map[string]int {
		s.clock.Set(at)
		s.desk.remind(ctx)
		return s.flushAlerts()
	}
	assert.Empty(t, tick(istTime(29, 9, 0)), "Sunday: no reminder")
	assert.Empty(t, tick(istTime(30, 8, 44)), "Monday before 08:45")
	assert.Equal(t, map[string]int{eventLoginNeeded: 1}, tick(istTime(30, 8, 45)))
	assert.Equal(t, map[string]int{eventLoginNeeded: 1}, tick(istTime(30, 11, 0)), "once a day")

	alert := s.hook.last(eventLoginNeeded)
	require.NotNil(t, alert)
	assert.Equal(t, "kite_none", alert["user"])
	assert.Equal(t, s.cfg.login.pageURL, alert["url"])
	assert.Contains(t, alert["message"], s.cfg.login.pageURL)
	assert.Contains(t, alert["message"], "08:45 IST, Mon-Fri")
	assert.NotContains(t, s.hook.all(), kiteSecretOf("kite_none"))

	// A second daemon on the same Redis and prefix (its own desk, alerter and webhook)
	// sends none for the same day: the alert is claimed in Redis.
	other := newKiteSetup(t, kiteSetupOptions{names: []string{"kite_none", "kite_valid"}, redis: srv})
	require.Equal(t, s.prefix, other.prefix)
	other.clock.Set(istTime(30, 8, 50))
	other.desk.remind(ctx)
	assert.Empty(t, other.flushAlerts(), "the other daemon")

	// Tuesday (1 December): again, once across both daemons.
	both := func(at time.Time) int {
		other.clock.Set(at)
		other.desk.remind(ctx)
		return tick(at)[eventLoginNeeded] + other.flushAlerts()[eventLoginNeeded]
	}
	assert.Equal(t, 2, both(istTime(31, 8, 45)), "Monday's, and one on Tuesday")
	assert.Equal(t, 2, both(istTime(31, 9, 45)))

	// The human logs in: one recovery.
	_, code, body = s.login("kite_none", nil)
	require.Equal(t, http.StatusOK, code, body)
	tok := s.stored("kite_none")
	require.NotNil(t, tok)
	s.desk.mu.Lock()
	s.desk.state["kite_none"].needed = true // as the failed check left it
	s.desk.mu.Unlock()
	s.desk.succeeded("kite_none", tok)
	assert.Equal(t, 1, s.flushAlerts()[eventRecovered])
}
