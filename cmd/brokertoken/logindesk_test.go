package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/tokencache"
)

// A service reports the Kite token while Kite cannot answer the check (HTTP 503): the
// cache refreshes anyway and, without a refresh token, needs a human. Kite never said
// the token is dead, so it is not called rejected: no token_rejected alert, no
// "rejected" state on the page or in /healthz; a milder token_unchecked alert says
// what is known. Once Kite answers and refuses the token, the rejection is alerted.
func TestUncheckedReportIsNotAlertedAsRejected(t *testing.T) {
	s := newKiteSetup(t, kiteSetupOptions{names: []string{"kite_main"}})
	s.handleEvents()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, code, body := s.login("kite_main", nil)
	require.Equal(t, http.StatusOK, code, body)
	tok := s.stored("kite_main")
	require.True(t, s.fake.Valid(tok.AccessToken))
	_, err := s.cache.Token(ctx, "kite_main")
	require.NoError(t, err)
	s.clock.Set(istTime(30, 10, 0)) // after the reminder time: a token not valid would be unhealthy

	s.fake.Script(kitefake.UserProfile, kitefake.ErrorAnswer(http.StatusServiceUnavailable, "NetworkException", "Kite is down"))
	rep, err := tokencache.New(tokencache.Options{Redis: s.rdb, Prefix: s.prefix})
	require.NoError(t, err)
	defer rep.Close()
	_, err = rep.Token(ctx, "kite_main")
	require.NoError(t, err)
	require.NoError(t, rep.Invalidate(ctx, "kite_main", tok.AccessToken))

	var alerts map[string]int
	require.Eventually(t, func() bool {
		alerts = s.flushAlerts()
		return alerts[eventTokenUnchecked] > 0
	}, 30*time.Second, 50*time.Millisecond, "no token_unchecked alert; got %v", alerts)
	assert.Equal(t, map[string]int{eventTokenUnchecked: 1}, alerts)
	assert.True(t, s.fake.Valid(tok.AccessToken), "Kite still accepts the token")
	alert := s.hook.last(eventTokenUnchecked)
	require.NotNil(t, alert)
	assert.Equal(t, "warning", alert["severity"])
	assert.Equal(t, float64(tok.Version), alert["version"])
	assert.Contains(t, alert["message"], "could not ask Kite whether it still accepts it")
	assert.Contains(t, alert["message"], "HTTP 503")
	assert.Contains(t, alert["message"], s.cfg.login.pageURL)
	assert.NotContains(t, alert["message"], "confirmed")
	logs := s.logs.String()
	assert.Contains(t, logs, "a service reported the Kite token as refused, but Kite could not be asked")
	assert.NotContains(t, logs, "rejected the token before its expiry")

	st, err := s.cache.Status(ctx, "kite_main")
	require.NoError(t, err)
	state, unhealthy, _ := s.desk.judge("kite_main", st, nil)
	assert.NotEqual(t, "rejected", state)
	assert.False(t, unhealthy, "a token Kite did not refuse keeps the user healthy")
	assert.False(t, s.desk.loginDue("kite_main", tok), "nor does /metrics count a login as due")
	req, _ := http.NewRequest(http.MethodGet, s.page.URL+"/login", nil)
	_, _, page := fetch(t, noRedirects(t), req)
	assert.Contains(t, page, `data-state="valid"`)
	assert.Contains(t, page, "which could not be asked")

	// Reported again, still unanswerable: no second alert for the same version.
	s.fake.Script(kitefake.UserProfile, kitefake.ErrorAnswer(http.StatusServiceUnavailable, "NetworkException", "Kite is down"))
	checks := s.fake.Calls(kitefake.UserProfile, http.MethodGet, http.StatusServiceUnavailable)
	require.Eventually(t, func() bool {
		require.NoError(t, rep.Invalidate(ctx, "kite_main", tok.AccessToken))
		return s.fake.Calls(kitefake.UserProfile, http.MethodGet, http.StatusServiceUnavailable) > checks
	}, 30*time.Second, 100*time.Millisecond)
	assert.Equal(t, map[string]int{eventTokenUnchecked: 1}, s.flushAlerts())

	// Kite answers again, and this time refuses the token: that is a rejection.
	s.fake.ExpireAccessTokens()
	require.Eventually(t, func() bool {
		require.NoError(t, rep.Invalidate(ctx, "kite_main", tok.AccessToken))
		return s.flushAlerts()[eventTokenRejected] > 0
	}, 30*time.Second, 100*time.Millisecond, "no token_rejected alert once Kite refused the token")
	assert.Equal(t, map[string]int{eventTokenUnchecked: 1, eventTokenRejected: 1}, s.flushAlerts())
	st, err = s.cache.Status(ctx, "kite_main")
	require.NoError(t, err)
	state, unhealthy, _ = s.desk.judge("kite_main", st, nil)
	assert.Equal(t, "rejected", state)
	assert.True(t, unhealthy)
	assert.True(t, s.desk.loginDue("kite_main", tok))
}

// A reminder time before Kite's 06:00 expiry finds the previous day's token still
// valid: the reminder must not count the day as done, and alerts once that token has
// lapsed (with no new one stored).
func TestReminderBeforeTheMorningExpiryRemindsOnceTheTokenLapses(t *testing.T) {
	s := newKiteSetup(t, kiteSetupOptions{names: []string{"kite_early"},
		login: func(l *loginConfig) { l.remind.at = 5 * time.Hour }})
	ctx := context.Background()
	// The previous day's token, lapsing a few seconds from now (on the real clock, which
	// the token's validity follows); the reminder's clock is moved by hand.
	now := time.Now()
	tok, err := s.cache.Set(ctx, "kite_early", &tokencache.Token{AccessToken: "kiteyesterdaytoken0123456789abcd",
		ObtainedAt: now.Add(-10 * time.Second), Expiry: now.Add(4 * time.Second)})
	require.NoError(t, err)

	tick := func(at time.Time) map[string]int {
		s.clock.Set(at)
		s.desk.remind(ctx)
		return s.flushAlerts()
	}
	assert.Empty(t, tick(istTime(30, 5, 0)), "Monday 05:00: yesterday's token is still valid")
	assert.Empty(t, tick(istTime(30, 5, 30)))

	time.Sleep(time.Until(tok.Expiry))
	require.Eventually(t, func() bool {
		st, err := s.cache.Status(ctx, "kite_early")
		return err == nil && st.State == tokencache.StateExpired
	}, 30*time.Second, 20*time.Millisecond)
	assert.Equal(t, map[string]int{eventLoginNeeded: 1}, tick(istTime(30, 6, 1)), "the token lapsed: one reminder")
	assert.Equal(t, map[string]int{eventLoginNeeded: 1}, tick(istTime(30, 9, 0)), "once a day")
	alert := s.hook.last(eventLoginNeeded)
	require.NotNil(t, alert)
	assert.Contains(t, alert["message"], "05:00 IST, Mon-Fri")
	assert.Contains(t, alert["message"], s.cfg.login.pageURL)
}
