package tokencache

import "time"

// Forget makes the cache's next call for user read Redis, as after a pub/sub reconnect.
// Only for tests and benchmarks.
func (c *Cache) Forget(user string) {
	e := c.userEntry(user)
	e.mu.Lock()
	e.fresh.Store(nil)
	e.confirmed = time.Time{}
	e.mu.Unlock()
}

// Subscribed reports whether the cache's invalidation subscription has been confirmed.
func (c *Cache) Subscribed() bool { return c.subs.Load() > 0 }
