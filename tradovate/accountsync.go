package tradovate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/brokertoken/brokertoken/internal/legacykeys"
	"github.com/brokertoken/brokertoken/tokencache"
)

// AccountSyncOptions configures an [AccountSync]. Authenticator, Cache and Map are
// required; every other field's zero value means the default stated beside it.
type AccountSyncOptions struct {
	// Authenticator asks the broker ([Authenticator.Accounts]). Required.
	Authenticator *Authenticator
	// Cache is where the tokens the asks are made with are read ([tokencache.Cache.Status],
	// a read of Redis: an ask never logs in or renews). Required.
	Cache *tokencache.Cache
	// Map is updated with each answer ([AccountMap.Update]). Required.
	Map *AccountMap
	// Users are the login users whose accounts are kept in step (default: every user
	// of Map).
	Users []string
	// Every, when set, asks for each user's accounts every Every, and after each login.
	// Default 0: after each login, and with each new token (a renewal), but not more
	// often than MinInterval.
	Every time.Duration
	// MinInterval is the shortest time between two asks for a user's accounts brought
	// by renewals, when Every is 0 (default 5 minutes). Logins always bring one.
	MinInterval time.Duration
	// RetryAfter is how long after a failed ask the next one is made with the same
	// token (default one minute, or Every when that is shorter). A token the broker
	// refuses is not used again: the next ask waits for the next token.
	RetryAfter time.Duration
	// LegacyKeys brings the legacy keys (token:{account} and the {user} list, see
	// tokencache.Options.LegacyKeys) in step after each change: a new account gets its
	// key, a removed one loses it. Default false.
	LegacyKeys bool
	// OnSync, when set, is called after each ask with what changed and its error (nil
	// on success), on the goroutine that asked, before the next ask for that user.
	OnSync func(ctx context.Context, change AccountChange, err error)
	// Logger receives changes and failures (default slog.Default()). Failures are logged
	// at WARN once per episode, then at DEBUG.
	Logger *slog.Logger
}

// Defaults of AccountSyncOptions.
const (
	defaultAccountsMinInterval = 5 * time.Minute
	defaultAccountsRetry       = time.Minute
)

// AccountSync keeps an [AccountMap] in step with the accounts the broker lists for
// each user: accounts opened at the broker are added, closed ones removed, so the
// cache serves them and the legacy keys follow (see AccountSyncOptions.LegacyKeys).
//
// It asks with the token stored for the user, read from Redis, and never logs in or
// renews: with no valid token it waits for the next one, stored by any process of the
// fleet. It looks at each user's stored token every 10 seconds, and at once when told
// of a new one ([AccountSync.Nudge]: wire it to tokencache.Hooks.Refreshed). A failed
// ask keeps the last known accounts and is retried later. Make one with
// [NewAccountSync] and start it with [AccountSync.Run]; its methods are safe for
// concurrent use.
type AccountSync struct {
	opts AccountSyncOptions

	mu    sync.Mutex            // guards users
	users map[string]*syncState // per user
}

// statusPoll is the longest time between two looks at a user's stored token.
const statusPoll = 10 * time.Second

// syncState is where one user's asks stand.
type syncState struct {
	nudge    chan struct{} // a new token was stored: look now
	mu       sync.Mutex    // serialises the user's asks; guards the fields below
	synced   int64         // version of the token the last successful ask used
	at       time.Time     // when it was made
	failing  bool          // the last ask failed
	failedOn int64         // version of the token the last failed ask used
	retryAt  time.Time     // no ask with that token before this
	rejected int64         // version of a token the broker refused: never used again
	ignored  string        // the last names ignored, as logged
}

// NewAccountSync checks opts and returns an AccountSync.
func NewAccountSync(opts AccountSyncOptions) (*AccountSync, error) {
	switch {
	case opts.Authenticator == nil:
		return nil, errors.New("tradovate: AccountSyncOptions.Authenticator is required")
	case opts.Cache == nil:
		return nil, errors.New("tradovate: AccountSyncOptions.Cache is required")
	case opts.Map == nil:
		return nil, errors.New("tradovate: AccountSyncOptions.Map is required")
	case opts.Every < 0 || opts.MinInterval < 0 || opts.RetryAfter < 0:
		return nil, errors.New("tradovate: AccountSyncOptions durations must not be negative")
	}
	if opts.Users == nil {
		opts.Users = opts.Map.Users()
	}
	if opts.MinInterval == 0 {
		opts.MinInterval = defaultAccountsMinInterval
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = defaultAccountsRetry
		if opts.Every > 0 {
			opts.RetryAfter = min(opts.RetryAfter, opts.Every)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &AccountSync{opts: opts, users: map[string]*syncState{}}
	for _, u := range opts.Users {
		s.state(u)
	}
	return s, nil
}

// Run keeps every user's accounts in step until ctx is done, then returns once its
// goroutines (one per user) have ended.
func (s *AccountSync) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, u := range s.opts.Users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.run(ctx, u)
		}()
	}
	wg.Wait()
}

// Nudge tells the sync that a new token of user was stored: it looks at it at once
// (an ask follows when one is due) instead of at its next look. It never blocks, so it
// may be called from tokencache.Hooks.Refreshed. A nil AccountSync ignores it.
func (s *AccountSync) Nudge(user string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	st := s.users[user]
	s.mu.Unlock()
	if st == nil {
		return
	}
	select {
	case st.nudge <- struct{}{}:
	default: // a look is due already
	}
}

// run keeps user's accounts in step: it looks at once, then when nudged and whenever
// an ask falls due (at least every statusPoll).
func (s *AccountSync) run(ctx context.Context, user string) {
	st := s.state(user)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.nudge:
		case <-timer.C:
		}
		wait := min(s.step(ctx, user), statusPoll)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// step asks for user's accounts when an ask is due, and returns how long to wait
// before looking again (unless a new token comes first).
func (s *AccountSync) step(ctx context.Context, user string) time.Duration {
	st := s.state(user)
	st.mu.Lock()
	defer st.mu.Unlock()
	poll := s.opts.MinInterval
	if s.opts.Every > 0 {
		poll = s.opts.Every
	}
	status, err := s.opts.Cache.Status(ctx, user)
	if err != nil {
		if ctx.Err() == nil {
			s.opts.Logger.Debug("tradovate: cannot read the token to list accounts with", "user", user, "err", err.Error())
		}
		return s.opts.RetryAfter
	}
	now := time.Now()
	tok := status.Token
	if !tok.Valid(now) {
		return poll // wait for the next token
	}
	if wait := s.dueIn(st, tok, status.ObtainedBy, now); wait > 0 {
		return wait
	}
	s.ask(ctx, st, user, tok)
	if st.failing {
		return s.opts.RetryAfter
	}
	return poll
}

// dueIn returns 0 when an ask with tok is due, else how long until one may be.
func (s *AccountSync) dueIn(st *syncState, tok *tokencache.Token, by string, now time.Time) time.Duration {
	newToken := tok.Version != st.synced
	switch {
	case tok.Version == st.rejected:
		return s.opts.MinInterval // the broker refused it: wait for the next
	case st.failing && tok.Version != st.failedOn:
		return 0 // a new token after a failure
	case st.failing:
		return st.retryAt.Sub(now)
	case st.at.IsZero():
		return 0 // the first ask
	case newToken && by == "login":
		return 0
	case s.opts.Every > 0:
		return st.at.Add(s.opts.Every).Sub(now)
	case !newToken:
		return s.opts.MinInterval
	}
	return st.at.Add(s.opts.MinInterval).Sub(now)
}

// Sync asks for user's accounts now, with the token stored for user, and updates the
// map (and the legacy keys, with AccountSyncOptions.LegacyKeys). It fails, changing
// nothing, when no valid token is stored (an error wrapping tokencache.ErrNoToken) or
// when the broker's list cannot be had (see [Authenticator.Accounts]).
func (s *AccountSync) Sync(ctx context.Context, user string) (AccountChange, error) {
	st := s.state(user)
	st.mu.Lock()
	defer st.mu.Unlock()
	status, err := s.opts.Cache.Status(ctx, user)
	if err != nil {
		return AccountChange{User: user}, err
	}
	if !status.Token.Valid(time.Now()) {
		return AccountChange{User: user}, fmt.Errorf("tradovate: no valid token of user %q to list its accounts with: %w", user, tokencache.ErrNoToken)
	}
	return s.ask(ctx, st, user, status.Token)
}

// state returns user's state, making one for a user Run does not keep.
func (s *AccountSync) state(user string) *syncState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.users[user]
	if st == nil {
		st = &syncState{nudge: make(chan struct{}, 1)}
		s.users[user] = st
	}
	return st
}

// ask lists user's accounts with tok and applies the answer. st.mu must be held.
func (s *AccountSync) ask(ctx context.Context, st *syncState, user string, tok *tokencache.Token) (AccountChange, error) {
	change := AccountChange{User: user}
	accounts, err := s.opts.Authenticator.Accounts(ctx, user, tok)
	if err == nil {
		names := make([]string, len(accounts))
		for i, a := range accounts {
			names[i] = a.Name
		}
		change, err = s.opts.Map.Update(user, names)
	}
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return change, err
		}
		level := slog.LevelDebug
		if !st.failing {
			level = slog.LevelWarn
		}
		st.failing, st.failedOn, st.retryAt = true, tok.Version, now.Add(s.opts.RetryAfter)
		why := "retrying later"
		if errors.Is(err, tokencache.ErrTokenRejected) {
			st.rejected = tok.Version
			why = "waiting for the next token"
		}
		s.opts.Logger.Log(ctx, level, "tradovate: cannot list the user's accounts; the last known ones are kept, "+why,
			"user", user, "err", err.Error())
		s.done(ctx, change, err)
		return change, err
	}
	if st.failing {
		s.opts.Logger.Info("tradovate: listing the user's accounts works again", "user", user)
	}
	st.failing, st.synced, st.at = false, tok.Version, now
	if ignored := strings.Join(change.Ignored, "; "); ignored != st.ignored {
		st.ignored = ignored
		if ignored != "" {
			s.opts.Logger.Warn("tradovate: accounts in the broker's list not taken", "user", user, "ignored", ignored)
		}
	}
	if change.Changed() {
		s.opts.Logger.Info("tradovate: the user's accounts changed at the broker", "user", user,
			"added", change.Added, "removed", change.Removed, "accounts", len(s.opts.Map.AccountsFor(user)))
		if s.opts.LegacyKeys {
			if _, err := legacykeys.Sync(s.opts.Cache, ctx, user); err != nil && ctx.Err() == nil {
				s.opts.Logger.Warn("tradovate: the legacy keys do not follow the accounts yet", "user", user, "err", err.Error())
			}
		}
	}
	s.done(ctx, change, nil)
	return change, nil
}

func (s *AccountSync) done(ctx context.Context, change AccountChange, err error) {
	if s.opts.OnSync != nil {
		s.opts.OnSync(ctx, change, err)
	}
}
