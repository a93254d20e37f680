package tokencache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// State is where a token stands in its lifecycle.
type State string

// The states of a stored token, as [Cache.Status] reports them.
const (
	StateFresh   State = "fresh"   // served from memory
	StateStale   State = "stale"   // inside the refresh window: served while one refresh runs
	StateExpired State = "expired" // inside the expiry leeway or past expiry: never served
	StateMissing State = "missing" // nothing (or only a corrupt record) is stored
)

// Status describes a login user's token as stored in Redis.
type Status struct {
	User       string
	State      State
	Token      *Token // nil when State is StateMissing
	ObtainedBy string // "login", "renew", "set" or "reseed"; empty when missing
}

// Status reads a login user's token from Redis, without refreshing it, and says where
// it stands. It is what operators' status tables and health checks need; it needs only
// read access to the record. A record that cannot be used reads as StateMissing.
//
// Errors: ErrInvalidName, ErrRecordFormat, ErrRedisUnavailable, ErrClosed.
func (c *Cache) Status(ctx context.Context, user string) (Status, error) {
	if c.closed.Load() {
		return Status{}, ErrClosed
	}
	if err := CheckName(user); err != nil {
		return Status{}, err
	}
	st := Status{User: user, State: StateMissing}
	raw, err := c.opts.Redis.Get(ctx, c.store.recordKey(user)).Result()
	if errors.Is(err, redis.Nil) {
		return st, nil
	}
	if err != nil {
		return st, redisErr("read token of "+user, err)
	}
	now := time.Now()
	p := parseRecord(raw, now)
	if errors.Is(p.err, ErrRecordFormat) {
		return st, fmt.Errorf("%s: %w", c.store.recordKey(user), p.err)
	}
	if p.tok == nil {
		return st, nil
	}
	st.Token, st.ObtainedBy = p.tok, p.by
	switch {
	case !now.Before(c.unusableAt(p.tok)):
		st.State = StateExpired
	case !now.Before(c.refreshPoint(p.tok)):
		st.State = StateStale
	default:
		st.State = StateFresh
	}
	return st, nil
}
