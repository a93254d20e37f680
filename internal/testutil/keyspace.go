package testutil

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// WatchDeletes records every DEL of keys on s, a redis-server of the test's own, through
// keyspace notifications (it sets notify-keyspace-events), and returns a function that
// lists the keys deleted so far, once per DEL, in order. A test that observes only the
// final state of a key cannot tell a key that was never deleted from one deleted and
// written again; this can. It needs a real redis-server (see StartRedis).
func (s *Server) WatchDeletes(t testing.TB, keys ...string) func() []string {
	t.Helper()
	if s.Kind != kindRedisServer {
		skipOrFail(t, "WatchDeletes needs a redis-server of the test's own (keyspace notifications), not %s", s.Kind)
	}
	ctx := context.Background()
	admin := s.Client(t)
	if err := admin.ConfigSet(ctx, "notify-keyspace-events", "Kg").Err(); err != nil {
		t.Fatalf("testutil: enable keyspace notifications: %v", err)
	}
	marker := s.Name("watch-deletes-marker")
	const pfx = "__keyspace@0__:"
	channels := []string{pfx + marker}
	for _, k := range keys {
		channels = append(channels, pfx+k)
	}
	sub := admin.Subscribe(ctx, channels...)
	if _, err := sub.Receive(ctx); err != nil { // subscribed before the test writes
		t.Fatalf("testutil: subscribe to keyspace notifications: %v", err)
	}
	var mu sync.Mutex
	var deleted []string
	markers, asked := 0, 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range sub.Channel() {
			if m.Payload != "del" {
				continue
			}
			mu.Lock()
			if k := strings.TrimPrefix(m.Channel, pfx); k == marker {
				markers++
			} else {
				deleted = append(deleted, k)
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = sub.Close(); <-done })
	return func() []string {
		t.Helper()
		// Notifications come in the order of the commands: once the marker's DEL, sent
		// now, is heard, every DEL before it has been.
		asked++
		if err := admin.Set(ctx, marker, "x", 0).Err(); err != nil {
			t.Fatalf("testutil: %v", err)
		}
		if err := admin.Del(ctx, marker).Err(); err != nil {
			t.Fatalf("testutil: %v", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			if markers >= asked {
				out := slices.Clone(deleted)
				mu.Unlock()
				return out
			}
			mu.Unlock()
			if time.Now().After(deadline) {
				t.Fatal("testutil: keyspace notifications did not arrive within 10s")
			}
			time.Sleep(time.Millisecond)
		}
	}
}
