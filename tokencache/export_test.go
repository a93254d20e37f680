package tokencache

import "time"

// Forget makes the cache's next call for user read Redis, as after a pub/sub reconnect.
// Only for tests and benchmarks.
func (c *Cache) Forget(user string) {
	e := c.userEntry(user)
	e.mu.Lock()
	c.apply(e, event{kind: evResubscribed}, time.Now())
	e.mu.Unlock()
}

// ResolveExpiry is resolveExpiry, for the tests.
var ResolveExpiry = resolveExpiry

// Subscribed reports whether the cache's invalidation subscription has been confirmed.
func (c *Cache) Subscribed() bool { return c.subs.Load() > 0 }
