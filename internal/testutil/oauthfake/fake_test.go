package oauthfake_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

const (
	clientID = "fake-app-key"
	secret   = "fake-app-secret"
	callback = "https://127.0.0.1:8182/callback"
)

func setup(t *testing.T, opts oauthfake.Options) (*oauthfake.Server, *oauth2.Config) {
	t.Helper()
	s := oauthfake.New(t, opts)
	s.AddClient(clientID, secret, callback)
	return s, &oauth2.Config{ClientID: clientID, ClientSecret: secret, RedirectURL: callback,
		Endpoint: oauth2.Endpoint{AuthURL: s.URL() + oauthfake.AuthorizePath, TokenURL: s.URL() + oauthfake.TokenPath,
			AuthStyle: oauth2.AuthStyleInHeader}}
}

// noFollow is a client that stops at the first redirect.
var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// authorize opens the authorization URL and returns the callback's query.
func authorize(t *testing.T, authURL string) url.Values {
	t.Helper()
	resp, err := noFollow.Get(authURL)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode)
	loc, err := url.Parse(resp.Header.Get("Location"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(loc.String(), callback), loc.String())
	return loc.Query()
}

func TestCodeFlowRotationAndReuse(t *testing.T) {
	s, conf := setup(t, oauthfake.Options{})
	ctx := context.Background()
	q := authorize(t, conf.AuthCodeURL("st4te"))
	assert.Equal(t, "st4te", q.Get("state"))
	assert.NotEmpty(t, q.Get("session"))
	tok, err := conf.Exchange(ctx, q.Get("code"))
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(30*time.Minute), tok.Expiry, time.Minute)
	assert.Equal(t, "valid", s.RefreshTokenState(tok.RefreshToken))

	_, err = conf.Exchange(ctx, q.Get("code"))
	assertGrantError(t, err, "invalid_grant")
	assert.Equal(t, "revoked", s.RefreshTokenState(tok.RefreshToken), "a code used twice revokes what it issued")

	tok, err = conf.Exchange(ctx, authorize(t, conf.AuthCodeURL("s2")).Get("code"))
	require.NoError(t, err)
	rt1 := tok.RefreshToken
	tok2, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: rt1}).Token()
	require.NoError(t, err)
	assert.NotEqual(t, rt1, tok2.RefreshToken, "refresh tokens rotate")
	assert.Equal(t, "used", s.RefreshTokenState(rt1))
	assert.Equal(t, http.StatusOK, apiStatus(t, s, tok2.AccessToken))

	_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: rt1}).Token()
	assertGrantError(t, err, "invalid_grant")
	assert.Equal(t, "revoked", s.RefreshTokenState(tok2.RefreshToken), "reuse revokes the family")
	assert.Equal(t, http.StatusUnauthorized, apiStatus(t, s, tok2.AccessToken))
	_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok2.RefreshToken}).Token()
	assertGrantError(t, err, "invalid_grant")
	st := s.Stats()
	assert.Equal(t, oauthfake.Stats{Exchanges: 2, Refreshes: 1, ReuseDetections: 2, Revocations: 2, Refused: 3, APICalls: 1, APIRejected: 1}, st)
}

func assertGrantError(t *testing.T, err error, code string) {
	t.Helper()
	var re *oauth2.RetrieveError
	require.True(t, errors.As(err, &re), "%v", err)
	assert.Equal(t, code, re.ErrorCode)
	assert.Equal(t, http.StatusBadRequest, re.Response.StatusCode)
}

func apiStatus(t *testing.T, s *oauthfake.Server, tok string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL()+oauthfake.AccountsPath, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestTokenEndpointIsStrict(t *testing.T) {
	s, conf := setup(t, oauthfake.Options{CodeTTL: 50 * time.Millisecond})
	ctx := context.Background()
	post := func(form url.Values, user, pass string) (int, map[string]string) {
		req, _ := http.NewRequest(http.MethodPost, s.URL()+oauthfake.TokenPath, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var body map[string]string
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		return resp.StatusCode, body
	}
	code := authorize(t, conf.AuthCodeURL("s")).Get("code")
	grant := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {callback}}
	st, body := post(grant, "", "")
	assert.Equal(t, http.StatusUnauthorized, st, "no Basic auth")
	assert.Equal(t, "invalid_client", body["error"])
	st, _ = post(grant, clientID, "wrong")
	assert.Equal(t, http.StatusUnauthorized, st)
	inBody := url.Values{"client_id": {clientID}, "client_secret": {secret}}
	for k, v := range grant {
		inBody[k] = v
	}
	st, body = post(inBody, "", "")
	assert.Equal(t, http.StatusUnauthorized, st, "credentials in the body are refused")
	assert.Contains(t, body["error_description"], "Basic")
	wrongRedirect := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"https://elsewhere/"}}
	st, body = post(wrongRedirect, clientID, secret)
	assert.Equal(t, http.StatusBadRequest, st)
	assert.Equal(t, "invalid_grant", body["error"])
	st, _ = post(grant, clientID, secret)
	assert.Equal(t, http.StatusBadRequest, st, "a code refused once is used up")

	late := authorize(t, conf.AuthCodeURL("s")).Get("code")
	time.Sleep(100 * time.Millisecond)
	_, err := conf.Exchange(ctx, late)
	assertGrantError(t, err, "invalid_grant")

	st, body = post(url.Values{"grant_type": {"password"}}, clientID, secret)
	assert.Equal(t, http.StatusBadRequest, st)
	assert.Equal(t, "unsupported_grant_type", body["error"])

	resp, err := noFollow.Get(s.URL() + oauthfake.AuthorizePath + "?response_type=code&client_id=" + clientID + "&redirect_uri=https://evil.example/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "a foreign redirect_uri is never redirected to")
}

func TestPKCEAndKeptRefreshTokens(t *testing.T) {
	s, conf := setup(t, oauthfake.Options{KeepRefreshTokens: true, ReportRefreshExpiry: true, RefreshTokenLifetime: time.Hour})
	ctx := context.Background()
	v := oauth2.GenerateVerifier()
	code := authorize(t, conf.AuthCodeURL("s", oauth2.S256ChallengeOption(v))).Get("code")
	_, err := conf.Exchange(ctx, code, oauth2.VerifierOption(oauth2.GenerateVerifier()))
	assertGrantError(t, err, "invalid_grant")
	code = authorize(t, conf.AuthCodeURL("s", oauth2.S256ChallengeOption(v))).Get("code")
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(v))
	require.NoError(t, err)
	assert.InDelta(t, 3600, tok.Extra("refresh_token_expires_in"), 2)
	for range 3 {
		t2, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
		require.NoError(t, err)
		assert.Equal(t, tok.RefreshToken, t2.RefreshToken)
	}
	assert.Equal(t, 3, s.Stats().Refreshes)

	// A verifier for a code issued without a challenge is refused (RFC 7636 4.6).
	code = authorize(t, conf.AuthCodeURL("s")).Get("code")
	_, err = conf.Exchange(ctx, code, oauth2.VerifierOption(v))
	assertGrantError(t, err, "invalid_grant")
	s.RevokeAll()
	_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	assertGrantError(t, err, "invalid_grant")
}

// A new authorization of the app ends its earlier grants: their refresh and access
// tokens are refused from then on.
func TestNewAuthorizationRevokesEarlierGrants(t *testing.T) {
	s, conf := setup(t, oauthfake.Options{})
	ctx := context.Background()
	first, err := conf.Exchange(ctx, authorize(t, conf.AuthCodeURL("a")).Get("code"))
	require.NoError(t, err)
	second, err := conf.Exchange(ctx, authorize(t, conf.AuthCodeURL("b")).Get("code"))
	require.NoError(t, err)
	_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: first.RefreshToken}).Token()
	assertGrantError(t, err, "invalid_grant")
	assert.Equal(t, http.StatusUnauthorized, apiStatus(t, s, first.AccessToken))
	assert.Equal(t, http.StatusOK, apiStatus(t, s, second.AccessToken))
	_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: second.RefreshToken}).Token()
	require.NoError(t, err)
	assert.Equal(t, 1, s.Stats().Superseded)
}

func TestLoginForm(t *testing.T) {
	s, conf := setup(t, oauthfake.Options{LoginPassword: "hunter22", User: "trader1"})
	resp, err := noFollow.Get(conf.AuthCodeURL("xyz"))
	require.NoError(t, err)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(page), `name="password"`)
	form := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {callback}, "state": {"xyz"},
		"username": {"trader1"}, "password": {"wrong"}}
	resp, err = noFollow.PostForm(s.URL()+oauthfake.AuthorizePath, form)
	require.NoError(t, err)
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(page), "Invalid username or password")
	form.Set("password", "hunter22")
	resp, err = noFollow.PostForm(s.URL()+oauthfake.AuthorizePath, form)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	assert.Equal(t, "xyz", loc.Query().Get("state"))
	assert.NotEmpty(t, loc.Query().Get("code"))
	form.Set("action", "deny")
	form.Set("password", "")
	resp, err = noFollow.PostForm(s.URL()+oauthfake.AuthorizePath, form)
	require.NoError(t, err)
	resp.Body.Close()
	loc, _ = url.Parse(resp.Header.Get("Location"))
	assert.Equal(t, "access_denied", loc.Query().Get("error"))
}
