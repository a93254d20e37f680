package tokencache_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
)

func TestRedisDownServesValidTokensAndFailsClearlyOtherwise(t *testing.T) {
	srv := testutil.StartRedis(t)
	e := &env{t: t, srv: srv}
	b := &broker{}
	ctx := context.Background()
	c := e.cache(b, func(o *tokencache.Options) { o.MaxStaleness = 100 * time.Millisecond })
	known := e.user("known")
	tok, err := c.Token(ctx, known)
	require.NoError(t, err)

	srv.Stop(t)
	// The known user keeps being served from memory, past MaxStaleness.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		got, err := c.Token(ctx, known)
		require.NoError(t, err)
		require.Equal(t, tok.AccessToken, got.AccessToken)
		time.Sleep(5 * time.Millisecond)
	}
	// A user with nothing in memory gets a clear error, and nobody logs in.
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = c.Token(short, e.user("cold"))
	require.ErrorIs(t, err, tokencache.ErrRedisUnavailable)
	assert.EqualValues(t, 1, b.logins.Load())

	// Back up, empty: the known token is written back rather than a new login made.
	srv.Start(t)
	require.Eventually(t, func() bool {
		got, err := c.Token(ctx, known)
		require.NoError(t, err)
		require.Equal(t, tok.AccessToken, got.AccessToken)
		n, err := e.client().Exists(ctx, srv.Prefix+":{"+known+"}:record").Result()
		return err == nil && n == 1
	}, 10*time.Second, 20*time.Millisecond)
	assert.EqualValues(t, 1, b.logins.Load())
}

func TestCloseStopsEverythingAndReleasesTheLease(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	b := &broker{}
	entered := make(chan struct{})
	b.failLogins(func(ctx context.Context, _ int64) error {
		close(entered)
		<-ctx.Done()
		return ctx.Err()
	})
	c, err := tokencache.New(tokencache.Options{Redis: e.client(), Prefix: e.srv.Prefix, Authenticator: b})
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Token(context.Background(), user)
		errc <- err
	}()
	<-entered
	lease := e.srv.Prefix + ":{" + user + "}:lease"
	require.EqualValues(t, 1, e.client().Exists(context.Background(), lease).Val())

	require.NoError(t, c.Close())
	require.ErrorIs(t, <-errc, tokencache.ErrClosed)
	assert.Zero(t, e.client().Exists(context.Background(), lease).Val(), "lease released")
	_, err = c.Token(context.Background(), user)
	require.ErrorIs(t, err, tokencache.ErrClosed)
	_, err = c.Set(context.Background(), user, &tokencache.Token{AccessToken: "x"})
	require.ErrorIs(t, err, tokencache.ErrClosed)
	require.ErrorIs(t, c.Invalidate(context.Background(), user, "x"), tokencache.ErrClosed)
	require.NoError(t, c.Close(), "idempotent")
}

func TestFleetOnCluster(t *testing.T) {
	cl := testutil.Cluster(t)
	b := &broker{delay: 50 * time.Millisecond}
	ctx := context.Background()
	var fleet []*tokencache.Cache
	for range 4 {
		fleet = append(fleet, newCache(t, cl.Client(t), cl.Prefix, b))
	}
	// Users spread over the three shards; each gets exactly one login.
	users := []string{cl.Name("a"), cl.Name("b"), cl.Name("c"), cl.Name("d"), cl.Name("e"), cl.Name("f")}
	for _, u := range users {
		done := make(chan string, len(fleet)*10)
		for _, c := range fleet {
			for range 10 {
				go func() {
					tok, err := c.Token(ctx, u)
					if assert.NoError(t, err) {
						done <- tok.AccessToken
					} else {
						done <- ""
					}
				}()
			}
		}
		first := <-done
		for range len(fleet)*10 - 1 {
			assert.Equal(t, first, <-done)
		}
	}
	assert.EqualValues(t, len(users), b.logins.Load())

	// Invalidation crosses the cluster too.
	v, err := fleet[0].Set(ctx, users[0], &tokencache.Token{AccessToken: "cluster-set", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	for _, c := range fleet[1:] {
		require.Eventually(t, func() bool {
			tok, err := c.Token(ctx, users[0])
			return err == nil && tok.Version == v.Version
		}, 3*time.Second, 5*time.Millisecond)
	}
}

type permanentErr struct{}

func (permanentErr) Error() string   { return "bad credentials" }
func (permanentErr) Temporary() bool { return false }

func TestPermanentBrokerErrorWaitsTheLongestBackoff(t *testing.T) {
	e := newEnv(t)
	b := &broker{}
	b.failLogins(func(context.Context, int64) error { return permanentErr{} })
	c := e.cache(b, func(o *tokencache.Options) { o.RetryMin = time.Millisecond; o.RetryMax = time.Hour })
	user := e.user("U")
	for range 50 {
		_, err := c.Token(context.Background(), user)
		require.ErrorIs(t, err, permanentErr{})
		time.Sleep(2 * time.Millisecond)
	}
	assert.EqualValues(t, 1, b.logins.Load(), "no retry within RetryMax")
}

func TestTokenStoredDuringAFailingRefreshIsPickedUpAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	entered := make(chan struct{})
	release := make(chan struct{})
	b := &broker{}
	b.failLogins(func(context.Context, int64) error {
		close(entered)
		<-release
		return permanentErr{} // would otherwise wait RetryMax before looking again
	})
	c := e.cache(b, func(o *tokencache.Options) { o.RetryMax = time.Hour })
	ch := c.Watch(ctx, user)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Token(ctx, user)
		errc <- err
	}()
	<-entered
	// A human's login lands through another process while this one's attempt fails.
	stored, err := e.cache(nil).Set(ctx, user, &tokencache.Token{AccessToken: "from-a-login", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	assert.Equal(t, stored.Version, receive(t, ch).Version, "the watcher hears of it while the attempt still runs")
	close(release)
	require.NoError(t, <-errc, "the caller waiting for the failed attempt gets the token stored meanwhile")

	tok, err := c.Token(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, "from-a-login", tok.AccessToken)
}

// Hits are served from the name map without the entry (see names.fresh): accounts of
// two users each get their own user's token, accounts of one user share it, and once
// the cache is closed a name that was a hit a moment ago gets ErrClosed.
func TestHitsThroughTheNameMap(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alice, bob := e.user("ALICE"), e.user("BOB")
	c := e.cache(&broker{}, func(o *tokencache.Options) {
		o.UserFor = func(a string) string { u, _, _ := strings.Cut(a, "/"); return u }
	})
	accounts := []string{alice + "/1", alice + "/2", bob + "/1", bob + "/2"}
	for range 20 { // enough slow lookups to merge every name into the immutable map
		for _, a := range accounts {
			_, err := c.Token(ctx, a)
			require.NoError(t, err)
		}
	}
	got := map[string]string{}
	for _, a := range accounts {
		tok, err := c.Token(ctx, a)
		require.NoError(t, err)
		got[a] = tok.AccessToken
	}
	assert.Equal(t, got[alice+"/1"], got[alice+"/2"])
	assert.Equal(t, got[bob+"/1"], got[bob+"/2"])
	assert.NotEqual(t, got[alice+"/1"], got[bob+"/1"])
	assert.Contains(t, got[alice+"/1"], alice)
	assert.Contains(t, got[bob+"/1"], bob)

	require.NoError(t, c.Close())
	for _, a := range accounts {
		_, err := c.Token(ctx, a)
		require.ErrorIs(t, err, tokencache.ErrClosed, a)
	}
}

// An empty name is refused everywhere, with nothing written: it could not be announced.
func TestEmptyNameIsRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.cache(&broker{})
	_, err := c.Token(ctx, "")
	require.ErrorIs(t, err, tokencache.ErrEmptyName)
	_, err = c.Set(ctx, "", &tokencache.Token{AccessToken: "x", Expiry: time.Now().Add(time.Hour)})
	require.ErrorIs(t, err, tokencache.ErrEmptyName)
	require.ErrorIs(t, c.Invalidate(ctx, "", "x"), tokencache.ErrEmptyName)
	keys, err := e.client().Keys(ctx, e.srv.Prefix+":*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys)
}
