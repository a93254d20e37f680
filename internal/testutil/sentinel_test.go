package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A failover client writes through the master; when the master is killed, the
// sentinels promote the replica, and the same client reads the replicated key from it
// and writes again. Master and sentinels require passwords and speak only TLS.
func TestSentinelFailsOverWhenTheMasterDies(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two Redis servers and three sentinels")
	}
	s := Sentinel(t, SentinelOptions{Password: randomSecret(t), SentinelPassword: randomSecret(t), TLS: true})
	require.Len(t, s.SentinelAddrs(), 3)
	ctx := context.Background()
	c := s.Client(t)
	key := s.Prefix + ":k"
	require.NoError(t, c.Set(ctx, key, "before", 0).Err())
	require.NoError(t, c.Wait(ctx, 1, time.Second).Err(), "replicated")

	old := s.KillMaster(t)
	master := s.WaitFailover(t, old, 30*time.Second)
	assert.NotEqual(t, old, master)
	assert.Equal(t, master, s.MasterAddr(t))
	require.Eventually(t, func() bool {
		v, err := c.Get(ctx, key).Result()
		return err == nil && v == "before"
	}, 10*time.Second, 50*time.Millisecond)
	require.NoError(t, c.Set(ctx, key, "after", 0).Err())

	// Without the passwords, neither a sentinel nor the master answers.
	for _, o := range []struct{ addr, pw string }{{s.SentinelAddrs()[0], ""}, {master, ""}} {
		nc := redis.NewClient(&redis.Options{Addr: o.addr, Password: o.pw, TLSConfig: s.hostTLS(o.addr)})
		err := nc.Ping(ctx).Err()
		_ = nc.Close()
		assert.ErrorContains(t, err, "NOAUTH", o.addr)
	}
}
