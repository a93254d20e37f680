package tradovate_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// unknownShapeBody is an accepted login (official: userId; TradingView: "s": "ok") whose
// token sits where no client looks.
const (
	unknownShapeToken = "eyJunknownShapeSecretTokenValue1234567890"
	unknownShapeBody  = `{"s":"ok","userId":7,"d":{"token":"` + unknownShapeToken + `","ttl":4800}}`
)

// TestNoSecretInErrorsOrLogs drives every failure path with a debug logger attached and
// scans every error string (all fmt verbs) and every log line for the password, the
// API secret and every token the fake issued.
func TestNoSecretInErrorsOrLogs(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 2)
	off, tv := f.users[0], f.users[1]
	const sec = "API-SECRET-do-not-leak"
	creds := f.credentials(t, func(c *tradovate.Credential) {
		if c.Username == off {
			c.Method, c.Sec = tradovate.MethodOfficial, sec
		}
	})
	var logs testutil.Buffer
	a := f.auth(t, creds, func(o *tradovate.Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		o.ExchangeTVToken = true
		o.HTTPClient = &http.Client{Timeout: 200 * time.Millisecond}
		o.LoginBudget = 1000 // every failure below must reach the broker
	})
	ctx := context.Background()
	var errs []error
	collect := func(_ *tokencache.Token, err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}

	// Successful logins and renewals, so tokens exist to leak.
	offTok, err := a.Login(ctx, off)
	require.NoError(t, err)
	tvTok, err := a.Login(ctx, tv)
	require.NoError(t, err)
	collect(a.Renew(ctx, off, offTok))

	// Every failure kind, for both login methods.
	failures := []func(user string) tradovatefake.Response{
		func(u string) tradovatefake.Response { // a broker echoing the password
			return tradovatefake.ErrorText("Incorrect username or password " + password(u))
		},
		func(string) tradovatefake.Response { return tradovatefake.Status(500) },
		func(string) tradovatefake.Response { return tradovatefake.Garbage() },
		func(string) tradovatefake.Response { return tradovatefake.NoToken() },
		func(string) tradovatefake.Response { return tradovatefake.Slow(time.Second) },
		func(string) tradovatefake.Response { return tradovatefake.Status(http.StatusBadRequest) },
		func(string) tradovatefake.Response { return tradovatefake.Penalty(1) },
		func(string) tradovatefake.Response { return tradovatefake.Status(http.StatusLocked) },
		func(string) tradovatefake.Response { return tradovatefake.Response{Body: unknownShapeBody} },
		func(string) tradovatefake.Response { return tradovatefake.Cut() },
	}
	for _, answer := range failures {
		f.fake.Script(tradovatefake.AccessTokenRequest, off, answer(off), answer(off), answer(off))
		f.fake.Script(tradovatefake.Authorize, tv, answer(tv), answer(tv), answer(tv))
		require.NoError(t, a.ClearCooldown(ctx, off))
		require.NoError(t, a.ClearCooldown(ctx, tv))
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		collect(a.Login(short, off))
		collect(a.Login(short, tv))
		cancel()
		f.fake.ClearScripts()
	}
	// A login during the cool-down, a revoked token's renewal, a renewal's 5xx.
	collect(a.Login(ctx, off))
	f.fake.Revoke(offTok.AccessToken)
	collect(a.Renew(ctx, off, offTok))
	f.fake.Script(tradovatefake.RenewAccessToken, tv, tradovatefake.Status(503), tradovatefake.Status(503), tradovatefake.Status(503))
	collect(a.Renew(ctx, tv, tvTok))
	require.NotEmpty(t, errs)
	assert.Greater(t, f.fake.Calls(tradovatefake.AccessTokenRequest, off), len(failures), "every failure reached the broker")
	assert.Greater(t, f.fake.Calls(tradovatefake.Authorize, tv), len(failures))

	secrets := []string{password(off), password(tv), sec}
	for _, r := range f.fake.Requests() {
		if auth := r.Header.Get("Authorization"); auth != "" {
			secrets = append(secrets, strings.TrimPrefix(auth, "Bearer "))
		}
	}
	secrets = append(secrets, offTok.AccessToken, offTok.MDAccessToken, tvTok.AccessToken, tvTok.MDAccessToken, unknownShapeToken)
	for _, err := range errs {
		for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
			text := fmt.Sprintf(format, err)
			for _, s := range secrets {
				if s != "" {
					assert.NotContains(t, text, s, "error %s leaks a secret", format)
				}
			}
		}
	}
	for _, s := range secrets {
		if s != "" {
			assert.NotContains(t, logs.String(), s, "the log leaks a secret")
		}
	}
	assert.Contains(t, logs.String(), "logged in")
}
