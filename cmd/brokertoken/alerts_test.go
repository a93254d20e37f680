package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tradovate"
)

func TestDiscordWebhookURLsGetDiscordFormat(t *testing.T) {
	for url, want := range map[string]bool{
		"https://discord.com/api/webhooks/123/abc":        true,
		"https://discordapp.com/api/webhooks/123/abc":     true,
		"https://ptb.discord.com/api/webhooks/123/abc":    true,
		"https://DISCORD.com/api/webhooks/123/abc":        true,
		"https://hooks.slack.com/services/T/B/x":          false,
		"https://notdiscord.com/api/webhooks/1/x":         false,
		"https://discord.com.evil.example/api/webhooks/1": false,
		"http://127.0.0.1:8080/alerts":                    false,
	} {
		assert.Equal(t, want, isDiscordWebhook(url), url)
	}
}

func TestAlertBodies(t *testing.T) {
	s := &scrubber{}
	s.add("pw-secret-1")
	a := &alerter{host: "box1", scrub: s}
	ev := alertEvent{Event: eventFailure, User: "APEX_272045", Accounts: []string{"PAAPEX2720450000001", "PAAPEX2720450000002"},
		Kind: "unavailable", Error: "HTTP 503 (pw-secret-1 eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIzODY1NjUxIn0.c2lnbmF0dXJlc2ln)",
		Version: 7, Expiry: time.Now().Add(10 * time.Minute), Time: time.Date(2025, 10, 18, 12, 0, 0, 0, time.UTC)}

	a.format = "discord"
	raw, err := a.render(ev)
	require.NoError(t, err)
	var discord struct {
		Username string `json:"username"`
		Embeds   []struct {
			Title, Description, Timestamp string
			Color                         int
			Fields                        []struct{ Name, Value string }
		}
	}
	require.NoError(t, json.Unmarshal(raw, &discord))
	require.Len(t, discord.Embeds, 1)
	e := discord.Embeds[0]
	assert.Equal(t, "Token refresh failing: APEX_272045", e.Title)
	assert.Equal(t, 0xE74C3C, e.Color, "red")
	assert.Equal(t, "2025-10-18T12:00:00Z", e.Timestamp)
	assert.Contains(t, e.Description, "stays valid for 10m")
	assert.Equal(t, "User", e.Fields[0].Name)
	assert.Equal(t, "PAAPEX2720450000001, PAAPEX2720450000002", e.Fields[2].Value)

	rec := ev
	rec.Event = eventRecovered
	raw, err = a.render(rec)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &discord))
	assert.Equal(t, 0x2ECC71, discord.Embeds[0].Color, "green")

	a.format = "json"
	raw, err = a.render(ev)
	require.NoError(t, err)
	var plain map[string]any
	require.NoError(t, json.Unmarshal(raw, &plain))
	assert.Equal(t, "failure", plain["event"])
	assert.Equal(t, "APEX_272045", plain["user"])
	assert.Equal(t, "unavailable", plain["kind"])
	assert.Equal(t, "box1", plain["host"])
	assert.Equal(t, "error", plain["severity"])

	for _, body := range []string{string(raw)} {
		assert.NotContains(t, body, "pw-secret-1")
		assert.NotContains(t, body, "c2lnbmF0dXJlc2ln")
	}
}

// Daemons sharing a Redis agree on who sends each alert: a failure, a captcha and a
// lockout are sent once for the fleet, and so is the recovery; a recovery without a
// reported failure is not sent at all.
func TestAlertsAreSentOncePerEventForTheFleet(t *testing.T) {
	srv := testutil.Redis(t)
	hook := newWebhook(t)
	cfg := &config{alertWebhook: hook.srv.URL, alertFormat: "json", prefix: srv.Prefix}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var fleet []*alerter
	for range 3 {
		fleet = append(fleet, newAlerter(cfg, srv.Client(t), log, &scrubber{}, testMetrics(t)))
	}
	ctx := context.Background()
	all := func(ev alertEvent) {
		var wg sync.WaitGroup
		for _, a := range fleet {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.handle(ctx, ev)
			}()
		}
		wg.Wait()
	}
	u, v := srv.Name("u"), srv.Name("v")

	all(alertEvent{Event: eventRecovered, User: u, Time: time.Now()}) // a start-up check: no incident open
	assert.Empty(t, hook.events())

	all(alertEvent{Event: eventFailure, User: u, Kind: "unavailable", Time: time.Now()})
	all(alertEvent{Event: eventFailure, User: u, Kind: "unavailable", Time: time.Now()}) // a retry elsewhere
	all(alertEvent{Event: eventCaptcha, User: u, Kind: "captcha", Time: time.Now()})
	assert.Equal(t, map[string]int{eventFailure: 1, eventCaptcha: 1}, hook.events())

	until := time.Now().Add(time.Hour)
	all(alertEvent{Event: eventLockedOut, User: v, Kind: "locked_out", Until: until, Time: time.Now()})
	all(alertEvent{Event: eventLockedOut, User: u, Kind: "locked_out", Until: until, AllUsers: true, Time: time.Now()})
	assert.Equal(t, 1, hook.events()[eventLockedOut], "one lockout alert for every user")
	assert.Equal(t, 0, hook.events()[eventRecovered])

	all(alertEvent{Event: eventRecovered, User: u, Time: time.Now()})
	all(alertEvent{Event: eventRecovered, User: v, Time: time.Now()})
	all(alertEvent{Event: eventRecovered, User: u, Time: time.Now()})
	assert.Equal(t, map[string]int{eventFailure: 1, eventCaptcha: 1, eventLockedOut: 1, eventRecovered: 2}, hook.events())

	// A new failure after the recovery is a new event.
	all(alertEvent{Event: eventFailure, User: u, Kind: "unavailable", Time: time.Now()})
	assert.Equal(t, 2, hook.events()[eventFailure])
}

func TestAlertDeliveryRetriesAndGivesUp(t *testing.T) {
	srv := testutil.Redis(t)
	hook := newWebhook(t)
	var mu sync.Mutex
	answers := []int{503, 204}
	hook.mu.Lock()
	hook.status = func() int {
		mu.Lock()
		defer mu.Unlock()
		if len(answers) == 0 {
			return 400
		}
		c := answers[0]
		answers = answers[1:]
		return c
	}
	hook.mu.Unlock()
	m := testMetrics(t)
	a := newAlerter(&config{alertWebhook: hook.srv.URL, alertFormat: "json", prefix: srv.Prefix}, srv.Client(t),
		slog.New(slog.NewTextHandler(io.Discard, nil)), &scrubber{}, m)
	ctx := context.Background()
	require.NoError(t, a.post(ctx, alertEvent{Event: eventRedisDown, Time: time.Now()}))
	err := a.post(ctx, alertEvent{Event: eventRedisUp, Time: time.Now()})
	var perm permanentError
	require.True(t, errors.As(err, &perm), "a 4xx is not retried: %v", err)
	hook.mu.Lock()
	assert.Len(t, hook.bodies, 3)
	hook.mu.Unlock()
}

// TestCooldownOf reads the pause a CooldownError carries.
func TestCooldownOf(t *testing.T) {
	until := time.Now().Add(time.Hour)
	got, all := cooldownOf(&tradovate.CooldownError{User: "u", AllUsers: true, Until: until, Reason: tradovate.ErrLockedOut})
	assert.Equal(t, until, got)
	assert.True(t, all)
	assert.Equal(t, "locked_out", failureKind(&tradovate.CooldownError{Reason: tradovate.ErrLockedOut}))
	assert.Equal(t, "captcha", failureKind(&tradovate.CooldownError{Reason: tradovate.ErrCaptchaRequired}))
	got, _ = cooldownOf(errors.New("x"))
	assert.True(t, got.IsZero())
}

// The Kite alerts say where to log in: the page's URL, or, from a daemon that serves
// no page, that another daemon's page is the place (never "open  and press"). The
// unconfirmed report is a warning (orange on Discord).
func TestKiteAlertTextsSayWhereToLogIn(t *testing.T) {
	a := &alerter{host: "box1", scrub: &scrubber{}}
	for _, ev := range []alertEvent{
		{Event: eventLoginNeeded, User: "kite_main", Broker: "Kite", Reminder: "08:45 IST, Mon-Fri", Day: "2026-11-30"},
		{Event: eventTokenRejected, User: "kite_main", Broker: "Kite", Version: 3, Expiry: time.Now().Add(time.Hour)},
		{Event: eventTokenUnchecked, User: "kite_main", Broker: "Kite", Version: 3, Expiry: time.Now().Add(time.Hour), Error: "HTTP 503"},
	} {
		_, text, _ := a.alertText(ev)
		assert.NotContains(t, text, "open  and", ev.Event)
		assert.Contains(t, text, `open the login page of a daemon that serves one (this daemon serves none: see --listen and --login-listen) and press "Log in with Kite"`, ev.Event)
		ev.URL = "https://ops.example.com/login"
		_, text, _ = a.alertText(ev)
		assert.Contains(t, text, `open https://ops.example.com/login and press "Log in with Kite"`, ev.Event)
	}
	a.format = "discord"
	raw, err := a.render(alertEvent{Event: eventTokenUnchecked, User: "kite_main", Broker: "Kite", Version: 3, Error: "HTTP 503"})
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"color":15105570`, "orange")
	_, _, severity := a.alertText(alertEvent{Event: eventTokenUnchecked})
	assert.Equal(t, "warning", severity)
}
