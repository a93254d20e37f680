package tradovate_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/legacykeys"
	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// syncProc is one process of a fleet: its own Redis clients, writing cache (legacy
// keys on), account map and AccountSync.
type syncProc struct {
	cache *tokencache.Cache
	m     *tradovate.AccountMap
	sync  *tradovate.AccountSync
	syncs chan syncResult
}

// newSyncProc starts a process of f's fleet for creds; with run, its AccountSync runs
// in the background (else the test calls Sync).
func newSyncProc(t *testing.T, f *fixture, creds *tradovate.Credentials, so tradovate.AccountSyncOptions, run bool) *syncProc {
	t.Helper()
	p := &syncProc{syncs: make(chan syncResult, 1000)}
	var err error
	p.m, err = tradovate.NewAccountMap(context.Background(), creds, tradovate.AccountOptions{})
	require.NoError(t, err)
	var nudge atomic.Pointer[tradovate.AccountSync]
	p.cache = f.fleet(t, 1, creds, nil, func(o *tokencache.Options) {
		o.LookupUser, o.AccountsFor, o.LegacyKeys = p.m.LookupUser, p.m.AccountsFor, true
		o.Hooks.Refreshed = func(user, _ string, _ *tokencache.Token) {
			if s := nudge.Load(); s != nil {
				s.Nudge(user)
			}
		}
	})[0]
	so.Authenticator, so.Cache, so.Map, so.LegacyKeys = f.auth(t, creds, nil), p.cache, p.m, true
	so.Logger = quietLogger()
	so.OnSync = func(_ context.Context, c tradovate.AccountChange, err error) { p.syncs <- syncResult{c, err} }
	p.sync, err = tradovate.NewAccountSync(so)
	require.NoError(t, err)
	nudge.Store(p.sync)
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.sync.Run(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			<-done
		})
	}
	return p
}

// results returns the OnSync results received so far.
func (p *syncProc) results() []syncResult {
	var out []syncResult
	for {
		select {
		case r := <-p.syncs:
			out = append(out, r)
		default:
			return out
		}
	}
}

// memStore is an AccountStore in memory: processes of one test share it.
type memStore struct {
	mu    sync.Mutex
	lists map[string]tradovate.AccountList
}

func (s *memStore) LoadAccounts(_ context.Context, user string) (tradovate.AccountList, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lists[user], nil
}

func (s *memStore) StoreAccounts(_ context.Context, user string, l tradovate.AccountList) (tradovate.AccountList, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lists == nil {
		s.lists = map[string]tradovate.AccountList{}
	}
	if cur := s.lists[user]; cur.At.After(l.At) {
		return cur, nil
	}
	s.lists[user] = l
	return l, nil
}

// One empty answer of either API ({"s":"ok","d":[]}, []) removes nothing: the answer is
// held, the next one (the accounts back) decides, and no key is ever deleted. An
// account two answers in a row lack is removed, with its key.
func TestAccountSyncRemovesAnAccountOnlyWhenTwoAnswersLackIt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		method   tradovate.Method
		endpoint tradovatefake.Endpoint
		empty    string
	}{
		{"tradingview", tradovate.MethodTradingView, tradovatefake.TVAccounts, `{"s":"ok","d":[]}`},
		{"official", tradovate.MethodOfficial, tradovatefake.AccountList, `[]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureOn(t, testutil.StartRedis(t), tradovatefake.Options{}, 1)
			u := f.users[0]
			pa1, pa2 := f.redis.Name("PA1"), f.redis.Name("PA2")
			f.fake.SetAccounts(u, pa1, pa2)
			creds := f.credentials(t, func(c *tradovate.Credential) { c.Method = tc.method })
			p := newSyncProc(t, f, creds, tradovate.AccountSyncOptions{Every: 20 * time.Millisecond}, true)
			ctx := tokenCtx(t)
			rdb := f.redis.Client(t)
			tok, err := p.cache.Token(ctx, u)
			require.NoError(t, err)
			require.Eventually(t, func() bool { return rdb.Get(ctx, "token:"+pa2).Val() == tok.AccessToken },
				20*time.Second, 5*time.Millisecond)
			pa3 := f.redis.Name("PA3")
			deleted := f.redis.WatchDeletes(t, "token:"+pa1, "token:"+pa2, "token:"+pa3)
			p.results()

			calls := f.fake.Calls(tc.endpoint, u)
			f.fake.Script(tc.endpoint, u, tradovatefake.Response{Body: tc.empty})
			require.Eventually(t, func() bool { return f.fake.Calls(tc.endpoint, u) >= calls+3 }, 20*time.Second, 5*time.Millisecond,
				"the empty answer and two more")
			assert.Equal(t, []string{pa1, pa2}, p.m.AccountsFor(u), "one empty answer removes nothing")
			for _, r := range p.results() {
				require.NoError(t, r.err)
				assert.False(t, r.change.Changed(), "%+v", r.change)
			}
			assert.Empty(t, deleted(), "no key was deleted, not even for a moment")

			// The prop firm closes pa1 and opens pa3: both come with the second answer.
			calls = f.fake.Calls(tc.endpoint, u)
			f.fake.SetAccounts(u, pa2, pa3)
			var change tradovate.AccountChange
			require.Eventually(t, func() bool {
				for _, r := range p.results() {
					if r.change.Changed() {
						change = r.change
						return true
					}
				}
				return false
			}, 20*time.Second, 5*time.Millisecond)
			assert.Equal(t, []string{pa3}, change.Added)
			assert.Equal(t, []string{pa1}, change.Removed)
			assert.GreaterOrEqual(t, f.fake.Calls(tc.endpoint, u), calls+2, "two answers lacked it")
			assert.Equal(t, []string{"token:" + pa1}, deleted(), "deleted once, by the process that saw it go")
			assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+pa3).Val())
			assert.Equal(t, []string{"token:" + u, "token:" + pa2, "token:" + pa3}, rdb.LRange(ctx, u, 0, -1).Val())

			// Every account closed: empty answers in a row remove them all.
			f.fake.SetAccounts(u)
			require.Eventually(t, func() bool {
				for _, r := range p.results() {
					if r.change.Changed() {
						change = r.change
						return true
					}
				}
				return false
			}, 20*time.Second, 5*time.Millisecond, "two empty answers in a row remove every account")
			assert.Equal(t, []string{pa2, pa3}, change.Removed)
			assert.Empty(t, p.m.AccountsFor(u))
			assert.Equal(t, []string{"token:" + pa1, "token:" + pa2, "token:" + pa3}, deleted())
			assert.Equal(t, []string{"token:" + u}, rdb.LRange(ctx, u, 0, -1).Val())

			// Another process that has not followed the answer yet restores a dropped
			// account's key and list entry: the process that saw it go drops them again.
			require.NoError(t, rdb.Set(ctx, "token:"+pa2, tok.AccessToken, time.Hour).Err())
			require.NoError(t, rdb.RPush(ctx, u, "token:"+pa2).Err())
			require.Eventually(t, func() bool {
				return rdb.Exists(ctx, "token:"+pa2).Val() == 0 && slices.Equal(rdb.LRange(ctx, u, 0, -1).Val(), []string{"token:" + u})
			}, 20*time.Second, 5*time.Millisecond, "dropped again")
		})
	}
}

// An account the broker lists for two users belongs to the first in the credentials on
// every process, whichever list is read first; when that user's list drops it, the next
// user gets it at once, and its key passes to that user's token without ever being
// deleted. When the first user lists it again, it takes it back.
func TestAccountSyncGivesASharedAccountToTheNextUser(t *testing.T) {
	t.Parallel()
	f := newFixtureOn(t, testutil.StartRedis(t), tradovatefake.Options{}, 2)
	a, b := f.users[0], f.users[1]
	x, a1, b1 := f.redis.Name("X"), f.redis.Name("A1"), f.redis.Name("B1")
	f.fake.SetAccounts(a, x, a1)
	f.fake.SetAccounts(b, x, b1)
	creds := f.credentials(t, nil)
	ctx := tokenCtx(t)
	rdb := f.redis.Client(t)
	deleted := f.redis.WatchDeletes(t, "token:"+x)

	// Two processes read the lists in opposite orders: they agree.
	p1 := newSyncProc(t, f, creds, tradovate.AccountSyncOptions{Every: time.Hour}, false)
	p2 := newSyncProc(t, f, creds, tradovate.AccountSyncOptions{Every: time.Hour}, false)
	ta, err := p1.cache.Token(ctx, a)
	require.NoError(t, err)
	tb, err := p1.cache.Token(ctx, b)
	require.NoError(t, err)
	for _, step := range []struct {
		p    *syncProc
		user string
	}{{p1, a}, {p1, b}, {p2, b}, {p2, a}} {
		_, err := step.p.sync.Sync(ctx, step.user)
		require.NoError(t, err)
	}
	for _, p := range []*syncProc{p1, p2} {
		assert.Equal(t, a, p.m.UserFor(x))
		assert.Equal(t, []string{x, a1}, p.m.AccountsFor(a))
		assert.Equal(t, []string{b1}, p.m.AccountsFor(b))
		for _, u := range []string{a, b} {
			chk, err := legacykeys.CheckKeys(p.cache, ctx, u)
			require.NoError(t, err)
			assert.Empty(t, chk.Foreign, "no process sees the other's token as foreign")
		}
	}
	assert.Equal(t, ta.AccessToken, rdb.Get(ctx, "token:"+x).Val())
	var steal tradovate.AccountChange
	for _, r := range p2.results() {
		if r.change.User == a {
			steal = r.change
		}
	}
	assert.Equal(t, []tradovate.AccountChange{{User: b, Removed: []string{x}}}, steal.Others, "p2 read b's list first: a took x from b")

	// a's list drops x (two answers): b gets it at once.
	f.fake.RemoveAccount(a, x)
	for range 2 {
		_, err := p1.sync.Sync(ctx, a)
		require.NoError(t, err)
	}
	assert.Equal(t, b, p1.m.UserFor(x))
	assert.Equal(t, []string{x, b1}, p1.m.AccountsFor(b), "in the order of b's list")
	assert.Equal(t, tb.AccessToken, rdb.Get(ctx, "token:"+x).Val(), "x's key holds b's token")
	assert.Empty(t, deleted(), "x's key was never deleted")
	assert.NotContains(t, rdb.LRange(ctx, a, 0, -1).Val(), "token:"+x)
	assert.Contains(t, rdb.LRange(ctx, b, 0, -1).Val(), "token:"+x)
	var moved tradovate.AccountChange
	for _, r := range p1.results() {
		if r.change.Changed() {
			moved = r.change
		}
	}
	assert.Equal(t, []string{x}, moved.Removed)
	assert.Equal(t, []tradovate.AccountChange{{User: b, Added: []string{x}}}, moved.Others)

	// a lists it again: a takes it back.
	f.fake.AddAccount(a, x)
	_, err = p1.sync.Sync(ctx, a)
	require.NoError(t, err)
	assert.Equal(t, a, p1.m.UserFor(x))
	assert.Equal(t, ta.AccessToken, rdb.Get(ctx, "token:"+x).Val())
	assert.Empty(t, deleted())
	assert.Contains(t, rdb.LRange(ctx, a, 0, -1).Val(), "token:"+x)
	assert.NotContains(t, rdb.LRange(ctx, b, 0, -1).Val(), "token:"+x)
}

// Processes sharing their answers (AccountSyncOptions.Shared) follow the newest one,
// whichever process asked: one that asks every hour learns an account another learned
// a moment ago, and an account the other saw go is deleted once, by the one that saw
// it go.
func TestAccountSyncFollowsTheNewestAnswerOfTheFleet(t *testing.T) {
	t.Parallel()
	f := newFixtureOn(t, testutil.StartRedis(t), tradovatefake.Options{}, 1)
	u := f.users[0]
	pa1, pa2, pa3 := f.redis.Name("PA1"), f.redis.Name("PA2"), f.redis.Name("PA3")
	f.fake.SetAccounts(u, pa1)
	creds := f.credentials(t, nil)
	store := &memStore{}
	fast := newSyncProc(t, f, creds, tradovate.AccountSyncOptions{Every: 20 * time.Millisecond, Shared: store}, true)
	slow := newSyncProc(t, f, creds, tradovate.AccountSyncOptions{Every: time.Hour, Shared: store}, true)
	ctx := tokenCtx(t)
	rdb := f.redis.Client(t)
	deleted := f.redis.WatchDeletes(t, "token:"+pa1, "token:"+pa2, "token:"+pa3)
	tok, err := fast.cache.Token(ctx, u)
	require.NoError(t, err)
	shared := func(want func([]string) bool) func() bool { // the fast process shared such an answer
		return func() bool { l, _ := store.LoadAccounts(ctx, u); return want(l.Names) }
	}
	require.Eventually(t, shared(func(n []string) bool { return slices.Equal(n, []string{pa1}) }), 20*time.Second, 5*time.Millisecond)
	var slowResults []syncResult // every OnSync of the slow process
	slowSaw := func(want func(syncResult) bool) func() bool {
		return func() bool {
			slowResults = append(slowResults, slow.results()...)
			return slices.ContainsFunc(slowResults, want)
		}
	}
	slow.sync.Nudge(u) // a new token: its first look adopts, and it asks once
	require.Eventually(t, slowSaw(func(r syncResult) bool { return !r.change.Shared }), 20*time.Second, 5*time.Millisecond,
		"its ask is done (an Adopt during an ask changes nothing)")
	require.Equal(t, []string{pa1}, slow.m.AccountsFor(u))

	f.fake.AddAccount(u, pa2)
	require.Eventually(t, shared(func(n []string) bool { return slices.Equal(n, []string{pa1, pa2}) }), 20*time.Second, 5*time.Millisecond)
	c, err := slow.sync.Adopt(ctx, u)
	require.NoError(t, err)
	assert.True(t, c.Shared)
	assert.Equal(t, []string{pa2}, c.Added)
	assert.Equal(t, []string{pa1, pa2}, slow.m.AccountsFor(u), "adopted without asking")

	f.fake.AddAccount(u, pa3)
	require.Eventually(t, shared(func(n []string) bool { return slices.Contains(n, pa3) }), 20*time.Second, 5*time.Millisecond)
	slow.sync.Nudge(u) // its next look adopts
	require.Eventually(t, func() bool { return slices.Contains(slow.m.AccountsFor(u), pa3) }, 20*time.Second, 5*time.Millisecond)

	f.fake.RemoveAccount(u, pa1)
	require.Eventually(t, shared(func(n []string) bool { return !slices.Contains(n, pa1) }), 20*time.Second, 5*time.Millisecond)
	slow.sync.Nudge(u)
	require.Eventually(t, func() bool { return !slices.Contains(slow.m.AccountsFor(u), pa1) }, 20*time.Second, 5*time.Millisecond)
	// The fast process shares its answer before it deletes the keys it saw go: the
	// slow one may adopt it first.
	require.Eventually(t, func() bool { return len(deleted()) > 0 }, 20*time.Second, 5*time.Millisecond)
	assert.Equal(t, []string{"token:" + pa1}, deleted(), "deleted once, by the process that saw it go")
	for _, a := range []string{pa2, pa3} {
		assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+a).Val())
	}
	var adopted, asked int
	for _, r := range append(slowResults, slow.results()...) {
		require.NoError(t, r.err)
		if r.change.Shared {
			adopted++
		} else {
			asked++
		}
	}
	assert.Equal(t, 4, adopted, "four adoptions reported: pa1 (its first look), pa2 (Adopt), pa3 and pa1's removal (its looks)")
	assert.Equal(t, 1, asked, "the slow process asked the broker once")
}
