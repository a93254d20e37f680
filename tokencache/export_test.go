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

// Awaiting reports whether a refresh of user's token waits for another process's (it
// holds no lease and listens for the announcement). Only for tests.
func (c *Cache) Awaiting(user string) bool {
	e := c.userEntry(user)
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.awaiting
}
