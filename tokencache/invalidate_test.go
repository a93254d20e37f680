package tokencache_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
)

func TestNewVersionReachesEveryCache(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	writer := e.cache(nil)
	var readers []*tokencache.Cache
	for range 4 {
		readers = append(readers, e.cache(nil))
	}
	v1, err := writer.Set(ctx, user, &tokencache.Token{AccessToken: "token-one", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	for _, r := range readers {
		tok, err := r.Token(ctx, user)
		require.NoError(t, err)
		require.Equal(t, "token-one", tok.AccessToken)
	}

	v2, err := writer.Set(ctx, user, &tokencache.Token{AccessToken: "token-two", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	assert.Greater(t, v2.Version, v1.Version)
	for _, r := range readers {
		require.Eventually(t, func() bool {
			tok, err := r.Token(ctx, user)
			return err == nil && tok.AccessToken == "token-two"
		}, 2*time.Second, time.Millisecond)
		// Once a cache has seen the new token it never goes back to the old one.
		for range 100 {
			tok, err := r.Token(ctx, user)
			require.NoError(t, err)
			require.Equal(t, "token-two", tok.AccessToken)
		}
	}
}

// rawRecord writes a user's record behind every cache's back, without an invalidation.
func rawRecord(t *testing.T, e *env, user, access string, version int64) {
	t.Helper()
	exp := time.Now().Add(time.Hour).UnixMilli()
	rec := `v1:` + strconv.FormatInt(version, 10) + `:{"a":"` + access + `","e":` + strconv.FormatInt(exp, 10) + `,"o":1}`
	require.NoError(t, e.client().Set(context.Background(), e.srv.Prefix+":{"+user+"}:record", rec, time.Hour).Err())
}

func TestMaxStalenessRereadsRedis(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	c := e.cache(nil, func(o *tokencache.Options) { o.MaxStaleness = 200 * time.Millisecond })
	rawRecord(t, e, user, "first", 1)
	tok, err := c.Token(ctx, user)
	require.NoError(t, err)
	require.Equal(t, "first", tok.AccessToken)

	rawRecord(t, e, user, "second", 2) // no message published: only the backstop sees it
	require.Eventually(t, func() bool {
		tok, err := c.Token(ctx, user)
		return err == nil && tok.AccessToken == "second"
	}, 3*time.Second, 5*time.Millisecond)
}

func TestPubSubReconnectDropsMemory(t *testing.T) {
	srv := testutil.StartRedis(t)
	e := &env{t: t, srv: srv}
	user := e.user("U")
	ctx := context.Background()
	c := e.cache(nil) // MaxStaleness 30 s: only the reconnect can explain a re-read
	rawRecord(t, e, user, "before-restart", 1)
	tok, err := c.Token(ctx, user)
	require.NoError(t, err)
	require.Equal(t, "before-restart", tok.AccessToken)

	srv.Stop(t)
	srv.Start(t) // empty: the restart lost the data
	rawRecord(t, e, user, "after-restart", 2)
	require.Eventually(t, func() bool {
		tok, err := c.Token(ctx, user)
		return err == nil && tok.AccessToken == "after-restart"
	}, 10*time.Second, 10*time.Millisecond)
}

func TestInvalidateIsDeduplicated(t *testing.T) {
	e := newEnv(t)
	b := &broker{delay: 50 * time.Millisecond}
	user := e.user("U")
	ctx := context.Background()
	var fleet []*tokencache.Cache
	for range 4 {
		fleet = append(fleet, e.cache(b))
	}
	bad, err := fleet[0].Token(ctx, user)
	require.NoError(t, err)
	for _, c := range fleet[1:] {
		tok, err := c.Token(ctx, user)
		require.NoError(t, err)
		require.Equal(t, bad.AccessToken, tok.AccessToken)
	}

	// 20 goroutines over 4 caches saw a 401 with the same token.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := fleet[i%4]
			assert.NoError(t, c.Invalidate(ctx, user, bad.AccessToken))
			tok, err := c.Token(ctx, user)
			if assert.NoError(t, err) {
				assert.NotEqual(t, bad.AccessToken, tok.AccessToken)
			}
		}()
	}
	wg.Wait()
	assert.EqualValues(t, 2, b.logins.Load(), "the first login and one replacement")
	assert.Zero(t, b.renews.Load(), "a rejected token is not renewed")

	// The old token reported again, after the refresh, causes nothing.
	for _, c := range fleet {
		require.NoError(t, c.Invalidate(ctx, user, bad.AccessToken))
		tok, err := c.Token(ctx, user)
		require.NoError(t, err)
		require.NotEqual(t, bad.AccessToken, tok.AccessToken)
	}
	assert.EqualValues(t, 2, b.logins.Load())
}

func TestInvalidatedTokenIsNotServedEvenWhenTheRefreshFails(t *testing.T) {
	e := newEnv(t)
	b := &broker{}
	user := e.user("U")
	ctx := context.Background()
	c := e.cache(b)
	bad, err := c.Token(ctx, user)
	require.NoError(t, err)

	b.failLogins(func(context.Context, int64) error { return assert.AnError })
	require.NoError(t, c.Invalidate(ctx, user, bad.AccessToken))
	for range 10 {
		tok, err := c.Token(ctx, user)
		require.Error(t, err, "served %v", tok)
		require.ErrorIs(t, err, assert.AnError)
	}

	b.failLogins(nil)
	require.Eventually(t, func() bool {
		tok, err := c.Token(ctx, user)
		return err == nil && tok.AccessToken != bad.AccessToken
	}, 5*time.Second, 20*time.Millisecond)
}

func TestReadOnlyCacheNeverLogsIn(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	ro := e.cache(nil)
	_, err := ro.Token(ctx, user)
	require.ErrorIs(t, err, tokencache.ErrNoToken)
	require.NoError(t, ro.Invalidate(ctx, user, "whatever"))

	w := e.cache(&broker{})
	tok, err := w.Token(ctx, user)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		got, err := ro.Token(ctx, user)
		return err == nil && got.AccessToken == tok.AccessToken
	}, 3*time.Second, 10*time.Millisecond)
}

func TestReadOnlyReportReachesTheWriter(t *testing.T) {
	e := newEnv(t)
	b := &broker{}
	user := e.user("U")
	ctx := context.Background()
	daemon := e.cache(b)
	first, err := daemon.Token(ctx, user)
	require.NoError(t, err)

	var consumers []*tokencache.Cache
	for range 5 {
		consumers = append(consumers, e.cache(nil))
	}
	for _, c := range consumers {
		tok, err := c.Token(ctx, user)
		require.NoError(t, err)
		require.Equal(t, first.AccessToken, tok.AccessToken)
	}
	var wg sync.WaitGroup
	for _, c := range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, c.Invalidate(ctx, user, first.AccessToken)) // all saw the same 401
		}()
	}
	wg.Wait()
	for _, c := range consumers {
		require.Eventually(t, func() bool {
			tok, err := c.Token(ctx, user)
			return err == nil && tok.AccessToken != first.AccessToken
		}, 3*time.Second, 5*time.Millisecond)
	}
	assert.EqualValues(t, 2, b.logins.Load(), "the daemon logged in once more, for all reports")
}
