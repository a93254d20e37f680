package oauthbroker_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/oauthbroker/schwab"
	"github.com/brokertoken/brokertoken/tokencache"
)

// completeFlow plays the human for b: mints an authorization URL, lets the fake
// redirect, and completes with the callback's query.
func completeFlow(t *testing.T, b *oauthbroker.Broker, store oauthbroker.Store) *tokencache.Token {
	t.Helper()
	ctx := context.Background()
	link, err := b.LoginURL(ctx)
	require.NoError(t, err)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(link)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode)
	cb, err := url.Parse(resp.Header.Get("Location"))
	require.NoError(t, err)
	tok, err := b.Complete(ctx, store, cb.Query())
	require.NoError(t, err)
	return tok
}

// The README's roles: the writer does everything the package needs; a reader sees the
// status but never the refresh token, the login states or the rotation scripts.
func TestACLRoles(t *testing.T) {
	f := newFixture(t, fixtureConfig{})
	roles := testutil.ACLRoles(t, f.redis.Prefix)
	writer := f.redis.ACLClient(t, roles["writer"]...)
	reader := f.redis.ACLClient(t, roles["reader"]...)
	ctx := context.Background()

	wb := f.broker(t, func(o *oauthbroker.Options) { o.Redis = writer; o.CommitReplicas = 1 }) // WAIT too
	wc, err := tokencache.New(tokencache.Options{Redis: writer, Prefix: f.redis.Prefix, Authenticator: wb.Authenticator()})
	require.NoError(t, err)
	defer wc.Close()
	completeFlow(t, wb, wc)
	tok, err := wb.Authenticator().Login(ctx, f.opts.User)
	require.NoError(t, err, "the writer refreshes")
	assert.NotContains(t, f.logs.String(), "WAIT after storing the rotation failed", "the writer may WAIT")
	assert.NotEmpty(t, tok.AccessToken)
	_, err = wb.Alerts(ctx)
	require.NoError(t, err, "the writer claims alerts")
	link, err := wb.LoginURL(ctx)
	require.NoError(t, err)
	state := mustQuery(t, link).Get("state")

	secretKey := f.redis.Prefix + ":secret:{" + f.opts.User + "}:oauth"
	assert.NotEmpty(t, writer.Get(ctx, secretKey).Val(), "the writer reads the refresh token")
	for _, key := range []string{secretKey, f.redis.Prefix + ":oauth:state:" + state} {
		err := reader.Get(ctx, key).Err()
		require.Error(t, err, key)
		assert.Contains(t, err.Error(), "NOPERM", key)
	}
	st, err := oauthbroker.ReadStatus(ctx, reader, f.redis.Prefix, f.opts.User)
	require.NoError(t, err, "a reader reads the status")
	assert.Equal(t, oauthbroker.StateActive, st.State)
	assert.EqualValues(t, 2, st.Generation)

	rb := f.broker(t, func(o *oauthbroker.Options) { o.Redis = reader })
	_, err = rb.Authenticator().Login(ctx, f.opts.User)
	require.Error(t, err, "a reader cannot refresh")
	assert.Contains(t, err.Error(), "NOPERM")
	assert.Contains(t, err.Error(), secretKey, "the error names the keys the writer role needs")
	assert.Equal(t, 1, f.fake.Stats().Refreshes, "nothing was sent for the reader")

	f.fake.RevokeAll()
	_, err = wb.Authenticator().Login(ctx, f.opts.User)
	assert.ErrorIs(t, err, oauthbroker.ErrRevoked, "the writer records a revocation")
	st, err = oauthbroker.ReadStatus(ctx, reader, f.redis.Prefix, f.opts.User)
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateRevoked, st.State)
	alerts, err := wb.Alerts(ctx)
	require.NoError(t, err)
	require.Len(t, alerts, 1)
	assert.Equal(t, oauthbroker.AlertRevoked, alerts[0].Kind)
	ok, err := wb.Ack(ctx, alerts[0])
	require.NoError(t, err, "the writer acknowledges alerts")
	assert.True(t, ok)
	refusedKey := secretKey + ":refused"
	assert.NotEmpty(t, writer.Get(ctx, refusedKey).Val(), "the writer reads the refused refresh token")
	require.ErrorContains(t, reader.Get(ctx, refusedKey).Err(), "NOPERM", "a reader does not")
}

func mustQuery(t *testing.T, link string) url.Values {
	t.Helper()
	u, err := url.Parse(link)
	require.NoError(t, err)
	return u.Query()
}

// On Redis Cluster, every key a script touches has the user's hash tag: authorize,
// refresh, revoke and the status work across slots.
func TestOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	cl := testutil.Cluster(t)
	fake := oauthfake.New(t, oauthfake.Options{})
	fake.AddClient(appKey, appSecret, "https://ops.example.com/callback")
	rdb := cl.Client(t)
	b, err := oauthbroker.New(oauthbroker.Options{Provider: schwab.ProviderAt(fake.URL()), ClientID: appKey, ClientSecret: appSecret,
		RedirectURL: "https://ops.example.com/callback", User: cl.Name("schwab"), Redis: rdb, Prefix: cl.Prefix, RequestTimeout: 5 * time.Second})
	require.NoError(t, err)
	c, err := tokencache.New(tokencache.Options{Redis: rdb, Prefix: cl.Prefix, Authenticator: b.Authenticator()})
	require.NoError(t, err)
	defer c.Close()
	ctx := context.Background()
	first := completeFlow(t, b, c)
	tok, err := b.Authenticator().Renew(ctx, b.User(), first)
	require.NoError(t, err)
	assert.NotEqual(t, first.AccessToken, tok.AccessToken)
	fake.RevokeAll()
	_, err = b.Authenticator().Login(ctx, b.User())
	assert.ErrorIs(t, err, oauthbroker.ErrRevoked)
	st, err := b.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateRevoked, st.State)
	completeFlow(t, b, c)
	st, err = b.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, oauthbroker.StateActive, st.State)
	assert.EqualValues(t, 3, st.Generation)
}
