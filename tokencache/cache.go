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
	cells cells // the entries' fresh pointers, in shared blocks

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
		opts: o,
		auth: o.Authenticator,
		store: store{
			rdb:     o.Redis,
			prefix:  o.Prefix,
			channel: o.Prefix + ":invalidate",
			records: o.Prefix + ":records",
		},
		log:  o.Logger,
		seed: rand.Uint64(),
	}
	c.base, c.cancel = context.WithCancel(context.Background())
	c.pubsub = c.subscribe()
	c.wg.Add(1)
	go c.listen()
	return c, nil
}

// Token returns a valid token for account: from memory when it is fresh, else from
// Redis, else from the broker through the single fleet-wide refresh. It waits at most
// until ctx is done; a Redis command already sent is bounded by ctx only when the
// client has ContextTimeoutEnabled (else by its ReadTimeout, 3 s by default). The
// returned Token is shared and must not be modified.
//
// Errors: ErrNoToken (read-only cache, nothing valid stored), ErrRedisUnavailable,
// *RefreshError (the broker refused), ErrEmptyName, ErrClosed, or ctx's error.
func (c *Cache) Token(ctx context.Context, account string) (*Token, error) {
	if f := c.names.fresh(account); f != nil {
		if t := f.Load(); t != nil {
			return t, nil
		}
	}
	e := c.entryFor(account)
	if t := e.fresh.Load(); t != nil {
		return t, nil // a name not merged into the immutable map yet
	}
	return c.token(ctx, e)
}

// Source returns a TokenSource for account. It resolves the account's login user once,
// so its Token is the cheapest way to read a token on a hot path.
func (c *Cache) Source(account string) TokenSource {
	e := c.entryFor(account)
	return source{c: c, e: e, fresh: e.fresh}
}

type source struct {
	c     *Cache
	e     *entry
	fresh *atomic.Pointer[Token] // e.fresh, read without touching the entry
}

func (s source) Token(ctx context.Context) (*Token, error) {
	if t := s.fresh.Load(); t != nil {
		return t, nil
	}
	return s.c.token(ctx, s.e)
}

// Set stores a token obtained outside the cache (a login callback, the daemon) for a
// login user. It becomes the user's newest version and reaches every process like a
// refresh does. A zero Expiry is resolved from the token's JWT exp claim, else from
// DefaultLifetime; a zero ObtainedAt means now. Storing the token already stored is a
// no-op that returns the stored version.
//
// Errors: ErrInvalidToken (empty or expired), ErrEmptyName, ErrRedisUnavailable,
// ErrClosed.
func (c *Cache) Set(ctx context.Context, user string, t *Token) (*Token, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if user == "" {
		return nil, ErrEmptyName
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
	tok.Expiry = ResolveExpiry(tok.Expiry, tok.AccessToken, tok.ObtainedAt, c.opts.DefaultLifetime)
	if !now.Before(tok.Expiry) {
		return nil, fmt.Errorf("%w: token for %s expired at %s", ErrInvalidToken, user, tok.Expiry.UTC().Format(time.RFC3339))
	}
	e := c.userEntry(user)
	e.mu.Lock()
	e.setting++
	e.mu.Unlock()
	v, same, err := c.store.set(ctx, user, &tok, "set")
	if err == nil && same == nil {
		tok.Version = v
		same = &tok
		c.log.Info("tokencache: token set", "user", user, "version", v, "token", Redact(tok.AccessToken))
	}
	e.mu.Lock()
	e.setting--
	if err == nil {
		c.installLocked(e, same)
	}
	c.superseded(e) // a newer version was announced while the Set ran
	e.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if same == &tok {
		c.writeLegacy(ctx, user, &tok)
	}
	return same, nil
}

// Close stops the cache's background work (refreshes in flight are cancelled and their
// leases released), closes every Watch channel and makes later calls return ErrClosed.
// It does not close the Redis client. Close is idempotent.
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
	c.wg.Wait()
	for _, e := range c.names.users() {
		e.mu.Lock()
		e.fresh.Store(nil)
		if e.timer != nil {
			e.timer.Stop()
		}
		e.mu.Unlock()
	}
	if err != nil && !errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("tokencache: close: %w", err)
	}
	return nil
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

// entryFor returns the entry of account's login user, remembering the mapping.
func (c *Cache) entryFor(account string) *entry {
	if e := c.names.account(account); e != nil {
		return e
	}
	return c.names.addAccount(account, c.userEntry(c.opts.UserFor(account)))
}

// userEntry returns the entry of a login user, creating it on first use.
func (c *Cache) userEntry(user string) *entry {
	if e := c.names.user(user); e != nil {
		return e
	}
	return c.names.addUser(user, newEntry(user, c.cells.take()))
}
