package tokencache_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/tokencache"
)

func TestNewValidatesOptions(t *testing.T) {
	_, err := tokencache.New(tokencache.Options{})
	require.ErrorContains(t, err, "Options.Redis is required")

	e := newEnv(t)
	_, err = tokencache.New(tokencache.Options{Redis: e.client(), Prefix: "a{b}"})
	require.ErrorContains(t, err, "Prefix")
	_, err = tokencache.New(tokencache.Options{Redis: e.client(), LeaseTTL: -time.Second})
	require.ErrorContains(t, err, "negative")
}

func TestTokenLayers(t *testing.T) {
	e := newEnv(t)
	b := &broker{}
	user := e.user("U")
	rdb := e.client()
	cmds := countCommands(rdb)
	c := newCache(t, rdb, e.srv.Prefix, b)
	ctx := context.Background()

	// L3: a cold user is logged in once and the token lands in Redis. Before the login
	// the record is read once: the lease is taken together with the second read.
	cmds.reset()
	tok, err := c.Token(ctx, user)
	require.NoError(t, err)
	assert.EqualValues(t, 1, b.logins.Load())
	assert.Positive(t, tok.Version)
	assert.Equal(t, 1, cmds.get("get"), "GETs of a cold login")

	// The lease is released in the background once the token is stored.
	require.Eventually(t, func() bool {
		return rdb.Exists(ctx, e.srv.Prefix+":{"+user+"}:lease").Val() == 0
	}, 5*time.Second, time.Millisecond)

	// L1: a hit touches neither Redis nor the broker, and does not allocate.
	cmds.reset()
	for range 100 {
		again, err := c.Token(ctx, user)
		require.NoError(t, err)
		require.Same(t, tok, again)
	}
	assert.Zero(t, cmds.get("get")+cmds.get("evalsha")+cmds.get("eval"))
	src := c.Source(user)
	allocs := testing.AllocsPerRun(1000, func() { _, _ = src.Token(ctx) })
	assert.Zero(t, allocs, "Source.Token hit allocates")
	allocs = testing.AllocsPerRun(1000, func() { _, _ = c.Token(ctx, user) })
	assert.Zero(t, allocs, "Cache.Token hit allocates")

	// L2: another process finds it in Redis with exactly one GET.
	rdb2 := e.client()
	cmds2 := countCommands(rdb2)
	c2 := newCache(t, rdb2, e.srv.Prefix, b)
	cmds2.reset()
	tok2, err := c2.Token(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, tok.AccessToken, tok2.AccessToken)
	assert.Equal(t, tok.Version, tok2.Version)
	assert.Equal(t, 1, cmds2.get("get"))
	assert.EqualValues(t, 1, b.logins.Load())
}

func TestOneLoginForTheFleet(t *testing.T) {
	e := newEnv(t)
	b := &broker{delay: 100 * time.Millisecond}
	user := e.user("U")
	const caches, callers = 8, 50
	var fleet []*tokencache.Cache
	for range caches {
		fleet = append(fleet, e.cache(b))
	}
	got := make(chan string, caches*callers)
	var wg sync.WaitGroup
	for _, c := range fleet {
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				tok, err := c.Token(ctx, user)
				if assert.NoError(t, err) {
					got <- tok.AccessToken
				}
			}()
		}
	}
	wg.Wait()
	close(got)
	assert.EqualValues(t, 1, b.logins.Load(), "logins")
	seen := map[string]int{}
	for tok := range got {
		seen[tok]++
	}
	require.Len(t, seen, 1, "every caller gets the same token")
	for _, n := range seen {
		assert.Equal(t, caches*callers, n)
	}
}

func TestDeadLeaseHolderIsReplacedWithinLeaseTTL(t *testing.T) {
	e := newEnv(t)
	b := &broker{}
	user := e.user("U")
	ctx := context.Background()
	lease := e.srv.Prefix + ":{" + user + "}:lease"
	const ttl = 500 * time.Millisecond

	// A process took the lease and died: nobody extends or releases it.
	require.NoError(t, e.client().Set(ctx, lease, "dead-process", ttl).Err())
	c := e.cache(b, func(o *tokencache.Options) { o.LeaseTTL = ttl })
	start := time.Now()
	tok, err := c.Token(ctx, user)
	require.NoError(t, err)
	assert.NotEmpty(t, tok.AccessToken)
	assert.EqualValues(t, 1, b.logins.Load())
	assert.GreaterOrEqual(t, time.Since(start), ttl/2, "the lease was respected")
}

func TestStoppedLeaderIsReplaced(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	const ttl = 300 * time.Millisecond

	// The leader's broker call never returns; then its Redis connection goes away, as if
	// the process were killed: its lease stops being extended.
	stuck := &broker{}
	entered := make(chan struct{})
	var once sync.Once
	stuck.failLogins(func(ctx context.Context, _ int64) error {
		once.Do(func() { close(entered) })
		<-ctx.Done()
		return ctx.Err()
	})
	leaderRedis := e.client()
	leader := newCache(t, leaderRedis, e.srv.Prefix, stuck, func(o *tokencache.Options) { o.LeaseTTL = ttl })
	go func() { _, _ = leader.Token(context.Background(), user) }()
	<-entered
	require.NoError(t, leaderRedis.Close())

	b := &broker{}
	c := e.cache(b, func(o *tokencache.Options) { o.LeaseTTL = ttl })
	tok, err := c.Token(ctx, user)
	require.NoError(t, err)
	assert.Contains(t, tok.AccessToken, "login-tok-")
	assert.EqualValues(t, 1, b.logins.Load())
}

// waiting sets up a process (holder) stuck in a login of user, and a second process
// (follower, on a Redis client that counts commands) whose Token call has read the
// record and found the lease held. release lets the login finish; done and got give
// the two Token calls' results.
type waiting struct {
	b        *broker
	follower *tokencache.Cache
	cmds     *commandCounter
	release  func()
	done     chan error
	got      chan *tokencache.Token
}

func newWaiting(t *testing.T, e *env, user string) *waiting {
	ctx := context.Background()
	entered, release := make(chan struct{}), make(chan struct{})
	w := &waiting{b: &broker{}, done: make(chan error, 1), got: make(chan *tokencache.Token, 1)}
	var once sync.Once
	w.release = func() { once.Do(func() { close(release) }) }
	w.b.failLogins(func(context.Context, int64) error {
		close(entered)
		<-release
		return nil
	})
	holder := e.cache(w.b)
	t.Cleanup(w.release) // runs before holder's Close, which waits for the login
	go func() {
		_, err := holder.Token(ctx, user)
		w.done <- err
	}()
	<-entered

	rdb := e.client()
	w.cmds = countCommands(rdb)
	w.follower = newCache(t, rdb, e.srv.Prefix, w.b)
	w.cmds.reset()
	go func() {
		tok, err := w.follower.Token(ctx, user)
		assert.NoError(t, err)
		w.got <- tok
	}()
	// It has read the record, tried the lease and waits for the holder's announcement
	// (an announcement heard before that also starts a read of its own).
	require.Eventually(t, func() bool { return w.cmds.get("evalsha")+w.cmds.get("eval") > 0 }, 10*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return w.follower.Awaiting(user) }, 10*time.Second, time.Millisecond)
	return w
}

// A process waiting for another's login is woken by the announcement and reads the
// record once: a message is a hint, never a token to serve. After its first read and the
// lease attempt it makes exactly one more read.
func TestAWaitingProcessReadsTheTokenOnceWhenWoken(t *testing.T) {
	e := newEnv(t)
	w := newWaiting(t, e, e.user("U"))
	w.release()
	require.NoError(t, <-w.done)
	tok := <-w.got
	require.NotNil(t, tok)
	assert.Equal(t, 2, w.cmds.get("get"), "GETs by the waiting process")
	assert.EqualValues(t, 1, w.b.logins.Load())
}

// A process waiting for another's login serves a token stored by its own Set without
// looking at Redis again, whichever of the Set's reply and its message comes first.
// (That it is woken at once rather than by the 1 s recheck is the signal in
// installLocked; this test does not time it.)
func TestAWaitingProcessServesItsOwnSet(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	w := newWaiting(t, e, user)
	set, err := w.follower.Set(context.Background(), user, &tokencache.Token{AccessToken: "from-a-callback", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	tok := <-w.got
	require.NotNil(t, tok)
	assert.Equal(t, set.Version, tok.Version)
	assert.Equal(t, 1, w.cmds.get("get"), "GETs by the waiting process")
}
