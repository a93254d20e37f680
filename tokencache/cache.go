package tokencache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cache serves broker tokens from memory, backed by Redis, refreshed from the broker by
// exactly one caller across every process that shares the Redis. Create it with [New];
// its methods are safe for concurrent use. Close it to stop its background work.
type Cache struct {
	opts  Options
	auth  Authenticator // nil: read-only
	store store
	log   *slog.Logger
	seed  uint64 // per-process jitter seed

	names names // login users and accounts -> entries (UserFor remembered)

	legacyOwner    atomic.Pointer[string] // another prefix owning the legacy keys, "" if ours (LegacyKeys)
	legacyListSaid sync.Map               // users whose {user} list was left alone, logged once (legacy.go)
	cells          cells                  // the entries' fresh pointers, in shared blocks
	timers         timers                 // wakes entries at their armed times

	// base is the lifetime of the cache's background work (refreshes, the invalidation
	// listener, watchers); it is not a request context. Close cancels it.
	base   context.Context
	cancel context.CancelFunc
	pubsub *redis.PubSub
	subs   atomic.Int64 // (re)subscriptions confirmed so far

	life   sync.RWMutex // guards closed against background starts racing Close
	closed atomic.Bool
	wg     sync.WaitGroup // every goroutine the cache starts
}

// New returns a Cache for opts and subscribes to its pub/sub channels. It does not
// wait for Redis to be reachable: calls fail with ErrRedisUnavailable until it is.
func New(opts Options) (*Cache, error) {
	o, err := opts.init()
	if err != nil {
		return nil, err
	}
	c := &Cache{
		opts:  o,
		auth:  o.Authenticator,
		store: newStore(o.Redis, o.Prefix),
		log:   o.Logger,
		seed:  rand.Uint64(),
	}
	c.timers.fire = c.fire
	c.base, c.cancel = context.WithCancel(context.Background())
	c.pubsub = c.subscribe()
	c.wg.Add(1)
	go c.listen()
	if o.LegacyKeys {
		c.wg.Add(1)
		go c.keepLegacyClaim()
	}
	return c, nil
}

// Token returns a valid token for account: from memory when it is fresh, else from
// Redis, else from the broker through the single fleet-wide refresh. It waits at most
// until ctx is done; a Redis command already sent is bounded by ctx only when the
// client has ContextTimeoutEnabled (else by its ReadTimeout, 3 s by default). The
// returned Token is shared and must not be modified.
//
// Errors: ErrNoToken (read-only cache, nothing valid stored), ErrRedisUnavailable,
// *RefreshError (the broker refused), ErrInvalidName (see [CheckName]; ErrEmptyName
// for ""), ErrRecordFormat, ErrClosed, or ctx's error.
func (c *Cache) Token(ctx context.Context, account string) (*Token, error) {
	if f := c.names.fresh(account); f != nil {
		if t := f.Load(); t != nil {
			return t, nil
		}
	}
	e, err := c.entryFor(account)
	if err != nil {
		return nil, err
	}
	if t := e.fresh.Load(); t != nil {
		return t, nil // a name not merged into the immutable map yet
	}
	return c.token(ctx, e)
}

// Source returns a TokenSource for account. It resolves the account's login user once,
// so its Token is the cheapest way to read a token on a hot path; for an account
// Options.LookupUser does not know yet, it resolves it again at each call until it
// does. For a name [CheckName] refuses, its Token returns that error.
func (c *Cache) Source(account string) TokenSource {
	return c.sourceFor(account) // small enough to inline: callers see the concrete type
}

func (c *Cache) sourceFor(account string) source {
	e, remembered, err := c.resolve(account)
	switch {
	case err != nil:
		// An entry of its own that only ever answers the name's error: it is in no
		// map, never refreshed, and its fresh pointer is never set.
		e = &entry{user: account, fresh: &noFresh, lastErr: err, retryAt: time.Unix(1<<40, 0)}
	case !remembered:
		// LookupUser does not know the account yet: each call asks the cache by name
		// (see source.Token), so the Source follows the map once it learns the account.
		return source{c: c, e: &entry{user: account}, fresh: &unresolved}
	}
	return source{c: c, e: e, fresh: e.fresh}
}

// noFresh is the fresh pointer of a Source for an invalid name: never set.
var noFresh atomic.Pointer[Token]

// unresolved is the fresh pointer of a Source for an account LookupUser did not know:
// never set; its entry only carries the account's name.
var unresolved atomic.Pointer[Token]

// source is the one TokenSource type Source returns (so calls through it can be
// devirtualized where Source is inlined). Three words: a hit costs one atomic load.
type source struct {
	c     *Cache
	e     *entry
	fresh *atomic.Pointer[Token] // e.fresh, read without touching the entry
}

func (s source) Token(ctx context.Context) (*Token, error) {
	if t := s.fresh.Load(); t != nil {
		return t, nil
	}
	if s.fresh == &unresolved {
		return s.c.Token(ctx, s.e.user)
	}
	return s.c.token(ctx, s.e)
}

// Set stores a token obtained outside the cache (a login callback, the daemon) for a
// login user. It becomes the user's newest version and reaches every process like a
// refresh does. A zero Expiry is resolved from the token's JWT exp claim, else from
// DefaultLifetime; a zero ObtainedAt means now. Storing the token already stored is a
// no-op that returns the stored version.
//
// Errors: ErrInvalidToken (empty, expired, expiring more than a year away, larger than
// 16 KiB, or not printable UTF-8: what could not be stored byte for byte), ErrInvalidName,
// ErrRecordFormat, ErrRedisUnavailable, ErrClosed. Nothing is written when it fails.
func (c *Cache) Set(ctx context.Context, user string, t *Token) (*Token, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if err := CheckName(user); err != nil {
		return nil, err
	}
	if t == nil || t.AccessToken == "" {
		return nil, fmt.Errorf("%w: empty access token for %s", ErrInvalidToken, user)
	}
	now := time.Now()
	tok := *t
	tok.Version = 0
	if tok.ObtainedAt.IsZero() {
		tok.ObtainedAt = now
	}
	tok.Expiry = resolveExpiry(tok.Expiry, tok.AccessToken, tok.ObtainedAt, c.opts.DefaultLifetime)
	if err := checkStorable(&tok, now); err != nil {
		return nil, fmt.Errorf("%w: token for %s: %w", ErrInvalidToken, user, err)
	}
	e := c.userEntry(user)
	e.mu.Lock()
	c.apply(e, event{kind: evWriteStarted}, time.Now())
	e.mu.Unlock()
	o, err := c.store.set(ctx, user, &tok, "set")
	err = c.keepUnannounced(err)
	stored := o.stored
	if err == nil && !o.same {
		tok.Version = o.version
		stored = &tok
		c.log.Info("tokencache: token set", "user", user, "version", o.version, "token", Redact(tok.AccessToken))
	}
	var written *Token
	if err == nil {
		written = stored
	}
	e.mu.Lock()
	// Installs what was written, then reads Redis if a newer version was announced
	// meanwhile (echoes wait while a write runs).
	c.apply(e, event{kind: evWriteEnded, tok: written}, time.Now())
	e.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if stored == &tok {
		c.writeLegacy(ctx, user, &tok)
	}
	return stored, nil
}

// closeWait bounds how long Close waits for background work that ignores cancellation.
const closeWait = 5 * time.Second

// Close stops the cache's background work (refreshes in flight are cancelled and their
// leases released), closes every Watch channel and makes later calls return ErrClosed.
// It does not close the Redis client. Close is idempotent.
//
// Close returns within about 5 seconds even when an Authenticator ignores its context:
// it then returns an error saying how much work it left behind. That work's result is
// discarded (nothing is written to Redis once the cache is closed), and its goroutine
// ends when the Authenticator returns.
func (c *Cache) Close() error {
	c.life.Lock()
	if c.closed.Load() {
		c.life.Unlock()
		return nil
	}
	c.closed.Store(true)
	ps := c.pubsub // the listener replaces it only under c.life and while open
	c.life.Unlock()

	c.cancel()
	err := ps.Close()
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(closeWait)
	defer timer.Stop()
	var stuck error
	select {
	case <-done:
	case <-timer.C:
		stuck = fmt.Errorf("tokencache: close: background work still running after %s (an Authenticator or Renewer ignoring its context?); abandoned", closeWait)
		c.log.Warn("tokencache: close did not wait for background work that ignores cancellation", "waited", closeWait)
	}
	for _, e := range c.names.users() {
		e.mu.Lock()
		c.apply(e, event{kind: evClosed}, time.Now())
		e.mu.Unlock()
	}
	c.timers.close()
	if err != nil && !errors.Is(err, redis.ErrClosed) {
		return errors.Join(stuck, fmt.Errorf("tokencache: close: %w", err))
	}
	return stuck
}

// goBackground runs f in a goroutine that Close waits for, unless the cache is closed.
func (c *Cache) goBackground(f func()) bool {
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed.Load() {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
	return true
}

// entryFor returns the entry of account's login user, remembering the mapping when
// LookupUser knows the account. Names that CheckName refuses, the account's or the
// user's LookupUser gives, are never remembered.
func (c *Cache) entryFor(account string) (*entry, error) {
	e, _, err := c.resolve(account)
	return e, err
}

// resolve is entryFor; remembered says whether the mapping was remembered (false for an
// account LookupUser does not know yet: it is looked up again at the next call).
func (c *Cache) resolve(account string) (_ *entry, remembered bool, _ error) {
	if e := c.names.account(account); e != nil {
		return e, true, nil
	}
	if err := CheckName(account); err != nil {
		return nil, false, err
	}
	user, known := c.opts.LookupUser(account)
	if user != account {
		if err := CheckName(user); err != nil {
			return nil, false, fmt.Errorf("account %q belongs to user %q: %w", account, user, err)
		}
	}
	if !known {
		return c.userEntry(user), false, nil
	}
	return c.names.addAccount(account, user, &c.cells), true, nil
}

// userEntry returns the entry of a login user, creating it on first use.
func (c *Cache) userEntry(user string) *entry {
	if e := c.names.user(user); e != nil {
		return e
	}
	return c.names.addUser(user, &c.cells)
}
