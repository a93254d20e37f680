package zerodha_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/zerodha"
)

func TestLoginURLCarriesASingleUseStateInRedirectParams(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	ctx := context.Background()
	raw, err := f.app.LoginURL(ctx)
	require.NoError(t, err)
	u, err := url.Parse(raw)
	require.NoError(t, err)
	assert.Equal(t, f.kite.LoginURL(), u.Scheme+"://"+u.Host+u.Path)
	assert.Equal(t, "3", u.Query().Get("v"))
	assert.Equal(t, apiKey, u.Query().Get("api_key"))
	params, err := url.ParseQuery(u.Query().Get("redirect_params"))
	require.NoError(t, err)
	state := params.Get("state")
	assert.Regexp(t, `^[0-9a-f]{32}$`, state)

	other, err := f.app.LoginURL(ctx)
	require.NoError(t, err)
	assert.NotEqual(t, raw, other, "every URL has its own state")

	// The state is in Redis with its TTL, so any process can check it.
	ttl, err := f.redis.Client(t).PTTL(ctx, f.redis.Prefix+":zerodha:"+apiKey+":state:"+state).Result()
	require.NoError(t, err)
	assert.InDelta(t, (10 * time.Minute).Seconds(), ttl.Seconds(), 5)
}

func TestHumanLoginStoresTheTokenForEveryProcess(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	service := f.newCache(t, f.app.Authenticator()) // another process
	changes := service.Watch(ctx, f.app.User())

	before := time.Now()
	status, page := f.login(t)
	require.Equal(t, http.StatusOK, status, page)
	assert.Contains(t, page, "Logged in to Kite")
	assert.Contains(t, page, "Logged in as AB1234 (Kite Fake)")
	assert.Contains(t, page, "06:00 IST")
	f.assertNoSecrets(t, "success page", page)

	issued := f.kite.AccessTokens()
	require.Len(t, issued, 1)
	tok := awaitToken(t, service, f.app.User(), issued[0])
	select {
	case told := <-changes:
		assert.Equal(t, issued[0], told.AccessToken)
	case <-time.After(5 * time.Second):
		t.Fatal("the other process's Watch was not told of the login")
	}
	assert.True(t, tok.Expiry.Equal(zerodha.ExpiryAfter(tok.ObtainedAt, 6*time.Hour)))
	assert.False(t, tok.ObtainedAt.Before(before.Truncate(time.Millisecond)))
	assert.Equal(t, 6, tok.Expiry.In(time.FixedZone("IST", 19800)).Hour())
	assert.Equal(t, 1, f.kite.Calls(kitefake.SessionToken, http.MethodPost, http.StatusOK))
	assert.Contains(t, f.logs.String(), "zerodha: Kite login stored")
	f.assertNoSecrets(t, "logs", f.logs.String())
}

func TestConfiguredExpiryTimeAndUser(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, func(o *zerodha.Options) {
		o.ExpiryTime = 7*time.Hour + 30*time.Minute
		o.User = "kite-main"
	})
	status, page := f.login(t)
	require.Equal(t, http.StatusOK, status, page)
	assert.Contains(t, page, "07:30 IST")
	tok, err := f.cache.Token(context.Background(), "kite-main")
	require.NoError(t, err)
	ist := tok.Expiry.In(time.FixedZone("IST", 19800))
	assert.Equal(t, []int{7, 30}, []int{ist.Hour(), ist.Minute()})
}

// redirectURL is what Kite would send the browser back to, for a crafted query.
func (f *fixture) redirectURL(q url.Values) string { return f.web.URL + "/kite/redirect?" + q.Encode() }

// freshState mints a state through LoginURL.
func (f *fixture) freshState(t *testing.T) string {
	t.Helper()
	raw, err := f.app.LoginURL(context.Background())
	require.NoError(t, err)
	u, _ := url.Parse(raw)
	p, _ := url.ParseQuery(u.Query().Get("redirect_params"))
	return p.Get("state")
}

func TestRedirectHandlerRefusesBadRedirects(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	for _, tc := range []struct {
		name   string
		query  func() url.Values
		status int
		want   string
	}{
		{"no state", func() url.Values {
			return url.Values{"status": {"success"}, "request_token": {f.kite.IssueRequestToken(apiKey)}}
		}, http.StatusBadRequest, "expired or was already used"},
		{"forged state", func() url.Values {
			return url.Values{"state": {strings.Repeat("ab", 16)}, "status": {"success"}, "request_token": {f.kite.IssueRequestToken(apiKey)}}
		}, http.StatusBadRequest, "expired or was already used"},
		{"malformed state", func() url.Values {
			return url.Values{"state": {"../../x"}, "status": {"success"}, "request_token": {"rt"}}
		}, http.StatusBadRequest, "expired or was already used"},
		{"login cancelled", func() url.Values {
			return url.Values{"state": {f.freshState(t)}, "status": {"cancelled"}}
		}, http.StatusBadRequest, "status &#34;cancelled&#34;"},
		{"no request token", func() url.Values {
			return url.Values{"state": {f.freshState(t)}, "status": {"success"}}
		}, http.StatusBadRequest, "no request_token"},
		{"used request token", func() url.Values {
			rt := f.kite.IssueRequestToken(apiKey)
			_, err := f.app.Exchange(context.Background(), rt)
			require.NoError(t, err)
			return url.Values{"state": {f.freshState(t)}, "status": {"success"}, "request_token": {rt}}
		}, http.StatusBadGateway, "already used, or more than a few minutes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, page := visit(t, f.redirectURL(tc.query()))
			assert.Equal(t, tc.status, status)
			assert.Contains(t, page, tc.want)
			assert.Contains(t, page, `href="`+f.web.URL+`/kite/login"`, "a new login link")
			f.assertNoSecrets(t, "page", page)
		})
	}
	_, err := f.cache.Token(context.Background(), f.app.User())
	assert.ErrorIs(t, err, tokencache.ErrNoToken, "nothing was stored")
}

func TestRedirectIsCompletedOnce(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	// Take the browser through Kite by hand to keep the redirect URL.
	c := browser(t)
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Path == "/kite/redirect" {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := c.Get(f.web.URL + "/kite/login")
	require.NoError(t, err)
	resp.Body.Close()
	back := resp.Header.Get("Location")
	require.Contains(t, back, "/kite/redirect?")

	status, page := visit(t, back)
	require.Equal(t, http.StatusOK, status, page)
	status, page = visit(t, back) // the human reloads the page
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, page, "already used")
	assert.Equal(t, 1, f.kite.Calls(kitefake.SessionToken, "", 0), "one exchange")
}

func TestKiteErrorsAreShownToTheHuman(t *testing.T) {
	t.Run("wrong secret", func(t *testing.T) {
		f := newFixture(t, kitefake.Options{}, func(o *zerodha.Options) { o.APISecret = "not-the-secret-123456" })
		status, page := f.login(t)
		assert.Equal(t, http.StatusBadGateway, status)
		assert.Contains(t, page, "Kite refused the login")
		assert.Contains(t, page, "checksum is wrong")
		assert.Contains(t, page, "TokenException: Invalid `checksum`.")
		assert.NotContains(t, page, "not-the-secret-123456")
		assert.NotContains(t, page, "Log in to Kite again", "the same secret would fail again")
		f.assertNoSecrets(t, "page", page)
		assert.NotContains(t, f.logs.String(), "not-the-secret-123456")
	})
	t.Run("request token expired", func(t *testing.T) {
		clk := &clock{now: time.Now()}
		f := newFixture(t, kitefake.Options{Now: clk.Now, RequestTokenTTL: time.Minute}, nil)
		rt := f.kite.IssueRequestToken(apiKey)
		clk.Add(2 * time.Minute)
		status, page := visit(t, f.redirectURL(url.Values{"state": {f.freshState(t)}, "status": {"success"}, "request_token": {rt}}))
		assert.Equal(t, http.StatusBadGateway, status)
		assert.Contains(t, page, "Token is invalid or has expired.")
		assert.Contains(t, page, "Log in to Kite again")
	})
	t.Run("kite unreachable", func(t *testing.T) {
		f := newFixture(t, kitefake.Options{}, func(o *zerodha.Options) { o.APIURL = "http://127.0.0.1:1" })
		status, page := f.login(t)
		assert.Equal(t, http.StatusBadGateway, status)
		assert.Contains(t, page, "Kite could not be reached")
	})
	t.Run("no secret in this process", func(t *testing.T) {
		f := newFixture(t, kitefake.Options{}, func(o *zerodha.Options) { o.APISecret = "" })
		status, page := f.login(t)
		assert.Equal(t, http.StatusInternalServerError, status)
		assert.Contains(t, page, "API secret is not configured")
	})
	t.Run("wrong kite user", func(t *testing.T) {
		f := newFixture(t, kitefake.Options{UserID: "ZZ9999"}, func(o *zerodha.Options) { o.UserID = "AB1234" })
		status, page := f.login(t)
		assert.Equal(t, http.StatusForbidden, status)
		assert.Contains(t, page, "You logged in to Kite as ZZ9999, but this app serves AB1234")
		issued := f.kite.AccessTokens()
		require.Len(t, issued, 1)
		assert.False(t, f.kite.Valid(issued[0]), "the foreign session was logged out")
		_, err := f.cache.Token(context.Background(), f.app.User())
		assert.ErrorIs(t, err, tokencache.ErrNoToken)
	})
	t.Run("token cannot be stored", func(t *testing.T) {
		f := newFixture(t, kitefake.Options{}, nil)
		require.NoError(t, f.cache.Close())
		status, page := f.login(t)
		assert.Equal(t, http.StatusInternalServerError, status)
		assert.Contains(t, page, "Logged in to Kite, but the token could not be stored")
		assert.Contains(t, page, tokencache.ErrClosed.Error())
		f.assertNoSecrets(t, "page", page)
	})
	t.Run("not a GET", func(t *testing.T) {
		f := newFixture(t, kitefake.Options{}, nil)
		for _, path := range []string{"/kite/login", "/kite/redirect"} {
			resp, err := browser(t).Post(f.web.URL+path, "text/plain", nil)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
			assert.Equal(t, "GET", resp.Header.Get("Allow"))
		}
	})
}

func TestStatesExpireAndWorkAcrossProcesses(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, func(o *zerodha.Options) { o.StateTTL = 150 * time.Millisecond })
	// Another process (its own App and Redis connection) minted the URL.
	opts := f.opts
	opts.Redis = f.redis.Client(t)
	other, err := zerodha.New(opts)
	require.NoError(t, err)

	raw, err := other.LoginURL(context.Background())
	require.NoError(t, err)
	status, page := visit(t, raw)
	require.Equal(t, http.StatusOK, status, page)

	raw, err = other.LoginURL(context.Background())
	require.NoError(t, err)
	time.Sleep(300 * time.Millisecond)
	status, page = visit(t, raw)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, page, "expired or was already used")
	assert.Equal(t, 1, f.kite.Calls(kitefake.SessionToken, "", 0), "no exchange for an expired state")
}

func TestNewValidatesOptions(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	for name, o := range map[string]zerodha.Options{
		"no api key":      {Redis: f.opts.Redis},
		"no redis":        {APIKey: "k"},
		"colon in key":    {APIKey: "k:1", Redis: f.opts.Redis},
		"negative TTL":    {APIKey: "k", Redis: f.opts.Redis, StateTTL: -1},
		"expiry past day": {APIKey: "k", Redis: f.opts.Redis, ExpiryTime: 24 * time.Hour},
	} {
		_, err := zerodha.New(o)
		assert.Error(t, err, name)
	}
	app, err := zerodha.New(zerodha.Options{APIKey: "k", Redis: f.opts.Redis})
	require.NoError(t, err)
	assert.Equal(t, "k", app.User(), "User defaults to the api_key")
	assert.Equal(t, "k", app.APIKey())
	raw, err := app.LoginURL(context.Background())
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(raw, zerodha.DefaultLoginURL+"?"), raw)
	_, err = app.Exchange(context.Background(), "rt")
	assert.ErrorIs(t, err, zerodha.ErrNoSecret)
}
