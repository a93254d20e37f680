package tradovate_test

import (
	"context"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

func accountNames(list []tradovate.Account) []string {
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.Name
	}
	return out
}

// Accounts asks the API that matches how the user logs in, with the token given: no
// login, no session.
func TestAccountsAskTheAPIOfTheLoginMethod(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 2)
	official, tv := f.users[0], f.users[1]
	f.fake.SetAccounts(official, "PAAPEX1361890000010", "APEX13618900000118")
	f.fake.SetAccounts(tv, "PAAPEX2720450000001", "PAAPEX2720450000002")
	creds := f.credentials(t, func(c *tradovate.Credential) {
		if c.Username == official {
			c.Method = tradovate.MethodOfficial
		}
	})
	a := f.auth(t, creds, nil)
	ctx := tokenCtx(t)
	for _, tc := range []struct {
		user string
		ep   tradovatefake.Endpoint
		want []string
	}{
		{official, tradovatefake.AccountList, []string{"PAAPEX1361890000010", "APEX13618900000118"}},
		{tv, tradovatefake.TVAccounts, []string{"PAAPEX2720450000001", "PAAPEX2720450000002"}},
	} {
		tok, err := a.Login(ctx, tc.user)
		require.NoError(t, err)
		got, err := a.Accounts(ctx, tc.user, tok)
		require.NoError(t, err)
		assert.Equal(t, tc.want, accountNames(got))
		assert.NotEmpty(t, got[0].ID)
		assert.Equal(t, 1, f.fake.Calls(tc.ep, tc.user), "one request")
		assert.Equal(t, 1, f.fake.Logins(tc.user), "no login")
	}
	assert.Zero(t, f.fake.Calls(tradovatefake.TVAccounts, official))
	assert.Zero(t, f.fake.Calls(tradovatefake.AccountList, tv))
	for _, r := range f.fake.Requests() {
		if r.Endpoint == tradovatefake.TVAccounts {
			assert.Equal(t, "en", r.Query.Get("locale"))
		}
	}
}

// What the account lists answer besides a list: a refused token, a temporary failure
// (retried), a refusal of the TradingView API, an answer that cannot be read whole.
func TestAccountsErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 2)
	official, tv := f.users[0], f.users[1]
	creds := f.credentials(t, func(c *tradovate.Credential) {
		if c.Username == official {
			c.Method = tradovate.MethodOfficial
		}
	})
	a := f.auth(t, creds, nil)
	ctx := tokenCtx(t)
	otok, err := a.Login(ctx, official)
	require.NoError(t, err)
	ttok, err := a.Login(ctx, tv)
	require.NoError(t, err)
	f.fake.SetAccounts(official, "A1", "A2")

	f.fake.Script(tradovatefake.AccountList, official, tradovatefake.Status(http.StatusServiceUnavailable))
	got, err := a.Accounts(ctx, official, otok)
	require.NoError(t, err, "a 503 is retried")
	assert.Equal(t, []string{"A1", "A2"}, accountNames(got))

	f.fake.Script(tradovatefake.AccountList, official, tradovatefake.Response{
		Body: `[{"id":1,"name":"A1","archived":true},{"id":2,"name":"A2","closed":true},{"id":3,"name":"A3","active":false}]`})
	got, err = a.Accounts(ctx, official, otok)
	require.NoError(t, err)
	assert.Equal(t, []string{"A3"}, accountNames(got), "archived and closed accounts are left out")

	for _, body := range []string{`[{"id":1,"name":"A1"},{"id":2}]`, `[{"id":1,"name":""}]`, `{"d":[]}`, `<html>`} {
		f.fake.Script(tradovatefake.AccountList, official, slices.Repeat([]tradovatefake.Response{{Body: body}}, 3)...)
		_, err = a.Accounts(ctx, official, otok)
		require.ErrorIs(t, err, tradovate.ErrMalformedResponse, body)
	}

	f.fake.Script(tradovatefake.TVAccounts, tv, tradovatefake.ErrorText("Access denied"))
	_, err = a.Accounts(ctx, tv, ttok)
	require.ErrorIs(t, err, tradovate.ErrRequestRefused)
	assert.Contains(t, err.Error(), `accounts for user "`+tv+`"`)
	assert.Contains(t, err.Error(), "Access denied")

	f.fake.Revoke(otok.AccessToken)
	_, err = a.Accounts(ctx, official, otok)
	require.ErrorIs(t, err, tokencache.ErrTokenRejected)
	var apiErr *tradovate.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "account/list", apiErr.Endpoint)
	assert.NotContains(t, err.Error(), otok.AccessToken)

	_, err = a.Accounts(ctx, official, nil)
	require.ErrorIs(t, err, tokencache.ErrTokenRejected)
	_, err = a.Accounts(ctx, "nobody", otok)
	require.ErrorIs(t, err, tradovate.ErrUnknownUser)
	assert.Equal(t, 1, f.fake.Logins(official), "no login")
}

// syncFixture is a fleet of one writing cache, an account map and an AccountSync run
// in the background.
type syncFixture struct {
	*fixture
	user  string
	cache *tokencache.Cache
	m     *tradovate.AccountMap
	sync  *tradovate.AccountSync
	syncs chan syncResult
}

type syncResult struct {
	change tradovate.AccountChange
	err    error
}

func newSyncFixture(t *testing.T, so tradovate.AccountSyncOptions, editCreds func(*tradovate.Credential)) *syncFixture {
	t.Helper()
	f := newFixture(t, tradovatefake.Options{}, 1)
	sf := &syncFixture{fixture: f, user: f.users[0], syncs: make(chan syncResult, 100)}
	creds := f.credentials(t, editCreds)
	var err error
	sf.m, err = tradovate.NewAccountMap(context.Background(), creds, tradovate.AccountOptions{})
	require.NoError(t, err)
	auth := f.auth(t, creds, nil)
	var nudge atomic.Pointer[tradovate.AccountSync] // set once the sync exists
	sf.cache = f.fleet(t, 1, creds, nil, func(o *tokencache.Options) {
		o.LookupUser, o.AccountsFor, o.LegacyKeys = sf.m.LookupUser, sf.m.AccountsFor, true
		o.RetryMin, o.RetryMax = 10*time.Millisecond, 50*time.Millisecond
		o.Hooks.Refreshed = func(user, _ string, _ *tokencache.Token) {
			if s := nudge.Load(); s != nil {
				s.Nudge(user)
			}
		}
	})[0]
	so.Authenticator, so.Cache, so.Map = auth, sf.cache, sf.m
	so.Logger = quietLogger()
	so.OnSync = func(_ context.Context, c tradovate.AccountChange, err error) { sf.syncs <- syncResult{c, err} }
	sf.sync, err = tradovate.NewAccountSync(so)
	require.NoError(t, err)
	nudge.Store(sf.sync)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sf.sync.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return sf
}

// next returns the next ask's result.
func (sf *syncFixture) next(t *testing.T) syncResult {
	t.Helper()
	select {
	case r := <-sf.syncs:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no ask for the accounts")
		return syncResult{}
	}
}

// nextChange returns the next ask's result that changed something.
func (sf *syncFixture) nextChange(t *testing.T) tradovate.AccountChange {
	t.Helper()
	for {
		r := sf.next(t)
		require.NoError(t, r.err)
		if r.change.Changed() {
			return r.change
		}
	}
}

// Accounts opened and closed at the broker reach the map, the cache (an account asked
// for before it was known is served its user's token afterwards) and the legacy keys;
// the asks never log in.
func TestAccountSyncFollowsTheBroker(t *testing.T) {
	t.Parallel()
	sf := newSyncFixture(t, tradovate.AccountSyncOptions{Every: 20 * time.Millisecond, LegacyKeys: true}, nil)
	ctx := tokenCtx(t)
	rdb := sf.redis.Client(t)
	pa1, pa2, apex := sf.redis.Name("PA1"), sf.redis.Name("PA2"), sf.redis.Name("APEX118")
	sf.fake.SetAccounts(sf.user, pa1, pa2)
	reader, err := tokencache.New(tokencache.Options{Redis: rdb, Prefix: sf.redis.Prefix, LookupUser: sf.m.LookupUser})
	require.NoError(t, err)
	t.Cleanup(func() { _ = reader.Close() })
	_, err = reader.Token(ctx, pa1)
	require.ErrorIs(t, err, tokencache.ErrNoToken, "not known yet, and nothing logged in")

	tok, err := sf.cache.Token(ctx, sf.user) // the login the asks wait for
	require.NoError(t, err)
	c := sf.nextChange(t)
	assert.Equal(t, []string{pa1, pa2}, c.Added)
	got, err := reader.Token(ctx, pa1)
	require.NoError(t, err)
	assert.Equal(t, tok.AccessToken, got.AccessToken, "the account follows the map")
	for _, a := range []string{sf.user, pa1, pa2} {
		assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+a).Val(), a)
	}

	// The prop firm opens one account and closes another.
	sf.fake.AddAccount(sf.user, apex)
	sf.fake.RemoveAccount(sf.user, pa1)
	c = sf.nextChange(t)
	assert.Equal(t, []string{apex}, c.Added)
	assert.Equal(t, []string{pa1}, c.Removed)
	assert.Equal(t, []string{pa2, apex}, sf.m.AccountsFor(sf.user))
	assert.Equal(t, tok.AccessToken, rdb.Get(ctx, "token:"+apex).Val(), "the new account's key")
	assert.Zero(t, rdb.Exists(ctx, "token:"+pa1).Val(), "the closed account's key is gone")
	assert.Equal(t, []string{"token:" + sf.user, "token:" + pa2, "token:" + apex}, rdb.LRange(ctx, sf.user, 0, -1).Val())
	assert.Equal(t, 1, sf.fake.Logins(sf.user), "asks never log in")
	assert.Zero(t, sf.fake.Renewals(sf.user))
}

// A failing list keeps the last known accounts and is asked again later; a token the
// broker refuses is not used again: the next ask waits for the next token, which the
// asks do not bring about.
func TestAccountSyncKeepsTheLastMapWhileTheListFails(t *testing.T) {
	t.Parallel()
	sf := newSyncFixture(t, tradovate.AccountSyncOptions{Every: time.Hour, RetryAfter: 20 * time.Millisecond}, nil)
	ctx := tokenCtx(t)
	pa1, pa2 := sf.redis.Name("PA1"), sf.redis.Name("PA2")
	sf.fake.SetAccounts(sf.user, pa1)
	tok, err := sf.cache.Token(ctx, sf.user)
	require.NoError(t, err)
	assert.Equal(t, []string{pa1}, sf.nextChange(t).Added)

	// A new login (the broker closed the session) brings an ask, which fails three
	// times over (each ask retries 5xx itself).
	sf.fake.SetAccounts(sf.user, pa2)
	sf.fake.Script(tradovatefake.TVAccounts, sf.user, slices.Repeat([]tradovatefake.Response{tradovatefake.Status(http.StatusBadGateway)}, 9)...)
	sf.fake.Revoke(tok.AccessToken)
	require.NoError(t, sf.cache.Invalidate(ctx, sf.user, tok.AccessToken))
	next, err := sf.cache.Token(ctx, sf.user)
	require.NoError(t, err)
	require.NotEqual(t, tok.AccessToken, next.AccessToken)
	for range 3 {
		r := sf.next(t)
		require.ErrorIs(t, r.err, tradovate.ErrUnavailable)
		assert.Equal(t, []string{pa1}, sf.m.AccountsFor(sf.user), "the last known accounts are kept")
	}
	c := sf.nextChange(t)
	assert.Equal(t, []string{pa2}, c.Added, "asked again: the change arrives")
	assert.Equal(t, []string{pa1}, c.Removed)
	assert.Equal(t, 1+3*3+2, sf.fake.Calls(tradovatefake.TVAccounts, sf.user),
		"the first ask, three failed asks of three requests, then one lacking pa1 and the one that confirms it")

	// The broker refuses the token for the list: no more asks with it, no login.
	sf.fake.Revoke(next.AccessToken)
	_, err = sf.sync.Sync(ctx, sf.user)
	require.ErrorIs(t, err, tokencache.ErrTokenRejected)
	<-sf.syncs
	calls := sf.fake.Calls(tradovatefake.TVAccounts, sf.user)
	time.Sleep(200 * time.Millisecond) // ten retry periods
	assert.Equal(t, calls, sf.fake.Calls(tradovatefake.TVAccounts, sf.user), "a refused token is not used again")
	assert.Equal(t, 2, sf.fake.Logins(sf.user), "the asks cause no login")
	assert.Equal(t, []string{pa2}, sf.m.AccountsFor(sf.user))
}

// With no token stored, nothing is asked and nobody logs in; Sync says why.
func TestAccountSyncWaitsForAToken(t *testing.T) {
	t.Parallel()
	sf := newSyncFixture(t, tradovate.AccountSyncOptions{Every: 10 * time.Millisecond}, nil)
	sf.fake.SetAccounts(sf.user, sf.redis.Name("PA1"))
	_, err := sf.sync.Sync(tokenCtx(t), sf.user)
	require.ErrorIs(t, err, tokencache.ErrNoToken)
	time.Sleep(200 * time.Millisecond) // twenty periods
	assert.Zero(t, sf.fake.Logins(sf.user))
	assert.Zero(t, sf.fake.Calls(tradovatefake.TVAccounts, ""))
	select {
	case r := <-sf.syncs:
		t.Fatalf("asked without a token: %+v %v", r.change, r.err)
	default:
	}
}

// By default an ask comes with each new token, at most every MinInterval, but always
// after a login; an official login asks the official list.
func TestAccountSyncAfterEachLogin(t *testing.T) {
	t.Parallel()
	sf := newSyncFixture(t, tradovate.AccountSyncOptions{MinInterval: time.Hour},
		func(c *tradovate.Credential) { c.Method = tradovate.MethodOfficial })
	ctx := tokenCtx(t)
	pa1, pa2 := sf.redis.Name("PA1"), sf.redis.Name("PA2")
	sf.fake.SetAccounts(sf.user, pa1)
	tok, err := sf.cache.Token(ctx, sf.user)
	require.NoError(t, err)
	assert.Equal(t, []string{pa1}, sf.nextChange(t).Added)
	assert.Equal(t, 1, sf.fake.Calls(tradovatefake.AccountList, sf.user))

	// A renewal within MinInterval brings no ask.
	sf.fake.AddAccount(sf.user, pa2)
	renewed, err := sf.cache.Set(ctx, sf.user, &tokencache.Token{AccessToken: tok.AccessToken + "x", Expiry: tok.Expiry})
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, 1, sf.fake.Calls(tradovatefake.AccountList, sf.user))

	// A login does.
	sf.fake.Revoke(tok.AccessToken)
	require.NoError(t, sf.cache.Invalidate(ctx, sf.user, renewed.AccessToken))
	_, err = sf.cache.Token(ctx, sf.user)
	require.NoError(t, err)
	assert.Equal(t, []string{pa2}, sf.nextChange(t).Added)
	assert.Equal(t, 2, sf.fake.Logins(sf.user))
}

func TestNewAccountSyncChecksItsOptions(t *testing.T) {
	t.Parallel()
	_, err := tradovate.NewAccountSync(tradovate.AccountSyncOptions{})
	require.ErrorContains(t, err, "Authenticator is required")
}
