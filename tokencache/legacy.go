package tokencache

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// legacyTokenKeys are the token:{account} keys of a user: the user's own first, then
// each of its accounts once.
func (c *Cache) legacyTokenKeys(user string) []string {
	keys := []string{"token:" + user}
	seen := map[string]bool{user: true}
	for _, a := range c.opts.AccountsFor(user) {
		if !seen[a] {
			seen[a] = true
			keys = append(keys, "token:"+a)
		}
	}
	return keys
}

// legacyTimeFormat is ISO-8601 as Python's datetime.fromisoformat reads it.
const legacyTimeFormat = "2006-01-02T15:04:05.000000+00:00"

// writeLegacy writes the legacy keys of t when Options.LegacyKeys is on. Failures are
// logged, not returned: the versioned record is the source of truth.
func (c *Cache) writeLegacy(ctx context.Context, user string, t *Token) {
	if !c.opts.LegacyKeys {
		return
	}
	if c.legacyOwner.Load() == nil { // not claimed yet: claim before the first write
		if err := c.ClaimLegacyKeys(ctx); err != nil {
			c.log.Error("tokencache: not writing the legacy keys", "user", user, "err", err)
			return
		}
	}
	if owner := c.legacyOwnedElsewhere(); owner != "" {
		return // logged by ClaimLegacyKeys's caller
	}
	if err := c.legacy(ctx, user, t); err != nil {
		c.log.Warn("tokencache: writing legacy keys failed", "user", user, "err", err)
	}
}

// SyncLegacy writes the keys that services predating this library read (see
// Options.LegacyKeys) for the token stored in Redis for user, unless token:{user}
// already holds it, and reports whether it wrote them. It claims the legacy keys for
// this prefix first (see [Cache.ClaimLegacyKeys]) and fails if another prefix owns them. The cache writes them whenever
// it stores a token itself; this call
// covers a token stored by a process that did not (a daemon started with legacy keys
// off, a CLI). It works whatever Options.LegacyKeys says.
func (c *Cache) SyncLegacy(ctx context.Context, user string) (written bool, err error) {
	if c.closed.Load() {
		return false, ErrClosed
	}
	if err := c.ClaimLegacyKeys(ctx); err != nil {
		return false, err
	}
	stored, _, err := c.store.get(ctx, user)
	if err != nil || stored == nil {
		return false, err
	}
	cur, err := c.opts.Redis.Get(ctx, "token:"+user).Result()
	if err == nil && cur == stored.AccessToken {
		return false, nil
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, redisErr("read legacy key of "+user, err)
	}
	return true, c.legacy(ctx, user, stored)
}

// legacy writes the legacy keys of t, each with a TTL equal to the time to expiry.
//
// Two writers may finish in either order, so after writing it reads the record again
// and rewrites the keys if a newer token was stored meanwhile: whoever writes last has
// seen the newest version.
func (c *Cache) legacy(ctx context.Context, user string, t *Token) error {
	rdb := c.opts.Redis
	keys := c.legacyTokenKeys(user)
	for range 3 {
		ttl := time.Until(t.Expiry)
		if ttl < time.Millisecond {
			return nil
		}
		pipe := rdb.Pipeline()
		for _, k := range keys {
			pipe.Set(ctx, k, t.AccessToken, ttl)
		}
		pipe.Set(ctx, "auth:"+user, t.AccessToken, ttl)
		pipe.Set(ctx, "token_expiry:"+user, t.Expiry.UTC().Format(legacyTimeFormat), ttl)
		_, err := pipe.Exec(ctx)
		if err == nil {
			// The list is replaced atomically so a reader never sees it empty.
			_, err = rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Del(ctx, user)
				p.RPush(ctx, user, toAny(keys)...)
				p.PExpire(ctx, user, ttl)
				return nil
			})
		}
		if err != nil {
			return redisErr("write legacy keys of "+user, err)
		}
		stored, _, err := c.store.get(ctx, user)
		if err != nil || stored == nil || stored.Version <= t.Version {
			return nil
		}
		t = stored
	}
	return nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
