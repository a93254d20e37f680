package zerodha_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/zerodha"
)

// countingAuth counts the cache's calls to the Authenticator.
type countingAuth struct {
	tokencache.Authenticator
	n atomic.Int64
}

func (c *countingAuth) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	c.n.Add(1)
	return c.Authenticator.Login(ctx, user)
}

func TestAuthenticatorAsksForAHumanInsteadOfLoggingIn(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	auth := &countingAuth{Authenticator: f.app.Authenticator()}
	service := f.newCache(t, auth)
	changes := service.Watch(ctx, f.app.User())

	_, err := service.Token(ctx, f.app.User())
	require.Error(t, err)
	var re *tokencache.RefreshError
	require.ErrorAs(t, err, &re)
	var lr *zerodha.LoginRequiredError
	require.ErrorAs(t, err, &lr)
	assert.ErrorIs(t, err, zerodha.ErrLoginRequired)
	assert.Equal(t, f.web.URL+"/kite/login", lr.URL)
	assert.Equal(t, f.app.User(), lr.User)
	assert.False(t, lr.Temporary())
	assert.Contains(t, err.Error(), "open "+f.web.URL+"/kite/login")

	// Until RetryMax (200 ms here) has passed, callers get the error without a new attempt.
	for range 20 {
		_, err := service.Token(ctx, f.app.User())
		require.ErrorIs(t, err, zerodha.ErrLoginRequired)
	}
	assert.Equal(t, int64(1), auth.n.Load())
	assert.Empty(t, f.kite.Requests(), "the Authenticator never calls Kite")

	status, page := f.login(t)
	require.Equal(t, http.StatusOK, status, page)
	awaitToken(t, service, f.app.User(), f.kite.AccessTokens()[0])
	select {
	case tok := <-changes:
		assert.Equal(t, f.kite.AccessTokens()[0], tok.AccessToken)
	case <-ctx.Done():
		t.Fatal("Watch was not told of the login")
	}
}

func TestAuthenticatorMintsAKiteURLWithoutStartURL(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, func(o *zerodha.Options) { o.StartURL = "" })
	ctx := context.Background()
	_, err := f.app.Authenticator().Login(ctx, f.app.User())
	var lr *zerodha.LoginRequiredError
	require.ErrorAs(t, err, &lr)
	require.True(t, strings.HasPrefix(lr.URL, f.kite.LoginURL()+"?"), lr.URL)
	assert.NoError(t, lr.Unwrap())

	status, page := visit(t, lr.URL) // the human opens the URL from the log line
	require.Equal(t, http.StatusOK, status, page)
	_, err = f.cache.Token(ctx, f.app.User())
	assert.NoError(t, err)

	// A failed page offers a freshly minted Kite URL too.
	status, page = visit(t, lr.URL)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Contains(t, page, `href="`+f.kite.LoginURL()+"?")
}

func TestAuthenticatorWithoutRedisStillSaysLoginRequired(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, func(o *zerodha.Options) { o.StartURL = "" })
	opts := f.opts
	rdb := f.redis.Client(t)
	opts.Redis = rdb
	app, err := zerodha.New(opts)
	require.NoError(t, err)
	require.NoError(t, rdb.Close())
	_, err = app.Authenticator().Login(context.Background(), "u")
	assert.ErrorIs(t, err, zerodha.ErrLoginRequired)
	assert.ErrorIs(t, err, tokencache.ErrRedisUnavailable)
	var lr *zerodha.LoginRequiredError
	require.True(t, errors.As(err, &lr))
	assert.Empty(t, lr.URL)
	assert.Contains(t, err.Error(), "no login URL")
}

// A 403 TokenException reported with Invalidate makes services wait for the next human
// login: one Authenticator call per RetryMax, never a call to Kite.
func TestRejectedTokenWaitsForTheNextLogin(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	auth := &countingAuth{Authenticator: f.app.Authenticator()}
	service := f.newCache(t, auth)
	tok, err := service.Token(ctx, f.app.User())
	require.NoError(t, err)

	f.kite.ExpireAccessTokens() // the morning flush
	require.NoError(t, service.Invalidate(ctx, f.app.User(), tok.AccessToken))
	start := time.Now()
	for time.Since(start) < 500*time.Millisecond {
		_, err := service.Token(ctx, f.app.User())
		require.ErrorIs(t, err, zerodha.ErrLoginRequired)
		time.Sleep(5 * time.Millisecond)
	}
	// RetryMax is 200 ms: about 3 attempts in 500 ms, not one per call.
	assert.LessOrEqual(t, auth.n.Load(), int64(4))
	assert.GreaterOrEqual(t, auth.n.Load(), int64(1))
	assert.Equal(t, 0, f.kite.Calls(kitefake.UserProfile, "", 0))

	status, _ = f.login(t)
	require.Equal(t, http.StatusOK, status)
	awaitToken(t, service, f.app.User(), f.kite.AccessTokens()[1])
}

// awaitToken waits until cache serves want for user. A login stored while the cache's
// own (failing) login attempt runs is served only after the cache's RetryMax (200 ms
// here): see the tokencache note in examples/kite-feed.
func awaitToken(t *testing.T, cache *tokencache.Cache, user, want string) *tokencache.Token {
	t.Helper()
	var got *tokencache.Token
	require.Eventually(t, func() bool {
		tok, err := cache.Token(context.Background(), user)
		if err == nil && tok.AccessToken == want {
			got = tok
			return true
		}
		return false
	}, 5*time.Second, 5*time.Millisecond)
	return got
}
