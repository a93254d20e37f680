package zerodha_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/zerodha"
)

func TestAuthorizationHeader(t *testing.T) {
	assert.Equal(t, "token my_key:my_token", zerodha.AuthorizationHeader("my_key", "my_token"))
}

// kiteClient is a service's HTTP client for Kite, through the Transport.
func (f *fixture) kiteClient(t *testing.T, base http.RoundTripper) *http.Client {
	t.Helper()
	service := f.newCache(t, f.app.Authenticator())
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	if base == nil {
		base = tr
	}
	return &http.Client{Transport: f.app.Transport(service, base), Timeout: 10 * time.Second}
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string, error) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body), nil
}

func TestTransportAuthorizesAndStopsAfterATokenException(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	c := f.kiteClient(t, nil)

	resp, body, err := get(t, c, f.kite.URL()+"/user/profile")
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode, body)
	reqs := f.kite.Requests()
	last := reqs[len(reqs)-1]
	assert.Equal(t, "token "+apiKey+":"+f.kite.AccessTokens()[0], last.Header.Get("Authorization"))
	assert.Equal(t, "3", last.Header.Get("X-Kite-Version"))

	f.kite.ExpireAccessTokens()
	resp, body, err = get(t, c, f.kite.URL()+"/user/profile")
	require.NoError(t, err)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.Contains(t, body, "TokenException", "the body is still readable")

	calls := f.kite.Calls(kitefake.UserProfile, "", 0)
	for range 10 {
		_, _, err = get(t, c, f.kite.URL()+"/user/profile")
		require.ErrorIs(t, err, zerodha.ErrLoginRequired)
	}
	assert.Equal(t, calls, f.kite.Calls(kitefake.UserProfile, "", 0), "Kite is not called while waiting for a login")
	f.assertNoSecrets(t, "error", err.Error())

	status, _ = f.login(t)
	require.Equal(t, http.StatusOK, status)
	require.Eventually(t, func() bool {
		resp, _, err := get(t, c, f.kite.URL()+"/user/profile")
		return err == nil && resp.StatusCode == http.StatusOK
	}, 5*time.Second, 20*time.Millisecond)
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestTransportRetriesOnceWithANewerLogin(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	sent := 0
	c := f.kiteClient(t, roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent++
		if sent == 1 {
			// The human logs in again while this request is on its way: Kite has killed
			// the token the request carries.
			status, _ := f.login(t)
			require.Equal(t, http.StatusOK, status)
		}
		return tr.RoundTrip(r)
	}))
	req, err := http.NewRequest(http.MethodPost, f.kite.URL()+"/user/profile", strings.NewReader("x=1"))
	require.NoError(t, err)
	// NewRequest sets GetBody for an in-memory body, so the request can be sent again.
	resp, err := c.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, 2, sent)
	reqs := f.kite.Requests()
	assert.Equal(t, "token "+apiKey+":"+f.kite.AccessTokens()[1], reqs[len(reqs)-1].Header.Get("Authorization"))
}

func TestTransportLeavesOther403sAlone(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"status":"error","message":"Not allowed.","data":null,"error_type":"PermissionException"}`)
	}))
	t.Cleanup(other.Close)
	c := f.kiteClient(t, nil)
	for range 2 {
		resp, body, err := get(t, c, other.URL+"/orders")
		require.NoError(t, err)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
		assert.Contains(t, body, "PermissionException")
	}
	_, err := f.cache.Token(context.Background(), f.app.User())
	assert.NoError(t, err, "the token was not reported")
}

func TestCheckResponse(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			_, _ = io.WriteString(w, "fine")
		case "/token":
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"status":"error","message":"Incorrect `+"`api_key` or `access_token`"+`.","error_type":"TokenException"}`)
		case "/busy":
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `<html>upstream down</html>`)
		}
	}))
	t.Cleanup(srv.Close)
	c := browser(t)
	check := func(path string) error {
		resp, err := c.Get(srv.URL + path + "?access_token=SECRET-QUERY-TOKEN")
		require.NoError(t, err)
		defer resp.Body.Close()
		return zerodha.CheckResponse(resp)
	}
	assert.NoError(t, check("/ok"))

	err := check("/token")
	assert.ErrorIs(t, err, zerodha.ErrTokenException)
	var ae *zerodha.APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "/token", ae.Endpoint)
	assert.Equal(t, http.StatusForbidden, ae.StatusCode)
	assert.False(t, ae.Temporary())
	assert.Equal(t, "zerodha: /token: HTTP 403 TokenException: Incorrect `api_key` or `access_token`.", err.Error())

	err = check("/busy")
	assert.ErrorIs(t, err, zerodha.ErrUnavailable)
	assert.NotErrorIs(t, err, zerodha.ErrTokenException)
	require.ErrorAs(t, err, &ae)
	assert.True(t, ae.Temporary())
	assert.NotContains(t, err.Error(), "upstream down", "a non-Kite body is not quoted")
	assert.NotContains(t, err.Error(), "SECRET-QUERY-TOKEN")
}
