package tokencache_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/tokencache"
)

type spanKey struct{}

// Hooks.BrokerCall wraps every login and renewal: the Authenticator runs in the context
// the hook returns (where a tracer would start its span), and done hears each outcome.
func TestBrokerCallHookWrapsEveryBrokerCall(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	type call struct {
		user, op string
		err      error
	}
	var mu sync.Mutex
	var calls []call
	var seen []any // span values the broker saw in its context
	b := &broker{lifetime: 2 * time.Second}
	look := func(ctx context.Context, _ int64) error {
		mu.Lock()
		seen = append(seen, ctx.Value(spanKey{}))
		mu.Unlock()
		return nil
	}
	b.failLogins(look)
	b.failRenewals(func(ctx context.Context, n int64) error {
		_ = look(ctx, n)
		return errors.New("renewal refused")
	})
	c := e.cache(b, func(o *tokencache.Options) {
		o.Hooks.BrokerCall = func(ctx context.Context, user, op string) (context.Context, func(error)) {
			return context.WithValue(ctx, spanKey{}, op+":"+user), func(err error) {
				mu.Lock()
				calls = append(calls, call{user, op, err})
				mu.Unlock()
			}
		}
	})
	user := e.user("U")
	_, err := c.Token(ctx, user)
	require.NoError(t, err)

	// Stale after half the lifetime: the next Token starts a background renewal, which
	// the broker refuses.
	time.Sleep(1100 * time.Millisecond)
	_, err = c.Token(ctx, user)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) >= 2
	}, 5*time.Second, 10*time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, call{user, "login", nil}, calls[0])
	assert.Equal(t, user, calls[1].user)
	assert.Equal(t, "renew", calls[1].op)
	assert.EqualError(t, calls[1].err, "renewal refused")
	assert.Equal(t, []any{"login:" + user, "renew:" + user}, seen[:2])
}

// A BrokerCall hook may return a nil context and a nil done.
func TestBrokerCallHookMayReturnNils(t *testing.T) {
	e := newEnv(t)
	called := 0
	c := e.cache(&broker{}, func(o *tokencache.Options) {
		o.Hooks.BrokerCall = func(context.Context, string, string) (context.Context, func(error)) {
			called++
			return nil, nil
		}
	})
	_, err := c.Token(context.Background(), e.user("U"))
	require.NoError(t, err)
	assert.Equal(t, 1, called)
}
