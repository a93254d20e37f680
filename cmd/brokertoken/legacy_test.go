package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
)

// cronLogin does what the original refresher's cron does: a TradingView-style login of
// user at the fake broker (a new session), and returns the token it got.
func cronLogin(t *testing.T, f *fixture, user string) string {
	t.Helper()
	form := url.Values{"locale": {"en"}, "login": {user}, "password": {password(user)}}
	resp, err := http.Post(f.fake.TradingViewURL()+"/authorize?locale=en", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		S string `json:"s"`
		D struct {
			AccessToken string `json:"access_token"`
		} `json:"d"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "ok", body.S)
	return body.D.AccessToken
}

// The old refresher still runs beside the daemon and SETEXes the legacy keys with a
// token of its own login. The daemon notices (a warning once per user, a metric, one
// alert naming the key), checks that the broker still takes the fleet's token and puts
// it back once. When the other writer's next login closes the fleet's session, the
// daemon leaves the other writer's keys alone: it never logs in because of it.
func TestRunNoticesAnotherWriterOfTheLegacyKeys(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"a", []string{"a1"}})
	a, a1 := f.users[0], f.redis.Name("a1")
	hook := newWebhook(t)
	port := testutil.FreePort(t)
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	stop := runInProcess(t, f.env(), "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--check-interval", "50ms",
		"--alert-webhook", hook.srv.URL, "--alert-format", "json", "--log-format", "json")
	ctx := context.Background()
	keyHolds := func(key string) string { v, _ := f.rdb.Get(ctx, key).Result(); return v }
	require.Eventually(t, func() bool { tok, _ := f.stored(a); return tok != "" && keyHolds("token:"+a1) == tok },
		20*time.Second, 20*time.Millisecond)
	fleetTok, _ := f.stored(a)
	assert.Equal(t, "0", metric(t, metrics, fmt.Sprintf(`brokertoken_legacy_foreign_writer{user=%q}`, a)))

	// The cron logs in (a second session: the fleet's stays open) and writes a key.
	cron := cronLogin(t, f, a)
	require.NoError(t, f.rdb.Set(ctx, "token:"+a1, cron, time.Hour).Err())
	require.Eventually(t, func() bool { return hook.events()[eventForeignWriter] == 1 }, 20*time.Second, 20*time.Millisecond,
		"no alert")
	require.Eventually(t, func() bool { return keyHolds("token:"+a1) == fleetTok }, 20*time.Second, 20*time.Millisecond,
		"the fleet's token was not put back")
	assert.Equal(t, "1", metric(t, metrics, fmt.Sprintf(`brokertoken_legacy_foreign_tokens_total{user=%q}`, a)))
	var alert map[string]any
	hook.mu.Lock()
	for _, b := range hook.bodies {
		if b["event"] == eventForeignWriter {
			alert = b
		}
	}
	hook.mu.Unlock()
	require.NotNil(t, alert)
	assert.Equal(t, []any{"token:" + a1}, alert["keys"], "the alert names the key")
	assert.Equal(t, a, alert["user"])
	assert.Equal(t, "warning", alert["severity"])
	assert.Contains(t, alert["message"], "token:"+a1+" holds a token (eyJhbG…(")
	assert.Contains(t, alert["message"], "The broker still accepts the fleet's token: the daemon put it back in the keys once.")

	// The cron's next run: a third session closes the fleet's (the oldest); it writes the
	// user's key and auth:{user}. The fleet's token is refused: the keys stay the cron's.
	cron2 := cronLogin(t, f, a)
	require.False(t, f.fake.Valid(fleetTok), "the third session closed the fleet's")
	_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "token:"+a, cron2, time.Hour)
		p.Set(ctx, "auth:"+a, cron2, time.Hour)
		return nil
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return metric(t, metrics, fmt.Sprintf(`brokertoken_legacy_foreign_tokens_total{user=%q}`, a)) == "2"
	}, 20*time.Second, 20*time.Millisecond)
	assert.Equal(t, "1", metric(t, metrics, fmt.Sprintf(`brokertoken_legacy_foreign_writer{user=%q}`, a)))
	time.Sleep(300 * time.Millisecond) // six checks: nothing more happens
	assert.Equal(t, cron2, keyHolds("token:"+a), "left to the other writer")
	assert.Equal(t, cron2, keyHolds("auth:"+a))
	assert.Equal(t, "2", metric(t, metrics, fmt.Sprintf(`brokertoken_legacy_foreign_tokens_total{user=%q}`, a)), "counted once")

	r := stop()
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, 3, f.fake.Logins(a), "the daemon's login and the cron's two: the daemon logged in no more")
	assert.Equal(t, 1, hook.events()[eventForeignWriter], "one alert per user")
	assert.Equal(t, 1, strings.Count(r.stderr, "a legacy key holds a token this fleet did not write"), "one warning per user")
	var warned map[string]any // the WARN line comes with the first foreign token seen, not a later one
	for _, line := range strings.Split(r.stderr, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["level"] == "WARN" &&
			strings.Contains(fmt.Sprint(rec["msg"]), "a legacy key holds a token this fleet did not write") {
			warned = rec
		}
	}
	require.NotNil(t, warned)
	assert.Equal(t, "token:"+a1, warned["keys"], "the first sighting (the cron's first token, in token:%s)", a1)
	assert.Equal(t, "accepted", warned["fleet_token"])
	assert.Contains(t, r.stderr, "another writer wrote the legacy keys again")
	assert.Contains(t, r.stderr, `"fleet_token":"rejected"`)
	f.assertNoSecrets("run output and alerts", r.stderr+hook.all(), cron, cron2)
}

// Several daemons see the same foreign token: one of them, the first to claim it, puts
// the fleet's token back; the others leave the keys alone, so N daemons do not write N
// times over the other writer.
func TestRunDaemonsPutTheFleetsTokenBackOnce(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"a", []string{"a1"}})
	a, a1 := f.users[0], f.redis.Name("a1")
	ctx := context.Background()
	keyHolds := func(key string) string { v, _ := f.rdb.Get(ctx, key).Result(); return v }
	var daemons []func() daemonResult
	for range 3 {
		daemons = append(daemons, runInProcess(t, f.env(), "--listen", "", "--check-interval", "50ms"))
	}
	require.Eventually(t, func() bool { tok, _ := f.stored(a); return tok != "" && keyHolds("token:"+a1) == tok },
		20*time.Second, 20*time.Millisecond)

	// The cron writes its token over and over, long enough for every daemon to see it
	// at two checks in a row.
	cron := cronLogin(t, f, a)
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		require.NoError(t, f.rdb.Set(ctx, "token:"+a1, cron, time.Hour).Err())
	}
	require.Eventually(t, func() bool {
		n, _ := f.rdb.Keys(ctx, f.prefix+":{"+a+"}:legacy-putback:*").Result()
		return len(n) == 1
	}, 20*time.Second, 20*time.Millisecond, "the put-back is claimed")
	time.Sleep(300 * time.Millisecond) // six more checks

	var stderr string
	for _, stop := range daemons {
		r := stop()
		require.Equal(t, 0, r.code, r.stderr)
		stderr += r.stderr
	}
	assert.Equal(t, 3, strings.Count(stderr, "a legacy key holds a token this fleet did not write"), "each daemon saw it")
	assert.Equal(t, 1, strings.Count(stderr, `why="another writer's token replaced"`), "one daemon put the fleet's token back")
}

// A daemon whose Redis user (the README's writer role) has no pattern for a user's
// {user} list writes and restores the user's token keys all the same, leaves the list
// alone, and says so once per user (pointing at the README), however often it writes.
func TestRunWithoutRightsToTheLegacyListWarnsOnce(t *testing.T) {
	srv := testutil.StartRedis(t)
	f := newFixtureOn(t, srv, tradovatefake.Options{}, userSpec{"a", []string{"a1"}})
	a, a1 := f.users[0], f.redis.Name("a1")
	var rules []string
	for _, r := range testutil.ACLRoles(t, f.prefix)["writer"] {
		if r != "~"+f.prefix+"-*" { // the pattern of the users' list keys
			rules = append(rules, r)
		}
	}
	require.Len(t, rules, len(testutil.ACLRoles(t, f.prefix)["writer"])-1)
	u := srv.ACLUser(t, rules...)
	env := f.env()
	o := srv.Options()
	env["REDIS_URL"] = (&url.URL{Scheme: "redis", User: url.UserPassword(u.Name, u.Password), Host: o.Addr, Path: "/0"}).String()
	stop := runInProcess(t, env, "--listen", "", "--check-interval", "50ms")
	ctx := context.Background()
	keyHolds := func(key string) string { v, _ := f.rdb.Get(ctx, key).Result(); return v }
	require.Eventually(t, func() bool { tok, _ := f.stored(a); return tok != "" && keyHolds("token:"+a1) == tok },
		20*time.Second, 20*time.Millisecond)
	tok, _ := f.stored(a)
	for range 3 { // keys expire: restored each time
		require.NoError(t, f.rdb.Del(ctx, "token:"+a1, "token:"+a).Err())
		require.Eventually(t, func() bool { return keyHolds("token:"+a1) == tok && keyHolds("token:"+a) == tok },
			20*time.Second, 20*time.Millisecond)
	}
	r := stop()
	require.Equal(t, 0, r.code, r.stderr)
	assert.Zero(t, f.rdb.Exists(ctx, a).Val(), "the list could not be written")
	assert.Equal(t, 1, strings.Count(r.stderr, "the legacy list of the user is left alone"), "said once: %s", r.stderr)
	assert.Contains(t, r.stderr, "NOPERM")
	assert.Contains(t, r.stderr, "see README, Roles and Redis ACLs")
	assert.LessOrEqual(t, strings.Count(r.stderr, "level=WARN"), 2, "no warning at each write: %s", r.stderr)
}
