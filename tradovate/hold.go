package tradovate

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// holds stops the logins of a user whose last login the broker accepted but whose
// answer could not be read ([ErrUnknownLoginAnswer]): each such login opened a session,
// and sending it again (by this process, or by another after the cache's backoff) would
// open more and spend the fleet's login budget for nothing. A hold is a JSON record
// under "<Namespace>:{<user>}:login-hold" that expires after Options.Cooldown, so every
// process sharing the Redis sees it; without Redis it is kept in this process only.
type holds struct {
	opts *Options

	mu    sync.Mutex           // guards local
	local map[string]holdEntry // by user, used when opts.Redis is nil
}

// holdEntry is the record stored under a hold key.
type holdEntry struct {
	Until int64  `json:"until"` // unix milliseconds
	Cause string `json:"cause"` // endpoint and answer shape, never a value
}

func newHolds(opts *Options) *holds {
	return &holds{opts: opts, local: map[string]holdEntry{}}
}

func (h *holds) key(user string) string { return h.opts.Namespace + ":{" + user + "}:login-hold" }

// check returns a [*CooldownError] with Reason [ErrUnknownLoginAnswer] while user is
// held, nil otherwise.
func (h *holds) check(ctx context.Context, user string) error {
	e, ok, err := h.get(ctx, user)
	if err != nil || !ok {
		return err
	}
	return &CooldownError{User: user, Until: time.UnixMilli(e.Until), Reason: ErrUnknownLoginAnswer, Cause: e.Cause}
}

// start holds user for Options.Cooldown and returns when the hold ends. Like a
// cool-down it is recorded even when the caller's context has ended (bounded by its own
// timeout): other processes must not try again.
func (h *holds) start(ctx context.Context, user, cause string) (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisTimeout)
	defer cancel()
	until := time.Now().Add(h.opts.Cooldown)
	e := holdEntry{Until: until.UnixMilli(), Cause: cause}
	if h.opts.Redis == nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.local[user] = e
		return until, nil
	}
	raw, _ := json.Marshal(e) // a string and an int always marshal
	if err := h.opts.Redis.Set(ctx, h.key(user), raw, h.opts.Cooldown).Err(); err != nil {
		return until, redisError(ctx, "recording login hold", err)
	}
	return until, nil
}

// clear ends user's hold.
func (h *holds) clear(ctx context.Context, user string) error {
	if h.opts.Redis == nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.local, user)
		return nil
	}
	if err := h.opts.Redis.Del(ctx, h.key(user)).Err(); err != nil {
		return redisError(ctx, "clearing login hold", err)
	}
	return nil
}

func (h *holds) get(ctx context.Context, user string) (holdEntry, bool, error) {
	if h.opts.Redis == nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		e, ok := h.local[user]
		if ok && time.Now().UnixMilli() >= e.Until {
			delete(h.local, user)
			ok = false
		}
		return e, ok, nil
	}
	raw, err := h.opts.Redis.Get(ctx, h.key(user)).Bytes()
	if errors.Is(err, redis.Nil) {
		return holdEntry{}, false, nil
	}
	if err != nil {
		return holdEntry{}, false, redisError(ctx, "reading login hold", err)
	}
	var e holdEntry
	if json.Unmarshal(raw, &e) != nil || e.Until <= 0 {
		// Unreadable but present: someone wrote it on purpose; honour it until it expires.
		e = holdEntry{Until: time.Now().Add(h.opts.Cooldown).UnixMilli(), Cause: "unreadable login hold record " + h.key(user)}
	}
	return e, true, nil
}
