package oauth2adapter_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tokencache/oauth2adapter"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

// broker issues numbered tokens that live an hour.
type broker struct{ n atomic.Int64 }

func (b *broker) Login(_ context.Context, user string) (*tokencache.Token, error) {
	return &tokencache.Token{
		AccessToken: fmt.Sprintf("token-%d-%s", b.n.Add(1), user),
		Expiry:      time.Now().Add(time.Hour).Truncate(time.Millisecond),
	}, nil
}

var _ tokencache.Authenticator = (*broker)(nil)

func newCache(t *testing.T, auth tokencache.Authenticator) (*tokencache.Cache, *testutil.Server) {
	srv := testutil.Redis(t)
	opts := tokencache.Options{Redis: srv.Client(t), Prefix: srv.Prefix}
	if auth != nil {
		opts.Authenticator = auth
	}
	c, err := tokencache.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c, srv
}

// api records the Authorization header of every request.
type api struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
}

func newAPI(t *testing.T) *api {
	a := &api{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen = append(a.seen, r.Header.Get("Authorization"))
		a.mu.Unlock()
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *api) get(t *testing.T, c *http.Client) string {
	t.Helper()
	resp, err := c.Get(a.URL)
	require.NoError(t, err)
	resp.Body.Close()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[len(a.seen)-1]
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTokenSourceConvertsTheCachesToken(t *testing.T) {
	ctx := testContext(t)
	cache, _ := newCache(t, &broker{})
	want, err := cache.Token(ctx, "APEX_1")
	require.NoError(t, err)

	got, err := oauth2adapter.TokenSource(ctx, cache.Source("APEX_1")).Token()
	require.NoError(t, err)
	assert.Equal(t, want.AccessToken, got.AccessToken)
	assert.Equal(t, "Bearer", got.Type())
	assert.True(t, want.Expiry.Equal(got.Expiry))
	assert.True(t, got.Valid())
}

func TestClientsSeeEveryNewTokenAtOnce(t *testing.T) {
	ctx := testContext(t)
	cache, _ := newCache(t, &broker{})
	ts := oauth2adapter.TokenSource(ctx, cache.Source("APEX_1"))
	a := newAPI(t)
	for name, client := range map[string]*http.Client{
		"NewClient":        oauth2adapter.NewClient(ctx, ts),
		"oauth2.Transport": {Transport: &oauth2.Transport{Source: ts}},
	} {
		t.Run(name, func(t *testing.T) {
			first, err := cache.Token(ctx, "APEX_1")
			require.NoError(t, err)
			assert.Equal(t, "Bearer "+first.AccessToken, a.get(t, client))

			next, err := cache.Set(ctx, "APEX_1", &tokencache.Token{
				AccessToken: "set-" + name, Expiry: time.Now().Add(time.Hour),
			})
			require.NoError(t, err)
			assert.Equal(t, "Bearer "+next.AccessToken, a.get(t, client), "the next request carries the new token")
		})
	}
}

// oauth2.NewClient works, but its ReuseTokenSource keeps the first token until shortly
// before its expiry: the reason for oauth2adapter.NewClient.
func TestOAuth2NewClientWorksButKeepsItsFirstToken(t *testing.T) {
	ctx := testContext(t)
	cache, _ := newCache(t, &broker{})
	client := oauth2.NewClient(ctx, oauth2adapter.TokenSource(ctx, cache.Source("APEX_1")))
	a := newAPI(t)
	first, err := cache.Token(ctx, "APEX_1")
	require.NoError(t, err)
	assert.Equal(t, "Bearer "+first.AccessToken, a.get(t, client))
	_, err = cache.Set(ctx, "APEX_1", &tokencache.Token{AccessToken: "newer", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	assert.Equal(t, "Bearer "+first.AccessToken, a.get(t, client))
}

func TestErrorsPassThroughUnchanged(t *testing.T) {
	ctx := testContext(t)
	readOnly, _ := newCache(t, nil) // nothing stored: ErrNoToken
	ts := oauth2adapter.TokenSource(ctx, readOnly.Source("APEX_1"))
	_, err := ts.Token()
	assert.ErrorIs(t, err, tokencache.ErrNoToken)

	a := newAPI(t)
	_, err = oauth2adapter.NewClient(ctx, ts).Get(a.URL)
	assert.ErrorIs(t, err, tokencache.ErrNoToken, "through http.Client's *url.Error")
	assert.Empty(t, a.seen, "no request without a token")
}

func TestAContextDoneFailsCallsThatWait(t *testing.T) {
	cache, _ := newCache(t, &broker{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := oauth2adapter.TokenSource(ctx, cache.Source("APEX_1")).Token()
	assert.ErrorIs(t, err, context.Canceled)
}

func TestNewClientTakesTheBaseClientFromTheContext(t *testing.T) {
	var used atomic.Bool
	base := &http.Client{
		Timeout: 7 * time.Second,
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			used.Store(true)
			return http.DefaultTransport.RoundTrip(r)
		}),
	}
	ctx := context.WithValue(testContext(t), oauth2.HTTPClient, base)
	cache, _ := newCache(t, &broker{})
	client := oauth2adapter.NewClient(ctx, oauth2adapter.TokenSource(ctx, cache.Source("APEX_1")))
	assert.Equal(t, 7*time.Second, client.Timeout)
	a := newAPI(t)
	assert.Contains(t, a.get(t, client), "Bearer token-1-")
	assert.True(t, used.Load())

	plain := oauth2adapter.NewClient(context.Background(), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"}))
	assert.Equal(t, "Bearer x", a.get(t, plain))
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestConcurrentUse(t *testing.T) {
	ctx := testContext(t)
	b := &broker{}
	cache, _ := newCache(t, b)
	ts := oauth2adapter.TokenSource(ctx, cache.Source("APEX_1"))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				if _, err := ts.Token(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	assert.Equal(t, int64(1), b.n.Load(), "one login for every caller")
}
