package main

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
)

// legacyTimeFormat is the ISO-8601 form tokencache writes to token_expiry:{user}
// (what Python's datetime.fromisoformat reads).
const legacyTimeFormat = "2006-01-02T15:04:05.000000+00:00"

// syncLegacy makes the original keys (token:{account}, auth:{user}, the {user} list,
// token_expiry:{user}) hold tok when they do not already.
//
// The cache writes them itself whenever it stores a token with LegacyKeys on. This
// covers the tokens it did not store: one already valid in Redis when the daemon
// starts (written by a `token` command, or by a daemon with --legacy-keys=false), which
// the cache serves without writing anything. tokencache has no call that rewrites the
// legacy keys of a stored token, so the layout is repeated here, exactly as
// tokencache writes it.
func (dm *daemon) syncLegacy(ctx context.Context, user string, tok *tokencache.Token) error {
	rdb := dm.deps.rdb
	cur, err := rdb.Get(ctx, "token:"+user).Result()
	if err == nil && cur == tok.AccessToken {
		return nil
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	keys := []string{"token:" + user}
	seen := map[string]bool{user: true}
	for _, a := range dm.deps.accountsOf(user) {
		if !seen[a] {
			seen[a] = true
			keys = append(keys, "token:"+a)
		}
	}
	// A concurrent refresh may store a newer token while this runs, and write its own
	// legacy keys first; whoever writes last must have seen the newest version, so
	// look again after writing (as tokencache does).
	for range 3 {
		ttl := time.Until(tok.Expiry)
		if ttl < time.Millisecond {
			return nil
		}
		pipe := rdb.Pipeline()
		for _, k := range keys {
			pipe.Set(ctx, k, tok.AccessToken, ttl)
		}
		pipe.Set(ctx, "auth:"+user, tok.AccessToken, ttl)
		pipe.Set(ctx, "token_expiry:"+user, tok.Expiry.UTC().Format(legacyTimeFormat), ttl)
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		list := make([]any, len(keys))
		for i, k := range keys {
			list[i] = k
		}
		if _, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, user)
			p.RPush(ctx, user, list...)
			p.PExpire(ctx, user, ttl)
			return nil
		}); err != nil {
			return err
		}
		dm.log.Info("brokertoken: legacy keys written", "user", user, "version", tok.Version, "keys", len(keys)+3)
		st, err := dm.deps.cache.Status(ctx, user)
		if err != nil || st.Token == nil || st.Token.Version <= tok.Version {
			return nil
		}
		tok = st.Token
	}
	return nil
}
