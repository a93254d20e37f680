package tokencache_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
)

func TestStaleTokenIsServedWhileOneRenewalRuns(t *testing.T) {
	e := newEnv(t)
	const life = 2 * time.Second // stale after 1 s (minus jitter), unusable at 1.8 s
	b := &broker{lifetime: life, delay: 50 * time.Millisecond}
	user := e.user("U")
	c := e.cache(b, shortLived)
	ctx := context.Background()

	first, err := c.Token(ctx, user)
	require.NoError(t, err)
	require.EqualValues(t, 1, b.logins.Load())

	// Inside the stale window every caller is served the current token at once, and
	// exactly one renewal (not a login) replaces it.
	time.Sleep(time.Until(first.Expiry.Add(-life / 2)))
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := c.Token(ctx, user)
			if assert.NoError(t, err) {
				assert.True(t, tok.AccessToken == first.AccessToken || tok.Version > first.Version)
			}
		}()
	}
	wg.Wait()
	require.Eventually(t, func() bool {
		tok, err := c.Token(ctx, user)
		return err == nil && tok.Version > first.Version
	}, 5*time.Second, 10*time.Millisecond)
	renewed, err := c.Token(ctx, user)
	require.NoError(t, err)
	assert.EqualValues(t, 1, b.renews.Load(), "renewals")
	assert.EqualValues(t, 1, b.logins.Load(), "logins")
	assert.Contains(t, renewed.AccessToken, "renew-tok-")
	assert.Equal(t, first.MDAccessToken, renewed.MDAccessToken, "a renewal without an md token keeps the old one")
}

func TestWithoutRenewerAStaleTokenIsReplacedByALogin(t *testing.T) {
	e := newEnv(t)
	b := &broker{lifetime: time.Second}
	user := e.user("U")
	c := e.cache(loginOnly{b}, shortLived)
	ctx := context.Background()
	first, err := c.Token(ctx, user)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		tok, err := c.Token(ctx, user)
		return err == nil && tok.Version > first.Version
	}, 5*time.Second, 10*time.Millisecond)
	assert.EqualValues(t, 2, b.logins.Load())
	assert.Zero(t, b.renews.Load())
}

func TestExpiredTokenIsNeverServedAndCallersWait(t *testing.T) {
	e := newEnv(t)
	b := &broker{delay: 200 * time.Millisecond}
	user := e.user("U")
	c := e.cache(b)
	ctx := context.Background()

	// A token that is inside its leeway (30 s by default) is expired for the cache.
	old, err := c.Set(ctx, user, &tokencache.Token{AccessToken: "almost-expired", ObtainedAt: time.Now().Add(-time.Hour), Expiry: time.Now().Add(10 * time.Second)})
	require.NoError(t, err)

	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := c.Token(ctx, user)
			if assert.NoError(t, err) {
				assert.NotEqual(t, old.AccessToken, tok.AccessToken)
				assert.Greater(t, tok.Version, old.Version)
			}
		}()
	}
	wg.Wait()
	assert.EqualValues(t, 1, b.logins.Load())
}

func TestCancelledCallerDoesNotFailTheRefreshOthersWaitOn(t *testing.T) {
	e := newEnv(t)
	b := &broker{delay: 300 * time.Millisecond}
	user := e.user("U")
	c := e.cache(b)

	impatient, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := c.Token(impatient, user)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	}()
	tok, err := c.Token(context.Background(), user)
	require.NoError(t, err)
	assert.NotEmpty(t, tok.AccessToken)
	wg.Wait()
	assert.EqualValues(t, 1, b.logins.Load())
}

func TestFailedRefreshKeepsServingValidTokenAndBacksOff(t *testing.T) {
	e := newEnv(t)
	b := &broker{lifetime: 3 * time.Second}
	user := e.user("U")
	c := e.cache(b, shortLived, func(o *tokencache.Options) {
		o.RetryMin = 100 * time.Millisecond
		o.RetryMax = 200 * time.Millisecond
	})
	ctx := context.Background()
	first, err := c.Token(ctx, user)
	require.NoError(t, err)

	down := errors.New("broker down")
	b.failRenewals(func(context.Context, int64) error { return down })
	b.failLogins(func(context.Context, int64) error { return down })

	// Until the leeway (0.3 s before expiry) the token keeps being served, while from the
	// refresh point (about 1.5 s before expiry) refreshes are retried with backoff:
	// several, but far fewer than the calls.
	calls := 0
	for time.Now().Before(first.Expiry.Add(-400 * time.Millisecond)) {
		tok, err := c.Token(ctx, user)
		require.NoError(t, err)
		require.Equal(t, first.AccessToken, tok.AccessToken)
		calls++
		time.Sleep(time.Millisecond)
	}
	attempts := b.renews.Load()
	assert.GreaterOrEqual(t, attempts, int64(3), "retried")
	assert.Less(t, attempts, int64(calls/10), "backed off")

	// Once the token is unusable callers get the broker's error, typed.
	time.Sleep(time.Until(first.Expiry))
	_, err = c.Token(ctx, user)
	var rerr *tokencache.RefreshError
	require.ErrorAs(t, err, &rerr)
	assert.ErrorIs(t, err, down)
	assert.Equal(t, user, rerr.User)

	// Callers arriving during the backoff get that error without another broker call.
	logins := b.logins.Load()
	for range 20 {
		_, err = c.Token(ctx, user)
		require.ErrorIs(t, err, down)
	}
	assert.LessOrEqual(t, b.logins.Load(), logins+1)
}

// A Renewer that says a renewal is not due (Kite before its morning expiry) costs no
// failure: the token is served, no hook or warning reports a failure, the Renewer is
// asked again only after RetryMax, and once the token is unusable the cache logs in.
func TestRenewalNotDueIsNoFailure(t *testing.T) {
	e := newEnv(t)
	b := &broker{lifetime: 3 * time.Second}
	user := e.user("U")
	var failures atomic.Int64
	logs := &testutil.Buffer{}
	c := e.cache(b, shortLived, func(o *tokencache.Options) {
		o.RetryMax = time.Hour // not-due asks again at the token's leeway, not after RetryMax
		o.Hooks.RefreshFailed = func(string, string, error) { failures.Add(1) }
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	ctx := context.Background()
	first, err := c.Token(ctx, user)
	require.NoError(t, err)
	b.failRenewals(func(context.Context, int64) error {
		return fmt.Errorf("kite: before 06:00: %w", tokencache.ErrRenewalNotDue)
	})

	for time.Now().Before(first.Expiry.Add(-400 * time.Millisecond)) {
		tok, err := c.Token(ctx, user)
		require.NoError(t, err)
		require.Equal(t, first.AccessToken, tok.AccessToken)
		time.Sleep(time.Millisecond)
	}
	assert.EqualValues(t, 1, b.renews.Load(), "asked once in the refresh window")
	assert.EqualValues(t, 1, b.logins.Load())
	assert.Zero(t, failures.Load(), "RefreshFailed")

	// Past the leeway the cache logs in (as Kite's Login renews after the expiry).
	require.Eventually(t, func() bool {
		tok, err := c.Token(ctx, user)
		return err == nil && tok.AccessToken != first.AccessToken
	}, 10*time.Second, 5*time.Millisecond)
	assert.EqualValues(t, 2, b.logins.Load())
	assert.Zero(t, failures.Load(), "RefreshFailed")
	assert.NotContains(t, logs.String(), "failed", "nothing logged as a failure at info level or above")
}

func TestTokenWithPastExpiryIsNeverReturned(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	c := e.cache(nil)

	_, err := c.Set(ctx, user, &tokencache.Token{AccessToken: "old", Expiry: time.Now().Add(-time.Minute)})
	require.ErrorIs(t, err, tokencache.ErrInvalidToken)
	_, err = c.Set(ctx, user, &tokencache.Token{Expiry: time.Now().Add(time.Hour)})
	require.ErrorIs(t, err, tokencache.ErrInvalidToken)

	// Written behind the cache's back, with an expiry already past.
	key := e.srv.Prefix + ":{" + user + "}:record"
	past := time.Now().Add(-time.Second).UnixMilli()
	require.NoError(t, e.client().Set(ctx, key,
		`v1:5:{"a":"expired-token","e":`+strconv.FormatInt(past, 10)+`,"o":1}`, time.Minute).Err())
	_, err = c.Token(ctx, user)
	require.ErrorIs(t, err, tokencache.ErrNoToken)

	// A cache that can log in replaces it.
	b := &broker{}
	tok, err := e.cache(b).Token(ctx, user)
	require.NoError(t, err)
	assert.NotEqual(t, "expired-token", tok.AccessToken)
	assert.Greater(t, tok.Version, int64(5))
}
