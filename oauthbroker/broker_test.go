package oauthbroker_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/tokencache"
)

func TestAuthorizeThenRefreshes(t *testing.T) {
	f := newFixture(t, fixtureConfig{fake: oauthfake.Options{AccessTokenLifetime: 2 * time.Second}})
	ctx := context.Background()
	st, err := f.b.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateMissing, st.State)

	f.mustAuthorize(t)
	st, err = f.b.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateActive, st.State)
	assert.EqualValues(t, 1, st.Generation)
	assert.Equal(t, "schwab", st.Provider)
	assert.WithinDuration(t, time.Now().Add(7*24*time.Hour), st.RefreshExpiry, time.Minute, "Schwab's 7 days from the authorization")
	rt0 := f.storedRefreshToken(t)
	assert.Equal(t, "valid", f.fake.RefreshTokenState(rt0))

	svc := f.newCache(t, f.broker(t, nil), nil) // another process
	first, err := svc.Token(ctx, f.opts.User)
	require.NoError(t, err)
	seen := map[string]bool{first.AccessToken: true}
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < 4 && time.Now().Before(deadline) {
		tok, err := svc.Token(ctx, f.opts.User)
		require.NoError(t, err)
		seen[tok.AccessToken] = true
		time.Sleep(50 * time.Millisecond)
	}
	require.Len(t, seen, 4, "three refreshes in time")
	stats := f.fake.Stats()
	st, err = f.b.Status(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, stats.Refreshes, st.Rotations, "every refresh the provider answered is stored")
	assert.EqualValues(t, 1+st.Rotations, st.Generation)
	assert.Zero(t, stats.ReuseDetections)
	assert.Equal(t, 1, f.fake.ValidRefreshTokens())
	assert.Equal(t, "valid", f.fake.RefreshTokenState(f.storedRefreshToken(t)))
	assert.Equal(t, "used", f.fake.RefreshTokenState(rt0))
	assert.WithinDuration(t, time.Now().Add(7*24*time.Hour), st.RefreshExpiry, time.Minute, "refreshes do not extend Schwab's expiry")
}

func TestRedirectStateIsSingleUse(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	noFollow := browser(t, false)
	resp, err := noFollow.Get(f.web.URL + "/login")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode)
	authURL := resp.Header.Get("Location")
	u, _ := url.Parse(authURL)
	assert.Equal(t, appKey, u.Query().Get("client_id"))
	assert.Equal(t, f.opts.RedirectURL, u.Query().Get("redirect_uri"))
	assert.Equal(t, "code", u.Query().Get("response_type"))
	assert.Len(t, u.Query().Get("state"), 32)

	resp, err = noFollow.Get(authURL)
	require.NoError(t, err)
	resp.Body.Close()
	callback := resp.Header.Get("Location")
	get := func(u string) (int, string) {
		resp, err := noFollow.Get(u)
		require.NoError(t, err)
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = io_copy(&b, resp)
		return resp.StatusCode, b.String()
	}
	status, page := get(callback)
	require.Equal(t, http.StatusOK, status, page)
	status, page = get(callback)
	assert.Equal(t, http.StatusBadRequest, status, "a replayed redirect stores nothing")
	assert.Contains(t, page, "expired or was already used")
	status, _ = get(f.web.URL + "/callback?code=x&state=" + strings.Repeat("a", 32))
	assert.Equal(t, http.StatusBadRequest, status)
	status, _ = get(f.web.URL + "/callback?code=x&state=../../etc")
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Equal(t, 1, f.fake.Stats().Exchanges)

	// The human declines: the state is used up, nothing changes.
	resp, err = noFollow.Get(f.web.URL + "/login")
	require.NoError(t, err)
	resp.Body.Close()
	u, _ = url.Parse(resp.Header.Get("Location"))
	status, page = get(f.web.URL + "/callback?error=access_denied&state=" + u.Query().Get("state"))
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, page, "access_denied")
}

// A login started by LoginHandler completes only in the browser that started it (its
// SameSite=Lax cookie): a leaked redirect replayed elsewhere stores nothing, and the
// state stays usable by its browser.
func TestRedirectIsBoundToTheBrowser(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	human, other := browser(t, false), browser(t, false)
	resp, err := human.Get(f.web.URL + "/login")
	require.NoError(t, err)
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		cookie = c
	}
	require.NotNil(t, cookie, "the login sets a binding cookie")
	assert.True(t, cookie.HttpOnly)
	assert.Equal(t, http.SameSiteLaxMode, cookie.SameSite)
	assert.Equal(t, "/callback", cookie.Path)
	resp, err = human.Get(resp.Header.Get("Location"))
	require.NoError(t, err)
	resp.Body.Close()
	callback := resp.Header.Get("Location")
	require.Contains(t, callback, "code=")

	resp, err = other.Get(callback)
	require.NoError(t, err)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Contains(t, string(page), "started in another browser")
	assert.Zero(t, f.fake.Stats().Exchanges, "nothing exchanged for the other browser")

	resp, err = human.Get(callback)
	require.NoError(t, err)
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(page))
	assert.Equal(t, 1, f.fake.Stats().Exchanges)
	assert.NotContains(t, resp.Header.Get("Set-Cookie"), cookie.Value, "the cookie is cleared")
}

func io_copy(b *strings.Builder, resp *http.Response) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		b.Write(buf[:k])
		n += int64(k)
		if err != nil {
			return n, nil
		}
	}
}

func TestNotAuthorizedIsTypedWithURL(t *testing.T) {
	f := newFixture(t, fixtureConfig{broker: func(o *oauthbroker.Options) { o.StartURL = "https://ops.example.com/schwab/login" }})
	_, err := f.cache.Token(context.Background(), f.opts.User)
	require.Error(t, err)
	var lre *oauthbroker.LoginRequiredError
	require.ErrorAs(t, err, &lre)
	assert.ErrorIs(t, err, oauthbroker.ErrLoginRequired)
	assert.ErrorIs(t, err, oauthbroker.ErrNotAuthorized)
	assert.Equal(t, "https://ops.example.com/schwab/login", lre.URL)
	assert.False(t, lre.Temporary())
	assert.Zero(t, f.fake.Stats().Refreshes+f.fake.Stats().Refused)
}

// A refused refresh token stops every refresh of the user, with one alert for the
// whole fleet, no further request to the provider, and a status that says why; a new
// authorization ends it.
func TestRevokedStopsTheFleetWithOneAlert(t *testing.T) {
	f := newFixture(t, fixtureConfig{fake: oauthfake.Options{AccessTokenLifetime: time.Second}})
	ctx := context.Background()
	f.mustAuthorize(t)
	f.fake.RevokeAll()
	var alerts atomic.Int32
	var alerted *oauthbroker.LoginRequiredError
	var mu sync.Mutex
	var caches []*tokencache.Cache
	for range 4 {
		b := f.broker(t, func(o *oauthbroker.Options) {
			o.Hooks.Revoked = func(user string, err *oauthbroker.LoginRequiredError) {
				alerts.Add(1)
				mu.Lock()
				alerted = err
				mu.Unlock()
			}
		})
		caches = append(caches, f.newCache(t, b, nil))
	}
	time.Sleep(1100 * time.Millisecond) // the authorization's access token expired
	var wg sync.WaitGroup
	errs := make([]error, len(caches)*10)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = caches[i%len(caches)].Token(ctx, f.opts.User)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.Error(t, err)
		assert.ErrorIs(t, err, oauthbroker.ErrLoginRequired)
		assert.ErrorIs(t, err, oauthbroker.ErrRevoked)
	}
	for range 3 { // later attempts, after the caches' backoff: no request
		time.Sleep(600 * time.Millisecond)
		for _, c := range caches {
			_, err := c.Token(ctx, f.opts.User)
			assert.ErrorIs(t, err, oauthbroker.ErrRevoked)
		}
	}
	assert.EqualValues(t, 1, alerts.Load(), "one alert for the fleet")
	mu.Lock()
	require.NotNil(t, alerted)
	assert.ErrorIs(t, alerted, oauthbroker.ErrInvalidGrant)
	assert.Contains(t, alerted.URL, f.fake.URL()+"/v1/oauth/authorize?")
	mu.Unlock()
	assert.Equal(t, 1, f.fake.Stats().Refused, "the provider is asked once")
	st, err := oauthbroker.ReadStatus(ctx, f.redis.Client(t), f.redis.Prefix, f.opts.User)
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateRevoked, st.State)
	assert.Contains(t, st.Detail, "invalid_grant")
	assert.False(t, st.RevokedAt.IsZero())
	assert.Empty(t, f.secret(t), "the dead refresh token is deleted")

	f.mustAuthorize(t)
	st, err = f.b.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateActive, st.State)
	assert.EqualValues(t, 2, st.Generation)
	require.Eventually(t, func() bool {
		_, err := caches[0].Token(ctx, f.opts.User)
		return err == nil
	}, 10*time.Second, 50*time.Millisecond, "a new authorization ends the stop")
}

func TestTokenErrorsAreTyped(t *testing.T) {
	f := newFixture(t, fixtureConfig{broker: func(o *oauthbroker.Options) { o.ClientSecret = "wrong-secret-value" }})
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	link, err := f.b.LoginURL(context.Background())
	require.NoError(t, err)
	resp, err := noFollow.Get(link)
	require.NoError(t, err)
	resp.Body.Close()
	cb, _ := url.Parse(resp.Header.Get("Location"))
	_, err = f.b.Complete(context.Background(), f.cache, cb.Query())
	var te *oauthbroker.TokenError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, http.StatusUnauthorized, te.StatusCode)
	assert.Equal(t, "invalid_client", te.Code)
	assert.False(t, te.Temporary())
	assert.False(t, errors.Is(err, oauthbroker.ErrInvalidGrant))
	assert.NotContains(t, err.Error(), "wrong-secret-value")
	assert.NotContains(t, err.Error(), cb.Query().Get("code"))
}

// Schwab's own answer to a refused refresh token stops the user like invalid_grant.
func TestSchwabRefusalStopsTheUser(t *testing.T) {
	f := newFixture(t, fixtureConfig{fake: oauthfake.Options{SchwabRefusals: true}})
	f.mustAuthorize(t)
	f.fake.RevokeAll()
	_, err := f.broker(t, nil).Authenticator().Login(context.Background(), f.opts.User)
	assert.ErrorIs(t, err, oauthbroker.ErrRevoked)
	assert.ErrorIs(t, err, oauthbroker.ErrInvalidGrant)
	var te *oauthbroker.TokenError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "unsupported_token_type", te.Code)
	assert.Contains(t, te.Description, "Failed refresh token authentication")
}

// With Provider.PKCE, the authorization URL carries an S256 challenge and the exchange
// its verifier (kept in the state, writer only); the strict fake checks them.
func TestPKCE(t *testing.T) {
	f := newFixture(t, fixtureConfig{broker: func(o *oauthbroker.Options) { o.Provider.PKCE = true }})
	link, err := f.b.LoginURL(context.Background())
	require.NoError(t, err)
	q := mustQuery(t, link)
	assert.Equal(t, "S256", q.Get("code_challenge_method"))
	assert.Len(t, q.Get("code_challenge"), 43)
	f.mustAuthorize(t)
	assert.Equal(t, 1, f.fake.Stats().Exchanges)
}

// A grant stored by a newer oauthbroker ("o2:...") is neither used nor replaced: a
// refresh fails with ErrRecordFormat (no login link to invite an overwrite), and a
// human's authorization through this version leaves it as it was.
func TestGrantOfANewerFormatIsNeitherUsedNorReplaced(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	ctx := context.Background()
	rdb := f.redis.Client(t)
	keys := []string{f.redis.Prefix + ":secret:{" + f.opts.User + "}:oauth", f.redis.Prefix + ":{" + f.opts.User + "}:oauth"}
	const newer = `o2:7:0123456789abcdef0123456789abcdef:{"future":true}`
	for _, k := range keys {
		require.NoError(t, rdb.Set(ctx, k, newer, 0).Err())
	}
	_, err := f.broker(t, nil).Authenticator().Login(ctx, f.opts.User)
	require.ErrorIs(t, err, oauthbroker.ErrRecordFormat)
	var lre *oauthbroker.LoginRequiredError
	assert.False(t, errors.As(err, &lre), "no login link: authorizing would replace what a newer version wrote")

	code, body := f.authorize(t)
	assert.NotEqual(t, http.StatusOK, code, body)
	for _, k := range keys {
		assert.Equal(t, newer, rdb.Get(ctx, k).Val(), "%s left as the newer version wrote it", k)
	}
	assert.Zero(t, f.fake.Stats().Refreshes)
}
