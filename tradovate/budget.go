package tradovate

import (
	"context"
	"crypto/rand"
	_ "embed" // for budget.lua
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
)

//go:embed budget.lua
var budgetLua string

// budgetScript takes one login from the sliding-window budget; see budget.lua.
var budgetScript = redis.NewScript(budgetLua)

// budget is the fleet-wide login budget: Options.LoginBudget login requests per
// Options.LoginBudgetWindow across every process sharing Options.Redis and Namespace.
// Without Redis it limits this process only.
type budget struct {
	opts *Options
	key  string

	mu     sync.Mutex  // guards grants
	grants []time.Time // in-process window, used when opts.Redis is nil
}

func newBudget(opts *Options) *budget {
	return &budget{opts: opts, key: opts.Namespace + ":login-budget"}
}

// take returns once a login request may be sent. When the budget is empty it waits for
// room, never past ctx's deadline nor (when positive) Options.LoginBudgetWait in all;
// when that is not enough it fails at once with an error wrapping
// [ErrLoginBudgetExhausted].
func (b *budget) take(ctx context.Context, user string) error {
	var waited time.Duration
	for {
		wait, err := b.try(ctx)
		if err != nil {
			return err
		}
		if wait <= 0 {
			return nil
		}
		if !b.mayWait(ctx, waited+wait) {
			return b.exhausted(user, wait, nil)
		}
		// A little jitter keeps waiting processes from all retrying in the same instant.
		wait += mrand.N(wait/10 + time.Millisecond)
		b.opts.Logger.Info(fmt.Sprintf("tradovate: login waits for the fleet-wide login budget: %d logins per %s already sent",
			b.opts.LoginBudget, b.opts.LoginBudgetWindow), "user", user, "wait", wait)
		if err := sleep(ctx, wait); err != nil {
			return b.exhausted(user, wait, err)
		}
		waited += wait
	}
}

func (b *budget) mayWait(ctx context.Context, total time.Duration) bool {
	if w := b.opts.LoginBudgetWait; w < 0 || (w > 0 && total > w) {
		return false
	}
	dl, ok := ctx.Deadline()
	return !ok || time.Until(dl) > total
}

func (b *budget) exhausted(user string, wait time.Duration, cause error) error {
	err := fmt.Errorf("%w: %d logins per %s already used; login of user %q would wait %s",
		ErrLoginBudgetExhausted, b.opts.LoginBudget, b.opts.LoginBudgetWindow, user, wait.Round(time.Millisecond))
	if cause != nil {
		err = fmt.Errorf("%w: %w", err, cause)
	}
	return err
}

// try takes a slot if one is free (wait 0), else reports how long until one frees up.
func (b *budget) try(ctx context.Context) (time.Duration, error) {
	if b.opts.Redis == nil {
		return b.tryLocal(), nil
	}
	ms, err := budgetScript.Run(ctx, b.opts.Redis, []string{b.key},
		b.opts.LoginBudget, b.opts.LoginBudgetWindow.Milliseconds(), randomID()).Int64()
	if err != nil {
		return 0, redisError(ctx, "login budget", err)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func (b *budget) tryLocal() time.Duration {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	keep := b.grants[:0]
	for _, g := range b.grants {
		if now.Sub(g) < b.opts.LoginBudgetWindow {
			keep = append(keep, g)
		}
	}
	b.grants = keep
	if len(b.grants) < b.opts.LoginBudget {
		b.grants = append(b.grants, now)
		return 0
	}
	return max(b.grants[0].Add(b.opts.LoginBudgetWindow).Sub(now), time.Millisecond)
}

// redisError wraps a Redis failure in [tokencache.ErrRedisUnavailable], or returns the
// context's error when that is what ended the call.
func redisError(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("tradovate: %s: %w", what, ctx.Err())
	}
	return fmt.Errorf("tradovate: %s: %w: %w", what, tokencache.ErrRedisUnavailable, err)
}

// randomID returns 16 random hex characters.
func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
