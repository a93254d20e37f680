package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
)

// aclUser creates, on the fixture's (real) Redis, a user with exactly the README's
// rights for the reader role (or, with report, the reporter role: a reader that may
// also publish a bad-token report), and returns a Redis URL for that user.
func (f *fixture) aclUser(name string, report bool) string {
	f.t.Helper()
	role := "reader"
	if report {
		role = "reporter"
	}
	u := f.redis.ACLUser(f.t, testutil.ACLRoles(f.t, f.prefix)[role]...)
	o := f.redis.Options()
	return (&url.URL{Scheme: "redis", User: url.UserPassword(u.Name, u.Password), Host: o.Addr, Path: "/0"}).String()
}

// An operator without the credentials file, with only reader (or reporter) rights on
// Redis, sees every user the daemon keeps (token, accounts, last error, the daemon),
// gets a sub-account's token, and invalidates one: the daemon checks the token with the
// broker and keeps it if the broker accepts it, else logs the user in again; the CLI
// logs in nobody and prints what it waits for. Once no daemon runs, invalidate
// says so and reports nothing.
func TestLookAndActWithoutSecrets(t *testing.T) {
	srv := testutil.StartRedis(t)
	f := newFixtureOn(t, srv, tradovatefake.Options{}, userSpec{"a", []string{"a1", "a2"}}, userSpec{"b", nil})
	a, b, a1, a2 := f.users[0], f.users[1], f.redis.Name("a1"), f.redis.Name("a2")
	f.fake.SetHook(func(c tradovatefake.Call) (tradovatefake.Response, bool) {
		if c.User == b && c.Endpoint == tradovatefake.Authorize {
			return tradovatefake.ErrorText("Incorrect username or password."), true
		}
		return tradovatefake.Response{}, false
	})
	// a logs in with the official method, which presents the fleet's deviceId.
	var entries []map[string]any
	raw, err := os.ReadFile(f.creds)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &entries))
	entries[0]["method"], entries[0]["cid"], entries[0]["sec"] = "official", 7, "app-secret"
	raw, err = json.Marshal(entries)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(f.creds, raw, 0o600))
	stop := runInProcess(t, f.env(), "--listen", "", "--check-interval", "100ms", "--retry-max", "200ms")
	require.Eventually(t, func() bool { tok, _ := f.stored(a); return tok != "" }, 20*time.Second, 20*time.Millisecond)

	reader := map[string]string{"REDIS_URL": f.aclUser("reader", false), "BROKERTOKEN_PREFIX": f.prefix,
		"TRADOVATE_URL": f.fake.RESTURL()}
	reporter := map[string]string{"REDIS_URL": f.aclUser("reporter", true), "BROKERTOKEN_PREFIX": f.prefix}
	ctx := context.Background()
	var out strings.Builder

	// status: every user, from Redis alone.
	var st struct {
		Users   []userStatus
		Daemons []statusDaemon
	}
	require.Eventually(t, func() bool {
		code, stdout, stderr := inProcess(t, ctx, reader, "", "status", "--json")
		require.Equal(t, 0, code, stderr)
		out.WriteString(stdout + stderr)
		require.NoError(t, json.Unmarshal([]byte(stdout), &st), stdout)
		return len(st.Users) == 2 && st.Users[1].Health != nil && st.Users[1].Health.Failing
	}, 20*time.Second, 100*time.Millisecond, "status never showed %s failing", b)
	assert.Equal(t, a, st.Users[0].User)
	assert.Equal(t, []string{a1, a2}, st.Users[0].Accounts)
	assert.Equal(t, "fresh", st.Users[0].State)
	assert.True(t, st.Users[0].Registered)
	assert.Regexp(t, `^[0-9a-f]{32}$`, st.Users[0].DeviceID, "the fleet's deviceId of a logged-in user, read with reader rights")
	assert.Empty(t, st.Users[1].DeviceID, "no login of b was accepted: no deviceId stored yet")
	assert.Equal(t, "bad_credentials", st.Users[1].Health.Kind)
	assert.Contains(t, st.Users[1].Health.Error, "Incorrect username or password")
	assert.Equal(t, "missing", st.Users[1].State)
	require.Len(t, st.Daemons, 1)
	assert.True(t, st.Daemons[0].Alive)
	assert.Equal(t, 2, st.Daemons[0].Users)

	code, stdout, stderr := inProcess(t, ctx, reader, "", "status")
	require.Equal(t, 0, code, stderr)
	t.Logf("status:\n%s", stdout)
	assert.Regexp(t, fmt.Sprintf(`(?m)^%s\s+%s \(\+1\)\s+fresh\s.*\s%s\s`, a, a1, st.Users[0].DeviceID), stdout)
	assert.Regexp(t, fmt.Sprintf(`(?m)^%s\s+-\s+missing\s.*failing since \d\d:\d\d:\d\d \(bad_credentials\): .*Incorrect username`, b), stdout)
	assert.Regexp(t, `(?m)^daemons: 1 running: \S+ \(pid \d+, `, stdout)
	out.WriteString(stdout + stderr)

	// token of a sub-account: mapped to its user through the registry.
	before, v1 := f.stored(a)
	code, stdout, stderr = inProcess(t, ctx, reader, "", "token", a2)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, before+"\n", stdout)

	// A reader may not report.
	code, _, stderr = inProcess(t, ctx, reader, "", "invalidate", a1)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "NOPERM")
	oneLineError(t, stderr)

	// A reporter reports a token Tradovate still accepts: the daemon checks it
	// (GET /auth/me), keeps it, and invalidate says so (exit 1); nobody logs in.
	me := f.fake.Calls(tradovatefake.AuthMe, a)
	code, stdout, stderr = inProcess(t, ctx, reporter, "", "invalidate", a1, "--timeout", "60s")
	assert.Equal(t, 1, code, stderr)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, fmt.Sprintf("not replaced: the broker still accepts the token: %s still accepts version %d (token eyJhbG", a, v1))
	oneLineError(t, stderr[strings.Index(stderr, "brokertoken: invalidate"):])
	assert.Equal(t, me+1, f.fake.Calls(tradovatefake.AuthMe, a), "checked once")
	assert.Equal(t, 1, f.fake.Logins(a), "a token the broker accepts costs no login")
	kept, vk := f.stored(a)
	assert.Equal(t, before, kept)
	assert.Equal(t, v1, vk)
	out.WriteString(stdout + stderr)

	// A reporter reports a token Tradovate refuses; the daemon logs in again. (A writer
	// acts on one report of a version per RetryMin, here 200 ms.)
	time.Sleep(300 * time.Millisecond)
	f.fake.Revoke(before)
	code, stdout, stderr = inProcess(t, ctx, reporter, "", "invalidate", a1, "--timeout", "60s")
	require.Equal(t, 0, code, stderr)
	t.Logf("invalidate:\n%s%s", stderr, stdout)
	after, v2 := f.stored(a)
	assert.Greater(t, v2, v1)
	assert.NotEqual(t, before, after)
	assert.Equal(t, 2, f.fake.Logins(a), "the daemon logged in again, once")
	assert.Regexp(t, fmt.Sprintf(`^%s: version %d replaced by version %d \(token eyJhbG…\(\d+\), expires in 1h\d+m\d+s, after `, a, v1, v2), stdout)
	assert.Contains(t, stderr, fmt.Sprintf("brokertoken: %s: reported version %d (token eyJhbG", a, v1))
	assert.Contains(t, stderr, "as bad; waiting for a daemon to store a newer one (running: ")
	out.WriteString(stdout + stderr)

	// No daemon: invalidate says so at once and reports nothing.
	r := stop()
	require.Equal(t, 0, r.code, r.stderr)
	code, stdout, stderr = inProcess(t, ctx, reporter, "", "invalidate", a1)
	assert.Equal(t, 1, code)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "no daemon is running")
	assert.Contains(t, stderr, "so it was not reported")
	oneLineError(t, stderr)
	_, v3 := f.stored(a)
	assert.Equal(t, v2, v3)
	code, stdout, _ = inProcess(t, ctx, reader, "", "status")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "daemons: none running")

	// An account no daemon registered is a usage error.
	code, _, stderr = inProcess(t, ctx, reporter, "", "invalidate", "NOBODY")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `account "NOBODY" is in no daemon's registry`)

	f.assertNoSecrets("reader and reporter output", out.String()+r.stderr)
}
