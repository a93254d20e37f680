package oauthbroker_test

import (
	"context"
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

// rotationKey is the user's rotation marker.
func (f *fixture) rotationKey() string {
	return f.redis.Prefix + ":{" + f.opts.User + "}:oauth:rotation"
}

// A rotation held while Redis lost its data and a human authorized again (a new
// grant, whose generations start at 1 again) is never stored over the new grant.
func TestHeldRotationNeverOverwritesANewerGrant(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	ctx := context.Background()
	f.mustAuthorize(t)
	a := f.broker(t, nil)
	reached, resume := pausedAt(a, "answered")
	done := loginAsync(ctx, a, f.opts.User)
	wait(t, reached, "the provider's answer")
	require.NoError(t, f.redis.Client(t).FlushAll(ctx).Err(), "Redis loses its data")
	f.mustAuthorize(t)
	newer := f.storedRefreshToken(t)
	require.EqualValues(t, 1, leadingGen(f.secret(t)), "the new grant's generation is 1 again")
	resume()
	r := wait(t, done, "the held refresh")
	require.Error(t, r.err)
	assert.Contains(t, r.err.Error(), "another grant")
	assert.Equal(t, newer, f.storedRefreshToken(t), "the new grant stays")
	st, err := f.b.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateActive, st.State)
}

// M1: a refresh whose claim was taken over (it was paused past its deadline) does not
// store its result over the generation the other process stored meanwhile.
func TestCommitRefusesAStaleGeneration(t *testing.T) {
	f := newFixture(t, fixtureConfig{fake: oauthfake.Options{KeepRefreshTokens: true},
		broker: func(o *oauthbroker.Options) { o.RequestTimeout = 200 * time.Millisecond }})
	ctx := context.Background()
	f.mustAuthorize(t)
	a := f.broker(t, nil)
	reached, resume := pausedAt(a, "answered")
	done := loginAsync(ctx, a, f.opts.User)
	wait(t, reached, "the provider's answer")
	tok, err := f.broker(t, nil).Authenticator().Login(ctx, f.opts.User) // waits out a's claim, then takes over
	require.NoError(t, err)
	require.EqualValues(t, 2, leadingGen(f.secret(t)))
	resume()
	r := wait(t, done, "the paused refresh")
	require.Error(t, r.err, "the paused refresh is not stored")
	assert.Contains(t, r.err.Error(), "not stored")
	assert.Equal(t, tok.AccessToken, accessTokenIn(f.secret(t)), "the takeover's rotation stays")
	assert.EqualValues(t, 2, leadingGen(f.secret(t)))
}

// M2: two processes receive the refusal of the same refresh token (one was paused past
// its claim), and only the one whose revoke.lua changed the status reports it.
func TestRevokedReportedOnlyByTheStateChange(t *testing.T) {
	var hooks atomic.Int32
	f := newFixture(t, fixtureConfig{broker: func(o *oauthbroker.Options) {
		o.RequestTimeout = 200 * time.Millisecond
		o.Hooks.Revoked = func(string, *oauthbroker.LoginRequiredError) { hooks.Add(1) }
	}})
	ctx := context.Background()
	f.mustAuthorize(t)
	f.fake.RevokeAll()
	a := f.broker(t, nil)
	reached, resume := pausedAt(a, "answered")
	done := loginAsync(ctx, a, f.opts.User)
	wait(t, reached, "the provider's refusal")
	_, err := f.broker(t, nil).Authenticator().Login(ctx, f.opts.User) // takes over, is refused
	require.ErrorIs(t, err, oauthbroker.ErrRevoked)
	require.EqualValues(t, 1, hooks.Load())
	resume()
	r := wait(t, done, "the paused refresh")
	require.ErrorIs(t, r.err, oauthbroker.ErrRevoked)
	assert.EqualValues(t, 1, hooks.Load(), "reported once, by the process that changed the status")
	assert.Equal(t, 2, f.fake.Stats().Refused)
	alerts, err := f.b.Alerts(ctx)
	require.NoError(t, err)
	assert.Len(t, alerts, 1)
}

// M4: while process A holds a live claim (paused after begin.lua), process B does not
// send the refresh token: with too little time to wait, it fails at once with
// ErrRotationInFlight.
func TestLiveClaimMakesOthersWait(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	ctx := context.Background()
	f.mustAuthorize(t)
	a := f.broker(t, nil)
	reached, resume := pausedAt(a, "claimed")
	done := loginAsync(ctx, a, f.opts.User)
	wait(t, reached, "a's claim")
	bctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := f.broker(t, nil).Authenticator().Login(bctx, f.opts.User)
	require.ErrorIs(t, err, oauthbroker.ErrRotationInFlight)
	assert.Zero(t, f.fake.Stats().Refreshes+f.fake.Stats().Refused, "b sent nothing")
	marker := f.redis.Client(t).Get(ctx, f.rotationKey()).Val()
	assert.Contains(t, marker, oauthbroker.Owner(a))
	assert.True(t, strings.Contains(marker, ":0:"+oauthbroker.Owner(a)), "a live claim is not marked stale: %s", marker)
	resume()
	require.NoError(t, wait(t, done, "a's refresh").err)
	assert.Equal(t, 1, f.fake.Stats().Refreshes)
}

// Concurrent Logins of one process take turns: each sends a different refresh token
// (the one the previous stored), none waits for its own process's claim to run out.
func TestConcurrentLoginsOfOneProcessTakeTurns(t *testing.T) {
	f := newFixture(t, fixtureConfig{broker: func(o *oauthbroker.Options) { o.RequestTimeout = 20 * time.Second }})
	ctx := context.Background()
	f.mustAuthorize(t)
	b := f.broker(t, nil)
	const n = 8
	toks := make([]*tokencache.Token, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second) // shorter than a claim: no waiting it out
			defer cancel()
			toks[i], errs[i] = b.Authenticator().Login(cctx, f.opts.User)
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		require.NoError(t, errs[i])
		assert.False(t, seen[toks[i].AccessToken], "a token served twice")
		seen[toks[i].AccessToken] = true
	}
	st := f.fake.Stats()
	assert.Equal(t, n, st.Refreshes)
	assert.Zero(t, st.ReuseDetections)
	assert.EqualValues(t, n+1, leadingGen(f.secret(t)))
}

// The pre-send check: a process paused after claiming, whose claim was taken over
// meanwhile (by Redis's clock), sends nothing when it resumes.
func TestNothingSentAfterTheClaimWasTakenOver(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	ctx := context.Background()
	f.mustAuthorize(t)
	rt := f.storedRefreshToken(t)
	a := f.broker(t, nil)
	reached, resume := pausedAt(a, "claimed")
	actx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	done := loginAsync(actx, a, f.opts.User)
	wait(t, reached, "a's claim")
	rdb := f.redis.Client(t)
	marker := rdb.Get(ctx, f.rotationKey()).Val()
	other := strings.Replace(marker, oauthbroker.Owner(a), "host/1/another", 1)
	require.NotEqual(t, marker, other)
	require.NoError(t, rdb.Set(ctx, f.rotationKey(), other, time.Hour).Err(), "another process took the claim over")
	resume()
	r := wait(t, done, "a's refresh")
	require.ErrorIs(t, r.err, oauthbroker.ErrRotationInFlight)
	assert.Zero(t, f.fake.Stats().Refreshes+f.fake.Stats().Refused, "a sent nothing")
	assert.Equal(t, "valid", f.fake.RefreshTokenState(rt))
	assert.Contains(t, f.logs.String(), "ran out before it was sent")
}

// A refusal that arrives after Redis lost its data and a human authorized again (a new
// grant, at generation 1 again) does not revoke the new grant: the process claims the
// new refresh token and refreshes with it.
func TestStaleRefusalDoesNotRevokeANewGrant(t *testing.T) {
	var hooks atomic.Int32
	f := newFixture(t, fixtureConfig{broker: func(o *oauthbroker.Options) {
		o.Hooks.Revoked = func(string, *oauthbroker.LoginRequiredError) { hooks.Add(1) }
	}})
	ctx := context.Background()
	f.mustAuthorize(t)
	f.fake.RevokeAll()
	a := f.broker(t, nil)
	reached, resume := pausedAt(a, "answered")
	done := loginAsync(ctx, a, f.opts.User)
	wait(t, reached, "the provider's refusal")
	require.NoError(t, f.redis.Client(t).FlushAll(ctx).Err())
	f.mustAuthorize(t)
	require.EqualValues(t, 1, leadingGen(f.secret(t)))
	oauthbroker.SetTestHook(a, nil)
	resume()
	r := wait(t, done, "a's refresh")
	require.NoError(t, r.err, "a refreshed with the new grant")
	assert.Zero(t, hooks.Load())
	st, err := f.b.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateActive, st.State)
	assert.EqualValues(t, 2, st.Generation)
}

// Redis loses the refresh token (eviction, or every key): the fleet fails with
// ErrLost, the status says lost, and one alert asks for a login.
func TestLostGrantIsReportedWithAnAlert(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	ctx := context.Background()
	f.mustAuthorize(t)
	rdb := f.redis.Client(t)
	require.NoError(t, rdb.Del(ctx, f.redis.Prefix+":secret:{"+f.opts.User+"}:oauth").Err(), "evicted")
	for range 3 {
		_, err := f.broker(t, nil).Authenticator().Login(ctx, f.opts.User)
		require.ErrorIs(t, err, oauthbroker.ErrLoginRequired)
		require.ErrorIs(t, err, oauthbroker.ErrLost)
	}
	st, err := f.b.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateLost, st.State)
	alerts, err := f.b.Alerts(ctx)
	require.NoError(t, err)
	require.Len(t, alerts, 1)
	assert.Equal(t, oauthbroker.AlertLost, alerts[0].Kind)
	_, err = f.b.Ack(ctx, alerts[0])
	require.NoError(t, err)

	// Every key lost: only a process that saw the grant knows there was one.
	f.mustAuthorize(t)
	knows := f.broker(t, nil)
	_, err = knows.Authenticator().Login(ctx, f.opts.User)
	require.NoError(t, err)
	require.NoError(t, rdb.FlushAll(ctx).Err())
	_, err = knows.Authenticator().Login(ctx, f.opts.User)
	require.ErrorIs(t, err, oauthbroker.ErrLost)
	alerts, err = f.b.Alerts(ctx)
	require.NoError(t, err)
	require.Len(t, alerts, 1)
	assert.Equal(t, oauthbroker.AlertLost, alerts[0].Kind)
}

// invalid_client (a wrong app secret) is typed, not temporary, distinct from
// invalid_grant, raises one alert, and leaves the refresh token usable.
func TestInvalidClientIsTypedWithAnAlert(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	ctx := context.Background()
	f.mustAuthorize(t)
	bad := f.broker(t, func(o *oauthbroker.Options) { o.ClientSecret = "rotated-away-secret" })
	for range 2 {
		_, err := bad.Authenticator().Login(ctx, f.opts.User)
		require.ErrorIs(t, err, oauthbroker.ErrInvalidClient)
		assert.NotErrorIs(t, err, oauthbroker.ErrInvalidGrant)
		assert.NotErrorIs(t, err, oauthbroker.ErrLoginRequired)
		var tmp interface{ Temporary() bool }
		require.ErrorAs(t, err, &tmp)
		assert.False(t, tmp.Temporary())
	}
	st, err := f.b.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateActive, st.State)
	assert.Nil(t, st.Rotation, "the claim was dropped: nothing was rotated")
	alerts, err := f.b.Alerts(ctx)
	require.NoError(t, err)
	require.Len(t, alerts, 1, "one alert for repeated refusals")
	assert.Equal(t, oauthbroker.AlertInvalidClient, alerts[0].Kind)
	assert.Contains(t, alerts[0].String(), "check the app key and secret")
	_, err = f.broker(t, nil).Authenticator().Login(ctx, f.opts.User)
	require.NoError(t, err, "the refresh token still works with the right secret")
}

// An alert not acknowledged within its lease (its sender died) is delivered again, to
// another process; once acknowledged, never again.
func TestAlertsAreRedeliveredUntilAcknowledged(t *testing.T) {
	f := newFixture(t, fixtureConfig{broker: func(o *oauthbroker.Options) { o.AlertLease = 300 * time.Millisecond }})
	ctx := context.Background()
	f.mustAuthorize(t)
	f.fake.RevokeAll()
	_, err := f.broker(t, nil).Authenticator().Login(ctx, f.opts.User)
	require.ErrorIs(t, err, oauthbroker.ErrRevoked)
	p1, p2 := f.broker(t, nil), f.broker(t, nil)
	first, err := p1.Alerts(ctx)
	require.NoError(t, err)
	require.Len(t, first, 1)
	assert.Equal(t, 1, first[0].Deliveries)
	again, err := p2.Alerts(ctx)
	require.NoError(t, err)
	assert.Empty(t, again, "reserved for p1")
	var second []oauthbroker.Alert
	require.Eventually(t, func() bool {
		second, err = p2.Alerts(ctx)
		require.NoError(t, err)
		return len(second) == 1
	}, 30*time.Second, 50*time.Millisecond, "p1 died without acknowledging: p2 gets it")
	assert.Equal(t, 2, second[0].Deliveries)
	ok, err := p2.Ack(ctx, second[0])
	require.NoError(t, err)
	assert.True(t, ok)
	ok, err = p1.Ack(ctx, first[0])
	require.NoError(t, err)
	assert.False(t, ok, "p1's reservation had run out")
	time.Sleep(400 * time.Millisecond)
	left, err := p1.Alerts(ctx)
	require.NoError(t, err)
	assert.Empty(t, left)
	refused := f.redis.Client(t).Get(ctx, f.redis.Prefix+":secret:{"+f.opts.User+"}:oauth:refused").Val()
	assert.NotEmpty(t, refusedTokenOf(refused), "the refused refresh token is kept, marked refused")
	assert.Empty(t, f.secret(t))
}

func refusedTokenOf(raw string) string { return refreshTokenIn(raw) }

// With CommitReplicas, a commit WAITs for the replicas on its own connection; a
// standalone Redis has none, so the shortfall is logged and the token still served
// (the provider rotated it already).
func TestCommitWaitsForReplicas(t *testing.T) {
	f := newFixture(t, fixtureConfig{broker: func(o *oauthbroker.Options) { o.CommitReplicas = 1 }})
	f.mustAuthorize(t)
	tok, err := f.broker(t, nil).Authenticator().Login(context.Background(), f.opts.User)
	require.NoError(t, err)
	assert.Equal(t, accessTokenIn(f.secret(t)), tok.AccessToken)
	assert.Contains(t, f.logs.String(), "fewer replicas than Options.CommitReplicas confirmed it")
}
