package tradovate_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

func official(c *tradovate.Credential) { c.Method = tradovate.MethodOfficial }

func TestRenewExtendsTheSessionAndKeepsTheMarketDataToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{Lifetime: time.Hour}, 1)
	user := f.users[0]
	a := f.auth(t, f.credentials(t, official), nil)
	ctx := context.Background()
	first, err := a.Login(ctx, user)
	require.NoError(t, err)

	renewed, err := a.Renew(ctx, user, first)
	require.NoError(t, err)
	assert.NotEqual(t, first.AccessToken, renewed.AccessToken, "a renewal gives a new token")
	assert.Equal(t, first.MDAccessToken, renewed.MDAccessToken, "the answer omitted mdAccessToken: the old one is kept")
	assert.True(t, f.fake.Valid(renewed.AccessToken))
	assert.False(t, renewed.Expiry.Before(first.Expiry))

	reqs := f.fake.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, tradovatefake.RenewAccessToken, reqs[1].Endpoint)
	assert.Equal(t, "Bearer "+first.AccessToken, reqs[1].Header.Get("Authorization"))
	assert.Equal(t, 1, f.fake.Logins(user))
	assert.Equal(t, 1, f.fake.Renewals(user))
	assert.Equal(t, 1, f.fake.Sessions(user), "renewing opens no session")
}

func TestRenewTakesANewMarketDataTokenWhenGiven(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{RenewIncludesMD: true}, 1)
	a := f.auth(t, f.credentials(t, official), nil)
	ctx := context.Background()
	first, err := a.Login(ctx, f.users[0])
	require.NoError(t, err)
	renewed, err := a.Renew(ctx, f.users[0], first)
	require.NoError(t, err)
	assert.NotEqual(t, first.MDAccessToken, renewed.MDAccessToken)
	assert.True(t, f.fake.Valid(renewed.MDAccessToken))
}

func TestRenewOfARejectedTokenWrapsErrTokenRejected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		prepare func(f *fixture, tok *tokencache.Token) *tokencache.Token
	}{
		{"revoked", func(f *fixture, tok *tokencache.Token) *tokencache.Token {
			f.fake.Revoke(tok.AccessToken)
			return tok
		}},
		{"unknown", func(_ *fixture, tok *tokencache.Token) *tokencache.Token {
			c := *tok
			c.AccessToken = "not-a-token-the-broker-issued"
			return &c
		}},
		{"errorText on 200", func(f *fixture, tok *tokencache.Token) *tokencache.Token {
			f.fake.Script(tradovatefake.RenewAccessToken, f.users[0], tradovatefake.ErrorText("Access is denied"))
			return tok
		}},
		{"missing", func(*fixture, *tokencache.Token) *tokencache.Token { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tradovatefake.Options{}, 1)
			a := f.auth(t, f.credentials(t, official), nil)
			ctx := context.Background()
			tok, err := a.Login(ctx, f.users[0])
			require.NoError(t, err)
			bad := tt.prepare(f, tok)

			_, err = a.Renew(ctx, f.users[0], bad)
			require.ErrorIs(t, err, tokencache.ErrTokenRejected)
			var apiErr *tradovate.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.False(t, apiErr.Temporary())
			assert.Equal(t, "auth/renewaccesstoken", apiErr.Endpoint)
			if bad != nil {
				assert.NotContains(t, err.Error(), bad.AccessToken)
			}
			assert.LessOrEqual(t, f.fake.Calls(tradovatefake.RenewAccessToken, ""), 1, "a rejection is not retried")
		})
	}
}

func TestRenewOfAnExpiredTokenIsRejected(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{OpaqueTokens: true, Lifetime: 300 * time.Millisecond}, 1)
	a := f.auth(t, f.credentials(t, official), nil)
	ctx := context.Background()
	tok, err := a.Login(ctx, f.users[0])
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !f.fake.Valid(tok.AccessToken) }, 5*time.Second, 20*time.Millisecond)
	_, err = a.Renew(ctx, f.users[0], tok)
	require.ErrorIs(t, err, tokencache.ErrTokenRejected)
}

func TestRenewRetriesTemporaryFailures(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	a := f.auth(t, f.credentials(t, official), nil)
	ctx := context.Background()
	tok, err := a.Login(ctx, user)
	require.NoError(t, err)
	f.fake.Script(tradovatefake.RenewAccessToken, user, tradovatefake.Status(502), tradovatefake.Garbage())
	renewed, err := a.Renew(ctx, user, tok)
	require.NoError(t, err)
	assert.True(t, f.fake.Valid(renewed.AccessToken))
	assert.Equal(t, 3, f.fake.Calls(tradovatefake.RenewAccessToken, user))

	f.fake.Script(tradovatefake.RenewAccessToken, user, tradovatefake.Status(500), tradovatefake.Status(500), tradovatefake.Status(500))
	_, err = a.Renew(ctx, user, renewed)
	require.ErrorIs(t, err, tradovate.ErrUnavailable)
	var temp interface{ Temporary() bool }
	require.ErrorAs(t, err, &temp)
	assert.True(t, temp.Temporary())
}

func TestRenewDoesNotSpendTheLoginBudget(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	a := f.auth(t, f.credentials(t, official), func(o *tradovate.Options) {
		o.LoginBudget, o.LoginBudgetWindow, o.LoginBudgetWait = 1, time.Hour, -1
	})
	ctx := context.Background()
	tok, err := a.Login(ctx, user)
	require.NoError(t, err)
	for range 5 {
		tok, err = a.Renew(ctx, user, tok)
		require.NoError(t, err)
	}
	_, err = a.Login(ctx, user)
	require.ErrorIs(t, err, tradovate.ErrLoginBudgetExhausted)
	assert.Equal(t, 5, f.fake.Renewals(user))
	assert.Equal(t, 1, f.fake.Calls(tradovatefake.AccessTokenRequest, user))
}

func TestTradingViewTokenIsExchangedForARESTPair(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	a := f.auth(t, f.credentials(t, nil), func(o *tradovate.Options) { o.ExchangeTVToken = true })
	tok, err := a.Login(context.Background(), user)
	require.NoError(t, err)
	assert.NotEmpty(t, tok.MDAccessToken)
	assert.True(t, f.fake.Valid(tok.AccessToken))
	assert.True(t, f.fake.Valid(tok.MDAccessToken))
	assert.Equal(t, 1, f.fake.Calls(tradovatefake.Authorize, user))
	assert.Equal(t, 1, f.fake.Renewals(user))
	assert.Equal(t, 0, f.fake.Calls(tradovatefake.AccessTokenRequest, user))
}

func TestTradingViewExchangeFailureFallsBackToTheLoginToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	f.fake.Script(tradovatefake.RenewAccessToken, user, tradovatefake.Status(500), tradovatefake.Status(500), tradovatefake.Status(500))
	a := f.auth(t, f.credentials(t, nil), func(o *tradovate.Options) { o.ExchangeTVToken = true })
	before := time.Now()
	tok, err := a.Login(context.Background(), user)
	require.NoError(t, err)
	assert.Empty(t, tok.MDAccessToken)
	assert.True(t, f.fake.Valid(tok.AccessToken))
	assert.WithinDuration(t, before.Add(time.Minute), tok.RenewAt, 5*time.Second, "asks for a renewal a minute later (the default)")
}

// A fleet whose login could not be exchanged at once renews the token early, once, and
// the market-data token comes with that renewal, long before the usual refresh point.
func TestTradingViewExchangeFailureIsRenewedEarly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	f.fake.Script(tradovatefake.RenewAccessToken, user, tradovatefake.Status(500), tradovatefake.Status(500), tradovatefake.Status(500))
	caches := f.fleet(t, 3, f.credentials(t, nil), func(o *tradovate.Options) {
		o.ExchangeTVToken, o.ExchangeRetryAfter = true, 300*time.Millisecond
	}, nil)
	ctx := tokenCtx(t)
	first, err := caches[0].Token(ctx, user)
	require.NoError(t, err)
	require.Empty(t, first.MDAccessToken, "the exchange failed")
	var got *tokencache.Token
	require.Eventually(t, func() bool { // the services keep asking, as the daemon's checks do
		for _, c := range caches {
			if got, err = c.Token(ctx, user); err != nil || got.MDAccessToken != "" {
				return err == nil
			}
		}
		return false
	}, 20*time.Second, 20*time.Millisecond)
	assert.True(t, f.fake.Valid(got.MDAccessToken))
	assert.True(t, got.RenewAt.IsZero())
	assert.Equal(t, 1, f.fake.Calls(tradovatefake.Authorize, user), "one login")
	assert.Equal(t, 1, f.fake.Renewals(user), "one early renewal for the fleet")
	assert.Equal(t, 4, f.fake.Calls(tradovatefake.RenewAccessToken, user), "the three failed exchange attempts, then that renewal")
}
