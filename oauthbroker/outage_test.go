package oauthbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/tokencache"
)

// pausedAt makes b stop at point and returns a channel that receives once it got there
// and a function that lets it go on.
func pausedAt(b *oauthbroker.Broker, point string) (reached chan struct{}, resume func()) {
	reached = make(chan struct{})
	release := make(chan struct{})
	oauthbroker.SetTestHook(b, func(p string) {
		if p == point {
			close(reached)
			<-release
		}
	})
	return reached, func() { close(release) }
}

// loginAsync runs b's Login in a goroutine.
func loginAsync(ctx context.Context, b *oauthbroker.Broker, user string) chan result {
	done := make(chan result, 1)
	go func() {
		t, err := b.Authenticator().Login(ctx, user)
		done <- result{t, err}
	}()
	return done
}

type result struct {
	tok *tokencache.Token
	err error
}

func wait[T any](t *testing.T, c chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// The provider rotated the refresh token and Redis stops answering before it is
// stored: the refresh keeps trying, and the new refresh token is in Redis as soon as it
// is back; the fleet goes on with it, with no reuse.
func TestRotationStoredAfterRedisComesBack(t *testing.T) {
	srv := testutil.StartRedis(t)
	proxy := testutil.NewProxy(t, srv.Addr())
	f := newFixture(t, fixtureConfig{redis: srv, addr: proxy.Addr()})
	f.mustAuthorize(t)
	b := f.broker(t, nil)
	reached, resume := pausedAt(b, "answered")
	done := loginAsync(context.Background(), b, f.opts.User)
	wait(t, reached, "the provider's answer")
	proxy.HalfOpen(true)
	resume()
	time.Sleep(3 * time.Second) // longer than one attempt (2 s)
	assert.EqualValues(t, 1, leadingGen(f.secret(t)), "nothing stored while Redis is away")
	proxy.HalfOpen(false)
	r := wait(t, done, "the login")
	require.NoError(t, r.err)
	assert.Equal(t, "valid", f.fake.RefreshTokenState(f.storedRefreshToken(t)), "the rotated refresh token reached Redis")
	assert.EqualValues(t, 2, leadingGen(f.secret(t)))
	assert.Contains(t, f.logs.String(), "retrying until Redis takes it")

	tok, err := f.broker(t, nil).Authenticator().Login(context.Background(), f.opts.User)
	require.NoError(t, err)
	assert.NotEqual(t, r.tok.AccessToken, tok.AccessToken)
	assert.Zero(t, f.fake.Stats().ReuseDetections)
}

// Redis restarts empty (no persistence) while a refresh runs: the rotated refresh
// token, the only valid one left, is written into the empty Redis.
func TestRotationStoredIntoRestartedRedis(t *testing.T) {
	srv := testutil.StartRedis(t)
	f := newFixture(t, fixtureConfig{redis: srv})
	f.mustAuthorize(t)
	b := f.broker(t, nil)
	reached, resume := pausedAt(b, "answered")
	done := loginAsync(context.Background(), b, f.opts.User)
	wait(t, reached, "the provider's answer")
	srv.Stop(t)
	resume()
	time.Sleep(500 * time.Millisecond)
	srv.Start(t)
	r := wait(t, done, "the login")
	require.NoError(t, r.err)
	assert.Equal(t, "valid", f.fake.RefreshTokenState(f.storedRefreshToken(t)))
	st, err := f.b.Status(context.Background())
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateActive, st.State)
	assert.EqualValues(t, 2, st.Generation)
}

// SIGTERM: the cache's context ends while the rotated refresh token is being stored
// and Redis does not answer: the call returns ErrRotationPending (temporary) at once,
// the Broker keeps storing it in the background, and Close waits until it is stored.
func TestRotationStoredAfterCancellation(t *testing.T) {
	srv := testutil.StartRedis(t)
	proxy := testutil.NewProxy(t, srv.Addr())
	f := newFixture(t, fixtureConfig{redis: srv, addr: proxy.Addr()})
	f.mustAuthorize(t)
	b := f.broker(t, func(o *oauthbroker.Options) { o.CommitGrace = 30 * time.Second })
	reached, resume := pausedAt(b, "answered")
	ctx, cancel := context.WithCancel(context.Background())
	done := loginAsync(ctx, b, f.opts.User)
	wait(t, reached, "the provider's answer")
	proxy.HalfOpen(true)
	cancel()
	resume()
	r := wait(t, done, "the login")
	require.ErrorIs(t, r.err, oauthbroker.ErrRotationPending)
	var tmp interface{ Temporary() bool }
	require.ErrorAs(t, r.err, &tmp)
	assert.True(t, tmp.Temporary())
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	time.Sleep(500 * time.Millisecond) // Close is waiting for Redis
	proxy.HalfOpen(false)
	require.NoError(t, wait(t, closed, "Close"), "stored within the grace")
	assert.Equal(t, "valid", f.fake.RefreshTokenState(f.storedRefreshToken(t)))
	assert.EqualValues(t, 2, leadingGen(f.secret(t)))
	_, err := b.Authenticator().Login(context.Background(), f.opts.User)
	assert.ErrorIs(t, err, oauthbroker.ErrClosed)
}

// Redis stays away through Close's grace: Close gives up with ErrRotationLost (the
// fleet will need a human) instead of hanging.
func TestCloseGivesUpAfterTheGrace(t *testing.T) {
	srv := testutil.StartRedis(t)
	proxy := testutil.NewProxy(t, srv.Addr())
	f := newFixture(t, fixtureConfig{redis: srv, addr: proxy.Addr()})
	f.mustAuthorize(t)
	b := f.broker(t, func(o *oauthbroker.Options) { o.CommitGrace = 300 * time.Millisecond })
	reached, resume := pausedAt(b, "answered")
	ctx, cancel := context.WithCancel(context.Background())
	done := loginAsync(ctx, b, f.opts.User)
	wait(t, reached, "the provider's answer")
	proxy.HalfOpen(true)
	cancel()
	resume()
	require.ErrorIs(t, wait(t, done, "the login").err, oauthbroker.ErrRotationPending)
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	assert.ErrorIs(t, wait(t, closed, "Close"), oauthbroker.ErrRotationLost)
	proxy.HalfOpen(false)
	assert.EqualValues(t, 1, leadingGen(f.secret(t)), "nothing stored")
}

// A held rotation is stored by the background writer once Redis is back, without any
// call; the Broker's next call waits for it and serves its access token, with no
// request to the provider.
func TestHeldRotationIsStoredInTheBackground(t *testing.T) {
	srv := testutil.StartRedis(t)
	proxy := testutil.NewProxy(t, srv.Addr())
	f := newFixture(t, fixtureConfig{redis: srv, addr: proxy.Addr()})
	f.mustAuthorize(t)
	b := f.broker(t, nil)
	reached, resume := pausedAt(b, "answered")
	ctx, cancel := context.WithCancel(context.Background())
	done := loginAsync(ctx, b, f.opts.User)
	wait(t, reached, "the provider's answer")
	proxy.HalfOpen(true)
	cancel()
	resume()
	require.ErrorIs(t, wait(t, done, "the login").err, oauthbroker.ErrRotationPending)
	proxy.HalfOpen(false)
	require.Eventually(t, func() bool { return leadingGen(f.secret(t)) == 2 }, 30*time.Second, 20*time.Millisecond,
		"the writer stores the rotation without being asked")
	oauthbroker.SetTestHook(b, nil)
	refreshes := f.fake.Stats().Refreshes
	tok, err := b.Authenticator().Login(context.Background(), f.opts.User)
	require.NoError(t, err)
	assert.Equal(t, refreshes, f.fake.Stats().Refreshes, "served the held rotation's token, not refreshed again")
	assert.Equal(t, accessTokenIn(f.secret(t)), tok.AccessToken)
	assert.Equal(t, "valid", f.fake.RefreshTokenState(f.storedRefreshToken(t)))
	assert.Zero(t, f.fake.Stats().ReuseDetections)
}

// leadingGen reads a record's generation ("o1:<gen>:..."), 0 for none.
func leadingGen(raw string) int64 {
	var n int64
	if len(raw) < 4 || raw[:3] != "o1:" {
		return 0
	}
	for _, c := range raw[3:] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
