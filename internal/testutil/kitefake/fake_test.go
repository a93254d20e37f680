package kitefake_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

const (
	apiKey    = "kitefake_key"
	apiSecret = "kitefake-secret-0123456789"
	redirect  = "https://app.example.com/kite/redirect?from=kite"
)

// clock is a settable clock for Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// client does not follow redirects, so tests see Kite's 302.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type answer struct {
	Status    int
	Body      map[string]any
	ErrorType string
	Message   string
	Data      map[string]any
}

func do(t *testing.T, c *http.Client, req *http.Request) answer {
	t.Helper()
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := answer{Status: resp.StatusCode}
	require.NoError(t, json.Unmarshal(raw, &a.Body), string(raw))
	a.ErrorType, _ = a.Body["error_type"].(string)
	a.Message, _ = a.Body["message"].(string)
	a.Data, _ = a.Body["data"].(map[string]any)
	return a
}

// checksum is Kite's formula, written out here independently of the zerodha package.
func checksum(key, rt, secret string) string {
	s := sha256.Sum256([]byte(key + rt + secret))
	return hex.EncodeToString(s[:])
}

func exchange(t *testing.T, c *http.Client, s *kitefake.Server, rt, sum string, version bool) answer {
	t.Helper()
	form := url.Values{"api_key": {apiKey}, "request_token": {rt}, "checksum": {sum}}
	req, err := http.NewRequest(http.MethodPost, s.URL()+"/session/token", strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if version {
		req.Header.Set("X-Kite-Version", "3")
	}
	return do(t, c, req)
}

func login(t *testing.T, c *http.Client, s *kitefake.Server) string {
	t.Helper()
	rt := s.IssueRequestToken(apiKey)
	a := exchange(t, c, s, rt, checksum(apiKey, rt, apiSecret), true)
	require.Equal(t, http.StatusOK, a.Status, a.Body)
	return a.Data["access_token"].(string)
}

func profile(t *testing.T, c *http.Client, s *kitefake.Server, access string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.URL()+"/user/profile", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "token "+apiKey+":"+access)
	req.Header.Set("X-Kite-Version", "3")
	return do(t, c, req)
}

func newFake(t *testing.T, opts kitefake.Options) *kitefake.Server {
	s := kitefake.New(t, opts)
	s.AddApp(apiKey, apiSecret, redirect)
	return s
}

func TestLoginRedirectsWithRequestTokenAndRedirectParams(t *testing.T) {
	s := newFake(t, kitefake.Options{})
	c := client(t)
	q := url.Values{"v": {"3"}, "api_key": {apiKey}, "redirect_params": {"state=abc&x=1"}}
	resp, err := c.Get(s.LoginURL() + "?" + q.Encode())
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode)
	loc, err := url.Parse(resp.Header.Get("Location"))
	require.NoError(t, err)
	assert.Equal(t, "app.example.com", loc.Host)
	assert.Equal(t, "/kite/redirect", loc.Path)
	back := loc.Query()
	assert.Equal(t, "abc", back.Get("state"))
	assert.Equal(t, "1", back.Get("x"))
	assert.Equal(t, "kite", back.Get("from"), "the redirect URL's own query is kept")
	assert.Equal(t, "success", back.Get("status"))
	assert.Equal(t, "login", back.Get("action"))
	assert.Len(t, back.Get("request_token"), 32)

	a := exchange(t, c, s, back.Get("request_token"), checksum(apiKey, back.Get("request_token"), apiSecret), true)
	require.Equal(t, http.StatusOK, a.Status, a.Body)
	assert.Equal(t, "AB1234", a.Data["user_id"])
	assert.Len(t, a.Data["access_token"], 32)
	assert.NotEmpty(t, a.Data["login_time"])

	resp, err = c.Get(s.LoginURL() + "?v=3&api_key=unknown")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, 1, s.Calls(kitefake.ConnectLogin, http.MethodGet, http.StatusFound))
}

func TestExchangeChecksVersionChecksumAndUsesTokenOnce(t *testing.T) {
	s := newFake(t, kitefake.Options{})
	c := client(t)
	rt := s.IssueRequestToken(apiKey)
	good := checksum(apiKey, rt, apiSecret)

	a := exchange(t, c, s, rt, good, false)
	assert.Equal(t, http.StatusBadRequest, a.Status)
	assert.Equal(t, "InputException", a.ErrorType)

	a = exchange(t, c, s, rt, checksum(apiKey, rt, "wrong-secret"), true)
	assert.Equal(t, http.StatusForbidden, a.Status)
	assert.Equal(t, "TokenException", a.ErrorType)
	assert.Equal(t, kitefake.MsgInvalidChecksum, a.Message)
	assert.Equal(t, "error", a.Body["status"])

	a = exchange(t, c, s, rt, good, true)
	require.Equal(t, http.StatusOK, a.Status, "a wrong checksum does not use the request token up")

	a = exchange(t, c, s, rt, good, true)
	assert.Equal(t, http.StatusForbidden, a.Status)
	assert.Equal(t, "TokenException", a.ErrorType)
	assert.Equal(t, kitefake.MsgInvalidToken, a.Message)
}

func TestRequestTokensExpire(t *testing.T) {
	clk := &clock{now: time.Date(2025, 1, 6, 9, 0, 0, 0, time.UTC)}
	s := newFake(t, kitefake.Options{Now: clk.Now, RequestTokenTTL: 3 * time.Minute})
	c := client(t)
	rt := s.IssueRequestToken(apiKey)
	clk.Add(3 * time.Minute)
	a := exchange(t, c, s, rt, checksum(apiKey, rt, apiSecret), true)
	assert.Equal(t, http.StatusForbidden, a.Status)
	assert.Equal(t, kitefake.MsgInvalidToken, a.Message)
}

func TestAccessTokensDie(t *testing.T) {
	c := client(t)
	t.Run("a newer login kills the old token", func(t *testing.T) {
		s := newFake(t, kitefake.Options{})
		first := login(t, c, s)
		assert.Equal(t, http.StatusOK, profile(t, c, s, first).Status)
		second := login(t, c, s)
		a := profile(t, c, s, first)
		assert.Equal(t, http.StatusForbidden, a.Status)
		assert.Equal(t, "TokenException", a.ErrorType)
		assert.Equal(t, kitefake.MsgIncorrectAccessToken, a.Message)
		assert.Equal(t, http.StatusOK, profile(t, c, s, second).Status)
		assert.Equal(t, []string{first, second}, s.AccessTokens())
	})
	t.Run("another user's login does not", func(t *testing.T) {
		s := newFake(t, kitefake.Options{})
		first := login(t, c, s)
		s.SetUser("ZZ9999", "Other")
		login(t, c, s)
		assert.True(t, s.Valid(first))
	})
	t.Run("at the end of their lifetime", func(t *testing.T) {
		clk := &clock{now: time.Date(2025, 1, 6, 9, 0, 0, 0, time.UTC)}
		s := newFake(t, kitefake.Options{Now: clk.Now, TokenLifetime: time.Hour})
		tok := login(t, c, s)
		clk.Add(59 * time.Minute)
		assert.True(t, s.Valid(tok))
		clk.Add(time.Minute)
		assert.Equal(t, http.StatusForbidden, profile(t, c, s, tok).Status)
	})
	t.Run("at the next 06:00 IST by default", func(t *testing.T) {
		// 2025-01-06 23:59 IST: the token dies at 06:00 IST on the 7th.
		clk := &clock{now: time.Date(2025, 1, 6, 18, 29, 0, 0, time.UTC)}
		s := newFake(t, kitefake.Options{Now: clk.Now})
		tok := login(t, c, s)
		clk.Add(6*time.Hour + 0*time.Minute)
		assert.True(t, s.Valid(tok), "05:59 IST")
		clk.Add(time.Minute)
		assert.False(t, s.Valid(tok), "06:00 IST")
	})
	t.Run("when logged out", func(t *testing.T) {
		s := newFake(t, kitefake.Options{})
		tok := login(t, c, s)
		req, err := http.NewRequest(http.MethodDelete, s.URL()+"/session/token?"+
			url.Values{"api_key": {apiKey}, "access_token": {tok}}.Encode(), nil)
		require.NoError(t, err)
		a := do(t, c, req)
		assert.Equal(t, http.StatusOK, a.Status)
		assert.Equal(t, true, a.Body["data"])
		assert.False(t, s.Valid(tok))
	})
}

func TestFeedStreamsUntilTheTokenDies(t *testing.T) {
	s := newFake(t, kitefake.Options{TickInterval: 5 * time.Millisecond})
	c := client(t)
	tok := login(t, c, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.FeedURL()+"?"+
		url.Values{"api_key": {apiKey}, "access_token": {tok}}.Encode(), nil)
	require.NoError(t, err)
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	sc := bufio.NewScanner(resp.Body)
	for i := 1; i <= 3; i++ {
		require.True(t, sc.Scan())
		assert.Equal(t, "tick "+string(rune('0'+i)), sc.Text())
	}
	assert.Equal(t, 1, s.ActiveFeeds())
	s.ExpireAccessTokens()
	for sc.Scan() {
	}
	require.NoError(t, sc.Err(), "the stream ends cleanly")
	require.Eventually(t, func() bool { return s.ActiveFeeds() == 0 }, 5*time.Second, 5*time.Millisecond)

	a := do(t, c, req.Clone(ctx))
	assert.Equal(t, http.StatusForbidden, a.Status)
	assert.Equal(t, "TokenException", a.ErrorType)
	attempts := s.FeedAttempts()
	require.Len(t, attempts, 2)
	assert.Equal(t, http.StatusOK, attempts[0].Status)
	assert.Equal(t, http.StatusForbidden, attempts[1].Status)
	assert.Equal(t, tok, attempts[1].AccessToken)
}

func TestCloseEndsStreamingFeeds(t *testing.T) {
	s := kitefake.Start(kitefake.Options{})
	s.AddApp(apiKey, apiSecret, redirect)
	c := client(t)
	tok := login(t, c, s)
	resp, err := c.Get(s.FeedURL() + "?" + url.Values{"api_key": {apiKey}, "access_token": {tok}}.Encode())
	require.NoError(t, err)
	defer resp.Body.Close()
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a streaming feed")
	}
	s.Close() // idempotent
}

func renewWith(t *testing.T, c *http.Client, s *kitefake.Server, refresh, sum string, version bool) answer {
	t.Helper()
	form := url.Values{"api_key": {apiKey}, "refresh_token": {refresh}, "checksum": {sum}}
	req, err := http.NewRequest(http.MethodPost, s.URL()+"/session/refresh_token", strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if version {
		req.Header.Set("X-Kite-Version", "3")
	}
	return do(t, c, req)
}

func TestRefreshTokensRenewTheSession(t *testing.T) {
	for _, rotate := range []bool{false, true} {
		t.Run(map[bool]string{false: "kept", true: "rotated"}[rotate], func(t *testing.T) {
			s := newFake(t, kitefake.Options{RefreshTokens: true, RotateRefreshTokens: rotate})
			c := client(t)
			rt := s.IssueRequestToken(apiKey)
			a := exchange(t, c, s, rt, checksum(apiKey, rt, apiSecret), true)
			require.Equal(t, http.StatusOK, a.Status)
			first := a.Data["access_token"].(string)
			refresh := a.Data["refresh_token"].(string)
			require.Len(t, refresh, 32, "the session carries a refresh token")
			assert.True(t, s.RefreshTokenValid(refresh))

			got := renewWith(t, c, s, refresh, checksum(apiKey, refresh, apiSecret), true)
			require.Equal(t, http.StatusOK, got.Status, got.Body)
			assert.Equal(t, "success", got.Body["status"])
			second := got.Data["access_token"].(string)
			assert.Equal(t, "AB1234", got.Data["user_id"])
			assert.True(t, s.Valid(second))
			assert.False(t, s.Valid(first), "the renewal kills the previous access token")
			next := got.Data["refresh_token"].(string)
			if rotate {
				assert.NotEqual(t, refresh, next)
				assert.False(t, s.RefreshTokenValid(refresh), "a rotated refresh token works once")
				assert.Equal(t, http.StatusForbidden, renewWith(t, c, s, refresh, checksum(apiKey, refresh, apiSecret), true).Status)
			} else {
				assert.Equal(t, refresh, next)
			}
			assert.True(t, s.RefreshTokenValid(next))

			bad := renewWith(t, c, s, next, checksum(apiKey, next, "wrong-secret"), true)
			assert.Equal(t, http.StatusForbidden, bad.Status)
			assert.Equal(t, "TokenException", bad.ErrorType)
			assert.Equal(t, kitefake.MsgInvalidChecksum, bad.Message)
			assert.Equal(t, http.StatusBadRequest, renewWith(t, c, s, next, checksum(apiKey, next, apiSecret), false).Status,
				"X-Kite-Version is required")
			s.RevokeRefreshTokens()
			revoked := renewWith(t, c, s, next, checksum(apiKey, next, apiSecret), true)
			assert.Equal(t, http.StatusForbidden, revoked.Status)
			assert.Equal(t, "TokenException", revoked.ErrorType)
			assert.Equal(t, 1, s.Calls(kitefake.SessionRefresh, http.MethodPost, http.StatusOK))
		})
	}
}

func TestNoRefreshTokenByDefault(t *testing.T) {
	s := newFake(t, kitefake.Options{})
	c := client(t)
	rt := s.IssueRequestToken(apiKey)
	a := exchange(t, c, s, rt, checksum(apiKey, rt, apiSecret), true)
	require.Equal(t, http.StatusOK, a.Status)
	assert.Equal(t, "", a.Data["refresh_token"])
	assert.Equal(t, http.StatusForbidden, renewWith(t, c, s, "x", checksum(apiKey, "x", apiSecret), true).Status)
}

func TestScriptedAnswersAndStrictProfile(t *testing.T) {
	s := newFake(t, kitefake.Options{})
	c := client(t)
	access := login(t, c, s)
	s.Script(kitefake.UserProfile, kitefake.ErrorAnswer(http.StatusOK, "TokenException", "Session expired"))
	a := profile(t, c, s, access)
	assert.Equal(t, http.StatusOK, a.Status, "an error envelope inside HTTP 200")
	assert.Equal(t, "error", a.Body["status"])
	assert.Equal(t, "TokenException", a.ErrorType)
	a = profile(t, c, s, access)
	require.Equal(t, http.StatusOK, a.Status)
	assert.Equal(t, "success", a.Body["status"], "the script is used up")
	for _, field := range []string{"user_id", "user_name", "user_shortname", "email", "broker", "exchanges", "products", "order_types"} {
		assert.Contains(t, a.Data, field)
	}

	req, err := http.NewRequest(http.MethodGet, s.URL()+"/user/profile", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "token "+apiKey+":"+access)
	noVersion := do(t, c, req)
	assert.Equal(t, http.StatusBadRequest, noVersion.Status, "X-Kite-Version is required")
	assert.Equal(t, "InputException", noVersion.ErrorType)
	assert.Equal(t, 1, s.Calls(kitefake.UserProfile, "", http.StatusBadRequest))
	assert.Equal(t, 2, s.Calls(kitefake.UserProfile, "", http.StatusOK), "scripted answers are counted too")
}

// With LoginPassword, the login page is a form a browser completes: a wrong password
// shows the form again with an error and issues nothing; the right one redirects like
// the formless login, carrying redirect_params back. The form escapes what it echoes.
func TestLoginFormForABrowser(t *testing.T) {
	t.Parallel()
	s := kitefake.New(t, kitefake.Options{UserID: "AB1234", LoginPassword: "pw-0123"})
	s.AddApp(apiKey, apiSecret, redirect)
	c := client(t)
	params := url.Values{"state": {`"><script>x</script>`}}.Encode()
	q := url.Values{"v": {"3"}, "api_key": {apiKey}, "redirect_params": {params}}

	get := func() (int, string) {
		resp, err := c.Get(s.LoginURL() + "?" + q.Encode())
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get()
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, `<form method="post" action="/connect/login">`)
	assert.NotContains(t, body, "<script>x</script>", "redirect_params is escaped")

	post := func(user, pw string) *http.Response {
		form := url.Values{"api_key": {apiKey}, "redirect_params": {params}, "v": {"3"}, "user_id": {user}, "password": {pw}}
		resp, err := c.PostForm(s.LoginURL(), form)
		require.NoError(t, err)
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	for _, bad := range [][2]string{{"AB1234", "wrong"}, {"ZZ9999", "pw-0123"}, {"", ""}} {
		resp := post(bad[0], bad[1])
		b, _ := io.ReadAll(resp.Body)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Contains(t, string(b), "Invalid `user_id` or `password`.")
	}
	resp := post("ab1234", "pw-0123") // Kite's user IDs are not case-sensitive
	require.Equal(t, http.StatusFound, resp.StatusCode)
	back, err := url.Parse(resp.Header.Get("Location"))
	require.NoError(t, err)
	assert.Equal(t, "app.example.com", back.Host)
	assert.Equal(t, `"><script>x</script>`, back.Query().Get("state"))
	assert.Equal(t, "success", back.Query().Get("status"))
	rt := back.Query().Get("request_token")
	require.NotEmpty(t, rt)
	assert.Equal(t, 1, s.Calls(kitefake.ConnectLogin, http.MethodPost, http.StatusFound))

	// The request token it issued is exchangeable once, as from the formless login.
	form := url.Values{"api_key": {apiKey}, "request_token": {rt}, "checksum": {checksum(apiKey, rt, apiSecret)}}
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/session/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Kite-Version", "3")
	a := do(t, c, req)
	assert.Equal(t, http.StatusOK, a.Status)
	assert.Equal(t, "AB1234", a.Data["user_id"])

	// An unknown app gets no form.
	resp2, err := c.Get(s.LoginURL() + "?v=3&api_key=nope")
	require.NoError(t, err)
	resp2.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp2.StatusCode)
}
