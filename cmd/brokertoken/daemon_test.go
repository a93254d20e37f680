package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// promLine matches a sample line of the Prometheus text format.
var promLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$`)

// checkPromText checks every line of a /metrics answer and returns the samples.
func checkPromText(t *testing.T, text string) map[string]string {
	t.Helper()
	typed := map[string]bool{}
	samples := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(line, "# TYPE ") {
			f := strings.Fields(line)
			require.Len(t, f, 4, line)
			typed[f[2]] = true
			continue
		}
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		m := promLine.FindStringSubmatch(line)
		require.NotNil(t, m, "not a Prometheus sample: %q", line)
		family := m[1]
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base := strings.TrimSuffix(family, suffix); base != family && typed[base] {
				family = base
			}
		}
		assert.True(t, typed[family], "sample before its TYPE: %q", line)
		i := strings.LastIndexByte(line, ' ')
		samples[line[:i]] = line[i+1:]
	}
	return samples
}

// The daemon's /metrics: the cache's series (fed by the hooks), the daemon's own read at
// scrape time, and the Go runtime, process and build-info collectors, in a valid
// Prometheus text exposition with label values escaped.
func TestMetricsText(t *testing.T) {
	odd := `we"ird\user` + "\n"
	now := time.Now()
	views := []userView{
		{user: "a", tok: &tokencache.Token{AccessToken: "x", Expiry: now.Add(90 * time.Second)}},
		{user: odd, failing: true},
	}
	m, err := newMetrics(func() []userView { return views }, func() bool { return true })
	require.NoError(t, err)
	m.setUsers([]string{"a", odd})
	h := m.cache.Wrap(tokencache.Hooks{})
	h.Refreshed("a", "login", &tokencache.Token{})
	h.Refreshed("a", "renew", &tokencache.Token{})
	h.Refreshed("a", "renew", &tokencache.Token{})
	h.RefreshFailed("a", "renew", fmt.Errorf("x: %w", tradovate.ErrUnavailable))
	h.LeaseWait("a", 1500*time.Millisecond)
	h.Invalidated(odd, 2)
	_, done := h.BrokerCall(context.Background(), "a", "renew")
	done(nil)
	m.alertSent(eventFailure)

	srv := httptest.NewServer(m.handler())
	defer srv.Close()
	code, text := get(t, srv.URL)
	require.Equal(t, 200, code)
	samples := checkPromText(t, text)
	for name, want := range map[string]string{
		`brokertoken_refreshes_total{op="login",user="a"}`:                           "1",
		`brokertoken_refreshes_total{op="renew",user="a"}`:                           "2",
		`brokertoken_logins_total{user="a"}`:                                         "1",
		`brokertoken_renewals_total{user="a"}`:                                       "2",
		`brokertoken_refresh_failures_total{kind="unavailable",op="renew",user="a"}`: "1",
		`brokertoken_lease_waits_total{user="a"}`:                                    "1",
		`brokertoken_lease_wait_seconds_total{user="a"}`:                             "1.5",
		`brokertoken_invalidations_total{user="we\"ird\\user\n"}`:                    "1",
		`brokertoken_token_valid{user="a"}`:                                          "1",
		`brokertoken_token_valid{user="we\"ird\\user\n"}`:                            "0",
		`brokertoken_user_failing{user="we\"ird\\user\n"}`:                           "1",
		`brokertoken_user_failing{user="a"}`:                                         "0",
		`brokertoken_alerts_total{event="failure"}`:                                  "1",
		`brokertoken_alerts_total{event="recovered"}`:                                "0",
		`brokertoken_alert_errors_total`:                                             "0",
		`brokertoken_redis_up`:                                                       "1",
		`brokertoken_users`:                                                          "2",
		`brokertoken_logins_total{user="we\"ird\\user\n"}`:                           "0",
		`brokertoken_broker_call_duration_seconds_count{op="renew",result="ok"}`:     "1",
		`brokertoken_broker_calls_in_flight`:                                         "0",
	} {
		assert.Equal(t, want, samples[name], name)
	}
	expiry, err := strconv.ParseFloat(samples[`brokertoken_token_expiry_seconds{user="a"}`], 64)
	require.NoError(t, err)
	assert.InDelta(t, 90, expiry, 5)
	_, hasExpiry := samples[`brokertoken_token_expiry_seconds{user="we\"ird\\user\n"}`]
	assert.False(t, hasExpiry, "no expiry gauge without a token")
	for _, family := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total",
		"process_resident_memory_bytes", "go_build_info", "brokertoken_build_info"} {
		assert.Contains(t, text, "\n"+family, "the %s series", family)
	}
}

// The daemon run in-process: it serves /healthz and /metrics, alerts when Redis goes
// away and comes back, and returns promptly with no goroutine left when its context
// ends (goleak checks in TestMain).
func TestRunInProcessAlertsOnRedisOutageAndStopsCleanly(t *testing.T) {
	srv := testutil.StartRedis(t)
	fake := tradovatefake.New(t, tradovatefake.Options{})
	user := srv.Name("u")
	fake.AddUser(user, password(user))
	f := &fixture{t: t, redis: srv, rdb: srv.Client(t), fake: fake, users: []string{user}, prefix: srv.Prefix}
	creds := fmt.Sprintf(`[{"username":%q,"password":%q}]`, user, password(user))
	f.creds = t.TempDir() + "/credentials.json"
	require.NoError(t, os.WriteFile(f.creds, []byte(creds), 0o600))
	hook := newWebhook(t)
	port := testutil.FreePort(t)
	env := f.env()
	env["BROKERTOKEN_ALERT_WEBHOOK"] = hook.srv.URL
	env["BROKERTOKEN_ALERT_FORMAT"] = "discord"

	stop := runInProcess(t, env, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--check-interval", "100ms", "--log-format", "json")
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	body := waitHTTP(t, base+"/healthz", 200, 20*time.Second)
	var ans healthAnswer
	require.NoError(t, json.Unmarshal([]byte(body), &ans))
	require.Len(t, ans.Users, 1)
	assert.Equal(t, "fresh", ans.Users[0].State)
	assert.InDelta(t, 80*60, *ans.Users[0].ExpiresIn, 5)

	_, metrics := get(t, base+"/metrics")
	samples := checkPromText(t, metrics)
	assert.Equal(t, "1", samples[fmt.Sprintf(`brokertoken_logins_total{user=%q}`, user)])
	assert.Equal(t, "1", samples["brokertoken_redis_up"])

	srv.Stop(t)
	down := waitHTTP(t, base+"/healthz", 503, 10*time.Second)
	require.NoError(t, json.Unmarshal([]byte(down), &ans))
	assert.Equal(t, "unknown", ans.Users[0].State)
	assert.Contains(t, ans.Error, "redis")
	require.Eventually(t, func() bool { return hook.events()[""] >= 1 }, 10*time.Second, 20*time.Millisecond)
	srv.Start(t)
	// Redis restarted empty: the daemon puts its valid token back instead of logging in.
	waitHTTP(t, base+"/healthz", 200, 20*time.Second)
	require.Eventually(t, func() bool { return hook.events()[""] >= 2 }, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, 1, fake.Logins(user))

	// Discord bodies carry no "event" field: read the titles.
	var titles []string
	hook.mu.Lock()
	for _, b := range hook.bodies {
		embeds, _ := b["embeds"].([]any)
		require.Len(t, embeds, 1)
		titles = append(titles, embeds[0].(map[string]any)["title"].(string))
	}
	hook.mu.Unlock()
	assert.Equal(t, []string{"Redis unreachable", "Redis reachable again"}, titles)

	stopped := time.Now()
	r := stop()
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Less(t, time.Since(stopped), 3*time.Second)
	f.assertNoSecrets("run output", r.stdout+r.stderr+hook.all()+metrics+body+down)
}

// A valid token already in Redis is used as it is: the daemon logs nobody in, and writes
// the legacy keys the process that stored it did not write.
func TestRunUsesTheStoredTokenAndWritesLegacyKeys(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"a", []string{"a1"}})
	user, a1 := f.users[0], f.redis.Name("a1")
	env := f.env()
	code, stdout, stderr := inProcess(t, context.Background(), env, "", "token", user)
	require.Equal(t, 0, code, stderr)
	require.Equal(t, 1, f.fake.Logins(user))
	renewals := f.fake.Renewals(user) // the exchange for a market-data token
	assert.Empty(t, f.keys("token:"+a1))

	port := testutil.FreePort(t)
	stop := runInProcess(t, env, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--check-interval", "50ms")
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", port), 200, 10*time.Second)
	require.Eventually(t, func() bool {
		v, _ := f.rdb.Get(context.Background(), "token:"+a1).Result()
		return v+"\n" == stdout
	}, 10*time.Second, 20*time.Millisecond, "legacy keys not written")
	r := stop()
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, 1, f.fake.Logins(user), "the daemon logged in although a valid token was stored")
	assert.Equal(t, renewals, f.fake.Renewals(user), "nor renewed it")
	assert.Contains(t, r.stderr, "legacy keys written")
}

// --concurrency bounds how many users are logged in at once.
func TestRunLogsInAtMostConcurrencyUsersAtOnce(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"a", nil}, userSpec{"b", nil}, userSpec{"c", nil})
	flight := countInFlight(f, 200*time.Millisecond, 0)
	port := testutil.FreePort(t)
	stop := runInProcess(t, f.env(), "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--check-interval", "50ms", "--concurrency", "1")
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", port), 200, 20*time.Second)
	r := stop()
	assert.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, 3, f.fake.Calls(tradovatefake.Authorize, ""), "login requests")
	assert.Equal(t, 1, flight.max(), "logins in flight at once")
}

// inFlight counts the requests the fake broker is serving at once.
type inFlight struct {
	mu       sync.Mutex
	now, top int
}

func (c *inFlight) max() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.top
}

// countInFlight makes the fake take login (and renew) requests that long to answer, and
// counts how many it serves at once. Other requests (account lists, checks) are not
// logins or renewals: they pass.
func countInFlight(f *fixture, login, renew time.Duration) *inFlight {
	c := &inFlight{}
	f.fake.SetHook(func(call tradovatefake.Call) (tradovatefake.Response, bool) {
		switch call.Endpoint {
		case tradovatefake.Authorize, tradovatefake.AccessTokenRequest, tradovatefake.RenewAccessToken:
		default:
			return tradovatefake.Response{}, false
		}
		c.mu.Lock()
		c.now++
		c.top = max(c.top, c.now)
		c.mu.Unlock()
		d := login
		if call.Endpoint == tradovatefake.RenewAccessToken {
			d = renew
		}
		time.Sleep(d)
		c.mu.Lock()
		c.now--
		c.mu.Unlock()
		return tradovatefake.Response{}, false
	})
	return c
}

// A captcha is alerted once, as a captcha (not also as a plain failure), and the
// retries that follow during the cool-down send nothing.
func TestRunAlertsACaptchaOnce(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"c", nil})
	user := f.users[0]
	f.fake.Script(tradovatefake.Authorize, user, tradovatefake.Captcha())
	hook := newWebhook(t)
	env := f.env()
	env["BROKERTOKEN_ALERT_WEBHOOK"] = hook.srv.URL
	port := testutil.FreePort(t)
	stop := runInProcess(t, env, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--check-interval", "50ms", "--retry-max", "100ms")

	require.Eventually(t, func() bool { return hook.events()[eventCaptcha] == 1 }, 10*time.Second, 20*time.Millisecond)
	code, body := get(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", port))
	assert.Equal(t, 503, code)
	time.Sleep(500 * time.Millisecond) // several retries, each refused by the cool-down
	assert.Equal(t, map[string]int{eventCaptcha: 1}, hook.events())
	assert.Equal(t, 1, f.fake.Calls(tradovatefake.Authorize, user), "a captcha is not retried")

	hook.mu.Lock()
	alert := hook.bodies[0]
	hook.mu.Unlock()
	assert.Equal(t, "critical", alert["severity"])
	assert.Equal(t, user, alert["user"])
	until, err := time.Parse(time.RFC3339, fmt.Sprint(alert["until"]))
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(time.Hour), until, time.Minute)
	_, metrics := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	assert.Contains(t, metrics, fmt.Sprintf(`brokertoken_refresh_failures_total{kind="captcha",op="login",user=%q}`, user))
	assert.Contains(t, body, `"kind": "captcha"`)

	// A human solved the captcha: the operator ends the cool-down without the
	// credentials file, and the daemon logs the user in.
	f.fake.ClearCaptcha(user)
	ops := f.env()
	delete(ops, "BROKERTOKEN_CREDENTIALS")
	code, out, stderr := inProcess(t, context.Background(), ops, "", "clear-cooldown", user)
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, `^`+user+`: ended the captcha cool-down that lasted until \d\d:\d\d:\d\d; the daemons may log it in again\n$`, out)
	require.Eventually(t, func() bool { tok, _ := f.stored(user); return tok != "" }, 20*time.Second, 20*time.Millisecond,
		"the daemon never logged the user in after the cool-down ended")
	code, out, stderr = inProcess(t, context.Background(), ops, "", "clear-cooldown", user)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, user+": no cool-down was set; the daemons may log it in again\n", out)
	code, _, stderr = inProcess(t, context.Background(), ops, "", "clear-cooldown")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "want one USER")

	r := stop()
	assert.Equal(t, 0, r.code)
	f.assertNoSecrets("captcha scenario", r.stderr+hook.all()+metrics+body+out)
}

// A login Tradovate accepted but whose answer this version cannot read is sent once,
// alerted once as critical with what to do (update, then clear-cooldown), and the
// retries during the hold send nothing; the token in the answer shows nowhere.
func TestRunAlertsAnUnreadableLoginAnswerOnce(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"u", nil})
	user := f.users[0]
	const secret = "eyJunreadableAnswerSecret0123456789"
	f.fake.Script(tradovatefake.Authorize, user, tradovatefake.Response{Body: `{"s":"ok","d":{"token":"` + secret + `","ttl":4800}}`})
	hook := newWebhook(t)
	env := f.env()
	env["BROKERTOKEN_ALERT_WEBHOOK"] = hook.srv.URL
	port := testutil.FreePort(t)
	stop := runInProcess(t, env, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--check-interval", "50ms", "--retry-max", "100ms")

	require.Eventually(t, func() bool { return hook.events()[eventFailure] == 1 }, 10*time.Second, 20*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // several checks, each refused by the hold
	assert.Equal(t, map[string]int{eventFailure: 1}, hook.events())
	assert.Equal(t, 1, f.fake.Calls(tradovatefake.Authorize, user), "an accepted login is never sent again")
	alert := hook.last(eventFailure)
	require.NotNil(t, alert)
	assert.Equal(t, "critical", alert["severity"])
	assert.Equal(t, "unknown_login_answer", alert["kind"])
	assert.Contains(t, fmt.Sprint(alert["message"]), "update brokertoken, then run `brokertoken clear-cooldown "+user+"`")
	assert.Equal(t, "Tradovate login answer not understood: "+user, alert["title"])
	_, metrics := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	assert.Contains(t, metrics, fmt.Sprintf(`brokertoken_refresh_failures_total{kind="unknown_login_answer",op="login",user=%q}`, user))

	r := stop()
	assert.Equal(t, 0, r.code)
	all := r.stderr + hook.all() + metrics
	assert.NotContains(t, all, secret)
	f.assertNoSecrets("unreadable login answer", all)
}

// --concurrency bounds every request to the broker, including the renewals the cache
// runs in the background when tokens it holds turn stale, and the bound is used in full
// (renewals are not serialized). Twelve users log in at start and turn stale within
// about a second of each other; each renewal takes 500 ms at the fake, so they queue.
// The fake counts its requests in flight.
func TestRunBoundsBrokerRequestsByConcurrency(t *testing.T) {
	const users, concurrency = 12, 3
	var specs []userSpec
	for i := range users {
		specs = append(specs, userSpec{suffix: fmt.Sprintf("u%02d", i)})
	}
	// 10 s tokens turn stale 5 s after login (half the lifetime), minus at most 0.5 s of
	// jitter, and stay usable until 1 s before expiry: the queue (4 rounds of 500 ms)
	// drains well before.
	f := newFixture(t, tradovatefake.Options{Lifetime: 10 * time.Second}, specs...)
	flight := countInFlight(f, 100*time.Millisecond, 500*time.Millisecond)

	stop := runInProcess(t, f.env(), "--listen", "", "--check-interval", "50ms",
		"--concurrency", fmt.Sprint(concurrency), "--login-budget", "1000")
	require.Eventually(t, func() bool {
		for _, u := range f.users {
			if f.fake.Renewals(u) == 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "not every user was renewed")
	r := stop()
	assert.Equal(t, 0, r.code, r.stderr)

	assert.Equal(t, concurrency, flight.max(), "broker requests in flight at once (at most --concurrency, and all of it)")
	for _, u := range f.users {
		assert.Equal(t, 1, f.fake.Logins(u), "logins of %s", u)
	}
	assert.Equal(t, users, f.fake.Calls(tradovatefake.Authorize, ""), "login requests")
}

// A second daemon with another prefix and the legacy keys on refuses to start, naming
// the prefix that owns them: the keys carry no prefix, and two fleets would overwrite
// each other's tokens.
func TestRunRefusesLegacyKeysOwnedByAnotherPrefix(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"a", nil})
	env := f.env()
	port := testutil.FreePort(t)
	stop := runInProcess(t, env, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--check-interval", "50ms")
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", port), 200, 10*time.Second)

	other := map[string]string{}
	for k, v := range env {
		other[k] = v
	}
	other["BROKERTOKEN_PREFIX"] = f.prefix + "-other"
	code, _, stderr := inProcess(t, context.Background(), other, "", "run", "--listen", "")
	assert.Equal(t, 2, code, stderr)
	assert.Contains(t, stderr, `prefix "`+f.prefix+`" owns them`)
	oneLineError(t, stderr)
	assert.Equal(t, 1, f.fake.Logins(f.users[0]), "the refused daemon logged nobody in")

	// With the legacy keys off it may run beside the owner.
	code, _, stderr = inProcess(t, context.Background(), other, "", "token", f.users[0])
	assert.Equal(t, 0, code, stderr)
	stop()
}
