package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
)

// The CLI says on stderr what it waits for, as it happens, with its logging off: the
// fleet's login budget, and another process's login of the same user.
func TestCLISaysWhatItWaitsFor(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"a", nil}, userSpec{"c", nil})
	a, c := f.users[0], f.users[1]
	ctx := context.Background()
	env := f.env()

	// The budget (one login a minute) was spent 58 s ago: the login waits about 2 s.
	budget := "brokertoken:tradovate:" + strings.TrimPrefix(strings.TrimSuffix(f.fake.RESTURL(), "/v1"), "http://") + ":login-budget"
	now, err := f.rdb.Time(ctx).Result()
	require.NoError(t, err)
	require.NoError(t, f.rdb.ZAdd(ctx, budget, redis.Z{Score: float64(now.Add(-58 * time.Second).UnixMilli()), Member: "spent"}).Err())
	t.Cleanup(func() { f.rdb.Del(context.Background(), budget) })
	code, stdout, stderr := inProcess(t, ctx, env, "", "token", a, "--login-budget", "1")
	require.Equal(t, 0, code, stderr)
	tok, _ := f.stored(a)
	assert.Equal(t, tok+"\n", stdout)
	assert.Regexp(t, fmt.Sprintf(`^brokertoken: tradovate: login waits for the fleet-wide login budget: 1 logins per 1m0s already sent \(user=%s wait=\d(\.\d+)?s\)\n$`, a), stderr)

	// Another process holds c's lease while its login is slow: this one waits for it,
	// says so once it has waited a second, and gets the same token without a login.
	f.fake.Script(tradovatefake.Authorize, c, tradovatefake.Slow(3*time.Second))
	first := make(chan error, 1)
	go func() {
		code, _, stderr := inProcess(t, ctx, env, "", "token", c)
		if code != 0 {
			first <- fmt.Errorf("first token: %s", stderr)
			return
		}
		first <- nil
	}()
	require.Eventually(t, func() bool { return f.fake.Calls(tradovatefake.Authorize, c) == 1 }, 10*time.Second, 10*time.Millisecond)
	code, stdout, stderr = inProcess(t, ctx, env, "", "token", c)
	require.Equal(t, 0, code, stderr)
	require.NoError(t, <-first)
	tok, _ = f.stored(c)
	assert.Equal(t, tok+"\n", stdout)
	assert.Equal(t, 1, f.fake.Logins(c))
	assert.Regexp(t, fmt.Sprintf(`^brokertoken: waiting for another process's refresh of the token: it holds the user's refresh lease \(user=%s wait=until it stores a token, at most 2m0s waited=[0-9.]+m?s\)\n$`, c), stderr)
	f.assertNoSecrets("stderr", stderr)
}

// The daemon logs its waits at INFO and records them in the user's health record, where
// status shows them to a reader while they last: here a time penalty.
func TestDaemonSaysWhatItWaitsFor(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"p", nil})
	p := f.users[0]
	f.fake.Script(tradovatefake.Authorize, p, tradovatefake.Penalty(4))
	stop := runInProcess(t, f.env(), "--listen", "", "--check-interval", "100ms", "--log-format", "json")
	ro := f.env()
	delete(ro, "BROKERTOKEN_CREDENTIALS")
	var note string
	require.Eventually(t, func() bool {
		code, stdout, stderr := inProcess(t, context.Background(), ro, "", "status", p)
		require.Equal(t, 0, code, stderr)
		for _, line := range strings.Split(stdout, "\n") {
			if strings.HasPrefix(line, p) && strings.Contains(line, "waiting: ") {
				note = line
				return true
			}
		}
		return false
	}, 10*time.Second, 50*time.Millisecond, "status never showed the wait")
	assert.Regexp(t, `waiting: tradovate: time penalty, waiting before resending with the p-ticket \(\ds left\)`, note)
	require.Eventually(t, func() bool { tok, _ := f.stored(p); return tok != "" }, 20*time.Second, 20*time.Millisecond)

	// Once the token is stored, the wait is over: the record says so.
	require.Eventually(t, func() bool {
		code, stdout, _ := inProcess(t, context.Background(), ro, "", "status", p, "--json")
		var st struct{ Users []userStatus }
		return code == 0 && json.Unmarshal([]byte(stdout), &st) == nil && st.Users[0].Health != nil &&
			st.Users[0].Health.Waiting == nil
	}, 10*time.Second, 50*time.Millisecond)
	r := stop()
	assert.Equal(t, 0, r.code)
	var penalty map[string]any
	for _, line := range strings.Split(r.stderr, "\n") {
		if strings.Contains(line, "time penalty") {
			require.NoError(t, json.Unmarshal([]byte(line), &penalty), line)
		}
	}
	require.NotNil(t, penalty, r.stderr)
	assert.Equal(t, p, penalty["user"])
	assert.Equal(t, "4s", penalty["wait"], "a duration as an operator reads it")
	f.assertNoSecrets("daemon log", r.stderr)
}

// A daemon killed without a chance to say goodbye: invalidate notices from the
// heartbeat that no daemon is left, and says so instead of waiting out its timeout.
func TestInvalidateNoticesADeadDaemon(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"k", []string{"k1"}})
	k, k1 := f.users[0], f.redis.Name("k1")
	binary(t)
	d := start(t, "run", f.env(), "run", "--listen", "", "--check-interval", "100ms")
	require.Eventually(t, func() bool { tok, _ := f.stored(k); return tok != "" }, 30*time.Second, 20*time.Millisecond,
		"no token: %s", d.stderr.String())
	// Logins of k now hang, so no new token comes before the daemon dies.
	f.fake.SetHook(func(c tradovatefake.Call) (tradovatefake.Response, bool) {
		if c.Endpoint == tradovatefake.Authorize {
			return tradovatefake.Slow(time.Minute), true
		}
		return tradovatefake.Response{}, false
	})
	require.NoError(t, d.cmd.Process.Kill())
	d.wait(10 * time.Second)

	ro := f.env()
	delete(ro, "BROKERTOKEN_CREDENTIALS")
	code, stdout, stderr := inProcess(t, context.Background(), ro, "", "invalidate", k1, "--timeout", "2m")
	assert.Equal(t, 1, code)
	assert.Empty(t, stdout)
	// Killed just now, its heartbeat may still look fresh: then invalidate reports and
	// notices the silence while it waits.
	last := stderr[strings.LastIndex(strings.TrimSuffix(stderr, "\n"), "\n")+1:]
	assert.Regexp(t, `^brokertoken: invalidate .*: (no daemon is running|every daemon stopped)`, last)
	f.assertNoSecrets("invalidate", stderr)
}
