package tokencache

import (
	"sync"
	"sync/atomic"
	"time"
)

// maxBad is how many reported-bad access tokens an entry remembers.
const maxBad = 8

// entry is one login user's token in this process: the L1 layer.
type entry struct {
	user string

	// fresh holds the token while it may be served with no further check; nil
	// otherwise. The hot path reads only this: no lock, no clock, no allocation. A timer
	// clears it at the next point where something must be checked (refresh point, expiry
	// leeway, max staleness), and so does anything that learns the token changed. It
	// lives in a block shared with other entries (see cells) and never changes.
	fresh *atomic.Pointer[Token]

	mu  sync.Mutex // guards the fields below
	tok *Token     // newest token this process read from or wrote to Redis; may be stale or expired
	// hint is the newest version announced on pub/sub above tok's, until a read of Redis
	// that began after it answers. A message is only a hint: it makes the entry read
	// Redis again, never serve or expect more than Redis holds.
	hint      int64
	rerun     int64     // newest hinted version a failed refresh was re-run for
	confirmed time.Time // when tok last matched Redis; zero after an announcement or a pub/sub reconnect
	retryAt   time.Time // no background refresh before this (after a failure)
	lastErr   error     // the last failure, returned until retryAt when nothing is servable
	bad       []string  // tokens reported bad by Invalidate: a token holding one is never served again
	reportAt  int64     // Unix ns; writer: when a report from another process was last acted on; reader: when this one last sent one
	failures  int32     // consecutive failed refreshes
	writing   int32     // writes of this user's record in flight in this process (Set, a refresh)
	corrupt   bool      // a corrupt record was logged (log once)
	awaiting  bool      // the flight waits for another process's refresh (it reads when signalled)
	peeking   bool      // a read for an announcement is running (beside the flight, if any)
	// reportReading is set while a report naming a version newer than tok is checked
	// against Redis: one such read at a time.
	reportReading bool
	gen           uint32        // counts signals (a newer version announced, a resubscription); compared for equality only
	flight        *flight       // the refresh in progress, if any
	timer         *time.Timer   // clears fresh at armedTo
	armedTo       time.Time     // when fresh must be cleared
	changed       chan struct{} // closed at the next signal; made only when someone waits
	watchers      map[*watcher]struct{}
}

func newEntry(user string, fresh *atomic.Pointer[Token]) *entry {
	return &entry{user: user, fresh: fresh}
}

// cells hands out the entries' fresh pointers from shared blocks. A process serving
// thousands of users then reads its hits from a few dense pages instead of one line of
// each 224-byte entry: the name lookup finds the cell without touching the entry. Eight
// cells share a cache line, so a store to one (rare: a new token, a timer, an
// invalidation) briefly costs its neighbours' readers a miss.
type cells struct {
	mu   sync.Mutex
	free []atomic.Pointer[Token]
}

// cellBlock is how many cells one allocation makes (512 bytes).
const cellBlock = 64

func (c *cells) take() *atomic.Pointer[Token] {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.free) == 0 {
		c.free = make([]atomic.Pointer[Token], cellBlock)
	}
	p := &c.free[0]
	c.free = c.free[1:]
	return p
}

// isBad reports whether t's access or market-data token was reported bad. e.mu must be
// held.
func (e *entry) isBad(t *Token) bool {
	for _, b := range e.bad {
		if b == t.AccessToken || b == t.MDAccessToken {
			return true
		}
	}
	return false
}

// unmarkBad forgets that t's tokens were reported bad. e.mu must be held.
func (e *entry) unmarkBad(t *Token) {
	kept := e.bad[:0]
	for _, b := range e.bad {
		if b != t.AccessToken && b != t.MDAccessToken {
			kept = append(kept, b)
		}
	}
	e.bad = kept
}

// isBadAccess reports whether t's access token was reported bad. e.mu must be held.
func (e *entry) isBadAccess(t *Token) bool {
	for _, b := range e.bad {
		if b == t.AccessToken {
			return true
		}
	}
	return false
}

// markBad remembers access (an access or market-data token) as bad. e.mu must be held.
func (e *entry) markBad(access string) {
	for _, b := range e.bad {
		if b == access {
			return
		}
	}
	if len(e.bad) == maxBad {
		copy(e.bad, e.bad[1:])
		e.bad = e.bad[:maxBad-1]
	}
	e.bad = append(e.bad, access)
}

// signal wakes everything waiting for this user's token to change. e.mu must be held.
func (e *entry) signal() {
	e.gen++
	if e.changed != nil {
		close(e.changed)
		e.changed = nil
	}
}

// closedChan is ready at once: what changedSince returns when the signal came already.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// changedSince returns a channel closed at the first signal after generation gen
// (already closed if there was one). e.mu must be held.
func (e *entry) changedSince(gen uint32) <-chan struct{} {
	if e.gen != gen {
		return closedChan
	}
	if e.changed == nil {
		e.changed = make(chan struct{})
	}
	return e.changed
}

// lifetime is how long t was meant to live, for capping the refresh windows.
func lifetime(t *Token) time.Duration {
	if t.ObtainedAt.IsZero() || !t.Expiry.After(t.ObtainedAt) {
		return 0
	}
	return t.Expiry.Sub(t.ObtainedAt)
}

// unusableAt is when t stops being served: Leeway before expiry, capped at a tenth of
// its lifetime.
func (c *Cache) unusableAt(t *Token) time.Time {
	leeway := c.opts.Leeway
	if l := lifetime(t); l > 0 && leeway > l/10 {
		leeway = l / 10
	}
	return t.Expiry.Add(-leeway)
}

// refreshPoint is when t turns stale in this process: RefreshBefore before expiry
// (capped at half its lifetime), minus a per-process jitter of up to a tenth of that
// window, so a fleet does not wake at once.
func (c *Cache) refreshPoint(t *Token) time.Time {
	window := c.opts.RefreshBefore
	if l := lifetime(t); l > 0 && window > l/2 {
		window = l / 2
	}
	span := uint64(window / 10)
	if span == 0 {
		return t.Expiry.Add(-window)
	}
	// splitmix64 of seed and version: fixed for one token in one process.
	z := c.seed + uint64(t.Version)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return t.Expiry.Add(-window - time.Duration(z%span))
}

// usable reports whether t may be handed to a caller at now. e.mu must be held.
func (c *Cache) usable(e *entry, t *Token, now time.Time) bool {
	return t != nil && now.Before(c.unusableAt(t)) && !e.isBad(t)
}

// servable reports whether the entry's own token may be served without reading Redis:
// it is usable and Redis confirmed it since the last announcement or resubscription.
// e.mu must be held.
func (c *Cache) servable(e *entry, now time.Time) bool {
	return c.usable(e, e.tok, now) && !e.confirmed.IsZero()
}

// due reports whether a background refresh of the servable e.tok should start now.
func (c *Cache) due(e *entry, now time.Time) bool {
	if now.Before(e.retryAt) {
		return false
	}
	if !now.Before(e.confirmed.Add(c.opts.MaxStaleness)) {
		return true
	}
	return c.auth != nil && !now.Before(c.refreshPoint(e.tok))
}

// arm publishes e.tok on the hot path until the next point where it must be looked at
// again, or clears it when that point has come. e.mu must be held and e.tok servable.
func (c *Cache) arm(e *entry, now time.Time) {
	t := e.tok
	next := c.unusableAt(t)
	if e.flight == nil {
		check := e.confirmed.Add(c.opts.MaxStaleness)
		if c.auth != nil {
			check = earliest(check, c.refreshPoint(t))
		}
		if check.Before(e.retryAt) {
			check = e.retryAt
		}
		next = earliest(next, check)
	}
	if !now.Before(next) {
		e.fresh.Store(nil)
		return
	}
	c.schedule(e, now, next)
	e.fresh.Store(t)
}

// schedule makes the entry's timer run expire at the given time. e.mu must be held.
func (c *Cache) schedule(e *entry, now, at time.Time) {
	e.armedTo = at
	if e.timer == nil {
		e.timer = time.AfterFunc(at.Sub(now), func() { c.expire(e) })
	} else {
		e.timer.Reset(at.Sub(now))
	}
}

// expire runs when an entry's armed time has come: it takes the token off the hot path,
// and for a watched entry starts what is due, so watchers hear of new tokens without
// anyone calling Token.
func (c *Cache) expire(e *entry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if c.closed.Load() || now.Before(e.armedTo) {
		return // closed, or re-armed after this timer fired
	}
	e.fresh.Store(nil)
	if len(e.watchers) > 0 {
		c.kick(e, now)
	}
}

// kick brings the entry up to date in the background: it starts a refresh when one is
// due or the token cannot be served, and re-arms the hot path otherwise. e.mu must be held.
func (c *Cache) kick(e *entry, now time.Time) {
	if !c.servable(e, now) {
		c.startFlight(e)
		return
	}
	if e.flight == nil && c.due(e, now) {
		c.startFlight(e)
	}
	c.arm(e, now)
}

// install makes t, just read from or written to Redis, the entry's token if it is newer,
// records that Redis agrees with it, and tells watchers. It returns the entry's token
// afterwards.
func (c *Cache) install(e *entry, t *Token) *Token {
	e.mu.Lock()
	defer e.mu.Unlock()
	c.installLocked(e, t)
	return e.tok
}

func (c *Cache) installLocked(e *entry, t *Token) {
	now := time.Now()
	if e.tok == nil || t.Version > e.tok.Version {
		e.fresh.Store(nil) // the old token leaves the hot path before anyone hears of t
		e.tok = t
		e.corrupt = false
		c.notify(e, t)
		e.signal() // a refresh waiting for another process may serve t (see heard)
	}
	if t.Version >= e.tok.Version {
		e.confirmed = now
	}
	if e.hint <= e.tok.Version {
		e.hint = 0
	}
	if c.servable(e, now) {
		c.arm(e, now)
	} else {
		e.fresh.Store(nil)
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
