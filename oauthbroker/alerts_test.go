package oauthbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
