package tradovate_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tradovate"
)

func TestCaptchaStopsTheUserInEveryProcess(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 2)
	victim, other := f.users[0], f.users[1]
	f.fake.Script(tradovatefake.AccessTokenRequest, victim, tradovatefake.Captcha())
	creds := f.credentials(t, official)
	first := f.auth(t, creds, nil)  // one process
	second := f.auth(t, creds, nil) // another, with its own Redis client
	ctx := context.Background()

	_, err := first.Login(ctx, victim)
	require.ErrorIs(t, err, tradovate.ErrCaptchaRequired)

	for i, a := range []*tradovate.Authenticator{first, second, first} {
		_, err = a.Login(ctx, victim)
		require.ErrorIs(t, err, tradovate.ErrCaptchaRequired, "attempt %d", i)
		var cd *tradovate.CooldownError
		require.ErrorAs(t, err, &cd)
		assert.Equal(t, victim, cd.User)
		assert.False(t, cd.AllUsers)
		assert.WithinDuration(t, time.Now().Add(time.Hour), cd.Until, time.Minute, "default cool-down is one hour")
		assert.Contains(t, err.Error(), victim)
	}
	assert.Equal(t, 1, f.fake.Calls(tradovatefake.AccessTokenRequest, victim), "nobody asked the broker again")

	_, err = second.Login(ctx, other)
	assert.NoError(t, err, "a captcha stops only its own user")

	// The state lives in Redis under the user's hash tag, expiring with the cool-down.
	rdb := f.redis.Client(t)
	ttl, err := rdb.PTTL(ctx, f.redis.Prefix+":tradovate:{"+victim+"}:cooldown").Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, 59*time.Minute)
	assert.LessOrEqual(t, ttl, time.Hour)

	// An operator's status command reads it with Redis alone: no credentials.
	cd, err := tradovate.ReadCooldown(ctx, tradovate.Options{Redis: rdb, Namespace: f.redis.Prefix + ":tradovate"}, victim)
	require.NoError(t, err)
	require.NotNil(t, cd)
	assert.Equal(t, victim, cd.User)
	assert.ErrorIs(t, cd.Reason, tradovate.ErrCaptchaRequired)
	cd, err = tradovate.ReadCooldown(ctx, tradovate.Options{Redis: rdb, Namespace: f.redis.Prefix + ":tradovate"}, other)
	require.NoError(t, err)
	assert.Nil(t, cd, "no cool-down for the other user")
}

// TestNamespaceIsPerEnvironmentNotPerPrefix: two fleets with different tokencache prefixes log
// in from the same network, so they share the broker's budget: the keys are per
// environment, not per prefix.
func TestNamespaceIsPerEnvironmentNotPerPrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts tradovate.Options
		want string
	}{
		{tradovate.Options{}, "brokertoken:tradovate:demo.tradovateapi.com"},
		{tradovate.Options{Environment: tradovate.Live}, "brokertoken:tradovate:live.tradovateapi.com"},
		{tradovate.Options{RESTURL: "http://127.0.0.1:8080/v1"}, "brokertoken:tradovate:127.0.0.1:8080"},
	} {
		rdb := testutil.Redis(t).Client(t)
		tc.opts.Redis = rdb
		require.NoError(t, rdb.Set(context.Background(), tc.want+":login-pause",
			`{"reason":"locked-out","user":"someone","until":`+fmt.Sprint(time.Now().Add(time.Hour).UnixMilli())+`}`, time.Hour).Err())
		cd, err := tradovate.ReadCooldown(context.Background(), tc.opts, "U1")
		require.NoError(t, err)
		require.NotNil(t, cd, tc.want)
		assert.True(t, cd.AllUsers)
		assert.ErrorIs(t, cd.Reason, tradovate.ErrLockedOut)
	}
}

func TestLockoutPausesEveryLoginButNotRenewals(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusTooManyRequests, http.StatusLocked} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			f := newFixture(t, tradovatefake.Options{}, 2)
			victim, other := f.users[0], f.users[1]
			creds := f.credentials(t, official)
			first, second := f.auth(t, creds, nil), f.auth(t, creds, nil)
			ctx := context.Background()
			held, err := second.Login(ctx, other)
			require.NoError(t, err)

			f.fake.Script(tradovatefake.AccessTokenRequest, victim, tradovatefake.Status(status))
			_, err = first.Login(ctx, victim)
			require.ErrorIs(t, err, tradovate.ErrLockedOut)

			_, err = second.Login(ctx, other)
			require.ErrorIs(t, err, tradovate.ErrLockedOut, "the lockout covers the subnet: every user pauses")
			var cd *tradovate.CooldownError
			require.ErrorAs(t, err, &cd)
			assert.True(t, cd.AllUsers)
			assert.Contains(t, cd.Cause, victim)
			assert.Equal(t, 1, f.fake.Calls(tradovatefake.AccessTokenRequest, victim))
			assert.Equal(t, 1, f.fake.Calls(tradovatefake.AccessTokenRequest, other))

			renewed, err := second.Renew(ctx, other, held)
			require.NoError(t, err, "renewals go on during a lockout")
			assert.True(t, f.fake.Valid(renewed.AccessToken))
		})
	}
}

func TestClearCooldownLetsTheUserLogInAgain(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	f.fake.Script(tradovatefake.AccessTokenRequest, user, tradovatefake.Lockout())
	creds := f.credentials(t, official)
	first, second := f.auth(t, creds, nil), f.auth(t, creds, nil)
	ctx := context.Background()
	_, err := first.Login(ctx, user)
	require.ErrorIs(t, err, tradovate.ErrLockedOut)
	_, err = second.Login(ctx, user)
	require.ErrorIs(t, err, tradovate.ErrLockedOut)

	f.fake.ClearLockout()
	require.NoError(t, second.ClearCooldown(ctx, user))
	_, err = first.Login(ctx, user)
	require.NoError(t, err)
}

// An operator without credentials (brokertoken clear-cooldown) ends a lockout's
// fleet-wide pause with Redis alone; every Authenticator then logs in again.
func TestClearCooldownWithoutAnAuthenticator(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	f.fake.Script(tradovatefake.AccessTokenRequest, user, tradovatefake.Lockout())
	a := f.auth(t, f.credentials(t, official), nil)
	ctx := context.Background()
	_, err := a.Login(ctx, user)
	require.ErrorIs(t, err, tradovate.ErrLockedOut)
	opts := tradovate.Options{Redis: f.redis.Client(t), Namespace: f.redis.Prefix + ":tradovate"}
	cd, err := tradovate.ReadCooldown(ctx, opts, user)
	require.NoError(t, err)
	require.NotNil(t, cd)
	cd, err = tradovate.ReadCooldown(ctx, opts, "someone-else")
	require.NoError(t, err)
	require.NotNil(t, cd)
	assert.True(t, cd.AllUsers, "the lockout paused every user")

	f.fake.ClearLockout()
	require.NoError(t, tradovate.ClearCooldown(ctx, opts, user))
	for _, u := range []string{user, "someone-else"} {
		cd, err = tradovate.ReadCooldown(ctx, opts, u)
		require.NoError(t, err)
		assert.Nil(t, cd, u)
	}
	_, err = a.Login(ctx, user)
	require.NoError(t, err)
	require.ErrorContains(t, tradovate.ClearCooldown(ctx, tradovate.Options{}, user), "needs Options.Redis")
}

func TestCooldownEnds(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	f.fake.Script(tradovatefake.AccessTokenRequest, user, tradovatefake.Captcha())
	a := f.auth(t, f.credentials(t, official), func(o *tradovate.Options) { o.Cooldown = 300 * time.Millisecond })
	ctx := context.Background()
	_, err := a.Login(ctx, user)
	require.ErrorIs(t, err, tradovate.ErrCaptchaRequired)
	f.fake.ClearCaptcha(user)
	require.Eventually(t, func() bool {
		_, err := a.Login(ctx, user)
		return err == nil
	}, 5*time.Second, 50*time.Millisecond)
	assert.Equal(t, 2, f.fake.Calls(tradovatefake.AccessTokenRequest, user), "no request during the cool-down")
}

func TestCooldownWithoutRedisStaysInProcess(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	f.fake.Script(tradovatefake.AccessTokenRequest, user, tradovatefake.Captcha())
	a := f.auth(t, f.credentials(t, official), func(o *tradovate.Options) { o.Redis = nil })
	ctx := context.Background()
	_, err := a.Login(ctx, user)
	require.ErrorIs(t, err, tradovate.ErrCaptchaRequired)
	_, err = a.Login(ctx, user)
	var cd *tradovate.CooldownError
	require.ErrorAs(t, err, &cd)
	assert.Equal(t, 1, f.fake.Calls(tradovatefake.AccessTokenRequest, user))
	require.NoError(t, a.ClearCooldown(ctx, user))
	f.fake.ClearCaptcha(user)
	_, err = a.Login(ctx, user)
	require.NoError(t, err)
}
