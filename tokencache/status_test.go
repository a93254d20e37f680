package tokencache_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/tokencache"
)

func TestStatusReportsStateAndOrigin(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b := &broker{lifetime: 2 * time.Second}
	c := e.cache(b, shortLived)
	user := e.user("U")

	st, err := c.Status(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, tokencache.StateMissing, st.State)
	assert.Nil(t, st.Token)

	tok, err := c.Token(ctx, user)
	require.NoError(t, err)
	st, err = c.Status(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, tokencache.StateFresh, st.State)
	assert.Equal(t, "login", st.ObtainedBy)
	assert.Equal(t, tok.Version, st.Token.Version)

	time.Sleep(time.Until(tok.Expiry.Add(-800 * time.Millisecond))) // past the refresh point
	st, err = c.Status(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, tokencache.StateStale, st.State)
	time.Sleep(time.Until(tok.Expiry.Add(-100 * time.Millisecond)))
	st, err = c.Status(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, tokencache.StateExpired, st.State)
}

func TestHooksSeeRefreshesWaitsAndInvalidations(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var mu sync.Mutex
	events := map[string]int{}
	count := func(k string) {
		mu.Lock()
		events[k]++
		mu.Unlock()
	}
	hooks := func(o *tokencache.Options) {
		o.Hooks = tokencache.Hooks{
			Refreshed:     func(_, op string, _ *tokencache.Token) { count("refreshed:" + op) },
			RefreshFailed: func(_, op string, _ error) { count("failed:" + op) },
			LeaseWait:     func(string, time.Duration) { count("leasewait") },
			Invalidated:   func(string, int64) { count("invalidated") },
		}
	}
	b := &broker{delay: 100 * time.Millisecond}
	a, c := e.cache(b, hooks), e.cache(b, hooks)
	user := e.user("U")
	var wg sync.WaitGroup
	for _, x := range []*tokencache.Cache{a, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := x.Token(ctx, user)
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	_, err := a.Set(ctx, user, &tokencache.Token{AccessToken: "set-by-a", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	b.failLogins(func(context.Context, int64) error { return assert.AnError })
	_, err = a.Token(ctx, e.user("other"))
	require.Error(t, err)

	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		// b hears of a's write; a itself may too, when the message beats its own install.
		return events["invalidated"] >= 1
	}, 2*time.Second, 5*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 1, events["refreshed:login"])
	assert.Equal(t, 1, events["leasewait"])
	assert.Equal(t, 1, events["failed:login"])
}
