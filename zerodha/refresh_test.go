package zerodha_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/zerodha"
)

// writer starts another process that holds the API secret: its own App, Redis client,
// Authenticator and cache. Such processes renew with the refresh token.
func (f *fixture) writer(t *testing.T, edit func(*zerodha.Options)) (*zerodha.App, *tokencache.Cache) {
	t.Helper()
	opts := f.opts
	opts.Redis = f.redis.Client(t)
	if edit != nil {
		edit(&opts)
	}
	app, err := zerodha.New(opts)
	require.NoError(t, err)
	return app, f.newCache(t, app.Authenticator())
}

// refreshKey is where the fixture's app keeps its refresh token.
func (f *fixture) refreshKey() string { return f.redis.Prefix + ":secret:{" + apiKey + "}:refresh" }

// storedRefreshToken returns the refresh token in Redis, "" when there is none.
func (f *fixture) storedRefreshToken(t *testing.T) string {
	t.Helper()
	v, err := f.redis.Client(t).Get(context.Background(), f.refreshKey()).Result()
	if err != nil {
		return ""
	}
	return v
}

// soonInIndia returns the time of day in India d from now, for Options.ExpiryTime.
func soonInIndia(d time.Duration) time.Duration {
	ist := time.FixedZone("IST", 5*3600+1800)
	at := time.Now().Add(d).In(ist)
	tod := time.Duration(at.Hour())*time.Hour + time.Duration(at.Minute())*time.Minute + time.Duration(at.Second())*time.Second
	if tod == 0 {
		tod = time.Second
	}
	return tod
}

// serveAll calls Token on every cache until each serves want, and fails after a while.
func serveAll(t *testing.T, caches []*tokencache.Cache, user string, want func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.Eventually(t, func() bool {
		w := want()
		ok := w != ""
		for _, c := range caches {
			tok, err := c.Token(ctx, user)
			if err != nil || tok.AccessToken != w {
				ok = false
			}
		}
		return ok
	}, 30*time.Second, 20*time.Millisecond)
}

// nth returns a function giving the n-th access token Kite issued, "" before it exists.
func nth(k *kitefake.Server, n int) func() string {
	return func() string {
		if all := k.AccessTokens(); len(all) > n {
			return all[n]
		}
		return ""
	}
}

func TestRefreshTokenRenewsOncePerExpiryAcrossFourCaches(t *testing.T) {
	f := newFixture(t, kitefake.Options{RefreshTokens: true, RotateRefreshTokens: true},
		func(o *zerodha.Options) { o.ExpiryTime = soonInIndia(8 * time.Second) })
	status, page := f.login(t)
	require.Equal(t, http.StatusOK, status, page)
	firstRefresh := f.storedRefreshToken(t)
	require.True(t, f.kite.RefreshTokenValid(firstRefresh), "the login stored Kite's refresh token")

	var caches []*tokencache.Cache
	for range 4 {
		_, c := f.writer(t, nil)
		caches = append(caches, c)
	}
	user := f.app.User()
	serveAll(t, caches, user, nth(f.kite, 0))

	// The morning expiry, a few seconds away: the caches renew inside their
	// RefreshBefore window is not due (a token renewed before the expiry dies with it),
	// so one renewal happens, just after the expiry, for all four.
	serveAll(t, caches, user, nth(f.kite, 1))
	assert.Equal(t, 1, f.kite.Calls(kitefake.SessionRefresh, http.MethodPost, 0), "one renewal for four caches")
	assert.Equal(t, 1, f.kite.Calls(kitefake.SessionRefresh, http.MethodPost, http.StatusOK))
	assert.False(t, f.kite.Valid(nth(f.kite, 0)()), "Kite killed the previous token")
	second := f.storedRefreshToken(t)
	assert.NotEqual(t, firstRefresh, second, "the rotated refresh token was stored")
	assert.True(t, f.kite.RefreshTokenValid(second))
	assert.False(t, f.kite.RefreshTokenValid(firstRefresh))
	tok, err := caches[2].Token(context.Background(), user)
	require.NoError(t, err)
	assert.Greater(t, time.Until(tok.Expiry), 23*time.Hour, "the renewed token lives until the next morning")

	// A second expiry (Kite's flush comes early, every process sees 403s and reports
	// them): one more renewal.
	f.kite.ExpireAccessTokens()
	for _, c := range caches {
		require.NoError(t, c.Invalidate(context.Background(), user, tok.AccessToken))
	}
	serveAll(t, caches, user, nth(f.kite, 2))
	assert.Equal(t, 2, f.kite.Calls(kitefake.SessionRefresh, http.MethodPost, 0), "one renewal per expiry")
	assert.True(t, f.kite.RefreshTokenValid(f.storedRefreshToken(t)))

	info, err := f.app.UserInfo(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "AB1234", info.UserID)
	assert.Equal(t, "Kite Fake", info.UserName, "a renewal that says less keeps what the login said")
	assert.False(t, info.LoginTime.IsZero())

	for _, r := range f.kite.Requests() {
		if r.Endpoint == kitefake.SessionRefresh {
			assert.Equal(t, "3", r.Header.Get("X-Kite-Version"))
		}
	}
	f.assertNoSecrets(t, "the log", f.logs.String())
	for _, s := range []string{firstRefresh, second, f.storedRefreshToken(t)} {
		assert.NotContains(t, f.logs.String(), s, "refresh tokens are never logged")
	}
}

func TestRefusedRefreshTokenFallsBackToLoginRequired(t *testing.T) {
	f := newFixture(t, kitefake.Options{RefreshTokens: true}, nil)
	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	refresh := f.storedRefreshToken(t)
	require.NotEmpty(t, refresh)
	var caches []*tokencache.Cache
	for range 4 {
		_, c := f.writer(t, nil)
		caches = append(caches, c)
	}
	user := f.app.User()
	serveAll(t, caches, user, nth(f.kite, 0))
	old := nth(f.kite, 0)()

	f.kite.RevokeRefreshTokens() // the user revoked the app
	f.kite.ExpireAccessTokens()
	for _, c := range caches {
		require.NoError(t, c.Invalidate(context.Background(), user, old))
	}
	// Several of the caches' RetryMax (200 ms here) pass: every attempt after the
	// first finds no refresh token and asks for a human at once.
	ctx := context.Background()
	deadline := time.Now().Add(700 * time.Millisecond)
	for time.Now().Before(deadline) {
		for _, c := range caches {
			_, err := c.Token(ctx, user)
			require.ErrorIs(t, err, zerodha.ErrLoginRequired)
			var lr *zerodha.LoginRequiredError
			require.ErrorAs(t, err, &lr)
			assert.Equal(t, f.web.URL+"/kite/login", lr.URL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	assert.Equal(t, 1, f.kite.Calls(kitefake.SessionRefresh, "", 0), "the refused refresh token was sent once")
	assert.Equal(t, 1, f.kite.Calls(kitefake.SessionRefresh, "", http.StatusForbidden))
	assert.Empty(t, f.storedRefreshToken(t), "and forgotten")
	assert.Contains(t, f.logs.String(), "renewing with the refresh token failed")

	// A human logs in: a new refresh token, and every cache serves the new token.
	status, _ = f.login(t)
	require.Equal(t, http.StatusOK, status)
	serveAll(t, caches, user, nth(f.kite, 1))
	assert.True(t, f.kite.RefreshTokenValid(f.storedRefreshToken(t)))
}

func TestTheFirstFailedRenewalNamesItsCause(t *testing.T) {
	f := newFixture(t, kitefake.Options{RefreshTokens: true}, nil)
	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	f.kite.RevokeRefreshTokens()
	app, _ := f.writer(t, nil)
	_, err := app.Authenticator().Login(context.Background(), app.User())
	var lr *zerodha.LoginRequiredError
	require.ErrorAs(t, err, &lr)
	require.Error(t, lr.RenewErr)
	assert.ErrorIs(t, lr.RenewErr, zerodha.ErrTokenException)
	assert.Contains(t, err.Error(), "renewing with the refresh token failed")
	assert.False(t, lr.Temporary())
}

func TestRenewalWhenKiteIsDownIsRetriedNotAbandoned(t *testing.T) {
	f := newFixture(t, kitefake.Options{RefreshTokens: true}, nil)
	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	refresh := f.storedRefreshToken(t)
	f.kite.Script(kitefake.SessionRefresh, kitefake.Answer{Status: http.StatusServiceUnavailable, Body: `<html>down</html>`},
		kitefake.ErrorAnswer(http.StatusOK, zerodha.NetworkException, "Upstream timeout"))
	app, _ := f.writer(t, nil)
	for i := range 2 {
		_, err := app.Authenticator().Login(context.Background(), app.User())
		if i == 0 {
			require.ErrorIs(t, err, zerodha.ErrUnavailable)
		}
		require.Error(t, err)
		assert.NotErrorIs(t, err, zerodha.ErrLoginRequired, "not a login-required: the refresh token is still good")
		var te interface{ Temporary() bool }
		require.ErrorAs(t, err, &te)
		assert.True(t, te.Temporary())
	}
	assert.Equal(t, refresh, f.storedRefreshToken(t), "kept")
	tok, err := app.Authenticator().Login(context.Background(), app.User())
	require.NoError(t, err)
	assert.True(t, f.kite.Valid(tok.AccessToken))
}

func TestProcessesWithoutTheSecretNeverUseTheRefreshToken(t *testing.T) {
	f := newFixture(t, kitefake.Options{RefreshTokens: true}, nil)
	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	_, service := f.writer(t, func(o *zerodha.Options) { o.APISecret = "" })
	user := f.app.User()
	tok, err := service.Token(context.Background(), user)
	require.NoError(t, err)
	f.kite.ExpireAccessTokens()
	require.NoError(t, service.Invalidate(context.Background(), user, tok.AccessToken))
	_, err = service.Token(context.Background(), user)
	require.ErrorIs(t, err, zerodha.ErrLoginRequired)
	assert.Zero(t, f.kite.Calls(kitefake.SessionRefresh, "", 0))
	assert.NotEmpty(t, f.storedRefreshToken(t))
}

func TestRenewBeforeTheMorningExpiryIsNotDue(t *testing.T) {
	f := newFixture(t, kitefake.Options{RefreshTokens: true}, nil)
	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	tok, err := f.cache.Token(context.Background(), f.app.User())
	require.NoError(t, err)
	app, _ := f.writer(t, nil)
	var renewer tokencache.Renewer = app.Authenticator()
	_, err = renewer.Renew(context.Background(), app.User(), tok)
	require.ErrorIs(t, err, zerodha.ErrRenewalNotDue)
	require.ErrorIs(t, err, tokencache.ErrRenewalNotDue, "the cache counts it as no failure")
	var te interface{ Temporary() bool }
	require.ErrorAs(t, err, &te)
	assert.False(t, te.Temporary())
	assert.Zero(t, f.kite.Calls(kitefake.SessionRefresh, "", 0), "Kite was not asked")
}

func TestRenewalJustBeforeTheMorningExpiryWaitsForIt(t *testing.T) {
	f := newFixture(t, kitefake.Options{RefreshTokens: true},
		func(o *zerodha.Options) { o.ExpiryTime = soonInIndia(5 * time.Minute) })
	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	app, _ := f.writer(t, nil)
	// The expiry is minutes away, more than this caller's deadline: a token renewed now
	// would die with the current one, so nothing is sent and the cache is told to try
	// again soon.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := app.Authenticator().Login(ctx, app.User())
	require.ErrorIs(t, err, zerodha.ErrUnavailable)
	assert.Contains(t, err.Error(), "renewing after it")
	var te interface{ Temporary() bool }
	require.ErrorAs(t, err, &te)
	assert.True(t, te.Temporary())
	assert.NotErrorIs(t, err, zerodha.ErrLoginRequired)
	assert.Zero(t, f.kite.Calls(kitefake.SessionRefresh, "", 0))
}
