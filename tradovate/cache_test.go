package tradovate_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// These tests run the Authenticator the way production does: behind a fleet of
// tokencache.Cache values, each with its own Redis clients (one per simulated process),
// against the fake broker.

// fleet starts n caches, each with its own Authenticator; editAuth and editCache may
// adjust their options.
func (f *fixture) fleet(t *testing.T, n int, creds tradovate.CredentialSource,
	editAuth func(*tradovate.Options), editCache func(*tokencache.Options)) []*tokencache.Cache {
	t.Helper()
	var caches []*tokencache.Cache
	for range n {
		opts := tokencache.Options{
			Redis:         f.redis.Client(t),
			Authenticator: f.auth(t, creds, editAuth),
			Prefix:        f.redis.Prefix,
			Logger:        quietLogger(),
		}
		if editCache != nil {
			editCache(&opts)
		}
		c, err := tokencache.New(opts)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		caches = append(caches, c)
	}
	return caches
}

// tokenCtx bounds one Token call in these tests.
func tokenCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestFleetLogsEachUserInOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 3)
	caches := f.fleet(t, 4, f.credentials(t, nil), nil, nil)
	ctx := tokenCtx(t)

	type result struct {
		user string
		tok  *tokencache.Token
		err  error
	}
	results := make(chan result, len(caches)*len(f.users)*5)
	var wg sync.WaitGroup
	for _, c := range caches {
		for _, u := range f.users {
			for range 5 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tok, err := c.Token(ctx, u)
					results <- result{u, tok, err}
				}()
			}
		}
	}
	wg.Wait()
	close(results)
	seen := map[string]string{}
	for r := range results {
		require.NoError(t, r.err)
		if prev, ok := seen[r.user]; ok {
			assert.Equal(t, prev, r.tok.AccessToken, "every process gets the same token for %s", r.user)
		}
		seen[r.user] = r.tok.AccessToken
		assert.True(t, f.fake.Valid(r.tok.AccessToken))
	}
	for _, u := range f.users {
		assert.Equal(t, 1, f.fake.Logins(u), "one login for %s across the fleet", u)
		assert.Equal(t, 1, f.fake.Calls(tradovatefake.Authorize, u))
	}
}

// runUntil calls Token for users on every cache in a loop until done reports true,
// checking that every token served is one the broker accepts at that moment.
func runUntil(t *testing.T, f *fixture, caches []*tokencache.Cache, users []string, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	ctx := tokenCtx(t)
	for !done() {
		require.True(t, time.Now().Before(deadline), "gave up waiting")
		var wg sync.WaitGroup
		for _, c := range caches {
			for _, u := range users {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tok, err := c.Token(ctx, u)
					if assert.NoError(t, err) {
						assert.True(t, f.fake.Valid(tok.AccessToken), "served a token the broker rejects")
					}
				}()
			}
		}
		wg.Wait()
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFleetRenewsInsteadOfLoggingIn(t *testing.T) {
	t.Parallel()
	const lifetimes = 20
	tests := []struct {
		name   string
		fake   tradovatefake.Options
		method tradovate.Method
		edit   func(*tradovate.Options)
		count  int
	}{
		// Opaque tokens with millisecond expirationTime allow sub-second lifetimes.
		{"official", tradovatefake.Options{OpaqueTokens: true, Lifetime: 600 * time.Millisecond}, tradovate.MethodOfficial, nil, lifetimes},
		// JWT exp has whole seconds, so fewer, longer lifetimes keep the test short.
		{"TradingView exchanged for a REST pair", tradovatefake.Options{Lifetime: time.Second}, tradovate.MethodTradingView,
			func(o *tradovate.Options) { o.ExchangeTVToken = true }, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.fake, 2)
			creds := f.credentials(t, func(c *tradovate.Credential) { c.Method = tt.method })
			// RefreshBefore keeps its 15-minute default: the cache caps it at half the
			// lifetime, so each token is renewed about halfway through its life.
			caches := f.fleet(t, 4, creds, tt.edit, nil)
			runUntil(t, f, caches, f.users, func() bool {
				for _, u := range f.users {
					if f.fake.Renewals(u) < tt.count {
						return false
					}
				}
				return true
			})
			for _, u := range f.users {
				assert.Equal(t, 1, f.fake.Logins(u), "renewals, not logins, for %s", u)
				assert.LessOrEqual(t, f.fake.Renewals(u), tt.count+2, "one renewal per lifetime, not one per process")
				assert.Equal(t, 1, f.fake.Sessions(u))
			}
		})
	}
}

func TestCaptchaAndLockoutStopEveryCache(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		answer   tradovatefake.Response
		is       error
		allUsers bool
	}{
		{"captcha", tradovatefake.Captcha(), tradovate.ErrCaptchaRequired, false},
		{"HTTP 429", tradovatefake.Lockout(), tradovate.ErrLockedOut, true},
		{"HTTP 423", tradovatefake.Status(423), tradovate.ErrLockedOut, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tradovatefake.Options{}, 2)
			victim, other := f.users[0], f.users[1]
			f.fake.Script(tradovatefake.Authorize, victim, tt.answer)
			caches := f.fleet(t, 4, f.credentials(t, nil), nil, func(o *tokencache.Options) {
				o.RetryMin, o.RetryMax = 50*time.Millisecond, 100*time.Millisecond
			})
			ctx := tokenCtx(t)
			for round := range 3 {
				for i, c := range caches {
					_, err := c.Token(ctx, victim)
					require.ErrorIs(t, err, tt.is, "round %d cache %d", round, i)
					var refreshErr *tokencache.RefreshError
					assert.ErrorAs(t, err, &refreshErr)
				}
			}
			assert.Equal(t, 1, f.fake.Calls(tradovatefake.Authorize, victim), "one request reached the broker")

			_, err := caches[0].Token(ctx, other)
			if tt.allUsers {
				require.ErrorIs(t, err, tt.is, "a lockout pauses every login")
				var cd *tradovate.CooldownError
				require.ErrorAs(t, err, &cd)
				assert.True(t, cd.AllUsers)
				assert.Equal(t, 0, f.fake.Calls(tradovatefake.Authorize, other))
			} else {
				require.NoError(t, err, "a captcha stops only its own user")
			}
		})
	}
}

func TestFleetLoginBudgetHolds(t *testing.T) {
	t.Parallel()
	const (
		limit  = 3
		window = time.Second
	)
	f := newFixture(t, tradovatefake.Options{}, 8)
	caches := f.fleet(t, 4, f.credentials(t, nil), func(o *tradovate.Options) {
		o.LoginBudget, o.LoginBudgetWindow = limit, window
	}, nil)
	ctx := tokenCtx(t)
	var wg sync.WaitGroup
	for _, c := range caches {
		for _, u := range f.users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.Token(ctx, u)
				assert.NoError(t, err)
			}()
		}
	}
	wg.Wait()
	times := loginTimes(f.fake)
	assert.Len(t, times, len(f.users), "one login per user")
	assert.LessOrEqual(t, maxInWindow(times, window-100*time.Millisecond), limit)
}

func TestInvalidatedTokenIsReplacedByOneLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	caches := f.fleet(t, 4, f.credentials(t, official), nil, nil)
	ctx := tokenCtx(t)
	first, err := caches[0].Token(ctx, user)
	require.NoError(t, err)

	// The broker drops the session; every consumer reports the same 401.
	f.fake.Revoke(first.AccessToken)
	for _, c := range caches {
		require.NoError(t, c.Invalidate(ctx, user, first.AccessToken))
	}
	for _, c := range caches {
		tok, err := c.Token(ctx, user)
		require.NoError(t, err)
		assert.NotEqual(t, first.AccessToken, tok.AccessToken)
		assert.True(t, f.fake.Valid(tok.AccessToken))
	}
	assert.Equal(t, 2, f.fake.Logins(user), "fifty reports, one new login")
}

func TestRenewRejectedDuringRefreshFallsBackToLogin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{OpaqueTokens: true, Lifetime: 600 * time.Millisecond}, 1)
	user := f.users[0]
	caches := f.fleet(t, 4, f.credentials(t, official), nil, nil)
	ctx := tokenCtx(t)
	first, err := caches[0].Token(ctx, user)
	require.NoError(t, err)

	// The broker drops the session without anyone noticing: the next refresh tries to
	// renew, gets 401 (ErrTokenRejected) and logs in instead.
	f.fake.Revoke(first.AccessToken)
	require.Eventually(t, func() bool {
		for _, c := range caches {
			tok, err := c.Token(ctx, user)
			if err != nil || !f.fake.Valid(tok.AccessToken) {
				return false
			}
		}
		return true
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, 2, f.fake.Logins(user))
	refused := 0
	for _, r := range f.fake.Requests() {
		if r.Endpoint == tradovatefake.RenewAccessToken && r.Status == http.StatusUnauthorized {
			refused++
		}
	}
	assert.Equal(t, 1, refused, "one refused renewal, not one per process")
}

func TestLegacyKeysForSubAccounts(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	accounts := []string{f.redis.Name("PA1"), f.redis.Name("PA2")}
	creds := f.credentials(t, func(c *tradovate.Credential) { c.Accounts = accounts })
	m, err := tradovate.NewAccountMap(context.Background(), creds, tradovate.AccountOptions{})
	require.NoError(t, err)
	caches := f.fleet(t, 2, creds, nil, func(o *tokencache.Options) {
		o.UserFor, o.AccountsFor, o.LegacyKeys = m.UserFor, m.AccountsFor, true
	})
	ctx := tokenCtx(t)
	tok, err := caches[1].Token(ctx, accounts[1])
	require.NoError(t, err)
	viaUser, err := caches[0].Token(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, tok.AccessToken, viaUser.AccessToken, "a sub-account shares its login user's token")

	rdb := f.redis.Client(t)
	for _, a := range append([]string{user}, accounts...) {
		got, err := rdb.Get(ctx, "token:"+a).Result()
		require.NoError(t, err, a)
		assert.Equal(t, tok.AccessToken, got, "GET token:%s prints the bare token", a)
	}
	legacy, err := tradovate.LegacyAccounts(ctx, rdb, user)
	require.NoError(t, err)
	assert.ElementsMatch(t, accounts, legacy, "the {user} list round-trips through LegacyAccounts")
	assert.Equal(t, 1, f.fake.Logins(user))
}
