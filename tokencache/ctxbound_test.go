package tokencache_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"

	"github.com/brokertoken/brokertoken/internal/testutil"
)

// With ContextTimeoutEnabled on the client (as Options.Redis advises), a caller's
// deadline bounds Token even when Redis stops answering mid-command.
func TestTokenHonoursCtxOnAHalfOpenRedis(t *testing.T) {
	srv := testutil.Redis(t)
	p := testutil.NewProxy(t, srv.Addr())
	opts := srv.Options()
	opts.Addr = p.Addr()
	opts.ContextTimeoutEnabled = true
	opts.ReadTimeout = time.Minute // only the ctx can end the wait
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	c := newCache(t, rdb, srv.Prefix, &broker{})
	_, _ = c.Token(context.Background(), srv.Name("warm")) // connections open
	p.HalfOpen(true)
	defer p.HalfOpen(false)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Token(ctx, srv.Name("cold"))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}
