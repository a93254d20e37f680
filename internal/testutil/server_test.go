package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStopStart(t *testing.T) {
	t.Parallel()
	for name, newServer := range map[string]func(testing.TB) *Server{
		"redis-server": func(t testing.TB) *Server { return StartRedis(t) },
		"miniredis":    newMiniredis,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testStopStart(t, newServer(t))
		})
	}
}

func testStopStart(t *testing.T, s *Server) {
	ctx := context.Background()
	addr := s.Addr()
	before := s.Client(t)
	key := s.Key("survives")
	require.NoError(t, before.Set(ctx, key, "v", time.Minute).Err())

	s.Stop(t)
	s.Stop(t) // stopping twice is harmless
	downCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	assert.Error(t, before.Ping(downCtx).Err(), "server answers after Stop")

	s.Start(t)
	assert.Equal(t, addr, s.Addr(), "Start must reuse the port")

	// The client created before Stop reconnects by itself; the data is gone.
	err := before.Get(ctx, key).Err()
	require.ErrorIs(t, err, redis.Nil)
	require.NoError(t, before.Set(ctx, key, "again", time.Minute).Err())
	got, err := s.Client(t).Get(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, "again", got)

	// Start on a running server is a test bug.
	r := runRecorded(t, s.Start)
	assert.True(t, r.failed)
	assert.Contains(t, r.msg, "call Stop first")
}
