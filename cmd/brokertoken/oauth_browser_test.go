package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/browser"
	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
	"github.com/brokertoken/brokertoken/tokencache"
)

// A human authorizes the Schwab app in a real browser (headless Chromium, a phone's
// screen): the daemon's page, "Log in with Schwab", the provider's login form, the
// success page. A Watch-er in another process (a service with reader rights) receives
// the stored token; the page then shows the grant as active with the refresh token's
// expiry, and no page held a secret.
func TestHumanAuthorizesSchwabWithARealBrowser(t *testing.T) {
	b := browser.Start(t)
	const schwabPassword = "schwab-pw-0123"
	d := newOAuthDaemon(t, oauthfake.Options{User: "trader1", LoginPassword: schwabPassword}, nil)
	waitHTTP(t, d.pageURL, http.StatusOK, 30*time.Second)
	w := startWatcher(t, d.env, schwabName)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p := b.NewPage(t)
	p.ShowOnFailure(t)
	require.NoError(t, p.SetViewport(ctx, browser.Phone))
	require.NoError(t, p.Navigate(ctx, d.pageURL))
	section := `section[data-user="` + schwabName + `"]`
	require.NoError(t, p.WaitFor(ctx, `document.querySelector('`+section+`[data-grant="missing"]')`))
	require.NoError(t, p.Click(ctx, section+" button"))
	require.NoError(t, p.WaitFor(ctx, `location.href.startsWith(`+strconv.Quote(d.fake.URL()+oauthfake.AuthorizePath)+`) && document.querySelector("#username")`))
	require.NoError(t, p.Type(ctx, "#username", "trader1"))
	require.NoError(t, p.Type(ctx, "#password", schwabPassword))
	require.NoError(t, p.Click(ctx, "#allow"))
	require.NoError(t, p.WaitFor(ctx, `document.body && document.body.innerText.includes("is authorized for schwab")`))
	redirect, err := p.URL(ctx)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(redirect, d.pageURL+"/"+schwabName+"/redirect?"), redirect)

	reader, err := tokencache.New(tokencache.Options{Redis: d.rdb, Prefix: d.prefix})
	require.NoError(t, err)
	defer reader.Close()
	st, err := reader.Status(ctx, schwabName)
	require.NoError(t, err)
	require.NotNil(t, st.Token)
	assert.True(t, d.apiAccepts(st.Token.AccessToken))
	version, hash, _ := w.next(t, 30*time.Second)
	sum := sha256.Sum256([]byte(st.Token.AccessToken))
	assert.Equal(t, st.Token.Version, version)
	assert.Equal(t, hex.EncodeToString(sum[:]), hash, "the watcher in another process has the stored token")

	require.NoError(t, p.Navigate(ctx, d.pageURL))
	require.NoError(t, p.WaitFor(ctx, `document.querySelector('`+section+`[data-state="valid"][data-grant="active"]')`))
	text, err := p.Text(ctx)
	require.NoError(t, err)
	assert.Contains(t, text, "The refresh token expires at")
	html, err := p.HTML(ctx)
	require.NoError(t, err)
	d.assertNoSecrets(html, text)
	assert.NotContains(t, html+text, schwabPassword)
	assert.Equal(t, 1, d.fake.Stats().Exchanges)
}
