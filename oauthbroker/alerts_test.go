package oauthbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
	"github.com/brokertoken/brokertoken/oauthbroker"
)

// With Schwab's 7 days, the default lead times (24 h and 2 h) are far away; a daemon
// started late reports only the most urgent one, and nothing twice.
func TestExpiryAlertsLeadTimes(t *testing.T) {
	f := newFixture(t, fixtureConfig{broker: func(o *oauthbroker.Options) { o.StartURL = "https://ops.example.com/schwab/login" }})
	ctx := context.Background()
	alerts, err := f.b.Alerts(ctx)
	require.NoError(t, err)
	assert.Empty(t, alerts, "nothing authorized")
	f.mustAuthorize(t)
	alerts, err = f.b.Alerts(ctx)
	require.NoError(t, err)
	assert.Empty(t, alerts, "7 days ahead")

	late := f.broker(t, func(o *oauthbroker.Options) { o.AlertLeads = []time.Duration{7 * 24 * time.Hour, 8 * 24 * time.Hour} })
	alerts, err = late.Alerts(ctx)
	require.NoError(t, err)
	require.Len(t, alerts, 1)
	a := alerts[0]
	assert.Equal(t, oauthbroker.AlertExpiring, a.Kind)
	assert.Equal(t, 7*24*time.Hour, a.Lead, "the most urgent lead")
	assert.Equal(t, "https://ops.example.com/schwab/login", a.URL)
	assert.Equal(t, f.opts.User, a.User)
	assert.Contains(t, a.String(), "authorize the app again at https://ops.example.com/schwab/login")
	ok, err := late.Ack(ctx, a)
	require.NoError(t, err)
	assert.True(t, ok)
	alerts, err = late.Alerts(ctx)
	require.NoError(t, err)
	assert.Empty(t, alerts, "once")
}

// A provider that reports refresh_token_expires_in (whole seconds left) on every
// refresh without extending the lifetime: the stored expiry stays put, and a lead time
// that fell due is reported once, not again after each refresh.
func TestReportedExpiryDoesNotRealertALead(t *testing.T) {
	f := newFixture(t, fixtureConfig{fake: oauthfake.Options{ReportRefreshExpiry: true}})
	ctx := context.Background()
	f.mustAuthorize(t)
	st, err := f.b.Status(ctx)
	require.NoError(t, err)
	require.False(t, st.RefreshExpiry.IsZero())
	first := st.RefreshExpiry
	due := f.broker(t, func(o *oauthbroker.Options) { o.AlertLeads = []time.Duration{8 * 24 * time.Hour} })
	alerts, err := due.Alerts(ctx)
	require.NoError(t, err)
	require.Len(t, alerts, 1)
	_, err = due.Ack(ctx, alerts[0])
	require.NoError(t, err)
	for i := range 4 {
		time.Sleep(30 * time.Millisecond) // the provider's seconds count down meanwhile
		_, err := f.b.Authenticator().Renew(ctx, f.opts.User, nil)
		require.NoError(t, err, "refresh %d", i)
		st, err := f.b.Status(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(i+1), st.Rotations)
		assert.True(t, first.Equal(st.RefreshExpiry), "refresh %d moved the expiry from %v to %v", i, first, st.RefreshExpiry)
		alerts, err := due.Alerts(ctx)
		require.NoError(t, err)
		assert.Empty(t, alerts, "refresh %d: the lead was alerted already", i)
	}
}

func TestSteadyExpiry(t *testing.T) {
	tol := oauthbroker.ExpiryTolerance.Milliseconds()
	const stored = int64(1_800_000_000_000)
	assert.Equal(t, stored, oauthbroker.SteadyExpiry(stored, stored-987), "noise: kept")
	assert.Equal(t, stored, oauthbroker.SteadyExpiry(stored, stored+tol), "within the tolerance: kept")
	assert.Equal(t, stored+tol+1, oauthbroker.SteadyExpiry(stored, stored+tol+1), "extended: stored")
	assert.Equal(t, stored-tol-1, oauthbroker.SteadyExpiry(stored, stored-tol-1), "shortened: stored")
	assert.Equal(t, stored, oauthbroker.SteadyExpiry(0, stored), "none stored yet")
}
