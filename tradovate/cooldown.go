package tradovate

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// cooldowns keeps the captcha and lockout cool-downs: per user under
// "<Namespace>:{<user>}:cooldown", and fleet-wide (after HTTP 429 or 423, which the broker
// applies to the caller's whole subnet) under "<Namespace>:login-pause". Each is a
// JSON record whose key expires (PX) when the cool-down ends, so every process sharing
// the Redis sees it. Without Redis they are kept in this process only.
type cooldowns struct {
	opts     *Options
	pauseKey string

	mu    sync.Mutex               // guards local
	local map[string]cooldownEntry // by key, used when opts.Redis is nil
}

// cooldownEntry is the record stored under a cool-down key.
type cooldownEntry struct {
	Reason string `json:"reason"` // "captcha" or "locked-out"
	User   string `json:"user"`   // the user whose login started it
	Until  int64  `json:"until"`  // unix milliseconds
	Cause  string `json:"cause"`
}

const (
	reasonCaptcha = "captcha"
	reasonLockout = "locked-out"
)

// redisTimeout bounds cool-down writes made after the caller's context may have ended.
const redisTimeout = 5 * time.Second

func newCooldowns(opts *Options) *cooldowns {
	return &cooldowns{opts: opts, pauseKey: opts.Namespace + ":login-pause", local: map[string]cooldownEntry{}}
}

func (c *cooldowns) userKey(user string) string { return c.opts.Namespace + ":{" + user + "}:cooldown" }

// check returns a [*CooldownError] when user may not log in now, nil when it may.
func (c *cooldowns) check(ctx context.Context, user string) error {
	for _, k := range []struct {
		key string
		all bool
	}{{c.userKey(user), false}, {c.pauseKey, true}} {
		e, ok, err := c.get(ctx, k.key)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		reason := ErrLockedOut
		if e.Reason == reasonCaptcha {
			reason = ErrCaptchaRequired
		}
		return &CooldownError{User: user, AllUsers: k.all && e.User != user, Until: time.UnixMilli(e.Until),
			Reason: reason, Cause: e.Cause}
	}
	return nil
}

// start records a cool-down of Options.Cooldown for user, and for every user when
// reason is [ErrLockedOut]. It returns when the cool-down ends. It detaches from ctx's
// cancellation (bounded by its own timeout): the state must be recorded even when the
// caller has given up, or other processes would try again.
func (c *cooldowns) start(ctx context.Context, user string, reason error, cause string) (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisTimeout)
	defer cancel()
	until := time.Now().Add(c.opts.Cooldown)
	e := cooldownEntry{Reason: reasonCaptcha, User: user, Until: until.UnixMilli(), Cause: cause}
	keys := []string{c.userKey(user)}
	if errors.Is(reason, ErrLockedOut) {
		e.Reason = reasonLockout
		keys = append(keys, c.pauseKey)
	}
	for _, k := range keys {
		if err := c.set(ctx, k, e); err != nil {
			return until, err
		}
	}
	return until, nil
}

// clear ends user's cool-down and the fleet-wide pause if user started it.
func (c *cooldowns) clear(ctx context.Context, user string) error {
	keys := []string{c.userKey(user)}
	if e, ok, err := c.get(ctx, c.pauseKey); err != nil {
		return err
	} else if ok && e.User == user {
		keys = append(keys, c.pauseKey)
	}
	if c.opts.Redis == nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, k := range keys {
			delete(c.local, k)
		}
		return nil
	}
	for _, k := range keys { // one key per call: keys of different users may sit in different Cluster slots
		if err := c.opts.Redis.Del(ctx, k).Err(); err != nil {
			return redisError(ctx, "clearing cool-down", err)
		}
	}
	return nil
}

func (c *cooldowns) get(ctx context.Context, key string) (cooldownEntry, bool, error) {
	if c.opts.Redis == nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		e, ok := c.local[key]
		if ok && time.Now().UnixMilli() >= e.Until {
			delete(c.local, key)
			ok = false
		}
		return e, ok, nil
	}
	raw, err := c.opts.Redis.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return cooldownEntry{}, false, nil
	}
	if err != nil {
		return cooldownEntry{}, false, redisError(ctx, "reading cool-down", err)
	}
	var e cooldownEntry
	if json.Unmarshal(raw, &e) != nil {
		// Unreadable but present: someone wrote it on purpose; honour it as a lockout.
		e = cooldownEntry{Reason: reasonLockout, Until: time.Now().Add(c.opts.Cooldown).UnixMilli(), Cause: "unreadable cool-down record " + key}
	}
	return e, true, nil
}

func (c *cooldowns) set(ctx context.Context, key string, e cooldownEntry) error {
	if c.opts.Redis == nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.local[key] = e
		return nil
	}
	raw, _ := json.Marshal(e) // strings and an int always marshal
	if err := c.opts.Redis.Set(ctx, key, raw, c.opts.Cooldown).Err(); err != nil {
		return redisError(ctx, "recording cool-down", err)
	}
	return nil
}

// ReadCooldown returns the cool-down that stops user's logins now, as every process
// sharing opts.Redis sees it: the user's own (after a captcha or lockout) or the
// fleet-wide pause (after HTTP 429 or 423), or nil when there is none. It needs only
// opts.Redis and what selects the keys (Namespace, else Environment or RESTURL), and
// only read access to them: it is what operators' status commands call, without
// credentials.
func ReadCooldown(ctx context.Context, opts Options, user string) (*CooldownError, error) {
	opts.init()
	if opts.Redis == nil {
		return nil, errors.New("tradovate: ReadCooldown needs Options.Redis")
	}
	err := newCooldowns(&opts).check(ctx, user)
	var cd *CooldownError
	if errors.As(err, &cd) {
		return cd, nil
	}
	return nil, err
}
