//go:build linux

package oauthbroker_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
	"github.com/brokertoken/brokertoken/oauthbroker"
)

// killAt starts a child that refreshes and stops at point, then kills it there with
// SIGKILL.
func (f *fixture) killAt(t *testing.T, point string) {
	t.Helper()
	c := f.startChild(t, childSpec{Mode: "login", Point: point})
	c.await(t, "POINT "+point)
	c.kill()
}

// successors runs n children that each refresh once, all at the same time, and returns
// their results and how many revocation alerts they sent in all.
func (f *fixture) successors(t *testing.T, n int) (results []string, alerts int) {
	t.Helper()
	var cs []*child
	for range n {
		cs = append(cs, f.startChild(t, childSpec{Mode: "login"}))
	}
	for _, c := range cs {
		c.wait(t)
		results = append(results, c.await(t, "RESULT "))
		alerts += c.count("HOOK revoked")
	}
	return results, alerts
}

// A refresher killed after claiming the refresh token, before sending it: the next
// process waits out the claim, then refreshes with it: the fleet keeps working.
func TestKilledBeforeSendingTheFleetGoesOn(t *testing.T) {
	f := newFixture(t, fixtureConfig{broker: func(o *oauthbroker.Options) { o.RequestTimeout = time.Second }})
	f.mustAuthorize(t)
	rt := f.storedRefreshToken(t)
	f.killAt(t, "claimed")
	st, err := f.b.Status(context.Background())
	require.NoError(t, err)
	require.NotNil(t, st.Rotation, "the status shows the dead process's claim")
	assert.EqualValues(t, 1, st.Rotation.Generation)

	results, alerts := f.successors(t, 3)
	assert.Zero(t, alerts)
	for _, r := range results {
		assert.True(t, strings.HasPrefix(r, "RESULT ok"), r)
	}
	stats := f.fake.Stats()
	assert.Zero(t, stats.ReuseDetections)
	assert.Equal(t, "used", f.fake.RefreshTokenState(rt), "the claimed refresh token was sent once, by a successor")
	assert.Equal(t, "valid", f.fake.RefreshTokenState(f.storedRefreshToken(t)))
	st, err = f.b.Status(context.Background())
	require.NoError(t, err)
	assert.EqualValues(t, stats.Refreshes, st.Rotations, "no refresh lost")
	assert.Nil(t, st.Rotation)
}

// A refresher killed after the provider rotated the refresh token but before the new
// one was stored: the new refresh token is lost. The successor sends the previous one
// again; the strict provider sees reuse and revokes the family. The fleet stops with
// the typed error and exactly one alert, and the status names the interrupted refresh:
// never a silent lockout. A new authorization ends it.
func TestKilledAfterTheProviderRotatedFailsTypedWithOneAlert(t *testing.T) {
	f := newFixture(t, fixtureConfig{broker: func(o *oauthbroker.Options) { o.RequestTimeout = time.Second }})
	f.mustAuthorize(t)
	f.killAt(t, "answered")
	assert.Equal(t, 1, f.fake.Stats().Refreshes, "the provider rotated")

	results, alerts := f.successors(t, 3)
	assert.Equal(t, 1, alerts, "one alert for the fleet")
	for _, r := range results {
		assert.Equal(t, "RESULT revoked", r)
	}
	stats := f.fake.Stats()
	assert.Equal(t, 1, stats.ReuseDetections)
	assert.Equal(t, 1, stats.Refused, "the provider is asked once")
	st, err := f.b.Status(context.Background())
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateRevoked, st.State)
	assert.Contains(t, st.Detail, "an earlier refresh with this refresh token")
	assert.Contains(t, st.Detail, "invalid_grant")
	polled, err := f.b.Alerts(context.Background())
	require.NoError(t, err)
	require.Len(t, polled, 1, "one polled alert for the fleet")
	assert.Equal(t, oauthbroker.AlertRevoked, polled[0].Kind)

	// The family's access tokens died with it: a service meets a 401 and reports it.
	ctx := context.Background()
	dead, err := f.cache.Token(ctx, f.opts.User)
	require.NoError(t, err)
	assert.False(t, apiAccepts(ctx, f.fake.URL(), dead.AccessToken))
	require.NoError(t, f.cache.Invalidate(ctx, f.opts.User, dead.AccessToken))
	_, err = f.cache.Token(ctx, f.opts.User)
	assert.ErrorIs(t, err, oauthbroker.ErrRevoked, "the cache fails typed, without asking the provider")
	assert.Equal(t, 1, f.fake.Stats().Refused)

	f.mustAuthorize(t)
	results, alerts = f.successors(t, 1)
	assert.True(t, strings.HasPrefix(results[0], "RESULT ok"), results[0])
	assert.Zero(t, alerts)
}

// A refresher killed after storing the rotation, before returning the access token to
// its cache: the next process refreshes with the stored (rotated) refresh token; the
// fleet goes on, and the dead process's access token is never served as new.
func TestKilledAfterStoringTheFleetGoesOn(t *testing.T) {
	f := newFixture(t, fixtureConfig{broker: func(o *oauthbroker.Options) { o.RequestTimeout = time.Second }})
	ctx := context.Background()
	f.mustAuthorize(t)
	old, err := f.cache.Token(ctx, f.opts.User)
	require.NoError(t, err)
	f.killAt(t, "committed")
	refreshes := f.fake.Stats().Refreshes
	require.Equal(t, 1, refreshes)
	orphan := accessTokenIn(f.secret(t))
	require.NotEmpty(t, orphan)

	st, err := f.cache.Status(ctx, f.opts.User)
	require.NoError(t, err)
	assert.Equal(t, old.AccessToken, st.Token.AccessToken, "the cache's record still holds the old token")
	tok, err := f.broker(t, nil).Authenticator().Renew(ctx, f.opts.User, st.Token)
	require.NoError(t, err)
	assert.NotEqual(t, old.AccessToken, tok.AccessToken)
	assert.NotEqual(t, orphan, tok.AccessToken, "the dead process's token is not served again as new")
	assert.Equal(t, refreshes+1, f.fake.Stats().Refreshes, "refreshed with the rotated refresh token")
	assert.True(t, apiAccepts(ctx, f.fake.URL(), tok.AccessToken))
	results, _ := f.successors(t, 1)
	assert.True(t, strings.HasPrefix(results[0], "RESULT ok"), results[0])
	assert.Zero(t, f.fake.Stats().ReuseDetections)
}

// Refreshers killed at random moments while a fleet works: afterwards the user either
// still works, or is stopped with the typed error and exactly one alert.
func TestKilledAtRandomNeverASilentLockout(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes for 10 s")
	}
	f := newFixture(t, fixtureConfig{fake: oauthfake.Options{AccessTokenLifetime: time.Second},
		broker: func(o *oauthbroker.Options) { o.RequestTimeout = time.Second }})
	f.fake.OnToken(func(string) { time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond) })
	f.mustAuthorize(t)
	var all []*child
	spawn := func() *child {
		c := f.startChild(t, childSpec{Mode: "fleet", Goroutines: 5, Duration: time.Minute})
		all = append(all, c)
		return c
	}
	fleet := []*child{spawn(), spawn(), spawn()}
	end := time.Now().Add(10 * time.Second)
	kills := 0
	for time.Now().Before(end) {
		time.Sleep(time.Duration(100+rand.IntN(500)) * time.Millisecond)
		i := rand.IntN(len(fleet))
		fleet[i].kill()
		kills++
		fleet[i] = spawn()
	}
	for _, c := range fleet {
		c.kill()
	}
	alerts := 0
	for _, c := range all {
		alerts += c.count("HOOK revoked")
	}
	ctx := context.Background()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var alerted int
	b := f.broker(t, func(o *oauthbroker.Options) {
		o.Hooks.Revoked = func(string, *oauthbroker.LoginRequiredError) { alerted++ }
	})
	tok, err := b.Authenticator().Login(tctx, f.opts.User)
	st, serr := f.b.Status(ctx)
	require.NoError(t, serr)
	stats := f.fake.Stats()
	if err == nil {
		assert.True(t, apiAccepts(ctx, f.fake.URL(), tok.AccessToken), "the fleet keeps working")
		assert.Equal(t, oauthbroker.StateActive, st.State)
		assert.Zero(t, alerts+alerted)
		assert.Zero(t, stats.ReuseDetections)
	} else {
		assert.ErrorIs(t, err, oauthbroker.ErrRevoked, "stopped with the typed error")
		assert.Equal(t, oauthbroker.StateRevoked, st.State)
		assert.Equal(t, 1, alerts+alerted, "exactly one alert")
		assert.Equal(t, 1, stats.ReuseDetections)
	}
	t.Logf("figures: %d kills in 10 s; %d refreshes, %d reuse; outcome: %v (status %s, generation %d)",
		kills, stats.Refreshes, stats.ReuseDetections, err, st.State, st.Generation)
}
