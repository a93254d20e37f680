package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/tokencache"
)

// oauthUnit is one Schwab user of the daemon's code (newOAuthUsers) on a real Redis
// and the strict fake, authorized, with a desk and an alerter posting to a webhook.
type oauthUnit struct {
	o     *oauthUser
	deps  *deps
	cache *tokencache.Cache
	desk  *loginDesk
	hook  *webhook
	logs  *testutil.Buffer
}

func newOAuthUnit(t *testing.T, leads []time.Duration) *oauthUnit {
	t.Helper()
	srv := testutil.Redis(t)
	rdb := srv.Client(t)
	fake := oauthfake.New(t, oauthfake.Options{})
	const callback = "http://127.0.0.1:9/cb"
	fake.AddClient("schwabkey", schwabSecret, callback)
	u := &oauthUnit{hook: newWebhook(t), logs: &testutil.Buffer{}}
	log := slog.New(slog.NewTextHandler(u.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := &config{prefix: srv.Prefix, alertWebhook: u.hook.srv.URL, alertFormat: "json", credentials: "/etc/brokertoken/credentials.json",
		login: loginConfig{schwabURL: fake.URL(), oauthLeads: leads}}
	users, err := newOAuthUsers([]oauthEntry{{Broker: brokerSchwab, Name: schwabName, AppKey: "schwabkey", AppSecret: schwabSecret,
		CallbackURL: callback}}, rdb, cfg, log, oauthHooks{})
	require.NoError(t, err)
	u.o = users[0]
	u.deps = &deps{oauth: users}
	t.Cleanup(func() { u.deps.closeOAuth(nil) })
	u.cache, err = tokencache.New(tokencache.Options{Redis: rdb, Prefix: srv.Prefix, Authenticator: u.o.b.Authenticator()})
	require.NoError(t, err)
	t.Cleanup(func() { _ = u.cache.Close() })

	// Authorize: the fake's human allows at once; the redirect's query is completed
	// as `authorize --paste` does.
	ctx := context.Background()
	link, err := u.o.b.LoginURL(ctx)
	require.NoError(t, err)
	req, _ := http.NewRequest(http.MethodGet, link, nil)
	code, loc, body := fetch(t, noRedirects(t), req)
	require.Equal(t, http.StatusFound, code, body)
	back, err := url.Parse(loc)
	require.NoError(t, err)
	_, err = u.o.b.Complete(ctx, u.cache, back.Query())
	require.NoError(t, err)

	u.desk = newLoginDesk(cfg.login, cfg.prefix, log, &scrubber{}, time.Now)
	alerts := newAlerter(cfg, rdb, log, &scrubber{}, testMetrics(t))
	u.desk.attach([]browserUser{u.o}, u.cache, alerts)
	u.desk.alertEvery = time.Nanosecond
	actx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); alerts.run(actx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return u
}

// An OAuth2 alert is acknowledged to oauthbroker only once the webhook took it: one the
// webhook refused comes back after its lease and is sent again; one delivered never
// comes back.
func TestOAuthAlertAckedOnlyWhenDelivered(t *testing.T) {
	defer func(l time.Duration) { oauthAlertLease = l }(oauthAlertLease)
	oauthAlertLease = 300 * time.Millisecond
	u := newOAuthUnit(t, []time.Duration{8 * 24 * time.Hour}) // due at once: Schwab's 7 days
	var mu sync.Mutex
	answers := []int{http.StatusBadRequest} // refused once (not retried), then 204
	u.hook.mu.Lock()
	u.hook.status = func() int {
		mu.Lock()
		defer mu.Unlock()
		if len(answers) == 0 {
			return http.StatusNoContent
		}
		c := answers[0]
		answers = answers[1:]
		return c
	}
	u.hook.mu.Unlock()
	ctx := context.Background()

	u.desk.pollGrants(ctx)
	require.Eventually(t, func() bool { return u.hook.events()[eventRefreshExpiring] == 1 }, 30*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		u.desk.pollGrants(ctx) // nothing until the lease of the undelivered alert ran out
		return u.hook.events()[eventRefreshExpiring] == 2
	}, 30*time.Second, 50*time.Millisecond, "the refused alert is sent again: %v", u.hook.events())
	// Delivered: acknowledged, never returned again, to this daemon or any other.
	time.Sleep(3 * oauthAlertLease) // past any lease
	u.desk.pollGrants(ctx)
	left, err := u.o.b.Alerts(ctx)
	require.NoError(t, err)
	assert.Empty(t, left)
	assert.NotContains(t, u.logs.String(), "cannot acknowledge")
	assert.Equal(t, 2, u.hook.events()[eventRefreshExpiring], "%v", u.hook.events())
	last := u.hook.last(eventRefreshExpiring)
	assert.Equal(t, schwabName, last["user"])
	assert.Equal(t, "192h0m0s", last["lead"])
	// This daemon serves no page: the alert says how to authorize without handing the
	// channel a live login state that no browser is bound to.
	require.Empty(t, u.desk.cfg.pageURL)
	assert.Nil(t, last["url"])
	assert.NotContains(t, u.hook.all(), "state=")
	assert.Contains(t, fmt.Sprint(last["message"]), "brokertoken authorize "+schwabName+" --paste")
}

// A slow webhook outlasts the alert's lease: the alert comes back while this daemon
// still delivers it, and is not queued a second time.
func TestOAuthAlertNotQueuedTwiceWhileDelivering(t *testing.T) {
	defer func(l time.Duration) { oauthAlertLease = l }(oauthAlertLease)
	oauthAlertLease = 200 * time.Millisecond
	u := newOAuthUnit(t, []time.Duration{8 * 24 * time.Hour})
	release := make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(free) // before the webhook server closes, even when the test fails early
	u.hook.mu.Lock()
	u.hook.status = func() int { <-release; return http.StatusNoContent }
	u.hook.mu.Unlock()
	ctx := context.Background()

	u.desk.pollGrants(ctx) // queued; the webhook holds the delivery
	require.Eventually(t, func() bool {
		u.desk.pollGrants(ctx) // returned after the lease, still being delivered
		return strings.Contains(u.logs.String(), "not queued twice")
	}, 10*time.Second, 50*time.Millisecond, "the alert never came back during the delivery")
	free()
	require.Eventually(t, func() bool { return u.hook.events()[eventRefreshExpiring] >= 1 }, 30*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		left, err := u.o.b.Alerts(ctx)
		require.NoError(t, err)
		return len(left) == 0
	}, 30*time.Second, 50*time.Millisecond, "acknowledged once delivered")
	time.Sleep(200 * time.Millisecond) // any second copy would have been posted by now
	assert.Equal(t, 1, u.hook.events()[eventRefreshExpiring], "%v", u.hook.events())
}

// Without a webhook, the log line is the alert: it is acknowledged at once. With one,
// enqueue leaves that to the delivery.
func TestOAuthAlertAckedWithoutWebhook(t *testing.T) {
	acked := 0
	a := &alerter{log: slog.New(slog.NewTextHandler(io.Discard, nil)), queue: make(chan alertEvent, 1)}
	a.enqueue(alertEvent{Event: eventGrantLost, User: schwabName, ack: func(context.Context) { acked++ }})
	assert.Equal(t, 1, acked)
	a.url = "http://127.0.0.1:9/hook"
	a.enqueue(alertEvent{Event: eventGrantLost, User: schwabName, ack: func(context.Context) { acked++ }})
	assert.Equal(t, 1, acked, "queued, not delivered yet")
}

// On SIGTERM the daemon closes every OAuth2 broker (after the cache): their
// Authenticators refuse to refresh from then on, and closing again does nothing.
func TestCloseOAuthClosesEveryBroker(t *testing.T) {
	u := newOAuthUnit(t, nil)
	ctx := context.Background()
	_, err := u.o.b.Authenticator().Login(ctx, schwabName)
	require.NoError(t, err, "refreshes before")
	require.NoError(t, u.cache.Close())
	logs := &testutil.Buffer{}
	u.deps.closeOAuth(slog.New(slog.NewTextHandler(logs, nil)))
	_, err = u.o.b.Authenticator().Login(ctx, schwabName)
	assert.ErrorIs(t, err, oauthbroker.ErrClosed)
	assert.Empty(t, logs.String(), "nothing held, nothing lost")
	u.deps.closeOAuth(nil)
	st, err := u.o.b.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateActive, st.State)
	assert.Nil(t, st.Rotation, "no refresh left half-way")
}

// The kinds of oauthbroker's errors, as metrics, status and alerts name them.
func TestFailureKindOAuth(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("refresh schwab_main: %w", err) }
	for _, tt := range []struct {
		err  error
		want string
	}{
		{&oauthbroker.LoginRequiredError{User: schwabName, Reason: oauthbroker.ErrRevoked}, "refresh_token_revoked"},
		{&oauthbroker.LoginRequiredError{User: schwabName, Reason: oauthbroker.ErrLost}, "grant_lost"},
		{&oauthbroker.LoginRequiredError{User: schwabName, Reason: oauthbroker.ErrNotAuthorized}, "not_authorized"},
		{wrap(oauthbroker.ErrInvalidClient), "invalid_client"},
		{wrap(fmt.Errorf("%w: %w", oauthbroker.ErrRotationPending, tokencache.ErrRedisUnavailable)), "rotation_pending"},
		{wrap(oauthbroker.ErrRotationLost), "rotation_lost"},
		{wrap(oauthbroker.ErrRotationInFlight), "rotation_in_flight"},
		{wrap(oauthbroker.ErrUnavailable), "unavailable"},
		{wrap(tokencache.ErrRedisUnavailable), "redis"},
	} {
		assert.Equal(t, tt.want, failureKind(tt.err), "%v", tt.err)
	}
}

// A lost refresh token and refused app credentials say what to do, without a secret:
// authorize again, or fix the credentials file (no login link: a login does not help).
func TestOAuthLostAndInvalidClientTexts(t *testing.T) {
	a := &alerter{scrub: &scrubber{}, host: "h", cfg: &config{credentials: "/etc/brokertoken/credentials.json"}}
	a.scrub.add(schwabSecret)
	now := time.Now()
	title, text, sev := a.alertText(alertEvent{Event: eventGrantLost, User: schwabName, Broker: "Schwab", Since: now,
		Error: "the refresh token of generation 4 is gone " + schwabSecret, URL: "https://ops.example.com/login", Time: now})
	assert.Equal(t, "Schwab refresh token lost: schwab_main", title)
	assert.Equal(t, "critical", sev)
	assert.Contains(t, text, "maxmemory-policy noeviction")
	assert.Contains(t, text, `open https://ops.example.com/login and press "Log in with Schwab"`)
	title, text, sev = a.alertText(alertEvent{Event: eventInvalidClient, User: schwabName, Broker: "Schwab", Since: now,
		Error: "invalid_client: client authentication failed", Time: now})
	assert.Equal(t, "Schwab app key/secret refused: schwab_main", title)
	assert.Equal(t, "critical", sev)
	assert.Contains(t, text, "fix app_key and app_secret of the entry in the credentials file (/etc/brokertoken/credentials.json)")
	assert.Contains(t, text, "no new authorization is needed")
	assert.NotContains(t, text, "Log in with")
	for _, ev := range []string{eventGrantLost, eventInvalidClient} {
		body, err := a.render(alertEvent{Event: ev, User: schwabName, Broker: "Schwab", Since: now, Error: schwabSecret, Time: now})
		require.NoError(t, err)
		assert.NotContains(t, string(body), schwabSecret)
	}
}

// status's note for each grant state: a lost grant says so (not "expiry unknown").
func TestGrantViewNote(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		st   oauthbroker.Status
		want string
	}{
		{oauthbroker.Status{State: oauthbroker.StateMissing}, "not authorized yet"},
		{oauthbroker.Status{State: oauthbroker.StateRevoked, Detail: "invalid_grant"}, "refresh token refused (invalid_grant)"},
		{oauthbroker.Status{State: oauthbroker.StateLost, RevokedAt: now}, "refresh token lost by Redis at "},
		{oauthbroker.Status{State: oauthbroker.StateActive}, "refresh token expiry unknown"},
		{oauthbroker.Status{State: oauthbroker.StateActive, RefreshExpiry: now.Add(-time.Hour)}, "refresh token expired 1h"},
	} {
		g := newGrantView(&tt.st, now)
		assert.Contains(t, g.note(now), tt.want, tt.st.State)
		assert.Equal(t, tt.st.State != oauthbroker.StateActive || !tt.st.RefreshExpiry.IsZero(), g.needsHuman(now), tt.st.State)
	}
}
