package tokencache_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
)

// gate blocks matching commands (after they got their reply) while armed.
type gate struct {
	armed   atomic.Bool
	match   func(redis.Cmder) bool
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGate(match func(redis.Cmder) bool) *gate {
	return &gate{match: match, entered: make(chan struct{}), release: make(chan struct{})}
}
func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }
func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if g.armed.Load() && g.match(cmd) {
			g.once.Do(func() {
				close(g.entered)
				<-g.release
			})
		}
		return err
	}
}
func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func isGet(cmd redis.Cmder) bool { return strings.EqualFold(cmd.Name(), "get") }

// Invalidate racing Close must not deadlock on e.mu (startFlight must not call finish).
func TestInvalidateRacingCloseDoesNotDeadlock(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	rdb := e.client()
	g := newGate(isGet)
	rdb.AddHook(g)
	c := newCache(t, rdb, e.srv.Prefix, &broker{})
	tok, err := c.Token(ctx, user)
	require.NoError(t, err)

	g.armed.Store(true)
	done := make(chan error, 1)
	go func() { done <- c.Invalidate(ctx, user, tok.AccessToken) }()
	<-g.entered // Invalidate passed its closed check and is reading Redis
	require.NoError(t, c.Close())
	close(g.release)
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Invalidate never returned: deadlocked on e.mu (finish called with e.mu held)")
	}
}

// An invalidation message handled while Close runs must not make Close hang.
func TestAnnouncementRacingCloseDoesNotHang(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	entered := make(chan struct{}, 1)
	c1 := e.cache(&broker{}, func(o *tokencache.Options) {
		o.Hooks.Invalidated = func(string, int64) {
			entered <- struct{}{}
			time.Sleep(200 * time.Millisecond) // a slow metrics hook, or just preemption
		}
	})
	c2 := e.cache(nil)
	_, err := c1.Token(ctx, user)
	require.NoError(t, err)
	_, err = c2.Set(ctx, user, &tokencache.Token{AccessToken: "set-by-another-process", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	select { // c1's listener is inside announce, past its closed check
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("c1 never heard of c2's write")
	}
	done := make(chan error, 1)
	go func() { done <- c1.Close() }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Close never returned: listener deadlocked in announce -> startFlight -> finish")
	}
}

// A broker login that returns a token this process reported bad is refused, with the
// usual backoff, rather than stored and retried on every call.
type sameBroker struct{ logins atomic.Int64 }

func (s *sameBroker) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	s.logins.Add(1)
	return &tokencache.Token{AccessToken: "the-same-token-every-time", Expiry: time.Now().Add(time.Hour)}, nil
}

func TestBrokerReturningAReportedBadTokenIsRefused(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	b := &sameBroker{}
	c := e.cache(b)
	tok, err := c.Token(ctx, user)
	require.NoError(t, err)
	require.NoError(t, c.Invalidate(ctx, user, tok.AccessToken))
	time.Sleep(200 * time.Millisecond)
	before := b.logins.Load()
	for range 10 {
		_, err = c.Token(ctx, user)
		var rerr *tokencache.RefreshError
		require.ErrorAs(t, err, &rerr)
	}
	assert.LessOrEqual(t, b.logins.Load()-before, int64(1), "logins for 10 Token calls")
}

// The caller's ctx deadline is reported as such, not as Redis being unavailable.
func TestCallerDeadlineIsNotRedisUnavailable(t *testing.T) {
	e := &env{t: t, srv: testutil.StartRedis(t)} // CLIENT PAUSE needs a real server
	user := e.user("U")
	c := e.cache(nil)
	admin := e.client()
	require.NoError(t, admin.Do(context.Background(), "CLIENT", "PAUSE", "1000", "ALL").Err())
	defer admin.Do(context.Background(), "CLIENT", "UNPAUSE")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Set(ctx, user, &tokencache.Token{AccessToken: "x-token-value", Expiry: time.Now().Add(time.Hour)})
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, tokencache.ErrRedisUnavailable, "the caller's deadline is not Redis being down")
	err = c.Invalidate(ctx, user, "x")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// The leader's GET returns v1, then the v2 announcement is handled before the install:
// the caller must not be handed the superseded v1.
func TestSupersededReadIsNotHandedOut(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	rdb := e.client()
	g := newGate(isGet)
	rdb.AddHook(g)
	invalidated := make(chan int64, 4)
	c1 := newCache(t, rdb, e.srv.Prefix, nil, func(o *tokencache.Options) {
		o.Hooks.Invalidated = func(_ string, v int64) { invalidated <- v }
	})
	c2 := e.cache(nil)
	v1, err := c2.Set(ctx, user, &tokencache.Token{AccessToken: "token-version-one", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	// Warm c1 so the announcement finds a token (and calls the hook), then drop it.
	_, err = c1.Token(ctx, user)
	require.NoError(t, err)
	c1.Forget(user)

	g.armed.Store(true)
	got := make(chan *tokencache.Token, 1)
	go func() { tok, _ := c1.Token(ctx, user); got <- tok }()
	<-g.entered // c1 read v1 from Redis, not yet installed
	v2, err := c2.Set(ctx, user, &tokencache.Token{AccessToken: "token-version-two", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	select {
	case v := <-invalidated:
		require.Equal(t, v2.Version, v)
	case <-time.After(2 * time.Second):
		t.Fatal("no announcement")
	}
	close(g.release)
	tok := <-got
	require.NotNil(t, tok)
	assert.Equal(t, "token-version-two", tok.AccessToken, "v%d was superseded by v%d before it was handed out", v1.Version, v2.Version)
}

// Redis holds a valid token with a lower version than a writer's (an old snapshot
// restored): the writer puts its newer one back, and does not re-read on every call.
func TestWriterRestoresNewerTokenOverOlderStoredOne(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	rdb := e.client()
	cc := countCommands(rdb)
	c := newCache(t, rdb, e.srv.Prefix, &broker{}, func(o *tokencache.Options) { o.MaxStaleness = 50 * time.Millisecond })
	other := e.cache(nil)
	_, err := other.Set(ctx, user, &tokencache.Token{AccessToken: "local-newer", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	_, err = c.Token(ctx, user)
	require.NoError(t, err)
	rawRecord(t, e, user, "restored-older", 5) // old snapshot, version 5
	other.Forget(user)
	time.Sleep(100 * time.Millisecond)
	cc.reset()
	var last string
	for range 200 {
		tok, err := c.Token(ctx, user)
		require.NoError(t, err)
		last = tok.AccessToken
		time.Sleep(time.Millisecond)
	}
	fresh := e.cache(nil)
	o, err := fresh.Token(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, "local-newer", last)
	assert.Equal(t, "local-newer", o.AccessToken, "the newer token was written back over the restored one")
	assert.Less(t, cc.get("get"), 50, "GETs during 200 calls over ~250 ms with MaxStaleness 50 ms")
}

// R1b: the same deadlock through Token -> kick -> startFlight, found by stress.

// An announcement that arrives while a background refresh is finishing with the
// previous version must still reach Watch: that refresh read Redis too early, and no
// caller is waiting to notice.
func TestAnnouncementDuringARefreshReachesWatch(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	rdb := e.client()
	g := newGate(isGet)
	rdb.AddHook(g)
	// A writer that announces versions without their records (another implementation
	// of the contract), so this cache must read each one back.
	raw := e.client()
	version := time.Now().UnixMicro()
	set := func(access string) *tokencache.Token {
		version++
		rec := fmt.Sprintf(`v1:%d:{"a":%q,"e":%d,"o":%d}`, version, access, time.Now().Add(time.Hour).UnixMilli(), time.Now().UnixMilli())
		require.NoError(t, raw.Set(ctx, e.srv.Prefix+":{"+user+"}:record", rec, time.Hour).Err())
		require.NoError(t, raw.Publish(ctx, e.srv.Prefix+":invalidate", fmt.Sprintf("%d:%s", version, user)).Err())
		return &tokencache.Token{AccessToken: access, Version: version}
	}
	set("version-one")
	c := newCache(t, rdb, e.srv.Prefix, nil) // MaxStaleness 30 s: no backstop within the test
	_, err := c.Token(ctx, user)
	require.NoError(t, err)
	ch := c.Watch(ctx, user)

	// v2's announcement starts a background refresh; its GET (which saw v2) is held.
	g.armed.Store(true)
	v2 := set("version-two")
	<-g.entered
	// v3 is announced while that refresh still runs, and joins it.
	v3 := set("version-three")
	time.Sleep(50 * time.Millisecond)
	close(g.release)
	// The watcher may hear of v2 first; it hears of v3 in any case (a read beside the
	// held refresh may bring v3 before the refresh finishes with v2).
	got := receive(t, ch).Version
	if got == v2.Version {
		got = receive(t, ch).Version
	}
	assert.Equal(t, v3.Version, got, "the watcher hears of v3")
}
