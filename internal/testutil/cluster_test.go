package testutil

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := Cluster(t)
	require.Len(t, c.Addrs(), clusterMasters)
	assert.Equal(t, c.Prefix+"-alice", c.Name("alice"))
	client := c.Client(t)

	// Pick one key per shard, using the server's own slot computation.
	slots, err := client.ClusterSlots(ctx).Result()
	require.NoError(t, err)
	require.Len(t, slots, clusterMasters, "one slot range per master")
	var keys []string
	covered := make(map[int]bool)
	for i := 0; len(covered) < len(slots) && i < 1000; i++ {
		key := c.Prefix + ":key:" + strconv.Itoa(i)
		slot, err := client.ClusterKeySlot(ctx, key).Result()
		require.NoError(t, err)
		for r, rng := range slots {
			if int64(rng.Start) <= slot && slot <= int64(rng.End) && !covered[r] {
				covered[r] = true
				keys = append(keys, key)
			}
		}
	}
	require.Len(t, keys, clusterMasters, "found a key for every shard")
	for _, key := range keys {
		require.NoError(t, client.Set(ctx, key, key, time.Minute).Err())
	}

	// Each master holds at least one of the keys.
	var mu sync.Mutex
	perMaster := make(map[string]int)
	err = client.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		found, _, err := m.Scan(ctx, 0, c.Prefix+":*", 1000).Result()
		if err != nil {
			return err
		}
		mu.Lock()
		perMaster[m.Options().Addr] = len(found)
		mu.Unlock()
		return nil
	})
	require.NoError(t, err)
	require.Len(t, perMaster, clusterMasters)
	for addr, n := range perMaster {
		assert.GreaterOrEqual(t, n, 1, "master %s holds no key", addr)
	}

	// A second, independent client reads them back.
	other := c.Client(t)
	for _, key := range keys {
		got, err := other.Get(ctx, key).Result()
		require.NoError(t, err)
		assert.Equal(t, key, got)
	}
}
