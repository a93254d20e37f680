package tokencache_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/legacykeys"
	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
)

// accountMap is a map of accounts to users that changes while caches run, like
// tradovate.AccountMap filled from the broker's account list.
type accountMap struct {
	mu      sync.Mutex
	owner   map[string]string   // account -> user
	of      map[string][]string // user -> accounts
	lookups int
}

func newAccountMap(users ...string) *accountMap {
	m := &accountMap{owner: map[string]string{}, of: map[string][]string{}}
	for _, u := range users {
		m.owner[u] = u
	}
	return m
}

func (m *accountMap) set(user string, accounts ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for a, u := range m.owner {
		if u == user && a != user {
			delete(m.owner, a)
		}
	}
	for _, a := range accounts {
		m.owner[a] = user
	}
	m.of[user] = accounts
}

func (m *accountMap) lookup(account string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	u, ok := m.owner[account]
	if !ok {
		return account, false
	}
	return u, true
}

func (m *accountMap) accountsFor(user string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.of[user])
}

// An account the map does not know yet is served as itself and looked up again, so it
// follows the map once the map learns it, through Token and a Source made before. A
// known account is remembered (LookupUser is not asked again).
func TestAnAccountLearnedLaterFollowsTheMap(t *testing.T) {
	e := newEnv(t)
	user, account := e.user("APEX"), e.user("PA1")
	ctx := context.Background()
	m := newAccountMap(user)
	reader := e.cache(nil, func(o *tokencache.Options) { o.LookupUser = m.lookup })
	src := reader.Source(account) // made before the map knows the account
	stored := set(t, e.cache(nil), user, "the-users-token")

	_, err := reader.Token(ctx, account)
	require.ErrorIs(t, err, tokencache.ErrNoToken, "unknown: served as a user of its own, which has no token")
	_, err = src.Token(ctx)
	require.ErrorIs(t, err, tokencache.ErrNoToken)

	m.set(user, account) // the broker's list names it now
	tok, err := reader.Token(ctx, account)
	require.NoError(t, err)
	assert.Equal(t, stored.AccessToken, tok.AccessToken)
	tok, err = src.Token(ctx)
	require.NoError(t, err)
	assert.Equal(t, stored.AccessToken, tok.AccessToken, "the Source made earlier follows too")

	m.mu.Lock()
	before := m.lookups
	m.mu.Unlock()
	for range 100 {
		_, err := reader.Token(ctx, account)
		require.NoError(t, err)
		_, err = src.Token(ctx)
		require.NoError(t, err)
	}
	m.mu.Lock()
	assert.Equal(t, before, m.lookups, "a known account is remembered")
	m.mu.Unlock()
}

// UserFor alone keeps its contract: every answer is remembered.
func TestUserForAnswersAreRemembered(t *testing.T) {
	e := newEnv(t)
	user, account := e.user("U"), e.user("A")
	var calls int
	var mu sync.Mutex
	c := e.cache(nil, func(o *tokencache.Options) {
		o.UserFor = func(a string) string {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if a == account {
				return user
			}
			return a
		}
	})
	set(t, e.cache(nil), user, "tok")
	for range 10 {
		tok, err := c.Token(context.Background(), account)
		require.NoError(t, err)
		assert.Equal(t, "tok", tok.AccessToken)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 1, calls)
}

// legacyEnv is a real Redis (a key of another type, TTLs) with a writer of legacy keys
// whose accounts change.
type legacyEnv struct {
	*env
	m      *accountMap
	user   string
	writer *tokencache.Cache
}

func newLegacyEnv(t *testing.T, tweak ...func(*tokencache.Options)) *legacyEnv {
	return newLegacyEnvOn(t, testutil.Redis(t), tweak...)
}

// newLegacyEnvOn is newLegacyEnv on srv.
func newLegacyEnvOn(t *testing.T, srv *testutil.Server, tweak ...func(*tokencache.Options)) *legacyEnv {
	e := &env{t: t, srv: srv}
	le := &legacyEnv{env: e, user: e.user("APEX")}
	le.m = newAccountMap(le.user)
	le.writer = e.cache(nil, append([]func(*tokencache.Options){func(o *tokencache.Options) {
		o.LegacyKeys = true
		o.LookupUser = le.m.lookup
		o.AccountsFor = le.m.accountsFor
	}}, tweak...)...)
	return le
}

// The expiry is a naive ISO-8601 time in the configured zone; the list has no TTL, even
// when an earlier version wrote it with one.
func TestLegacyExpiryIsNaiveInTheChosenZone(t *testing.T) {
	zone := time.FixedZone("UTC-5", -5*3600)
	le := newLegacyEnv(t, func(o *tokencache.Options) { o.LegacyLocation = zone })
	ctx := context.Background()
	rdb := le.client()
	require.NoError(t, rdb.RPush(ctx, le.user, "token:"+le.user).Err())
	require.NoError(t, rdb.Expire(ctx, le.user, time.Hour).Err()) // as the daemon used to write it
	expiry := time.Now().Add(2 * time.Hour).Truncate(time.Second).Add(769 * time.Millisecond)
	_, err := le.writer.Set(ctx, le.user, &tokencache.Token{AccessToken: "legacy-expiry", Expiry: expiry})
	require.NoError(t, err)

	got := rdb.Get(ctx, "token_expiry:"+le.user).Val()
	assert.Equal(t, expiry.In(zone).Format("2006-01-02T15:04:05")+".769000", got)
	parsed, err := time.ParseInLocation("2006-01-02T15:04:05.999999", got, zone)
	require.NoError(t, err)
	assert.True(t, parsed.Equal(expiry), "no offset written: read in the zone it is the expiry")
	assert.Equal(t, time.Duration(-1), rdb.TTL(ctx, le.user).Val(), "the list keeps no TTL")
	ttl := rdb.TTL(ctx, "token:"+le.user).Val()
	assert.InDelta(t, time.Until(expiry).Seconds(), ttl.Seconds(), 5, "token keys expire with the token")
}

// Accounts come and go: a new one gets its key at the next sync; a removed one loses
// its key and its place in the list when the process that saw the broker drop it says
// so (Drop), never because a sync's map lacks it; a key of an account now another
// user's is left to that user; the user's own keys stay.
func TestSyncLegacyFollowsTheAccounts(t *testing.T) {
	srv := testutil.StartRedis(t)
	le := newLegacyEnvOn(t, srv)
	ctx := context.Background()
	rdb := le.client()
	// Every DEL is observed: a guard that deleted a key and a later write that put it
	// back would pass a test of the final state only.
	watched := srv.WatchDeletes(t, "token:"+le.user, "token:"+le.user+"-1", "token:"+le.user+"-2", "token:"+le.user+"-3",
		"token:"+le.user+"-4", "auth:"+le.user, le.user)
	other := le.user + "-other"
	le.m.mu.Lock()
	le.m.owner[other] = other
	le.m.mu.Unlock()
	le.m.set(le.user, le.user+"-1", le.user+"-2", le.user+"-3")
	tok := set(t, le.writer, le.user, "accounts-token")
	for _, a := range []string{le.user, le.user + "-1", le.user + "-2", le.user + "-3"} {
		require.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+a).Val(), a)
	}
	written, err := legacykeys.Sync(le.writer, ctx, le.user)
	require.NoError(t, err)
	assert.False(t, written, "in step")

	le.m.set(le.user, le.user+"-3", le.user+"-4") // -1 and -2 closed, -4 opened
	le.m.set(other, le.user+"-2")                 // -2 moved to another user
	require.NoError(t, rdb.Set(ctx, "token:"+le.user+"-2", "the-other-users-token", 0).Err())
	written, err = legacykeys.Sync(le.writer, ctx, le.user)
	require.NoError(t, err)
	assert.True(t, written)
	assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+le.user+"-4").Val(), "the new account's key")
	assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+le.user+"-1").Val(), "a sync deletes nothing")
	assert.Equal(t, []string{"token:" + le.user, "token:" + le.user + "-1", "token:" + le.user + "-2", "token:" + le.user + "-3",
		"token:" + le.user + "-4"}, rdb.LRange(ctx, le.user, 0, -1).Val(), "a sync only adds to the list")
	written, err = legacykeys.Sync(le.writer, ctx, le.user)
	require.NoError(t, err)
	assert.False(t, written, "entries the map does not name are no reason to write")

	// The broker's list dropped -1 and -2 (an AccountSync saw it twice): they go.
	deleted, err := legacykeys.Drop(le.writer, ctx, le.user, []string{le.user + "-1", le.user + "-2", le.user + "-3", le.user})
	require.NoError(t, err)
	assert.Equal(t, []string{"token:" + le.user + "-1"}, deleted, "not -2 (another user's now), -3 (the user's again), nor the user's own")
	assert.Equal(t, []string{"token:" + le.user + "-1"}, watched(), "the only DEL ever sent, syncs included")
	assert.Equal(t, []string{"token:" + le.user, "token:" + le.user + "-3", "token:" + le.user + "-4"}, rdb.LRange(ctx, le.user, 0, -1).Val())
	assert.Zero(t, rdb.Exists(ctx, "token:"+le.user+"-1").Val(), "the closed account's key is deleted")
	assert.Equal(t, "the-other-users-token", rdb.Get(ctx, "token:"+le.user+"-2").Val(), "another user's account is left alone")
	assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "auth:"+le.user).Val())

	written, err = legacykeys.Sync(le.writer, ctx, le.user)
	require.NoError(t, err)
	assert.False(t, written)
}

// A key named after the user that is not a list belongs to someone else: it is never
// replaced, and the token keys are written all the same.
func TestLegacyListNeverClobbersAnotherType(t *testing.T) {
	le := newLegacyEnv(t)
	ctx := context.Background()
	rdb := le.client()
	require.NoError(t, rdb.Set(ctx, le.user, "a service's own string", 0).Err())
	tok := set(t, le.writer, le.user, "list-is-taken")
	assert.Equal(t, "a service's own string", rdb.Get(ctx, le.user).Val())
	assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+le.user).Val())
	written, err := legacykeys.Sync(le.writer, ctx, le.user)
	require.NoError(t, err)
	assert.False(t, written, "the token keys are in step; the string is not ours to compare")
	require.NoError(t, rdb.Del(ctx, "auth:"+le.user).Err())
	_, err = legacykeys.Sync(le.writer, ctx, le.user)
	require.ErrorContains(t, err, "WRONGTYPE")
	require.ErrorContains(t, err, "left alone")
	assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "auth:"+le.user).Val(), "written before the list was refused")
	assert.Equal(t, "a service's own string", rdb.Get(ctx, le.user).Val())
}

// CheckKeys tells keys holding another writer's token from missing ones, shows no
// token, and Sync puts the fleet's token back.
func TestCheckLegacyFindsForeignTokens(t *testing.T) {
	le := newLegacyEnv(t)
	ctx := context.Background()
	rdb := le.client()
	le.m.set(le.user, le.user+"-1", le.user+"-2")
	tok := set(t, le.writer, le.user, "fleet-token-0123456789")
	chk, err := legacykeys.CheckKeys(le.writer, ctx, le.user)
	require.NoError(t, err)
	assert.Equal(t, legacykeys.Check{User: le.user, Version: tok.Version}, chk)

	foreign := "cron-token-abcdefghijklmnop"
	require.NoError(t, rdb.Set(ctx, "token:"+le.user+"-1", foreign, time.Hour).Err())
	require.NoError(t, rdb.Set(ctx, "auth:"+le.user, foreign, time.Hour).Err())
	require.NoError(t, rdb.Del(ctx, "token:"+le.user+"-2").Err())
	chk, err = legacykeys.CheckKeys(le.writer, ctx, le.user)
	require.NoError(t, err)
	require.Len(t, chk.Foreign, 2)
	assert.Equal(t, "token:"+le.user+"-1", chk.Foreign[0].Key)
	assert.Equal(t, "auth:"+le.user, chk.Foreign[1].Key)
	assert.Equal(t, tokencache.Redact(foreign), chk.Foreign[0].Token)
	assert.Equal(t, chk.Foreign[0].Fingerprint, chk.Foreign[1].Fingerprint, "the same token")
	assert.Len(t, chk.Foreign[0].Fingerprint, 12)
	assert.NotContains(t, chk.Foreign[0].Fingerprint+chk.Foreign[0].Token, foreign)
	assert.Equal(t, []string{"token:" + le.user + "-2"}, chk.Missing)
	assert.True(t, chk.OutOfStep)

	written, err := legacykeys.Sync(le.writer, ctx, le.user)
	require.NoError(t, err)
	assert.True(t, written)
	chk, err = legacykeys.CheckKeys(le.writer, ctx, le.user)
	require.NoError(t, err)
	assert.Empty(t, chk.Foreign)
	assert.False(t, chk.OutOfStep)

	// With nothing valid stored there is nothing to compare with.
	nobody := le.user + "-nobody"
	require.NoError(t, rdb.Set(ctx, "token:"+nobody, foreign, time.Hour).Err())
	chk, err = legacykeys.CheckKeys(le.writer, ctx, nobody)
	require.NoError(t, err)
	assert.Equal(t, legacykeys.Check{User: nobody}, chk)
}

// A write of the legacy keys that read the accounts before they changed (a renewal
// racing an AccountSync's change) never deletes the key of the account added meanwhile
// (not even for a moment: every DEL is observed), and leaves the keys as the last
// accounts say.
func TestALegacyWriteWithStaleAccountsKeepsTheNewOnes(t *testing.T) {
	srv := testutil.StartRedis(t)
	le := newLegacyEnvOn(t, srv)
	ctx := context.Background()
	rdb := le.client()
	a1, a2 := le.user+"-1", le.user+"-2"
	deleted := srv.WatchDeletes(t, "token:"+a1, "token:"+a2, le.user)
	le.m.set(le.user, a1)
	set(t, le.writer, le.user, "before-the-change")

	// The next token's write reads the accounts ([a1]) and is held there.
	entered, release := make(chan struct{}), make(chan struct{})
	stale := le.m.accountsFor(le.user)
	var once sync.Once
	held := writerAskingFirst(le, func() []string {
		held := false
		once.Do(func() { held = true })
		if !held {
			return nil
		}
		close(entered)
		<-release
		return stale
	})
	done := make(chan *tokencache.Token, 1)
	go func() { done <- set(t, held, le.user, "after-the-change") }()
	<-entered

	// Meanwhile the broker lists a2 too, and its keys are written.
	le.m.set(le.user, a1, a2)
	_, err := legacykeys.Sync(le.writer, ctx, le.user)
	require.NoError(t, err)
	require.NotEmpty(t, rdb.Get(ctx, "token:"+a2).Val())
	close(release)
	tok := <-done

	assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+a2).Val(), "the key of the account added meanwhile")
	assert.Equal(t, []string{"token:" + le.user, "token:" + a1, "token:" + a2}, rdb.LRange(ctx, le.user, 0, -1).Val())
	chk, err := legacykeys.CheckKeys(le.writer, ctx, le.user)
	require.NoError(t, err)
	assert.False(t, chk.OutOfStep, "%+v", chk)
	assert.Empty(t, deleted(), "no key, nor the list, was ever deleted")
}

// Two writers whose maps differ (one learned an account from the broker, the other not
// yet): whatever the one that knows less writes, syncs or restores, it never deletes
// the other's key nor takes it off the list, and adds its own.
func TestAWriterThatKnowsFewerAccountsDeletesNothing(t *testing.T) {
	srv := testutil.StartRedis(t)
	le := newLegacyEnvOn(t, srv)
	ctx := context.Background()
	rdb := le.client()
	a1, a2 := le.user+"-1", le.user+"-2"
	deleted := srv.WatchDeletes(t, "token:"+le.user, "token:"+a1, "token:"+a2, le.user)
	le.m.set(le.user, a1, a2)
	tok := set(t, le.writer, le.user, "the-first-token")
	require.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+a2).Val())

	behind := newAccountMap(le.user)
	behind.set(le.user, a1)
	other := le.cache(nil, func(o *tokencache.Options) {
		o.LegacyKeys = true
		o.LookupUser = behind.lookup
		o.AccountsFor = behind.accountsFor
	})
	chk, err := legacykeys.CheckKeys(other, ctx, le.user)
	require.NoError(t, err)
	assert.False(t, chk.OutOfStep, "a list naming more than it knows is in step: %+v", chk)
	next := set(t, other, le.user, "the-next-token") // its write
	require.NoError(t, rdb.Del(ctx, "token:"+a1).Err())
	written, err := legacykeys.Sync(other, ctx, le.user) // its restore
	require.NoError(t, err)
	assert.True(t, written)
	assert.Equal(t, next.AccessToken, rdb.Get(ctx, "token:"+a1).Val())
	assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+a2).Val(), "left as it was (the writer that knows it writes it)")
	assert.Equal(t, []string{"token:" + le.user, "token:" + a1, "token:" + a2}, rdb.LRange(ctx, le.user, 0, -1).Val())
	assert.Equal(t, []string{"token:" + a1}, deleted(), "only the test's own DEL")

	behind.set(le.user, a1, a2, le.user+"-3") // it learns more than the other: it adds
	written, err = legacykeys.Sync(other, ctx, le.user)
	require.NoError(t, err)
	assert.True(t, written)
	assert.Equal(t, []string{"token:" + le.user, "token:" + a1, "token:" + a2, "token:" + le.user + "-3"}, rdb.LRange(ctx, le.user, 0, -1).Val())
}

// writerAskingFirst returns a second writer of le's legacy keys whose AccountsFor asks
// first (a non-nil answer wins) and then le's map.
func writerAskingFirst(le *legacyEnv, first func() []string) *tokencache.Cache {
	return le.cache(nil, func(o *tokencache.Options) {
		o.LegacyKeys = true
		o.LookupUser = le.m.lookup
		o.AccountsFor = func(u string) []string {
			if got := first(); got != nil {
				return got
			}
			return le.m.accountsFor(u)
		}
	})
}

// A writer with the README's writer role whose ACL does not name a user's {user} list
// (its name is outside the list pattern) still compares and restores the user's token
// keys; the list is left alone, CheckKeys says why, and Sync's error says so too.
func TestLegacyKeysOfAUserWhoseListTheWriterMayNotTouch(t *testing.T) {
	srv := testutil.StartRedis(t)
	writerRules := readmeRoles(t, srv.Prefix)["writer"]
	user := "X" + srv.Name("outside") // not matched by the list pattern (prefix-*)
	account := srv.Name("PA1")
	m := newAccountMap(user)
	m.set(user, account)
	e := &env{t: t, srv: srv}
	w := newCache(t, srv.ACLClient(t, writerRules...), srv.Prefix, nil, func(o *tokencache.Options) {
		o.LegacyKeys = true
		o.LookupUser = m.lookup
		o.AccountsFor = m.accountsFor
	})
	ctx := context.Background()
	rdb := e.client()
	tok := set(t, w, user, "a-token-for-a-user-outside-the-pattern")
	assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+account).Val(), "the token keys are written")
	assert.Zero(t, rdb.Exists(ctx, user).Val(), "the list could not be")

	require.NoError(t, rdb.Del(ctx, "token:"+user, "token:"+account).Err()) // expired
	chk, err := legacykeys.CheckKeys(w, ctx, user)
	require.NoError(t, err)
	assert.Contains(t, chk.List, "NOPERM")
	assert.Equal(t, []string{"token:" + user, "token:" + account}, chk.Missing)
	assert.True(t, chk.OutOfStep)
	written, err := legacykeys.Sync(w, ctx, user)
	assert.True(t, written)
	require.ErrorIs(t, err, legacykeys.ErrList)
	assert.ErrorContains(t, err, "NOPERM")
	assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+user).Val(), "restored")
	assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+account).Val(), "restored")
	chk, err = legacykeys.CheckKeys(w, ctx, user)
	require.NoError(t, err)
	assert.False(t, chk.OutOfStep, "%+v", chk)

	gone := srv.Name("gone")
	deleted, err := legacykeys.Drop(w, ctx, user, []string{gone})
	require.NoError(t, err, "the list is left alone, the key deleted")
	assert.Equal(t, []string{"token:" + gone}, deleted)
}

// With exactly the README's writer role, Drop takes a dropped account off the user's
// {user} list and deletes its key (the role has every command it needs: LREM too).
func TestDropWithTheREADMEWriterRole(t *testing.T) {
	srv := testutil.StartRedis(t)
	user, kept, gone := srv.Name("APEX"), srv.Name("PA1"), srv.Name("PA2")
	m := newAccountMap(user)
	m.set(user, kept, gone)
	e := &env{t: t, srv: srv}
	w := newCache(t, srv.ACLClient(t, readmeRoles(t, srv.Prefix)["writer"]...), srv.Prefix, nil, func(o *tokencache.Options) {
		o.LegacyKeys = true
		o.LookupUser = m.lookup
		o.AccountsFor = m.accountsFor
	})
	ctx := context.Background()
	rdb := e.client()
	set(t, w, user, "a-token-of-the-writer-role")
	require.Equal(t, []string{"token:" + user, "token:" + kept, "token:" + gone}, rdb.LRange(ctx, user, 0, -1).Val())
	m.set(user, kept)
	deleted, err := legacykeys.Drop(w, ctx, user, []string{gone})
	require.NoError(t, err)
	assert.Equal(t, []string{"token:" + gone}, deleted)
	assert.Equal(t, []string{"token:" + user, "token:" + kept}, rdb.LRange(ctx, user, 0, -1).Val(), "taken off the list")
	assert.Zero(t, rdb.Exists(ctx, "token:"+gone).Val())
}
