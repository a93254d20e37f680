package tokencache_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/tokencache"
)

// apiServer refuses revoked bearer tokens, and records what it was sent.
type apiServer struct {
	mu      sync.Mutex
	revoked map[string]bool
	seen    []string // "token body" per request
}

func (s *apiServer) revoke(tok string) {
	s.mu.Lock()
	s.revoked[tok] = true
	s.mu.Unlock()
}

func (s *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	s.seen = append(s.seen, tok+" "+string(body))
	ok := tok != "" && !s.revoked[tok]
	s.mu.Unlock()
	if !ok {
		http.Error(w, "Access is denied", http.StatusUnauthorized)
		return
	}
	_, _ = io.WriteString(w, "ok:"+string(body))
}

func TestTransportRetriesOnceAfter401(t *testing.T) {
	e := newEnv(t)
	b := &broker{}
	user := e.user("U")
	ctx := context.Background()
	c := e.cache(b)
	first, err := c.Token(ctx, user)
	require.NoError(t, err)

	api := &apiServer{revoked: map[string]bool{}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	client := &http.Client{Transport: &tokencache.Transport{Cache: c, Account: user}}

	// The broker revoked the first token (say another session took its place).
	api.revoke(first.AccessToken)
	resp, err := client.Post(srv.URL+"/order/placeorder", "application/json", strings.NewReader(`{"qty":1}`))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Equal(t, `ok:{"qty":1}`, string(body), "the body was sent again")
	assert.EqualValues(t, 2, b.logins.Load(), "one Invalidate, one new login")
	require.Len(t, api.seen, 2)
	assert.Equal(t, first.AccessToken+` {"qty":1}`, api.seen[0])

	// A body that cannot be replayed gets the 401 back, and no retry.
	second, err := c.Token(ctx, user)
	require.NoError(t, err)
	api.revoke(second.AccessToken)
	req, err := http.NewRequest(http.MethodPost, srv.URL, io.NopCloser(strings.NewReader("once")))
	require.NoError(t, err)
	resp, err = client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Len(t, api.seen, 3)
}

func TestTransportReturnsTokenErrors(t *testing.T) {
	e := newEnv(t)
	c := e.cache(nil)
	client := &http.Client{Transport: &tokencache.Transport{Cache: c, Account: e.user("U")}}
	_, err := client.Get("http://127.0.0.1:1/never-called")
	require.ErrorIs(t, err, tokencache.ErrNoToken)
}
