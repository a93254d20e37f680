package tokencache_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/tokencache"
)

func set(t *testing.T, c *tokencache.Cache, user, access string) *tokencache.Token {
	t.Helper()
	tok, err := c.Set(context.Background(), user, &tokencache.Token{AccessToken: access, Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	return tok
}

func receive(t *testing.T, ch <-chan *tokencache.Token) *tokencache.Token {
	t.Helper()
	select {
	case tok, ok := <-ch:
		require.True(t, ok, "channel closed")
		return tok
	case <-time.After(3 * time.Second):
		t.Fatal("no token received")
		return nil
	}
}

func TestWatchDeliversEachNewVersionOnce(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writer := e.cache(nil)
	set(t, writer, user, "v-initial")

	watcher := e.cache(nil)
	_, err := watcher.Token(ctx, user)
	require.NoError(t, err)
	ch1 := watcher.Watch(ctx, user)
	ch2 := watcher.Watch(ctx, user)
	for i := range 3 {
		want := set(t, writer, user, fmt.Sprintf("v-%d", i))
		for _, ch := range []<-chan *tokencache.Token{ch1, ch2} {
			got := receive(t, ch)
			assert.Equal(t, want.AccessToken, got.AccessToken)
			assert.Equal(t, want.Version, got.Version)
		}
	}
	// Nothing else is pending: each version came once.
	select {
	case tok := <-ch1:
		t.Fatalf("unexpected extra token %v", tok)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestWatchSlowReaderGetsTheNewestNotABacklog(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	c := e.cache(nil)
	ch := c.Watch(ctx, user)
	var last *tokencache.Token
	for i := range 5 {
		last = set(t, c, user, fmt.Sprintf("v-%d", i)) // the writer's own cache: no round trip
	}
	got := receive(t, ch)
	assert.Equal(t, last.Version, got.Version)
	select {
	case tok := <-ch:
		t.Fatalf("backlog: %v", tok)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestWatchClosesWithContextAndCache(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	c := e.cache(nil)
	ctx, cancel := context.WithCancel(context.Background())
	ch := c.Watch(ctx, user)
	cancel()
	require.Eventually(t, func() bool {
		select {
		case _, ok := <-ch:
			return !ok
		default:
			return false
		}
	}, time.Second, time.Millisecond)

	ch = c.Watch(context.Background(), user)
	require.NoError(t, c.Close())
	_, ok := <-ch
	assert.False(t, ok)
	_, ok = <-c.Watch(context.Background(), user) // after Close: closed at once
	assert.False(t, ok)
}

func TestWatchedEntryIsRefreshedWithoutCallers(t *testing.T) {
	e := newEnv(t)
	b := &broker{lifetime: time.Second}
	user := e.user("U")
	ctx := context.Background()
	c := e.cache(b, shortLived)
	ch := c.Watch(ctx, user)
	first, err := c.Token(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, first.Version, receive(t, ch).Version)
	// Nobody calls Token: the watcher alone keeps the user fresh, by renewal.
	next := receive(t, ch)
	assert.Greater(t, next.Version, first.Version)
	assert.Contains(t, next.AccessToken, "renew-tok-")
}
