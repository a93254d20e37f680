package oauthbroker_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
	"github.com/brokertoken/brokertoken/oauthbroker"
)

// No code, token or client secret ever appears in a log line, an error, a page, the
// status or a formatted value, through authorization, refreshes, a refused client and a
// revocation.
func TestSecretsNeverShown(t *testing.T) {
	f := newFixture(t, fixtureConfig{fake: oauthfake.Options{AccessTokenLifetime: time.Second}})
	ctx := context.Background()
	var shown strings.Builder
	_, page := f.authorize(t)
	shown.WriteString(page)
	for range 3 {
		tok, err := f.broker(t, nil).Authenticator().Login(ctx, f.opts.User)
		require.NoError(t, err)
		fmt.Fprintf(&shown, "%v %+v %#v %s %q\n", tok, tok, tok, tok, tok)
	}
	bad := f.broker(t, func(o *oauthbroker.Options) { o.ClientSecret = "another-secret-value-1" })
	_, err := bad.Authenticator().Login(ctx, f.opts.User)
	require.Error(t, err)
	fmt.Fprintf(&shown, "%v\n", err)
	f.fake.RevokeAll()
	_, err = f.broker(t, nil).Authenticator().Login(ctx, f.opts.User)
	require.ErrorIs(t, err, oauthbroker.ErrRevoked)
	fmt.Fprintf(&shown, "%v %+v\n", err, err)
	var lre *oauthbroker.LoginRequiredError
	require.ErrorAs(t, err, &lre)
	assert.Contains(t, lre.URL, "state=", "the human still gets a login URL")
	assert.NotContains(t, err.Error(), "state=")
	st, err := f.b.Status(ctx)
	require.NoError(t, err)
	fmt.Fprintf(&shown, "%+v %#v\n", st, st)
	fmt.Fprintf(&shown, "%v %+v %#v %s\n", f.opts, f.opts, f.opts, f.opts)
	fmt.Fprintf(&shown, "%v %+v %#v %s %v %+v %#v\n", f.b, f.b, f.b, f.b, *f.b, *f.b, f.b.Authenticator())
	f.opts.Logger.Info("a broker", "broker", f.b, "value", *f.b)
	alerts, err := f.b.Alerts(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, alerts)
	fmt.Fprintf(&shown, "%v %+v %#v\n", alerts, alerts, alerts)
	resp, err := http.Get(f.web.URL + "/callback?state=" + strings.Repeat("0", 32) + "&code=" + f.fake.Secrets()[0])
	require.NoError(t, err)
	var body strings.Builder
	_, _ = io_copy(&body, resp)
	shown.WriteString(body.String())
	shown.WriteString(f.logs.String())

	logsAndErrors := f.logs.String() + fmt.Sprint(err)
	assert.NotContains(t, logsAndErrors, "state=", "no login URL with a state in a log or an error")
	out := shown.String()
	assert.Contains(t, out, "…(43)", "tokens appear redacted")
	for _, secret := range append(f.fake.Secrets(), appSecret, "another-secret-value-1") {
		assert.NotContains(t, out, secret)
	}
}
