package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
)

// registered returns the accounts {prefix}:accounts maps to user (the user excluded),
// sorted, and the accounts of user's entry in {prefix}:users.
func (f *fixture) registered(user string) (accounts, entry []string) {
	f.t.Helper()
	ctx := context.Background()
	all, err := f.rdb.HGetAll(ctx, f.prefix+":accounts").Result()
	require.NoError(f.t, err)
	accounts = []string{}
	for a, u := range all {
		if u == user && a != user {
			accounts = append(accounts, a)
		}
	}
	sort.Strings(accounts)
	raw, err := f.rdb.HGet(ctx, f.prefix+":users", user).Result()
	if errors.Is(err, redis.Nil) {
		return accounts, nil // not registered yet
	}
	require.NoError(f.t, err)
	var e fleetUser
	require.NoError(f.t, json.Unmarshal([]byte(raw), &e))
	return accounts, e.Accounts
}

// sorted returns a sorted copy.
func sorted(s ...string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}

// metric returns one sample of the daemon's /metrics ("" when absent).
func metric(t *testing.T, url, sample string) string {
	t.Helper()
	_, text := get(t, url)
	return checkPromText(t, text)[sample]
}

// The user's credentials file names no account (the original file): the daemon learns
// the sub-accounts from the broker after the login, and follows the prop firm as it
// opens and closes accounts: the registry, the legacy keys, `token ACCOUNT`. A failing
// list keeps the last known accounts and is asked again; nothing of it logs in.
func TestRunAccountsFollowTheBroker(t *testing.T) {
	srv := testutil.StartRedis(t)
	f := newFixtureOn(t, srv, tradovatefake.Options{}, userSpec{"a", nil})
	a := f.users[0]
	a1, a2, a3, a4 := f.redis.Name("PAAPEX1"), f.redis.Name("PAAPEX2"), f.redis.Name("APEX118"), f.redis.Name("PAAPEX4")
	f.fake.SetAccounts(a, a1, a2)
	port := testutil.FreePort(t)
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	stop := runInProcess(t, f.env(), "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--check-interval", "50ms",
		"--accounts-every", "100ms")
	ctx := context.Background()
	keyHolds := func(account string) string { v, _ := f.rdb.Get(ctx, "token:"+account).Result(); return v }

	require.Eventually(t, func() bool {
		tok, _ := f.stored(a)
		return tok != "" && keyHolds(a1) == tok && keyHolds(a2) == tok
	}, 20*time.Second, 20*time.Millisecond, "the sub-accounts never got their keys")
	tok, _ := f.stored(a)
	// The registry is written after the keys: wait for it rather than read it once.
	registryHolds := func(want []string) func() bool {
		return func() bool {
			accounts, entry := f.registered(a)
			return slices.Equal(accounts, sorted(want...)) && slices.Equal(entry, want)
		}
	}
	require.Eventually(t, registryHolds([]string{a1, a2}), 20*time.Second, 20*time.Millisecond, "the registry")
	assert.Equal(t, "2", metric(t, metrics, fmt.Sprintf(`brokertoken_accounts{user=%q}`, a)))

	// token ACCOUNT: with the credentials file (the registry tells the sub-accounts),
	// and with only a reader's rights.
	code, stdout, stderr := inProcess(t, ctx, f.env(), "", "token", a2)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, tok+"\n", stdout)
	reader := map[string]string{"REDIS_URL": f.aclUser("reader", false), "BROKERTOKEN_PREFIX": f.prefix}
	code, stdout, stderr = inProcess(t, ctx, reader, "", "token", a1)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, tok+"\n", stdout)

	// The prop firm opens an account and closes another.
	f.fake.AddAccount(a, a3)
	f.fake.RemoveAccount(a, a1)
	require.Eventually(t, func() bool { return keyHolds(a3) == tok && keyHolds(a1) == "" }, 20*time.Second, 20*time.Millisecond,
		"the legacy keys did not follow the accounts")
	require.Eventually(t, registryHolds([]string{a2, a3}), 20*time.Second, 20*time.Millisecond, "the registry did not follow the accounts")
	assert.Equal(t, []string{"token:" + a, "token:" + a2, "token:" + a3}, f.rdb.LRange(ctx, a, 0, -1).Val())
	code, _, stderr = inProcess(t, ctx, f.env(), "", "token", a1)
	assert.Equal(t, 2, code, "a closed account is no sub-account any more")
	assert.Contains(t, stderr, "neither a user")

	// The list fails: the last known accounts stay, and it is asked again.
	errorsBefore := metric(t, metrics, fmt.Sprintf(`brokertoken_account_syncs_total{result="error",user=%q}`, a))
	f.fake.Script(tradovatefake.TVAccounts, a, slices.Repeat([]tradovatefake.Response{tradovatefake.Status(http.StatusServiceUnavailable)}, 12)...)
	f.fake.RemoveAccount(a, a2)
	require.Eventually(t, func() bool {
		return metric(t, metrics, fmt.Sprintf(`brokertoken_account_syncs_total{result="error",user=%q}`, a)) != errorsBefore
	}, 20*time.Second, 20*time.Millisecond)
	accounts, _ := f.registered(a)
	assert.Equal(t, sorted(a2, a3), accounts, "kept while the list fails")
	assert.Equal(t, tok, keyHolds(a2))
	f.fake.AddAccount(a, a4)
	require.Eventually(t, func() bool { return keyHolds(a4) == tok && keyHolds(a2) == "" }, 20*time.Second, 20*time.Millisecond,
		"not asked again after the failures")
	require.Eventually(t, registryHolds([]string{a3, a4}), 20*time.Second, 20*time.Millisecond, "the registry")

	r := stop()
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, 1, f.fake.Logins(a), "the asks cause no login")
	assert.Equal(t, 1, f.fake.Renewals(a), "nor a renewal (one: the login's market-data token)")
	assert.Greater(t, f.fake.Calls(tradovatefake.TVAccounts, a), 5)
	assert.Zero(t, f.fake.Calls(tradovatefake.AccountList, ""), "a TradingView-style login asks the TradingView list")
	assert.Contains(t, r.stderr, "the user's accounts changed at the broker")
	assert.Contains(t, r.stderr, "cannot list the user's accounts; the last known ones are kept")
	assert.Equal(t, 1, strings.Count(r.stderr, "cannot list the user's accounts"), "one warning for the episode")
	f.assertNoSecrets("run output", r.stderr)
}

// A restarted daemon starts from the accounts it learned (the registry and the {user}
// list), and with --discover-accounts=false keeps to the credentials file's.
func TestRunAccountsAfterARestartAndWithoutDiscovery(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"a", []string{"fixed"}})
	a, fixed, found := f.users[0], f.redis.Name("fixed"), f.redis.Name("found")
	f.fake.SetAccounts(a, found)
	ctx := context.Background()
	stop := runInProcess(t, f.env(), "--listen", "", "--check-interval", "50ms")
	require.Eventually(t, func() bool {
		accounts, _ := f.registered(a)
		return slices.Equal(accounts, sorted(fixed, found))
	}, 20*time.Second, 20*time.Millisecond)
	r := stop()
	require.Equal(t, 0, r.code, r.stderr)
	calls := f.fake.Calls(tradovatefake.TVAccounts, a)

	// Without discovery: no ask; the last known accounts stay as they were learned.
	f.fake.SetAccounts(a)
	stop = runInProcess(t, f.env(), "--listen", "", "--check-interval", "50ms", "--discover-accounts=false")
	time.Sleep(500 * time.Millisecond) // ten checks
	r = stop()
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, calls, f.fake.Calls(tradovatefake.TVAccounts, a), "no ask")
	accounts, _ := f.registered(a)
	assert.Equal(t, []string{fixed, found}, sorted(accounts...), "the {user} list still names the learned account")
	tok, _ := f.stored(a)
	v, _ := f.rdb.Get(ctx, "token:"+fixed).Result()
	assert.Equal(t, tok, v)

	// With discovery, the broker's answer wins over what was learned before (once a
	// second answer, asked for --accounts-every later, confirms that the account is gone).
	stop = runInProcess(t, f.env(), "--listen", "", "--check-interval", "50ms", "--accounts-every", "100ms")
	require.Eventually(t, func() bool {
		accounts, _ := f.registered(a)
		return slices.Equal(accounts, []string{fixed})
	}, 20*time.Second, 20*time.Millisecond)
	r = stop()
	require.Equal(t, 0, r.code, r.stderr)
	assert.Zero(t, f.rdb.Exists(ctx, "token:"+found).Val())
	assert.Equal(t, 1, f.fake.Logins(a), "three daemons, one login")
}

// The options of accounts, the legacy expiry's zone and the market-data token: their
// defaults per command and the usage errors of bad values.
func TestAccountOptions(t *testing.T) {
	load := func(cmd string, env map[string]string, args ...string) (*config, error) {
		f := newFlags(cmd, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if _, err := f.parse(args); err != nil {
			return nil, err
		}
		return f.load()
	}
	c, err := load("run", nil)
	require.NoError(t, err)
	assert.True(t, c.discoverAccounts)
	assert.Zero(t, c.accountsEvery, "renewal")
	assert.Equal(t, time.Local, c.legacyZone)
	assert.True(t, c.exchangeTVToken)

	c, err = load("run", map[string]string{"BROKERTOKEN_ACCOUNTS_EVERY": "10m", "BROKERTOKEN_LEGACY_TIME_ZONE": "Europe/London"},
		"--discover-accounts=false", "--exchange-tv-token=false")
	require.NoError(t, err)
	assert.False(t, c.discoverAccounts)
	assert.Equal(t, 10*time.Minute, c.accountsEvery)
	assert.Equal(t, "Europe/London", c.legacyZone.String())
	assert.False(t, c.exchangeTVToken)

	c, err = load("token", nil)
	require.NoError(t, err)
	assert.False(t, c.discoverAccounts, "token asks no account list")
	assert.True(t, c.exchangeTVToken, "token logs in like the daemon")

	for _, bad := range [][]string{{"--accounts-every", "0s"}, {"--accounts-every", "often"}, {"--legacy-time-zone", "Mars/Olympus"},
		{"--exchange-tv-token=maybe"}} {
		_, err := load("run", nil, bad...)
		var usage *usageError
		require.ErrorAs(t, err, &usage, "%v", bad)
		assert.Contains(t, err.Error(), strings.TrimLeft(strings.SplitN(bad[0], "=", 2)[0], "-"))
	}
	_, err = load("token", nil, "--discover-accounts")
	require.Error(t, err, "not an option of token")
}
