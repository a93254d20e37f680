package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
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
	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
	"github.com/brokertoken/brokertoken/tokencache"
)

// schwabName is the Schwab app's user in the daemon tests; schwabSecret its app secret.
const (
	schwabName   = "schwab_main"
	schwabSecret = "schwab-app-secret-S3cr3t"
)

// oauthDaemon is the real daemon binary with a Schwab app in its credentials file,
// pointed at a strict fake Schwab (--schwab-url), with a Redis and a webhook.
type oauthDaemon struct {
	t       *testing.T
	rdb     *redis.Client
	prefix  string
	fake    *oauthfake.Server
	hook    *webhook
	base    string // the daemon's --listen URL
	pageURL string
	env     map[string]string
	proc    *proc
}

// newOAuthDaemon starts the daemon; entry, when not nil, makes the credentials file's
// entry from the fake's URL (default: a "schwab" entry with --schwab-url).
func newOAuthDaemon(t *testing.T, fopts oauthfake.Options, entry func(fakeURL string) string, args ...string) *oauthDaemon {
	t.Helper()
	srv := testutil.Redis(t)
	port := testutil.FreePort(t)
	d := &oauthDaemon{t: t, rdb: srv.Client(t), prefix: srv.Prefix, fake: oauthfake.New(t, fopts), hook: newWebhook(t),
		base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	d.pageURL = d.base + "/login"
	d.fake.AddClient("schwabkey", schwabSecret, d.pageURL+"/"+schwabName+"/redirect")
	path := filepath.Join(t.TempDir(), "credentials.json")
	creds := fmt.Sprintf(`[{"broker":"schwab","name":%q,"app_key":"schwabkey","app_secret":%q}]`, schwabName, schwabSecret)
	if entry != nil {
		creds = "[" + entry(d.fake.URL()) + "]"
	}
	require.NoError(t, os.WriteFile(path, []byte(creds), 0o600))
	d.env = map[string]string{
		"REDIS_URL":                  (&fixture{redis: srv}).redisURL(),
		"BROKERTOKEN_CREDENTIALS":    path,
		"BROKERTOKEN_PREFIX":         d.prefix,
		"SCHWAB_URL":                 d.fake.URL(),
		"BROKERTOKEN_LISTEN":         fmt.Sprintf("127.0.0.1:%d", port),
		"BROKERTOKEN_ALERT_WEBHOOK":  d.hook.srv.URL,
		"BROKERTOKEN_CHECK_INTERVAL": "100ms",
		"BROKERTOKEN_RETRY_MAX":      "500ms",
		"BROKERTOKEN_LOG_LEVEL":      "debug",
	}
	d.proc = start(t, "daemon", d.env, append([]string{"run"}, args...)...)
	return d
}

// health reads /healthz and the Schwab user's entry.
func (d *oauthDaemon) health() (int, healthAnswer, userHealth) {
	d.t.Helper()
	code, body := get(d.t, d.base+"/healthz")
	var ans healthAnswer
	if code != 0 {
		require.NoError(d.t, json.Unmarshal([]byte(body), &ans), body)
	}
	return code, ans, userHealthOf(ans, schwabName)
}

// authorize goes through the page's button, the fake's authorization (the fake's
// human allows at once) and its redirect to the daemon, by HTTP as a browser would
// (keeping cookies: the page binds the authorization to the browser), and returns the
// page the redirect answered.
func (d *oauthDaemon) authorize() string {
	d.t.Helper()
	code, body := d.authorizeVia(browserClient(d.t), nil)
	require.Equal(d.t, http.StatusOK, code, body)
	return body
}

// authorizeVia starts the authorization with c and completes it with other (nil: c),
// returning the redirect's answer.
func (d *oauthDaemon) authorizeVia(c, other *http.Client) (int, string) {
	d.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, d.pageURL+"/"+schwabName+"/start", nil)
	code, loc, body := fetch(d.t, c, req)
	require.Equal(d.t, http.StatusSeeOther, code, body)
	require.True(d.t, strings.HasPrefix(loc, d.fake.URL()+oauthfake.AuthorizePath+"?"), loc)
	req, _ = http.NewRequest(http.MethodGet, loc, nil)
	code, loc, body = fetch(d.t, c, req)
	require.Equal(d.t, http.StatusFound, code, body)
	require.True(d.t, strings.HasPrefix(loc, d.pageURL+"/"+schwabName+"/redirect?"), loc)
	if other == nil {
		other = c
	}
	req, _ = http.NewRequest(http.MethodGet, loc, nil)
	code, _, body = fetch(d.t, other, req)
	return code, body
}

// browserClient is noRedirects with a cookie jar, as a browser keeps cookies.
func browserClient(t *testing.T) *http.Client {
	c := noRedirects(t)
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c.Jar = jar
	return c
}

// apiAccepts reports whether the fake's API accepts token.
func (d *oauthDaemon) apiAccepts(token string) bool {
	req, _ := http.NewRequest(http.MethodGet, d.fake.URL()+oauthfake.AccountsPath, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(d.t, err)
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK
}

// assertNoSecrets checks that the daemon's log and the alerts hold no token, code or
// app secret.
func (d *oauthDaemon) assertNoSecrets(more ...string) {
	d.t.Helper()
	text := d.proc.stderr.String() + d.hook.all() + strings.Join(more, "\n")
	assert.NotContains(d.t, text, schwabSecret)
	for _, s := range d.fake.Secrets() {
		assert.NotContains(d.t, text, s)
	}
}

// Schwab in the daemon, end to end with the real binary and a strict fake: a user never
// authorized is unhealthy and shows the page; a human authorizes through the page; the
// daemon refreshes across several access-token lifetimes (one refresh per rotation,
// no reuse) while a read-only service's tokens work at the API; status, /healthz and
// /metrics show the refresh token's expiry. The provider revokes the grant: one alert
// with the page's URL, no retry storm, login needed; `brokertoken authorize --paste`
// (the headless way) recovers it, reported once.
func TestSchwabInTheDaemon(t *testing.T) {
	d := newOAuthDaemon(t, oauthfake.Options{AccessTokenLifetime: 2 * time.Second}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Never authorized: unhealthy, the page to open, no refresh failing.
	var h userHealth
	require.Eventually(t, func() bool {
		var code int
		code, _, h = d.health()
		return code == http.StatusServiceUnavailable && h.Grant == "missing" && h.LoginURL != ""
	}, 30*time.Second, 50*time.Millisecond, "healthz: %+v", h)
	assert.Equal(t, "missing", h.State)
	assert.Equal(t, brokerSchwab, h.Broker)
	assert.Equal(t, d.pageURL, h.LoginURL)
	assert.False(t, h.Failing, "a grant never given is no refresh failure")
	_, page := get(t, d.pageURL)
	assert.Contains(t, page, `data-user="`+schwabName+`" data-state="missing" data-grant="missing"`)
	assert.Contains(t, page, "Log in with Schwab")
	assert.Contains(t, page, d.pageURL+"/"+schwabName+"/redirect")
	require.Eventually(t, func() bool {
		_, text := get(t, d.base+"/metrics")
		return strings.Contains(text, `brokertoken_login_needed{user="`+schwabName+`"} 1`)
	}, 30*time.Second, 50*time.Millisecond)
	_, text := get(t, d.base+"/metrics")
	assert.Contains(t, text, `brokertoken_human_login{user="`+schwabName+`"} 0`, "no daily lapse: NoValidToken covers it")

	// The page binds the authorization to the browser that started it: the provider's
	// redirect opened in another browser (a leaked link) completes nothing.
	code, body := d.authorizeVia(browserClient(t), browserClient(t))
	assert.Equal(t, http.StatusBadRequest, code, body)
	assert.Contains(t, body, "started in another browser")
	_, _, h = d.health()
	assert.Equal(t, "missing", h.Grant)

	// The human authorizes through the page.
	assert.Contains(t, d.authorize(), "is authorized for schwab")
	waitHTTP(t, d.base+"/healthz", http.StatusOK, 30*time.Second)
	_, ans, h := d.health()
	assert.Equal(t, "active", h.Grant, "%+v", ans)
	require.NotNil(t, h.RefreshExpiresIn)
	assert.InDelta(t, (7 * 24 * time.Hour).Seconds(), *h.RefreshExpiresIn, 120, "Schwab's 7 days from the authorization")
	assert.Empty(t, h.LoginURL)

	// The daemon refreshes across lifetimes; a service reading through a read-only
	// cache gets each token, and the API accepts them.
	rep, err := tokencache.New(tokencache.Options{Redis: d.rdb, Prefix: d.prefix})
	require.NoError(t, err)
	defer rep.Close()
	first, err := rep.Token(ctx, schwabName)
	require.NoError(t, err)
	assert.True(t, d.apiAccepts(first.AccessToken))
	require.Eventually(t, func() bool { return d.fake.Stats().Refreshes >= 3 }, 60*time.Second, 50*time.Millisecond,
		"the daemon refreshes before each expiry: %+v", d.fake.Stats())
	var later *tokencache.Token
	require.Eventually(t, func() bool {
		later, err = rep.Token(ctx, schwabName)
		return err == nil && later.Version > first.Version+2
	}, 30*time.Second, 50*time.Millisecond)
	assert.True(t, d.apiAccepts(later.AccessToken))
	st := d.fake.Stats()
	assert.Zero(t, st.ReuseDetections, "one refresh per rotation: %+v", st)
	assert.Zero(t, st.Revocations)
	assert.Equal(t, 1, st.Exchanges)

	code, out, _ := inProcess(t, ctx, d.env, "", "status", schwabName, "--json")
	require.Equal(t, 0, code, out)
	var status struct{ Users []userStatus }
	require.NoError(t, json.Unmarshal([]byte(out), &status))
	require.Len(t, status.Users, 1)
	row := status.Users[0]
	assert.Equal(t, brokerSchwab, row.Broker)
	require.NotNil(t, row.Grant)
	assert.Equal(t, "active", row.Grant.State)
	assert.Equal(t, "schwab", row.Grant.Provider)
	assert.GreaterOrEqual(t, row.Grant.Rotations, int64(3))
	require.NotNil(t, row.Grant.RefreshExpiresAt)
	assert.Empty(t, row.LoginURL)
	code, table, _ := inProcess(t, ctx, d.env, "", "status", schwabName)
	require.Equal(t, 0, code, table)
	assert.Regexp(t, `refresh token expires in 6d2[0-9]h`, table)
	_, text = get(t, d.base+"/metrics")
	assert.Regexp(t, `brokertoken_refresh_token_expiry_seconds\{user="`+schwabName+`"\} 60[0-9]{4}`, text)
	assert.Contains(t, text, `brokertoken_login_needed{user="`+schwabName+`"} 0`)
	var registry fleetUser
	raw, err := d.rdb.HGet(ctx, d.prefix+":users", schwabName).Result()
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal([]byte(raw), &registry))
	assert.Equal(t, fleetUser{Accounts: []string{}, Broker: brokerSchwab, Provider: "schwab", LoginURL: d.pageURL,
		Daemon: registry.Daemon, Updated: registry.Updated}, registry)

	// The user withdraws the app's access at Schwab: the next refresh is refused. One
	// alert with the page; no more requests; login needed.
	refusedBefore := d.fake.Stats().Refused
	d.fake.RevokeAll()
	d.waitAlert(eventGrantRevoked, 1)
	alert := d.hook.last(eventGrantRevoked)
	assert.Equal(t, schwabName, alert["user"])
	assert.Equal(t, d.pageURL, alert["url"])
	assert.Equal(t, "Schwab", alert["broker"])
	assert.Contains(t, alert["message"], "No process refreshes it any more")
	require.Eventually(t, func() bool {
		_, text := get(t, d.base+"/metrics")
		return strings.Contains(text, `brokertoken_login_needed{user="`+schwabName+`"} 1`)
	}, 30*time.Second, 50*time.Millisecond)
	refused := d.fake.Stats().Refused
	require.Eventually(t, func() bool {
		code, _, h := d.health()
		return code == http.StatusServiceUnavailable && h.Grant == "revoked" && h.LoginURL == d.pageURL
	}, 30*time.Second, 50*time.Millisecond, "the token lapses, nothing refreshes it")
	time.Sleep(time.Second) // many checks and --retry-max periods
	assert.Equal(t, refused, d.fake.Stats().Refused, "no retry storm: the revoked grant is not sent again")
	assert.Equal(t, refusedBefore+1, refused, "the refused refresh token was sent once, by one process, and never again")
	_, page = get(t, d.pageURL)
	assert.Contains(t, page, `data-state="revoked" data-grant="revoked"`)
	code, out, _ = inProcess(t, ctx, d.env, "", "status", schwabName)
	require.Equal(t, 0, code, out)
	assert.Contains(t, out, "refresh token refused at")
	assert.Contains(t, out, "a human must log in: "+d.pageURL)

	// Headless: `brokertoken authorize --paste` prints the URL; the human's browser
	// ends on the callback address, pasted back.
	before := d.fake.Stats().Exchanges
	pasted, out := d.authorizePaste(ctx)
	assert.Regexp(t, `^`+regexp.QuoteMeta(schwabName)+`: authorized at Schwab: token version [0-9]+ \(token [^ ]+, expires in [0-9]+s\); the refresh token expires at `, out)
	assert.Equal(t, before+1, d.fake.Stats().Exchanges)
	d.waitAlert(eventRecovered, 1)
	waitHTTP(t, d.base+"/healthz", http.StatusOK, 30*time.Second)
	var fresh *tokencache.Token
	require.Eventually(t, func() bool {
		fresh, err = rep.Token(ctx, schwabName)
		return err == nil && d.apiAccepts(fresh.AccessToken)
	}, 30*time.Second, 50*time.Millisecond, "services have a working token again")
	assert.Equal(t, map[string]int{eventGrantRevoked: 1, eventRecovered: 1}, d.hook.events())
	assert.Contains(t, pasted, "code=")
	d.assertNoSecrets(out)

	// Redis loses the refresh token (eviction, a restart without persistence): one
	// alert, and the page says a human must authorize again.
	require.NoError(t, d.rdb.Del(ctx, d.prefix+":secret:{"+schwabName+"}:oauth").Err())
	d.waitAlert(eventGrantLost, 1)
	require.Eventually(t, func() bool {
		_, page = get(t, d.pageURL)
		return strings.Contains(page, `data-grant="lost"`)
	}, 30*time.Second, 50*time.Millisecond, "the page shows the lost grant: %s", page)
	assert.Contains(t, page, "Redis lost the refresh token")
	assert.Equal(t, 1, d.hook.events()[eventGrantLost])
	d.assertNoSecrets(d.hook.all() + page)
	code, _ = d.proc.stop(20 * time.Second)
	assert.Equal(t, 0, code)
}

// waitAlert waits until n alerts of event arrived.
func (d *oauthDaemon) waitAlert(event string, n int) {
	d.t.Helper()
	require.Eventually(d.t, func() bool { return d.hook.events()[event] >= n }, 30*time.Second, 20*time.Millisecond,
		"no %d %s alerts; got %v", n, event, d.hook.events())
}

// authorizePaste runs `brokertoken authorize schwab_main --paste` in this process: it
// opens the printed URL at the fake (whose human allows at once), pastes the address
// the fake sends the browser to, and returns it and the command's output.
func (d *oauthDaemon) authorizePaste(ctx context.Context) (pasted, out string) {
	t := d.t
	t.Helper()
	inR, inW := io.Pipe()
	var stdout, stderr testutil.Buffer
	done := make(chan int, 1)
	lookup := func(k string) (string, bool) { v, ok := d.env[k]; return v, ok }
	go func() { done <- run(ctx, []string{"authorize", schwabName, "--paste"}, lookup, inR, &stdout, &stderr) }()
	var link string
	require.Eventually(t, func() bool {
		link, _, _ = strings.Cut(stdout.String(), "\n")
		return strings.Contains(stdout.String(), "\n")
	}, 30*time.Second, 20*time.Millisecond, "authorize printed no URL: %s", stderr.String())
	assert.True(t, strings.HasPrefix(link, d.fake.URL()+oauthfake.AuthorizePath+"?"), link)
	assert.Contains(t, stderr.String(), "paste here the whole address")
	req, _ := http.NewRequest(http.MethodGet, link, nil)
	code, loc, body := fetch(t, noRedirects(t), req)
	require.Equal(t, http.StatusFound, code, body)
	_, err := io.WriteString(inW, loc+"\n")
	require.NoError(t, err)
	select {
	case code := <-done:
		require.Equal(t, 0, code, "stderr: %s", stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("authorize did not finish")
	}
	_ = inW.Close()
	rest, _ := strings.CutPrefix(stdout.String(), link+"\n")
	return loc, strings.TrimSpace(rest)
}

// The refresh token's expiry, for a generic "oauth2" entry whose refresh tokens live 8
// seconds from the authorization (the provider's lifetime, given in the entry): the
// alert of each lead time fires once, with the page's URL; when the refresh token
// lapses, the refused refresh is alerted once.
//
// Run twice: with the entry's refresh_token_lifetime, and with a provider that reports
// refresh_token_expires_in (whole seconds left) on every refresh without extending
// the lifetime, as Schwab's answers do: the expiry must not move with each refresh, or
// a lead would be alerted again.
func TestOAuthRefreshTokenExpiryAlerts(t *testing.T) {
	for _, reported := range []bool{false, true} {
		t.Run(fmt.Sprintf("reported=%v", reported), func(t *testing.T) { testOAuthExpiryAlerts(t, reported) })
	}
}

func testOAuthExpiryAlerts(t *testing.T, reported bool) {
	d := newOAuthDaemon(t, oauthfake.Options{AccessTokenLifetime: 2 * time.Second, RefreshTokenLifetime: 8 * time.Second, ReportRefreshExpiry: reported},
		func(fake string) string {
			return fmt.Sprintf(`{"broker":"oauth2","name":%q,"provider":"fakeoauth","app_key":"schwabkey","app_secret":%q,"authorize_url":%q,"token_url":%q,"refresh_token_lifetime":"8s"}`,
				schwabName, schwabSecret, fake+oauthfake.AuthorizePath, fake+oauthfake.TokenPath)
		}, "--oauth-expiry-alerts", "7s,1h")
	waitHTTP(t, d.pageURL, http.StatusOK, 30*time.Second)
	assert.Contains(t, d.authorize(), "is authorized for fakeoauth")
	// 1h is due at once, 7s a second later; a poll (every 30 checks: 3 s here) that
	// finds both due sends the most urgent only.
	d.waitAlert(eventRefreshExpiring, 1)
	first := d.hook.last(eventRefreshExpiring)
	assert.Equal(t, schwabName, first["user"])
	assert.Equal(t, d.pageURL, first["url"])
	assert.NotEmpty(t, first["refresh_token_expires_at"])
	assert.Contains(t, first["message"], "expires in")
	d.waitAlert(eventGrantRevoked, 1) // the refresh token lapsed: refused
	revoked := d.hook.last(eventGrantRevoked)
	assert.Equal(t, d.pageURL, revoked["url"])
	leads := map[string]int{}
	d.hook.mu.Lock()
	bodies := append([]map[string]any(nil), d.hook.bodies...)
	d.hook.mu.Unlock()
	for _, b := range bodies {
		if b["event"] == eventRefreshExpiring {
			leads[fmt.Sprint(b["lead"])]++
		}
	}
	for lead, n := range leads {
		assert.Equal(t, 1, n, "lead %s alerted %d times", lead, n)
	}
	if reported {
		assert.GreaterOrEqual(t, d.fake.Stats().Refreshes, 2, "refreshes that reported the expiry again: %+v", d.fake.Stats())
	}
	// The 7s lead was due a second after the authorization: the polls until the
	// refresh token lapsed (8 s) found it due again and sent nothing more.
	ev := d.hook.events()
	assert.LessOrEqual(t, ev[eventRefreshExpiring], 2, "each lead once: %v", ev)
	assert.Equal(t, 1, ev[eventGrantRevoked], "%v", ev)
	assert.Contains(t, d.proc.stderr.String(), `msg="brokertoken: the fakeoauth refresh token expires soon; a human must authorize the app again before then" user=`+schwabName)
	d.assertNoSecrets()
}
