package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
)

// authorize refuses what it cannot do with a usage error (exit 2), prints a URL with
// the daemon's redirect URL, and refuses a pasted address that is not a redirect or
// whose state is unknown, without showing the pasted code.
func TestAuthorizeCommand(t *testing.T) {
	srv := testutil.Redis(t)
	fake := oauthfake.New(t, oauthfake.Options{})
	path := filepath.Join(t.TempDir(), "credentials.json")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`[
		{"broker":"schwab","name":%q,"app_key":"schwabkey","app_secret":%q},
		{"broker":"schwab","name":"schwab_cb","app_key":"schwabkey","app_secret":%q,"callback_url":"https://127.0.0.1"},
		{"broker":"kite","name":"kite_main","api_key":"k","api_secret":%q}]`, schwabName, schwabSecret, schwabSecret, kiteSecret)), 0o600))
	env := map[string]string{"REDIS_URL": (&fixture{redis: srv}).redisURL(), "BROKERTOKEN_CREDENTIALS": path,
		"BROKERTOKEN_PREFIX": srv.Prefix, "SCHWAB_URL": fake.URL(), "BROKERTOKEN_LOGIN_URL": "https://ops.example.com/logins"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"authorize"}, "want one USER"},
		{[]string{"authorize", "kite_main"}, "kite_main is a Kite app"},
		{[]string{"authorize", "nobody"}, `"nobody" is no OAuth2 app`},
	} {
		code, out, errOut := inProcess(t, ctx, env, "", tt.args...)
		assert.Equal(t, exitUsage, code, "%v: %s", tt.args, errOut)
		assert.Empty(t, out)
		assert.Contains(t, errOut, tt.want)
	}

	// The URL carries the page's redirect URL (from --login-url, as the daemon's), or the
	// entry's callback_url.
	code, out, errOut := inProcess(t, ctx, env, "", "authorize", schwabName)
	require.Equal(t, 0, code, errOut)
	assert.True(t, strings.HasPrefix(out, fake.URL()+oauthfake.AuthorizePath+"?"), out)
	assert.Contains(t, out, "redirect_uri=https%3A%2F%2Fops.example.com%2Flogins%2Fschwab_main%2Fredirect")
	assert.Contains(t, errOut, "a daemon's login page completes it")
	code, out, _ = inProcess(t, ctx, env, "", "authorize", "schwab_cb")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "redirect_uri=https%3A%2F%2F127.0.0.1&")

	// Pasted text that is no redirect, nothing pasted, a state never minted.
	code, _, errOut = inProcess(t, ctx, env, "hello there\n", "authorize", "schwab_cb", "--paste")
	assert.Equal(t, exitUsage, code, errOut)
	assert.Contains(t, errOut, "not the address the provider sent the browser to")
	code, _, errOut = inProcess(t, ctx, env, "", "authorize", "schwab_cb", "--paste")
	assert.Equal(t, 1, code, errOut)
	assert.Contains(t, errOut, "nothing was pasted")
	const code0 = "pasted-code-S3cr3t-0123456789"
	code, _, errOut = inProcess(t, ctx, env, "https://127.0.0.1/?code="+code0+"&state=0123456789abcdef0123456789abcdef\n", "authorize", "schwab_cb", "--paste")
	assert.Equal(t, 1, code, errOut)
	assert.Contains(t, errOut, "state is unknown, expired or used")
	assert.NotContains(t, errOut, code0)
	assert.Zero(t, fake.Stats().Exchanges)
}

// Expiry alert leads: a comma list of positive durations, sorted, or off.
func TestParseLeads(t *testing.T) {
	got, err := parseLeads("2h, 24h,2h")
	require.NoError(t, err)
	assert.Equal(t, []time.Duration{2 * time.Hour, 24 * time.Hour}, got)
	got, err = parseLeads("off")
	require.NoError(t, err)
	assert.NotNil(t, got)
	assert.Empty(t, got)
	for _, bad := range []string{"", "1d", "-2h", "0s", "2h,"} {
		_, err := parseLeads(bad)
		assert.Error(t, err, bad)
	}
	code, _, errOut := inProcess(t, context.Background(), map[string]string{}, "", "run", "--oauth-expiry-alerts", "7 days")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, `--oauth-expiry-alerts "7 days": want positive durations`)
}

// The OAuth2 alerts say what happened and where to authorize, without a secret.
func TestOAuthAlertTexts(t *testing.T) {
	a := &alerter{scrub: &scrubber{}, host: "h"}
	a.scrub.add(schwabSecret)
	now := time.Now()
	title, text, sev := a.alertText(alertEvent{Event: eventGrantRevoked, User: schwabName, Broker: "Schwab", Since: now,
		Error: "invalid_grant: refresh token revoked " + schwabSecret, URL: "https://ops.example.com/login", Time: now})
	assert.Equal(t, "Schwab refresh token refused: schwab_main", title)
	assert.Equal(t, "critical", sev)
	assert.Contains(t, text, `open https://ops.example.com/login and press "Log in with Schwab"`)
	body, err := a.render(alertEvent{Event: eventGrantRevoked, User: schwabName, Broker: "Schwab", Since: now, Error: schwabSecret, Time: now})
	require.NoError(t, err)
	assert.NotContains(t, string(body), schwabSecret)
	assert.Contains(t, string(body), "brokertoken authorize schwab_main --paste", "no page: the command")
	title, text, sev = a.alertText(alertEvent{Event: eventRefreshExpiring, User: schwabName, Broker: "Schwab",
		RefreshExpiry: now.Add(2 * time.Hour), Lead: 2 * time.Hour, URL: "https://ops.example.com/login", Time: now})
	assert.Equal(t, "Schwab refresh token expiring: schwab_main", title)
	assert.Equal(t, "warning", sev)
	assert.Contains(t, text, "expires in 2h0m0s")
	assert.Contains(t, text, "alert 2h0m0s before")
}
