//go:build linux

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

// Five processes ask for expiry alerts at once, over and over, while the refresh
// token's expiry comes near: each lead time's alert is reported once in all.
func TestExpiryAlertsFireOnceEachAcrossProcesses(t *testing.T) {
	f := newFixture(t, fixtureConfig{fake: oauthfake.Options{RefreshTokenLifetime: 5 * time.Second, ReportRefreshExpiry: true}})
	f.mustAuthorize(t)
	st, err := f.b.Status(context.Background())
	require.NoError(t, err)
	require.WithinDuration(t, time.Now().Add(5*time.Second), st.RefreshExpiry, 2*time.Second, "from refresh_token_expires_in")
	leads := []time.Duration{3 * time.Second, 1500 * time.Millisecond}
	var cs []*child
	for range 5 {
		cs = append(cs, f.startChild(t, childSpec{Mode: "alerts", Duration: time.Until(st.RefreshExpiry) + time.Second, AlertLeads: leads}))
	}
	got := map[string]int{}
	for _, c := range cs {
		c.wait(t)
		got["3s"] += c.count("ALERT 3s")
		got["1.5s"] += c.count("ALERT 1.5s")
		assert.Zero(t, c.count("ERR "), c.output())
	}
	assert.Equal(t, map[string]int{"3s": 1, "1.5s": 1}, got)

	// Past the expiry, nothing is due; the next refresh fails and alerts once.
	alerts, err := f.b.Alerts(context.Background())
	require.NoError(t, err)
	assert.Empty(t, alerts)
	_, err = f.broker(t, nil).Authenticator().Login(context.Background(), f.opts.User)
	assert.ErrorIs(t, err, oauthbroker.ErrRevoked)
	assert.ErrorIs(t, err, oauthbroker.ErrInvalidGrant)
}
