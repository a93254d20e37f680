package main

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tradovate"
)

// Two daemons and ten `token` processes start at once on an empty Redis: each user is
// logged in exactly once, every process prints the same token, the legacy keys are
// readable with redis-cli, and SIGTERM stops the daemons promptly with no lease left.
func TestTwoDaemonsAndTenTokenProcessesLogEachUserInOnce(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"a", []string{"a1", "a2"}}, userSpec{"b", nil})
	a, b := f.users[0], f.users[1]
	a1 := f.redis.Name("a1")
	env := f.env()
	binary(t) // build before the clock starts

	ports := []int{testutil.FreePort(t), testutil.FreePort(t)}
	var daemons []*proc
	for i, port := range ports {
		daemons = append(daemons, start(t, fmt.Sprintf("run#%d", i), env, "run",
			"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--check-interval", "200ms", "--log-format", "json"))
	}
	accounts := []string{a, a1, f.redis.Name("a2"), b}
	var tokens []*proc
	for i := range 10 {
		tokens = append(tokens, start(t, fmt.Sprintf("token#%d", i), env, "token", accounts[i%len(accounts)]))
	}

	for i, p := range tokens {
		require.Equal(t, 0, p.wait(60*time.Second), "token#%d: %s", i, p.stderr.String())
	}
	wantA, _ := f.stored(a)
	wantB, _ := f.stored(b)
	require.NotEmpty(t, wantA)
	require.NotEmpty(t, wantB)
	for i, p := range tokens {
		want := wantA
		if accounts[i%len(accounts)] == b {
			want = wantB
		}
		assert.Equal(t, want+"\n", p.stdout.String(), "token#%d", i)
		f.assertNoSecrets(fmt.Sprintf("token#%d stderr", i), p.stderr.String())
	}
	for _, port := range ports {
		waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", port), 200, 20*time.Second)
	}
	assert.Equal(t, 1, f.fake.Logins(a), "logins of %s", a)
	assert.Equal(t, 1, f.fake.Logins(b), "logins of %s", b)

	// The legacy keys, as the original Python services read them. A `token` process
	// may have done the login (it writes no legacy keys): the daemons then write them.
	cli, err := exec.LookPath("redis-cli")
	if err != nil || f.redis.Kind == "miniredis" {
		t.Log("redis-cli or a real redis-server missing: legacy keys read with go-redis instead")
	}
	redisGet := func(args ...string) string {
		if cli == "" || f.redis.Kind == "miniredis" {
			switch args[0] {
			case "GET":
				v, _ := f.rdb.Get(context.Background(), args[1]).Result()
				return v
			case "LRANGE":
				v, _ := f.rdb.LRange(context.Background(), args[1], 0, -1).Result()
				return strings.Join(v, "\n")
			}
		}
		o := f.redis.Options()
		host, port, _ := strings.Cut(o.Addr, ":")
		full := []string{"-h", host, "-p", port, "-n", strconv.Itoa(o.DB)}
		if o.Password != "" {
			full = append(full, "--no-auth-warning", "-a", o.Password)
		}
		out, err := exec.Command(cli, append(full, args...)...).Output()
		require.NoError(t, err)
		return strings.TrimSpace(string(out))
	}
	require.Eventually(t, func() bool { return redisGet("GET", "token:"+a1) == wantA }, 10*time.Second, 50*time.Millisecond,
		"redis-cli GET token:%s", a1)
	assert.Equal(t, wantA, redisGet("GET", "token:"+a))
	assert.Equal(t, wantA, redisGet("GET", "auth:"+a))
	assert.Equal(t, wantB, redisGet("GET", "token:"+b))
	assert.Equal(t, "token:"+a+"\ntoken:"+a1+"\ntoken:"+f.redis.Name("a2"), redisGet("LRANGE", a, "0", "-1"))
	assert.Regexp(t, `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$`, redisGet("GET", "token_expiry:"+a), "naive, as the original wrote it")
	ttl := f.rdb.TTL(context.Background(), "token:"+a1).Val()
	assert.True(t, ttl > 70*time.Minute && ttl <= 81*time.Minute, "TTL of token:%s is the time to expiry, got %s", a1, ttl)

	_, metricsBody := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[0]))
	assert.Contains(t, metricsBody, fmt.Sprintf(`brokertoken_token_valid{user=%q} 1`, a))
	assert.Contains(t, metricsBody, fmt.Sprintf(`brokertoken_token_expiry_seconds{user=%q}`, b))

	var wg sync.WaitGroup
	for _, d := range daemons {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, took := d.stop(10 * time.Second)
			t.Logf("%s stopped in %s", d.name, took)
			assert.Equal(t, 0, code, "%s exit code", d.name)
		}()
	}
	wg.Wait()
	assert.Empty(t, f.keys(f.prefix+":*:lease"), "leases left behind")
	for _, d := range daemons {
		f.assertNoSecrets(d.name+" stderr", d.stderr.String()+d.stdout.String())
		assert.Contains(t, d.stderr.String(), `"msg":"brokertoken: stopped"`)
	}
	f.assertNoSecrets("metrics", metricsBody)
}

// SIGTERM while a login is in flight (the broker is slow) stops the daemon at once and
// releases the refresh lease, so no other process waits for a dead holder.
func TestSIGTERMDuringLoginLeavesNoLease(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"slow", nil})
	user := f.users[0]
	f.fake.Script(tradovatefake.Authorize, user, tradovatefake.Slow(30*time.Second))
	binary(t)

	d := start(t, "run", f.env(), "run", "--listen", "", "--check-interval", "100ms")
	lease := f.prefix + ":{" + user + "}:lease"
	require.Eventually(t, func() bool {
		return f.rdb.Exists(context.Background(), lease).Val() == 1 &&
			f.fake.Calls(tradovatefake.Authorize, user) == 1
	}, 20*time.Second, 20*time.Millisecond, "the login never started: %s", d.stderr.String())

	// The login takes 30 s: a stop within stop's 10 s bound did not wait for it.
	code, took := d.stop(10 * time.Second)
	t.Logf("stopped in %s with a login in flight", took)
	assert.Equal(t, 0, code)
	assert.Zero(t, f.rdb.Exists(context.Background(), lease).Val(), "lease left behind")
	tok, _ := f.stored(user)
	assert.Empty(t, tok)
	f.assertNoSecrets("run stderr", d.stderr.String())
}

// Two daemons whose views of a user's accounts differ register at the same moment: the
// account map ends as one of the two views, whole, never a mix of both (register.lua
// reads and writes in one step); other users' accounts are left alone.
func TestRegisterLeavesOneViewWhole(t *testing.T) {
	srv := testutil.Redis(t)
	rdb := srv.Client(t)
	fl := fleet{rdb: rdb, prefix: srv.Prefix}
	ctx := context.Background()
	u, other := srv.Name("u"), srv.Name("other")
	views := [][]string{{srv.Name("x1"), srv.Name("x2")}, {srv.Name("y1"), srv.Name("y2")}}
	for range 100 {
		require.NoError(t, rdb.Del(ctx, fl.accountsKey()).Err())
		require.NoError(t, rdb.HSet(ctx, fl.accountsKey(), srv.Name("o1"), other).Err())
		var wg sync.WaitGroup
		for _, v := range views {
			wg.Add(1)
			go func() {
				defer wg.Done()
				assert.NoError(t, fl.register(ctx, map[string]fleetUser{u: {Accounts: v}}))
			}()
		}
		wg.Wait()
		got, err := fl.accounts(ctx)
		require.NoError(t, err)
		var mine []string
		for a, owner := range got {
			if owner == u && a != u {
				mine = append(mine, a)
			}
		}
		sort.Strings(mine)
		require.True(t, slices.Equal(mine, views[0]) || slices.Equal(mine, views[1]), "a mix: %v", mine)
		require.Equal(t, other, got[srv.Name("o1")], "another user's account is left alone")
		require.Equal(t, u, got[u], "a login user is an account of its own")
	}
}

// A stored account answer from another version (names that are no JSON list) or from a
// clock far ahead does not pin the fleet's view: the next answer replaces it. A later
// genuine answer still wins over an earlier one.
func TestSharedAccountAnswersCannotBePinned(t *testing.T) {
	srv := testutil.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	s := accountStore{fleet: fleet{rdb: rdb, prefix: srv.Prefix}, daemon: "d1"}
	now := time.Now()
	for i, stored := range []map[string]any{
		{"at_us": now.Add(24 * time.Hour).UnixMicro(), "names": `["PA1"]`},   // a clock far ahead
		{"at_us": now.Add(time.Minute).UnixMicro(), "names": `{"v2":"PA1"}`}, // no list
		{"at_us": now.Add(time.Minute).UnixMicro(), "names": `garbage`},
	} {
		user := srv.Name(fmt.Sprint("U", i))
		require.NoError(t, rdb.HSet(ctx, s.fleet.sharedAccountsKey(user), stored).Err())
		mine := tradovate.AccountList{At: now, Names: []string{"PA2"}}
		got, err := s.StoreAccounts(ctx, user, mine)
		require.NoError(t, err, "%v", stored)
		assert.Equal(t, []string{"PA2"}, got.Names, "%v", stored)
	}
	user := srv.Name("later")
	later := tradovate.AccountList{At: now.Add(time.Second), Names: []string{"PA3"}}
	_, err := s.StoreAccounts(ctx, user, later)
	require.NoError(t, err)
	got, err := s.StoreAccounts(ctx, user, tradovate.AccountList{At: now, Names: []string{"PA4"}})
	require.NoError(t, err)
	assert.Equal(t, []string{"PA3"}, got.Names, "a later answer still wins")
}
