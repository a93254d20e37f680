package tradovate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
	// ConfirmAfter is how long after an answer that lacks accounts the user has the
	// next ask is made to confirm it (default RetryAfter). Such an answer is held: it
	// is applied, with whatever it adds, only when the next answer agrees; an account
	// missing from one answer only is kept. One empty or short answer (a broker
	// glitch) removes nothing.
	ConfirmAfter time.Duration
	// LegacyKeys brings the legacy keys (token:{account} and the {user} list, see
	// tokencache.Options.LegacyKeys) in step after each change: a new account gets its
	// key, and one the broker no longer lists loses it. Only the process whose ask saw
	// the broker drop an account deletes its key (one that merely does not know an
	// account never does). Default false.
	LegacyKeys bool
	// Shared, when set, shares the broker's answers with the other processes that keep
	// the same users' accounts (the daemons of a fleet share them through their Redis
	// registry): each applied answer is stored with the time it was asked for, and the
	// newest one stored is adopted, at each look (at least every 10 seconds) and by
	// [AccountSync.Adopt], so every process follows the account list of the latest ask
	// in the fleet, whichever process made it. Default nil: each process follows its
	// own asks only.
	Shared AccountStore
	// OnSync, when set, is called after each ask with what changed and its error (nil
	// on success), and after each adoption of another process's answer that changed
	// something (AccountChange.Shared), on the goroutine that asked, before the next
	// ask for that user.
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
// ask keeps the last known accounts and is retried later. An account is removed only
// when two answers in a row lack it (see AccountSyncOptions.ConfirmAfter): one empty
// answer removes nothing. An account the broker lists for two users belongs to the
// first in the credentials (see [AccountChange]); when that user's list drops it, the
// next user whose last list names it gets it at once, keys included. Processes that
// share a Redis follow the newest answer any of them got (AccountSyncOptions.Shared).
// Make one with [NewAccountSync] and start it with [AccountSync.Run]; its methods are
// safe for concurrent use.
//
// A reading tokencache.Cache remembers the user of an account it has served for its
// whole life (tokencache.Options.LookupUser): an account that moves to another user is
// served the first user's token by such a cache until it restarts. The daemon's cache
// serves no reader, and the legacy keys follow at once.
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
	mu       sync.Mutex    // serialises the user's asks and adoptions; guards the fields below
	synced   int64         // version of the token the last successful ask used
	at       time.Time     // when it was made
	failing  bool          // the last ask failed
	failedOn int64         // version of the token the last failed ask used
	retryAt  time.Time     // no ask with that token before this
	rejected int64         // version of a token the broker refused: never used again
	ignored  string        // the last names ignored, as logged
	learned  time.Time     // when the list the map holds for the user was asked for (here or, Shared, elsewhere)
	holding  bool          // an answer lacking accounts the user has waits for the next one to agree
	held     []string      // that answer (empty when the broker listed none)
	heldAt   time.Time     // when it was asked for
	drop     []string      // removed accounts whose legacy keys are dropped (again) at each look until dropEnd
	dropEnd  time.Time     // the end of that watch, once a Drop succeeded
}

// AccountStore is where processes that keep the same users' accounts in step share the
// broker's answers (see AccountSyncOptions.Shared). Implementations are safe for
// concurrent use; the daemon's keeps them in its Redis registry.
type AccountStore interface {
	// LoadAccounts returns the newest list stored for user; a zero At when none is.
	LoadAccounts(ctx context.Context, user string) (AccountList, error)
	// StoreAccounts stores list for user unless a list asked for later is stored, and
	// returns the newest list stored (list itself when it was stored).
	StoreAccounts(ctx context.Context, user string, list AccountList) (AccountList, error)
}

// AccountList is the broker's account list for a user, as one process applied it.
type AccountList struct {
	// Names are the accounts of the answer (with those one answer only lacked: see
	// AccountSyncOptions.ConfirmAfter), in the broker's order, including names the
	// map gives another user (see [AccountChange].Ignored).
	Names []string
	// At is when the broker was asked for it. Processes compare these times: their
	// clocks must agree within seconds, as for token expiries.
	At time.Time
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
	case opts.Every < 0 || opts.MinInterval < 0 || opts.RetryAfter < 0 || opts.ConfirmAfter < 0:
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
	if opts.ConfirmAfter == 0 {
		opts.ConfirmAfter = opts.RetryAfter
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
	s.dropPending(ctx, st, user)
	s.adopt(ctx, st, user)
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
	switch {
	case st.failing:
		return s.opts.RetryAfter
	case st.holding:
		return min(s.opts.ConfirmAfter, poll)
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
	case st.holding: // confirm the held answer
		wait := st.heldAt.Add(s.opts.ConfirmAfter).Sub(now)
		if s.opts.Every > 0 {
			wait = min(wait, st.at.Add(s.opts.Every).Sub(now))
		}
		return wait
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
// map (and the legacy keys, with AccountSyncOptions.LegacyKeys); an answer that lacks
// accounts the user has is held until the next one agrees (see
// AccountSyncOptions.ConfirmAfter). It fails, changing nothing, when no valid token is
// stored (an error wrapping tokencache.ErrNoToken) or when the broker's list cannot be
// had (see [Authenticator.Accounts]).
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
	at := time.Now()
	accounts, err := s.opts.Authenticator.Accounts(ctx, user, tok)
	if err == nil {
		names := make([]string, len(accounts))
		for i, a := range accounts {
			names[i] = a.Name
		}
		change, err = s.apply(ctx, st, user, union(nil, names), at)
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
	applied := st.learned.Equal(at) // not held whole
	if ignored := strings.Join(change.Ignored, "; "); applied && ignored != st.ignored {
		st.ignored = ignored
		if ignored != "" {
			s.opts.Logger.Warn("tradovate: accounts in the broker's list not taken", "user", user, "ignored", ignored)
		}
	}
	if change.Changed() {
		s.opts.Logger.Info("tradovate: the user's accounts changed at the broker", "user", user,
			"added", change.Added, "removed", change.Removed, "accounts", len(s.opts.Map.AccountsFor(user)))
	}
	if applied && s.opts.Shared != nil {
		// Shared before the keys are dropped: a process that restores the keys after
		// the drop has the answer that dropped them to follow.
		s.share(ctx, st, user, at)
	}
	if change.Changed() {
		s.legacy(ctx, st, change, true)
	}
	s.done(ctx, change, nil)
	return change, nil
}

// apply applies the broker's answer names, asked for at at, to the map: at once when it
// lacks none of the user's accounts; otherwise held until the next answer agrees (an
// account both lack is removed, one only this answer lacks is kept). st.mu must be
// held.
func (s *AccountSync) apply(ctx context.Context, st *syncState, user string, names []string, at time.Time) (AccountChange, error) {
	var gone []string // accounts the user has from the last list that this one lacks
	for _, a := range s.opts.Map.found(user) {
		if !slices.Contains(names, a) {
			gone = append(gone, a)
		}
	}
	if len(gone) > 0 && !st.holding {
		st.holding, st.held, st.heldAt = true, names, at
		s.opts.Logger.Info("tradovate: the broker's list lacks accounts the user has; they are removed if the next answer agrees",
			"user", user, "accounts", gone)
		return AccountChange{User: user}, nil
	}
	var kept []string // lacking from this answer only
	for _, a := range gone {
		if slices.Contains(st.held, a) {
			kept = append(kept, a)
		}
	}
	st.holding, st.held, st.heldAt = len(kept) > 0, names, at
	change, err := s.update(user, append(slices.Clip(names), kept...))
	if err == nil {
		st.learned = at
	}
	return change, err
}

// update applies names to the map for user, then gives the accounts user lost to the
// users whose last lists name them (in credentials order), and says what changed for
// every user.
func (s *AccountSync) update(user string, names []string) (AccountChange, error) {
	change, err := s.opts.Map.Update(user, names)
	if err != nil {
		return change, err
	}
	for _, a := range change.Removed {
		if _, taken := s.opts.Map.LookupUser(a); taken {
			continue // another user's already
		}
		for _, u := range s.opts.Map.Users() {
			if u == user || !slices.Contains(s.opts.Map.listed(u), a) {
				continue
			}
			c, err := s.opts.Map.reapply(u)
			if err != nil {
				return change, err
			}
			if c.Changed() {
				change.Others = append(change.Others, AccountChange{User: c.User, Added: c.Added, Removed: c.Removed, Ignored: c.Ignored})
				change.Others = append(change.Others, c.Others...)
			}
			break
		}
	}
	return change, nil
}

// legacy brings the legacy keys in step with change (and its Others): the process
// whose ask saw accounts go (own) drops their keys; any change writes the keys of
// accounts added. st.mu must be held (st is change.User's).
func (s *AccountSync) legacy(ctx context.Context, st *syncState, change AccountChange, own bool) {
	if !s.opts.LegacyKeys {
		return
	}
	for _, c := range append([]AccountChange{change}, change.Others...) {
		if own && len(c.Removed) > 0 {
			if c.User == change.User {
				st.drop, st.dropEnd = union(st.drop, c.Removed), time.Time{}
				s.dropPending(ctx, st, c.User)
			} else if _, err := legacykeys.Drop(s.opts.Cache, ctx, c.User, c.Removed); err != nil && ctx.Err() == nil {
				s.opts.Logger.Warn("tradovate: the legacy keys do not follow the accounts yet", "user", c.User, "err", err.Error())
			}
		}
		if len(c.Added) > 0 {
			if _, err := legacykeys.Sync(s.opts.Cache, ctx, c.User); err != nil && ctx.Err() == nil && !errors.Is(err, legacykeys.ErrList) {
				s.opts.Logger.Warn("tradovate: the legacy keys do not follow the accounts yet", "user", c.User, "err", err.Error())
			}
		}
	}
}

// dropWatch is how long after dropping an account's legacy keys the process that saw
// the broker drop it drops them again at each look: another process that has not
// followed the answer yet may have restored them meanwhile (it follows at its next
// look, within statusPoll, or at its next check).
const dropWatch = 3 * statusPoll

// dropPending drops the legacy keys of the accounts user lost: those a failed Drop
// left, and, until dropWatch after a Drop succeeded, those another process put back.
// Drop keeps the keys of accounts the user has again, or another user has now. st.mu
// must be held.
func (s *AccountSync) dropPending(ctx context.Context, st *syncState, user string) {
	if len(st.drop) == 0 {
		return
	}
	now := time.Now()
	if _, err := legacykeys.Drop(s.opts.Cache, ctx, user, st.drop); err != nil {
		if ctx.Err() == nil {
			s.opts.Logger.Warn("tradovate: the legacy keys of accounts the user no longer has are not deleted yet; trying again",
				"user", user, "accounts", st.drop, "err", err.Error())
		}
		return
	}
	switch {
	case st.dropEnd.IsZero():
		st.dropEnd = now.Add(dropWatch)
	case now.After(st.dropEnd):
		st.drop, st.dropEnd = nil, time.Time{}
	}
}

// share stores the list the map holds for user, asked for at at, for the other
// processes, and adopts a newer one stored meanwhile. st.mu must be held.
func (s *AccountSync) share(ctx context.Context, st *syncState, user string, at time.Time) {
	newest, err := s.opts.Shared.StoreAccounts(ctx, user, AccountList{Names: slices.Clone(s.opts.Map.listed(user)), At: at})
	if err != nil {
		if ctx.Err() == nil {
			s.opts.Logger.Warn("tradovate: cannot share the user's accounts with the other processes", "user", user, "err", err.Error())
		}
		return
	}
	if newest.At.After(st.learned) {
		s.follow(ctx, st, user, newest)
	}
}

// Adopt makes user's accounts the newest list another process shared
// (AccountSyncOptions.Shared) when it was asked for after the list the map holds, and
// says what changed (AccountChange.Shared). It waits for no ask: while one for user is
// under way it changes nothing (that ask shares its answer and adopts a newer one
// itself). Call it before acting on a user's accounts when another process may have
// learned more, as the daemon does before it restores the legacy keys. A nil
// AccountSync, or one without Shared, changes nothing.
func (s *AccountSync) Adopt(ctx context.Context, user string) (AccountChange, error) {
	if s == nil || s.opts.Shared == nil {
		return AccountChange{User: user, Shared: true}, nil
	}
	st := s.state(user)
	if !st.mu.TryLock() {
		return AccountChange{User: user, Shared: true}, nil
	}
	defer st.mu.Unlock()
	return s.adopt(ctx, st, user)
}

// adopt is Adopt with st.mu held.
func (s *AccountSync) adopt(ctx context.Context, st *syncState, user string) (AccountChange, error) {
	if s.opts.Shared == nil {
		return AccountChange{User: user, Shared: true}, nil
	}
	list, err := s.opts.Shared.LoadAccounts(ctx, user)
	if err != nil {
		if ctx.Err() == nil {
			s.opts.Logger.Debug("tradovate: cannot read the accounts other processes shared", "user", user, "err", err.Error())
		}
		return AccountChange{User: user, Shared: true}, err
	}
	if !list.At.After(st.learned) {
		return AccountChange{User: user, Shared: true}, nil
	}
	return s.follow(ctx, st, user, list)
}

// follow applies list, another process's newer answer, for user. st.mu must be held.
func (s *AccountSync) follow(ctx context.Context, st *syncState, user string, list AccountList) (AccountChange, error) {
	change, err := s.update(user, union(nil, list.Names))
	change.Shared = true
	if err != nil {
		return change, err
	}
	st.learned = list.At
	if st.holding && list.At.After(st.heldAt) {
		st.holding = false // a newer answer decides
	}
	if change.Changed() {
		s.opts.Logger.Info("tradovate: the user's accounts follow another process's newer answer", "user", user,
			"added", change.Added, "removed", change.Removed, "accounts", len(s.opts.Map.AccountsFor(user)))
		s.legacy(ctx, st, change, false)
		s.done(ctx, change, nil)
	}
	return change, nil
}

func (s *AccountSync) done(ctx context.Context, change AccountChange, err error) {
	if s.opts.OnSync != nil {
		s.opts.OnSync(ctx, change, err)
	}
}
