package tradovate_test

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

	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// These tests cover what the real servers will test and the happy paths do not: both
// TradingView answer shapes, an accepted login whose answer cannot be read, 400 on
// renewal, the auth/me check and the user information kept beside the user.

func TestTradingViewLoginReadsBothAnswerShapes(t *testing.T) {
	t.Parallel()
	for _, camel := range []bool{false, true} {
		name := "access_token and expiration"
		if camel {
			name = "accessToken and expirationTime"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tradovatefake.Options{TVCamelCase: camel, Lifetime: time.Hour}, 1)
			u := f.users[0]
			tok, err := f.auth(t, f.credentials(t, nil), nil).Login(context.Background(), u)
			require.NoError(t, err)
			assert.True(t, f.fake.Valid(tok.AccessToken))
			exp, ok := tokencache.JWTExpiry(tok.AccessToken)
			require.True(t, ok)
			assert.WithinDuration(t, exp, tok.Expiry, time.Second, "the expiry comes from the answer")
			assert.Equal(t, 1, f.fake.Calls(tradovatefake.Authorize, u))

			info, err := tradovate.ReadUserInfo(context.Background(), readerOptions(t, f), u)
			require.NoError(t, err)
			assert.Equal(t, f.fake.UserID(u), info.UserID)
			assert.Equal(t, u, info.Name)
			assert.Equal(t, tradovate.MethodTradingView, info.Method)
			want := 1 // the first shape has no userId: auth/me is asked once
			if camel {
				want = 0
			}
			assert.Equal(t, want, f.fake.Calls(tradovatefake.AuthMe, u))
		})
	}
}

// readerOptions are what a process without credentials needs to read the shared keys.
func readerOptions(t *testing.T, f *fixture) tradovate.Options {
	return tradovate.Options{Redis: f.redis.Client(t), Namespace: f.redis.Prefix + ":tradovate"}
}

func TestAcceptedLoginWithAnUnknownAnswerIsSentOnce(t *testing.T) {
	t.Parallel()
	for _, method := range []tradovate.Method{tradovate.MethodTradingView, tradovate.MethodOfficial} {
		t.Run(string(method), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tradovatefake.Options{}, 2)
			u, other := f.users[0], f.users[1]
			ep := tradovatefake.Authorize
			if method == tradovate.MethodOfficial {
				ep = tradovatefake.AccessTokenRequest
			}
			f.fake.Script(ep, u, tradovatefake.Response{Body: unknownShapeBody})
			logger, logs := bufferLogger()
			creds := f.credentials(t, func(c *tradovate.Credential) { c.Method = method })
			// Caches that would retry within milliseconds, and an Authenticator that
			// retries temporary failures: neither sends the accepted login again.
			var reported atomic.Int32 // what a daemon's alerting hook sees
			caches := f.fleet(t, 4, creds, func(o *tradovate.Options) { o.Logger = logger }, func(o *tokencache.Options) {
				o.RetryMin, o.RetryMax = 5*time.Millisecond, 20*time.Millisecond
				o.Hooks.RefreshFailed = func(_, op string, err error) {
					if op == "login" && errors.Is(err, tradovate.ErrUnknownLoginAnswer) {
						reported.Add(1)
					}
				}
			})
			ctx := tokenCtx(t)
			var first error
			for round := range 10 {
				for _, c := range caches {
					_, err := c.Token(ctx, u)
					require.ErrorIs(t, err, tradovate.ErrUnknownLoginAnswer, "round %d", round)
					if first == nil {
						first = err
					}
				}
				time.Sleep(25 * time.Millisecond) // past the caches' backoff
			}
			assert.Equal(t, 1, f.fake.Calls(ep, u), "the accepted login reached the broker once")
			sent := 0
			for _, r := range f.fake.Requests() {
				if r.User == u {
					sent++
				}
			}
			assert.Equal(t, 1, sent, "and nothing else did")

			var apiErr *tradovate.APIError
			require.ErrorAs(t, first, &apiErr)
			assert.False(t, apiErr.Temporary())
			assert.Equal(t, 1, apiErr.Attempts)
			msg := first.Error()
			for _, name := range []string{`"d"`, `"token"`, `"ttl"`, "string", "number"} {
				assert.Contains(t, msg, name, "the error names the answer's shape")
			}
			assert.NotContains(t, msg, unknownShapeToken)
			assert.NotContains(t, msg, "4800", "values are never shown")
			assert.Contains(t, logs.String(), "level=ERROR", "the failure is reported loudly")
			assert.Positive(t, reported.Load(), "and reaches the caches' failure hooks")
			assert.NotContains(t, logs.String(), unknownShapeToken)

			// Every process sees the hold, without contacting the broker.
			fresh := f.auth(t, creds, nil)
			_, err := fresh.Login(ctx, u)
			var cd *tradovate.CooldownError
			require.ErrorAs(t, err, &cd)
			assert.ErrorIs(t, err, tradovate.ErrUnknownLoginAnswer)
			assert.False(t, cd.Temporary())
			assert.Contains(t, cd.Error(), `"ttl"`)
			assert.Equal(t, 1, f.fake.Calls(ep, u))

			// Other users are not held; a human clears the hold and the user logs in.
			_, err = caches[0].Token(ctx, other)
			require.NoError(t, err)
			require.NoError(t, fresh.ClearCooldown(ctx, u))
			tok, err := fresh.Login(ctx, u)
			require.NoError(t, err)
			assert.True(t, f.fake.Valid(tok.AccessToken))
		})
	}
}

func TestLoginAnswerCutShortIsNotResent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	u := f.users[0]
	f.fake.Script(tradovatefake.Authorize, u, tradovatefake.Cut())
	_, err := f.auth(t, f.credentials(t, nil), nil).Login(context.Background(), u)
	require.ErrorIs(t, err, tradovate.ErrUnavailable)
	var apiErr *tradovate.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.False(t, apiErr.Temporary(), "the login may have been accepted")
	assert.Contains(t, err.Error(), "cut short")
	assert.Equal(t, 1, f.fake.Calls(tradovatefake.Authorize, u))
	assert.Equal(t, 1, f.fake.Logins(u), "the broker did log the user in")
}

func TestRenewalAnswered400LeadsToOneLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{OpaqueTokens: true, Lifetime: 600 * time.Millisecond}, 1)
	u := f.users[0]
	var failed, logins atomic.Int32
	caches := f.fleet(t, 4, f.credentials(t, official), nil, func(o *tokencache.Options) {
		o.Hooks.RefreshFailed = func(string, string, error) { failed.Add(1) }
		o.Hooks.Refreshed = func(_, op string, _ *tokencache.Token) {
			if op == "login" {
				logins.Add(1)
			}
		}
	})
	ctx := tokenCtx(t)
	first, err := caches[0].Token(ctx, u)
	require.NoError(t, err)
	f.fake.Script(tradovatefake.RenewAccessToken, u, tradovatefake.Status(http.StatusBadRequest))

	require.Eventually(t, func() bool {
		done := f.fake.Logins(u) >= 2
		for _, c := range caches { // refreshes are lazy: someone must ask
			tok, err := c.Token(ctx, u)
			if err != nil || tok.AccessToken == first.AccessToken || !f.fake.Valid(tok.AccessToken) {
				done = false
			}
		}
		return done
	}, 15*time.Second, 20*time.Millisecond)
	assert.Equal(t, 2, f.fake.Logins(u), "the 400 was a rejected token: one login, not one per process")
	assert.Equal(t, int32(2), logins.Load())
	assert.Zero(t, failed.Load(), "the renewal that got 400 turned into a login at once, not a failure")
	bad := 0
	for _, r := range requestsTo(f.fake, tradovatefake.RenewAccessToken) {
		if r.Status == http.StatusBadRequest {
			bad++
		}
	}
	assert.Equal(t, 1, bad, "the 400 was not retried")
}

func TestCheckAsksAuthMe(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	u := f.users[0]
	a := f.auth(t, f.credentials(t, official), nil)
	ctx := context.Background()
	tok, err := a.Login(ctx, u)
	require.NoError(t, err)
	var checker tokencache.Checker = a

	require.NoError(t, checker.Check(ctx, u, tok), "a live token is valid")
	r := requestsTo(f.fake, tradovatefake.AuthMe)
	require.Len(t, r, 1)
	assert.Equal(t, "Bearer "+tok.AccessToken, r[0].Header.Get("Authorization"))
	assert.Equal(t, http.MethodGet, "GET")

	rejected := []struct {
		name   string
		script tradovatefake.Response
	}{
		{"401", tradovatefake.Status(http.StatusUnauthorized)},
		{"400", tradovatefake.Status(http.StatusBadRequest)},
		{"errorText", tradovatefake.ErrorText("Access is denied")},
	}
	for _, tt := range rejected {
		f.fake.Script(tradovatefake.AuthMe, u, tt.script)
		err := a.Check(ctx, u, tok)
		assert.ErrorIs(t, err, tokencache.ErrTokenRejected, tt.name)
		assert.NotContains(t, err.Error(), tok.AccessToken)
	}
	cannotTell := []struct {
		name   string
		script tradovatefake.Response
		is     error
	}{
		{"503", tradovatefake.Status(http.StatusServiceUnavailable), tradovate.ErrUnavailable},
		{"429", tradovatefake.Status(http.StatusTooManyRequests), tradovate.ErrLockedOut},
		{"garbage", tradovatefake.Garbage(), tradovate.ErrMalformedResponse},
		{"no userId", tradovatefake.NoToken(), tradovate.ErrMalformedResponse},
		{"penalty", tradovatefake.Penalty(1), tradovate.ErrUnavailable},
	}
	for _, tt := range cannotTell {
		f.fake.ClearScripts()
		f.fake.Script(tradovatefake.AuthMe, u, tt.script)
		err := a.Check(ctx, u, tok)
		require.Error(t, err, tt.name)
		assert.NotErrorIs(t, err, tokencache.ErrTokenRejected, tt.name)
		assert.ErrorIs(t, err, tt.is, tt.name)
	}
	f.fake.ClearScripts()
	f.fake.Revoke(tok.AccessToken)
	assert.ErrorIs(t, a.Check(ctx, u, tok), tokencache.ErrTokenRejected, "revoked at the broker")
	assert.ErrorIs(t, a.Check(ctx, u, &tokencache.Token{AccessToken: tok.MDAccessToken}), tokencache.ErrTokenRejected,
		"a market-data token is no REST token")
	assert.ErrorIs(t, a.Check(ctx, u, nil), tokencache.ErrTokenRejected)

	assert.Equal(t, 1+len(rejected)+len(cannotTell)+2, f.fake.Calls(tradovatefake.AuthMe, ""), "one request per check, no retries")
	assert.Equal(t, 1, f.fake.Logins(u), "checks open no session")
	assert.Zero(t, f.fake.Renewals(u))
}

func TestCheckOfAnExpiredToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{OpaqueTokens: true, Lifetime: 200 * time.Millisecond}, 1)
	u := f.users[0]
	a := f.auth(t, f.credentials(t, official), nil)
	tok, err := a.Login(context.Background(), u)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !f.fake.Valid(tok.AccessToken) }, 5*time.Second, 10*time.Millisecond)
	assert.ErrorIs(t, a.Check(context.Background(), u, tok), tokencache.ErrTokenRejected)
}

func TestUserInfoIsKeptForEveryProcess(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 2)
	u, v := f.users[0], f.users[1]
	ctx := context.Background()
	reader := readerOptions(t, f)
	_, err := tradovate.ReadUserInfo(ctx, reader, u)
	require.ErrorIs(t, err, tradovate.ErrNoUserInfo)

	a := f.auth(t, f.credentials(t, official), nil)
	tok, err := a.Login(ctx, u)
	require.NoError(t, err)
	info, err := tradovate.ReadUserInfo(ctx, reader, u)
	require.NoError(t, err)
	assert.Equal(t, tradovate.UserInfo{User: u, UserID: f.fake.UserID(u), Name: u, UserStatus: "Active",
		Method: tradovate.MethodOfficial, Updated: info.Updated}, *info)
	assert.WithinDuration(t, time.Now(), info.Updated, time.Minute)
	assert.Zero(t, f.fake.Calls(tradovatefake.AuthMe, ""), "the official answer gave the userId")

	_, err = a.Renew(ctx, u, tok)
	require.NoError(t, err)
	renewed, err := tradovate.ReadUserInfo(ctx, reader, u)
	require.NoError(t, err)
	assert.Equal(t, info.UserID, renewed.UserID)
	assert.Equal(t, tradovate.MethodOfficial, renewed.Method, "a renewal keeps what it does not say")
	assert.False(t, renewed.Updated.Before(info.Updated))

	// A TradingView-style user: auth/me gives the userId once, later logins reuse it.
	tv := f.auth(t, f.credentials(t, nil), nil)
	for range 2 {
		_, err := tv.Login(ctx, v)
		require.NoError(t, err)
	}
	vInfo, err := tradovate.ReadUserInfo(ctx, reader, v)
	require.NoError(t, err)
	assert.Equal(t, f.fake.UserID(v), vInfo.UserID)
	assert.Equal(t, 1, f.fake.Calls(tradovatefake.AuthMe, v), "the userId never changes: asked once")

	ttl, err := f.redis.Client(t).TTL(ctx, f.redis.Prefix+":tradovate:{"+u+"}:info").Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, 29*24*time.Hour, "kept for 30 days after the last write")
}

func TestUserInfoLookupFailureDoesNotFailTheLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	u := f.users[0]
	f.fake.Script(tradovatefake.AuthMe, u, tradovatefake.Status(http.StatusServiceUnavailable))
	logger, logs := bufferLogger()
	tok, err := f.auth(t, f.credentials(t, nil), func(o *tradovate.Options) { o.Logger = logger }).Login(context.Background(), u)
	require.NoError(t, err, "the broker logged the user in: a failed lookup must not bring another login")
	assert.True(t, f.fake.Valid(tok.AccessToken))
	assert.Contains(t, logs.String(), "could not ask auth/me")
	info, err := tradovate.ReadUserInfo(context.Background(), readerOptions(t, f), u)
	require.NoError(t, err)
	assert.Zero(t, info.UserID, "unknown until the next login or renewal")
	assert.Equal(t, tradovate.MethodTradingView, info.Method)
}

func TestReadUserInfoErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	u := f.users[0]
	ctx := context.Background()
	_, err := tradovate.ReadUserInfo(ctx, tradovate.Options{}, u)
	require.ErrorContains(t, err, "needs Options.Redis")
	key := f.redis.Prefix + ":tradovate:{" + u + "}:info"
	for _, bad := range []string{`not json`, `{"userId":1}`, `{"user":"x","name":"a\u0007b"}`, `{"user":"x","userId":-4}`} {
		require.NoError(t, f.redis.Client(t).Set(ctx, key, bad, 0).Err())
		_, err = tradovate.ReadUserInfo(ctx, readerOptions(t, f), u)
		require.ErrorContains(t, err, key, bad)
		assert.False(t, errors.Is(err, tradovate.ErrNoUserInfo))
		assert.False(t, strings.Contains(err.Error(), "\u0007"))
	}
}
