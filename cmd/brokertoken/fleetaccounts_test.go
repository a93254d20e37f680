package main

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
)

// Two daemons whose account maps differ (one asks the broker, the other runs with
// --discover-accounts=false and never learns the new account) do not fight over the
// keys: whatever the one that knows less writes or restores, the other's account keeps
// its key and its place in the {user} list; no DEL of it is ever sent.
func TestRunDaemonsThatKnowDifferentAccountsDeleteNothing(t *testing.T) {
	srv := testutil.StartRedis(t)
	f := newFixtureOn(t, srv, tradovatefake.Options{}, userSpec{"a", nil})
	a := f.users[0]
	a1, a2 := f.redis.Name("PA1"), f.redis.Name("PA2")
	f.fake.SetAccounts(a, a1)
	ctx := context.Background()
	keyHolds := func(account string) string { v, _ := f.rdb.Get(ctx, "token:"+account).Result(); return v }
	deleted := srv.WatchDeletes(t, "token:"+a2, a)

	asks := runInProcess(t, f.env(), "--listen", "", "--check-interval", "50ms", "--accounts-every", "100ms")
	require.Eventually(t, func() bool { tok, _ := f.stored(a); return tok != "" && keyHolds(a1) == tok }, 20*time.Second, 20*time.Millisecond)
	behind := runInProcess(t, f.env(), "--listen", "", "--check-interval", "50ms", "--discover-accounts=false")
	tok, _ := f.stored(a)
	f.fake.AddAccount(a, a2)
	require.Eventually(t, func() bool { return keyHolds(a2) == tok }, 20*time.Second, 20*time.Millisecond, "the new account's key")

	// The daemon behind restores the keys many times (an account's key expired).
	for range 5 {
		require.NoError(t, f.rdb.Del(ctx, "token:"+a1).Err())
		require.Eventually(t, func() bool { return keyHolds(a1) == tok }, 20*time.Second, 20*time.Millisecond)
	}
	assert.Equal(t, tok, keyHolds(a2))
	assert.Equal(t, []string{"token:" + a, "token:" + a1, "token:" + a2}, f.rdb.LRange(ctx, a, 0, -1).Val())
	assert.Empty(t, deleted(), "neither the new account's key nor the list was ever deleted")
	for _, stop := range []func() daemonResult{behind, asks} {
		r := stop()
		require.Equal(t, 0, r.code, r.stderr)
	}
}

// The daemons share the broker's answers ({prefix}:{USER}:accounts): one that asks
// every hour follows the accounts another learned a moment ago without asking; an
// account the broker dropped is deleted once, by the daemon that saw it go, and the
// other follows; the registry follows too.
func TestRunDaemonsFollowTheNewestAnswerOfTheFleet(t *testing.T) {
	srv := testutil.StartRedis(t)
	f := newFixtureOn(t, srv, tradovatefake.Options{}, userSpec{"a", nil})
	a := f.users[0]
	a1, a2 := f.redis.Name("PA1"), f.redis.Name("PA2")
	f.fake.SetAccounts(a, a1)
	ctx := context.Background()
	keyHolds := func(account string) string { v, _ := f.rdb.Get(ctx, "token:"+account).Result(); return v }
	deleted := srv.WatchDeletes(t, "token:"+a1, "token:"+a2)
	portFast, portSlow := testutil.FreePort(t), testutil.FreePort(t)
	fast := runInProcess(t, f.env(), "--listen", fmt.Sprintf("127.0.0.1:%d", portFast), "--check-interval", "50ms", "--accounts-every", "100ms")
	require.Eventually(t, func() bool { tok, _ := f.stored(a); return tok != "" && keyHolds(a1) == tok }, 20*time.Second, 20*time.Millisecond)
	slowMetrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", portSlow)
	slow := runInProcess(t, f.env(), "--listen", fmt.Sprintf("127.0.0.1:%d", portSlow), "--check-interval", "50ms", "--accounts-every", "1h")
	accountsOnSlow := func(want string) func() bool {
		return func() bool { return metric(t, slowMetrics, fmt.Sprintf(`brokertoken_accounts{user=%q}`, a)) == want }
	}
	asksOfSlow := func() string {
		return metric(t, slowMetrics, fmt.Sprintf(`brokertoken_account_syncs_total{result="ok",user=%q}`, a))
	}
	waitHTTP(t, slowMetrics, 200, 20*time.Second) // listening
	require.Eventually(t, accountsOnSlow("1"), 20*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return asksOfSlow() == "1" }, 20*time.Second, 20*time.Millisecond,
		"the slow daemon asks once, after its first look at the token")
	tok, _ := f.stored(a)

	f.fake.AddAccount(a, a2)
	require.Eventually(t, accountsOnSlow("2"), 20*time.Second, 20*time.Millisecond, "the slow daemon did not follow")
	f.fake.RemoveAccount(a, a1)
	require.Eventually(t, accountsOnSlow("1"), 20*time.Second, 20*time.Millisecond, "the slow daemon did not follow")
	require.Eventually(t, func() bool { return keyHolds(a1) == "" }, 20*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		accounts, entry := f.registered(a)
		return slices.Equal(accounts, []string{a2}) && slices.Equal(entry, []string{a2})
	}, 20*time.Second, 20*time.Millisecond, "the registry")
	shared := f.rdb.HGetAll(ctx, f.prefix+":{"+a+"}:accounts").Val()
	assert.Equal(t, fmt.Sprintf("[%q]", a2), shared["names"])
	assert.NotEmpty(t, shared["daemon"])

	assert.Equal(t, "1", asksOfSlow(), "the slow daemon followed without asking")
	rs := slow()
	require.Equal(t, 0, rs.code, rs.stderr)
	rf := fast()
	require.Equal(t, 0, rf.code, rf.stderr)
	assert.Equal(t, tok, keyHolds(a2))
	d := deleted()
	assert.NotContains(t, d, "token:"+a2, "the new account's key was never deleted")
	assert.Contains(t, d, "token:"+a1, "deleted by the daemon that saw it go (again, if the slow one restored it before it followed)")
	assert.Equal(t, []string{"token:" + a, "token:" + a2}, f.rdb.LRange(ctx, a, 0, -1).Val())
	assert.Contains(t, rs.stderr, "the user's accounts follow another process's newer answer")
	assert.NotContains(t, rs.stderr, "legacy keys of accounts the user no longer has deleted")
	assert.Equal(t, 1, f.fake.Logins(a))
}
