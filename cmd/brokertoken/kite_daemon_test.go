package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
)

// kiteDaemon is the real daemon binary with a Tradovate user and a Kite app in one
// credentials file, a fake of each broker, a Redis and a webhook.
type kiteDaemon struct {
	t         *testing.T
	redis     *testutil.Server
	rdb       *redis.Client
	prefix    string
	kite      *kitefake.Server
	tradovate *tradovatefake.Server
	hook      *webhook
	base      string // the daemon's --listen URL
	pageURL   string
	env       map[string]string
	apex      string // the Tradovate user
	proc      *proc
}

const kiteName = "kite_main" // the Kite app's user in the daemon tests

func newKiteDaemon(t *testing.T, kopts kitefake.Options, args ...string) *kiteDaemon {
	t.Helper()
	srv := testutil.Redis(t)
	d := &kiteDaemon{t: t, redis: srv, rdb: srv.Client(t), prefix: srv.Prefix, kite: kitefake.New(t, kopts),
		tradovate: tradovatefake.New(t, tradovatefake.Options{}), hook: newWebhook(t)}
	d.apex = srv.Name("APEX")
	d.tradovate.AddUser(d.apex, password(d.apex))
	port := testutil.FreePort(t)
	d.base = fmt.Sprintf("http://127.0.0.1:%d", port)
	d.pageURL = d.base + "/login"
	d.kite.AddApp("kitekey", kiteSecretOf(kiteName), d.pageURL+"/"+kiteName+"/redirect")
	creds := fmt.Sprintf(`[{"username":%q,"password":%q},{"broker":"kite","name":%q,"api_key":"kitekey","api_secret":%q,"user_id":"AB1234"}]`,
		d.apex, password(d.apex), kiteName, kiteSecretOf(kiteName))
	path := filepath.Join(t.TempDir(), "credentials.json")
	require.NoError(t, os.WriteFile(path, []byte(creds), 0o600))
	d.env = map[string]string{
		"REDIS_URL":                  (&fixture{redis: srv}).redisURL(),
		"BROKERTOKEN_CREDENTIALS":    path,
		"BROKERTOKEN_PREFIX":         d.prefix,
		"TRADOVATE_URL":              d.tradovate.RESTURL(),
		"TRADOVATE_TV_URL":           d.tradovate.TradingViewURL(),
		"KITE_API_URL":               d.kite.URL(),
		"KITE_LOGIN_URL":             d.kite.LoginURL(),
		"BROKERTOKEN_LISTEN":         fmt.Sprintf("127.0.0.1:%d", port),
		"BROKERTOKEN_ALERT_WEBHOOK":  d.hook.srv.URL,
		"BROKERTOKEN_CHECK_INTERVAL": "200ms",
		"BROKERTOKEN_RETRY_MAX":      "500ms",
		"BROKERTOKEN_LOG_LEVEL":      "debug",
	}
	d.proc = start(t, "daemon", d.env, append([]string{"run"}, args...)...)
	return d
}

// health reads /healthz.
func (d *kiteDaemon) health() (int, healthAnswer) {
	d.t.Helper()
	code, body := get(d.t, d.base+"/healthz")
	var ans healthAnswer
	if code != 0 {
		require.NoError(d.t, json.Unmarshal([]byte(body), &ans), body)
	}
	return code, ans
}

// userHealth returns user's entry of a /healthz answer.
func userHealthOf(ans healthAnswer, user string) userHealth {
	for _, u := range ans.Users {
		if u.User == user {
			return u
		}
	}
	return userHealth{}
}

// waitLog waits until the daemon's log holds n lines containing text.
func (d *kiteDaemon) waitLog(text string, n int) {
	d.t.Helper()
	require.Eventually(d.t, func() bool { return strings.Count(d.proc.stderr.String(), text) >= n },
		30*time.Second, 20*time.Millisecond, "the daemon never logged %q %d times", text, n)
}

// waitAlert waits until n alerts of event arrived.
func (d *kiteDaemon) waitAlert(event string, n int) {
	d.t.Helper()
	require.Eventually(d.t, func() bool { return d.hook.events()[event] >= n }, 30*time.Second, 20*time.Millisecond,
		"no %d %s alerts; got %v", n, event, d.hook.events())
}

// login completes a login over HTTP as a browser would and returns the page shown.
func (d *kiteDaemon) login() string {
	d.t.Helper()
	c := noRedirects(d.t)
	req, _ := http.NewRequest(http.MethodPost, d.pageURL+"/"+kiteName+"/start", nil)
	code, loc, body := fetch(d.t, c, req)
	require.Equal(d.t, http.StatusSeeOther, code, body)
	req, _ = http.NewRequest(http.MethodGet, loc, nil)
	code, loc, body = fetch(d.t, c, req)
	require.Equal(d.t, http.StatusFound, code, body)
	req, _ = http.NewRequest(http.MethodGet, loc, nil)
	code, _, body = fetch(d.t, c, req)
	require.Equal(d.t, http.StatusOK, code, body)
	return body
}

// reporter is a read-only cache, as a service using the Kite token has.
func (d *kiteDaemon) reporter() *tokencache.Cache {
	d.t.Helper()
	c, err := tokencache.New(tokencache.Options{Redis: d.rdb, Prefix: d.prefix})
	require.NoError(d.t, err)
	d.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kite in the daemon, end to end with the real binary: the reminder (due all day here)
// alerts a missing token once and /healthz counts it; a login through the page ends it
// (one recovery); a renewal asked before the morning expiry is no failure; a report of
// a token Kite still accepts changes nothing; a token Kite rejected before its expiry,
// reported by a service, is alerted once however often it is reported, shown as
// rejected by /healthz and status, and the next login recovers. The Tradovate user of
// the same file is kept fresh meanwhile.
func TestKiteInTheDaemon(t *testing.T) {
	d := newKiteDaemon(t, kitefake.Options{RefreshTokens: true},
		"--kite-reminder", "00:00", "--kite-reminder-days", "all", "--refresh-before", "48h")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A missing Kite token, the reminder's time passed: unhealthy, and one alert.
	var ans healthAnswer
	require.Eventually(t, func() bool {
		var code int
		code, ans = d.health()
		return code == http.StatusServiceUnavailable && userHealthOf(ans, d.apex).State == "fresh"
	}, 30*time.Second, 50*time.Millisecond, "healthz: %+v", ans)
	kh := userHealthOf(ans, kiteName)
	assert.Equal(t, "missing", kh.State)
	assert.Equal(t, "kite", kh.Broker)
	assert.Equal(t, d.pageURL, kh.LoginURL)
	assert.False(t, kh.Failing, "a missing Kite token is no refresh failure")
	assert.Equal(t, []string{kiteName}, ans.Unhealthy)
	d.waitAlert(eventLoginNeeded, 1)
	alert := d.hook.last(eventLoginNeeded)
	assert.Equal(t, kiteName, alert["user"])
	assert.Equal(t, d.pageURL, alert["url"])

	// The human logs in through the page.
	assert.Contains(t, d.login(), "Logged in to Kite")
	waitHTTP(t, d.base+"/healthz", http.StatusOK, 30*time.Second)
	d.waitAlert(eventRecovered, 1)

	// A renewal the cache asks for inside its refresh window, before Kite's morning
	// expiry: zerodha says it is not due. No failure, no alert.
	writer, err := tokencache.New(tokencache.Options{Redis: d.rdb, Prefix: d.prefix})
	require.NoError(t, err)
	defer writer.Close()
	now := time.Now()
	_, err = writer.Set(ctx, kiteName, &tokencache.Token{AccessToken: "kitestaletoken0123456789abcdefgh", ObtainedAt: now.Add(-100 * time.Hour), Expiry: now.Add(30 * time.Hour)})
	require.NoError(t, err)
	d.waitLog("renewal not due before the morning expiry", 1)

	// A fresh login, then a report of a token Kite still accepts: kept.
	assert.Contains(t, d.login(), "Logged in to Kite")
	rep := d.reporter()
	var tok *tokencache.Token
	require.Eventually(t, func() bool {
		tok, err = rep.Token(ctx, kiteName)
		return err == nil && d.kite.Valid(tok.AccessToken)
	}, 30*time.Second, 20*time.Millisecond)
	require.NoError(t, rep.Invalidate(ctx, kiteName, tok.AccessToken))
	d.waitLog("a token reported bad is accepted by the broker; keeping it", 1)

	// Kite kills the token: a service meets the 403 and reports it; the daemon checks,
	// Kite refuses, and the app's refresh token renews the session without a human.
	// (A writer acts on one report per user per RetryMin: services keep reporting
	// while they meet 403s, as these loops do.)
	d.kite.ExpireAccessTokens()
	svc := d.reporter()
	var renewed *tokencache.Token
	require.Eventually(t, func() bool {
		require.NoError(t, svc.Invalidate(ctx, kiteName, tok.AccessToken))
		st, err := svc.Status(ctx, kiteName)
		renewed = st.Token
		return err == nil && renewed != nil && renewed.Version > tok.Version
	}, 30*time.Second, 200*time.Millisecond)
	assert.True(t, d.kite.Valid(renewed.AccessToken))
	assert.Zero(t, d.hook.events()[eventTokenRejected], "renewed without a human: nothing to alert")

	// Then the user revokes the app too (or Kite refuses the refresh token): only a
	// human can log in now, and the rejected token is alerted.
	tok = renewed
	d.kite.ExpireAccessTokens()
	d.kite.RevokeRefreshTokens()
	require.Eventually(t, func() bool {
		require.NoError(t, svc.Invalidate(ctx, kiteName, tok.AccessToken))
		return d.hook.events()[eventTokenRejected] >= 1
	}, 30*time.Second, 200*time.Millisecond, "no token_rejected alert; got %v", d.hook.events())
	rejected := d.hook.last(eventTokenRejected)
	assert.Equal(t, kiteName, rejected["user"])
	assert.Equal(t, float64(tok.Version), rejected["version"])
	assert.Equal(t, d.pageURL, rejected["url"])
	assert.Contains(t, rejected["message"], "Renewing with the refresh token failed")
	require.Eventually(t, func() bool {
		code, a := d.health()
		ans = a
		return code == http.StatusServiceUnavailable && userHealthOf(a, kiteName).State == "rejected"
	}, 30*time.Second, 50*time.Millisecond, "healthz: %+v", ans)
	assert.Equal(t, d.pageURL, userHealthOf(ans, kiteName).LoginURL)
	// /metrics: the rejected token is no valid token although it has not expired, so
	// the LoginNeeded rule fires (the reminder time has passed).
	require.Eventually(t, func() bool {
		_, text := get(t, d.base+"/metrics")
		return strings.Contains(text, `brokertoken_token_valid{user="kite_main"} 0`) &&
			strings.Contains(text, `brokertoken_login_needed{user="kite_main"} 1`)
	}, 30*time.Second, 50*time.Millisecond, "metrics of the rejected token")
	_, text := get(t, d.base+"/metrics")
	assert.Regexp(t, `brokertoken_token_expiry_seconds\{user="kite_main"\} [0-9]`, text, "not expired")
	require.Eventually(t, func() bool {
		code, out, _ := inProcess(t, ctx, d.env, "", "status", kiteName, "--json")
		return code == 0 && strings.Contains(out, `"state": "rejected"`) && strings.Contains(out, `"login_url": "`+d.pageURL+`"`)
	}, 30*time.Second, 100*time.Millisecond, "status shows the rejected token and the page")

	// Reported again and again: checked again, still no second alert.
	again := d.reporter()
	require.Eventually(t, func() bool {
		_ = again.Invalidate(ctx, kiteName, tok.AccessToken)
		return strings.Contains(d.proc.stderr.String(), "a human login is still needed")
	}, 30*time.Second, 300*time.Millisecond)

	// The human logs in again: one recovery.
	assert.Contains(t, d.login(), "Logged in to Kite")
	d.waitAlert(eventRecovered, 2)
	waitHTTP(t, d.base+"/healthz", http.StatusOK, 30*time.Second)
	assert.Equal(t, map[string]int{eventLoginNeeded: 1, eventRecovered: 2, eventTokenRejected: 1}, d.hook.events(),
		"no failure alert, one rejection however often reported")
	assert.NotContains(t, d.proc.stderr.String()+d.hook.all(), kiteSecretOf(kiteName))
	for _, at := range d.kite.AccessTokens() {
		assert.NotContains(t, d.proc.stderr.String()+d.hook.all(), at)
	}
	assert.NotContains(t, d.proc.stderr.String(), "cannot list the user's accounts")
	// No Kite token ever went to Tradovate (the account lists are asked for the
	// Tradovate users only).
	for _, r := range d.tradovate.Requests() {
		assert.NotEqual(t, kiteName, r.User)
		for _, at := range d.kite.AccessTokens() {
			assert.NotContains(t, r.Header.Get("Authorization"), at, "a Kite token sent to Tradovate's %s", r.Endpoint)
		}
	}
	code, _ := d.proc.stop(20 * time.Second)
	assert.Equal(t, 0, code)
}

// Before the day's reminder time (here: the reminder is on another weekday), a missing
// Kite token leaves the daemon healthy.
func TestMissingKiteTokenBeforeTheReminderIsHealthy(t *testing.T) {
	other := time.Now().In(ist).Add(48 * time.Hour).Weekday()
	day := strings.ToLower(other.String()[:3])
	d := newKiteDaemon(t, kitefake.Options{}, "--kite-reminder-days", day)
	var ans healthAnswer
	require.Eventually(t, func() bool {
		var code int
		code, ans = d.health()
		return code == http.StatusOK && userHealthOf(ans, d.apex).State == "fresh"
	}, 30*time.Second, 50*time.Millisecond, "healthz: %+v", ans)
	kh := userHealthOf(ans, kiteName)
	assert.Equal(t, "missing", kh.State)
	assert.Equal(t, d.pageURL, kh.LoginURL)
	assert.Empty(t, ans.Unhealthy)
	code, text := get(t, d.base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	assert.Contains(t, text, `brokertoken_human_login{user="kite_main"} 1`)
	assert.Contains(t, text, `brokertoken_login_needed{user="kite_main"} 0`)
	assert.Contains(t, text, `brokertoken_human_login{user="`+d.apex+`"} 0`)
}

// With --login-listen the page is served there alone: not beside /healthz and
// /metrics, which stay on --listen only.
func TestLoginPageOnItsOwnListener(t *testing.T) {
	port := testutil.FreePort(t)
	d := newKiteDaemon(t, kitefake.Options{}, "--login-listen", fmt.Sprintf("127.0.0.1:%d", port))
	own := fmt.Sprintf("http://127.0.0.1:%d", port)
	body := waitHTTP(t, own+"/login", http.StatusOK, 30*time.Second)
	assert.Contains(t, body, "Log in with Kite")
	assert.Contains(t, body, own+"/login/"+kiteName+"/redirect", "the page's URL follows its listener")
	code, _ := get(t, own+"/healthz")
	assert.Equal(t, http.StatusNotFound, code)
	code, _ = get(t, own+"/metrics")
	assert.Equal(t, http.StatusNotFound, code)
	code, _ = get(t, d.base+"/login")
	assert.Equal(t, http.StatusNotFound, code)
	code, _ = get(t, d.base+"/metrics")
	assert.Equal(t, http.StatusOK, code)
	d.waitLog("brokertoken: login page\" url="+own+"/login", 1)
}

// A credentials file with a Kite app alone (no Tradovate login, no user_id): the daemon
// starts, warns that any Kite account's login would be stored, asks no broker for
// account lists, and on a normal night without a refresh token (the token lapses, only
// a human can log in) writes the log lines the README describes, and no alert (the
// reminder is off here).
func TestKiteOnlyDaemonThroughTheNight(t *testing.T) {
	srv := testutil.Redis(t)
	rdb := srv.Client(t)
	kite := kitefake.New(t, kitefake.Options{})
	hook := newWebhook(t)
	port := testutil.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	kite.AddApp("kitekey", kiteSecretOf(kiteName), base+"/login/"+kiteName+"/redirect")
	path := filepath.Join(t.TempDir(), "credentials.json")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`[{"broker":"kite","name":%q,"api_key":"kitekey","api_secret":%q}]`,
		kiteName, kiteSecretOf(kiteName))), 0o600))
	env := map[string]string{
		"REDIS_URL":                  (&fixture{redis: srv}).redisURL(),
		"BROKERTOKEN_CREDENTIALS":    path,
		"BROKERTOKEN_PREFIX":         srv.Prefix,
		"KITE_API_URL":               kite.URL(),
		"KITE_LOGIN_URL":             kite.LoginURL(),
		"BROKERTOKEN_LISTEN":         fmt.Sprintf("127.0.0.1:%d", port),
		"BROKERTOKEN_ALERT_WEBHOOK":  hook.srv.URL,
		"BROKERTOKEN_CHECK_INTERVAL": "200ms",
		"BROKERTOKEN_RETRY_MAX":      "500ms",
		"BROKERTOKEN_REFRESH_BEFORE": "4s", // Kite's night in seconds: 15m before 06:00 by default
		"BROKERTOKEN_KITE_REMINDER":  "off",
	}
	p := start(t, "daemon", env, "run")
	logs := func() string { return p.stderr.String() }
	body := waitHTTP(t, base+"/login", http.StatusOK, 30*time.Second)
	assert.Contains(t, body, "Log in with Kite")
	assert.Contains(t, logs(), `msg="brokertoken: the Kite app has no user_id in the credentials file`)
	assert.Contains(t, logs(), `user_id to the client ID whose logins to accept" user=`+kiteName)
	baseRE := regexp.QuoteMeta(base)
	needsHuman := `level=WARN msg="brokertoken: a human must log in to Kite (the token cannot be renewed without one)" user=` + kiteName + ` login_page=` + base + `/login`
	loginFailed := regexp.MustCompile(`level=ERROR msg="tokencache: refresh failed" user=` + kiteName + ` failures=1 err="tokencache: login ` + kiteName + `: zerodha: a human must log in to Kite for ` + kiteName + `: open ` + baseRE + `/login"`)
	// No token at start: the cache's one failure (ERROR), zerodha's line, the daemon's
	// line; then the checks wait for a login instead of repeating them.
	require.Eventually(t, func() bool { return strings.Contains(logs(), needsHuman) }, 30*time.Second, 20*time.Millisecond, "no token yet")
	time.Sleep(time.Second) // several checks
	start := logs()
	assert.Regexp(t, loginFailed, start)
	assert.Equal(t, 1, strings.Count(start, `msg="zerodha: a human must log in to Kite"`), "the checks wait")
	assert.Equal(t, 1, strings.Count(start, needsHuman))
	before := len(start)

	// The day's token (a human logged in, here through another process), lapsing in a
	// few seconds; Kite gave the app no refresh token. The daemon serves it, and from
	// --refresh-before ahead of its end tries to renew it.
	writer, err := tokencache.New(tokencache.Options{Redis: rdb, Prefix: srv.Prefix})
	require.NoError(t, err)
	defer writer.Close()
	now := time.Now()
	tok, err := writer.Set(context.Background(), kiteName, &tokencache.Token{AccessToken: "kitelasttoken0123456789abcdefghi",
		ObtainedAt: now, Expiry: now.Add(12 * time.Second)})
	require.NoError(t, err)
	served := `level=INFO msg="brokertoken: logged in through the browser" user=` + kiteName + ` version=` + fmt.Sprint(tok.Version)
	require.Eventually(t, func() bool { return strings.Contains(logs(), served) }, 30*time.Second, 20*time.Millisecond, "the daemon has the token")

	// The night: renewals fail while the token is served, then it lapses.
	time.Sleep(time.Until(tok.Expiry) + time.Second)
	lapse := len(logs())
	time.Sleep(2 * time.Second) // several checks after the lapse
	text := logs()[before:]
	serving := regexp.MustCompile(`level=WARN msg="tokencache: refresh failed; serving the current token" user=` + kiteName +
		` failures=[0-9]+ retry_in=500ms err="tokencache: renew ` + kiteName + `: zerodha: a human must log in to Kite for ` + kiteName + `: open ` + baseRE + `/login"`)
	assert.Regexp(t, serving, text, "each try inside the refresh window, once per --retry-max")
	assert.Contains(t, text, `level=WARN msg="zerodha: a human must log in to Kite" user=`+kiteName+` url=`+base+`/login`)
	assert.Equal(t, 1, strings.Count(text, needsHuman+` reminder=off valid_until=`), "the daemon's line, once per token")
	assert.NotContains(t, text, "level=ERROR", "the token was served until it lapsed")
	assert.Equal(t, "", logs()[lapse:], "after the lapse the checks wait for a login")
	all := logs()
	assert.NotContains(t, all, "cannot list the user's accounts", "no account list is asked for a Kite user")
	assert.NotContains(t, all, "reported the Kite token")
	assert.NotContains(t, all, kiteSecretOf(kiteName))
	assert.NotContains(t, all, tok.AccessToken)
	code, health := get(t, base+"/healthz")
	assert.Equal(t, http.StatusOK, code, "the reminder is off: a lapsed Kite token is no outage")
	assert.Contains(t, health, `"state": "expired"`)
	code, metrics := get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	assert.NotContains(t, metrics, `brokertoken_account_syncs_total{result="error",user="`+kiteName+`"}`)
	assert.Contains(t, metrics, `brokertoken_token_valid{user="`+kiteName+`"} 0`)
	assert.Regexp(t, `brokertoken_refresh_failures_total\{kind="login_required",op="renew",user="`+kiteName+`"\} [1-9]`, metrics)
	assert.Empty(t, hook.events(), "a lapse overnight is no failure; the reminder is off")
	code, _ = p.stop(20 * time.Second)
	assert.Equal(t, 0, code)
}
