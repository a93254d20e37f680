package tokencache

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// This file owns the state of an entry: one login user's token in this process (the L1
// layer). Its fields are written here only, by apply and the functions it calls, with
// e.mu held; every other file reads the state through phase and judge and raises
// events, and does the I/O (reading Redis, taking the lease, calling the broker,
// writing) with e.mu released.
//
// Phases, derived by phase (never stored):
//
//	phase        what holds                                            a Token call
//	empty        no token known                                        leads a read (or waits for one)
//	unconfirmed  a token Redis has not confirmed since an              leads a read
//	             announcement or a (re)subscription
//	fresh        a servable token, nothing due                         is served (a hit, while armed)
//	due          a servable token; a refresh (a writer past the        is served; a refresh starts
//	             refresh point) or a re-read (MaxStaleness) is due
//	unusable     a token past its leeway, or reported bad              leads a refresh (or waits)
//	failing      nothing servable, and the last refresh failed:        gets that error, until retryAt
//	             until retryAt
//
// A token is servable when it is valid to this cache (judge) and Redis confirmed it, or
// the last refresh could not reach Redis to confirm it (unchecked): then it is served,
// and refreshed in the background from retryAt on, rather than failing every caller
// while Redis is away.
//
// Events (eventKind) and what they change:
//
//	want           a caller asks: served, failed, or it waits for (or leads) a flight
//	installed      a token read from Redis or written by this process: the newer one
//	               becomes tok; Redis confirmed it -> fresh or due
//	announced      another process stored a newer version: the copy is unconfirmed until
//	               a read (a peek) answers -> unconfirmed
//	kept           the writers kept a version this process reported: serve it again
//	resubscribed   what was published meanwhile is unknown -> unconfirmed
//	reportedBad    this process learnt a token is rejected -> unusable if it is tok's
//	flightDone     a refresh ended: its token installed, or its failure backs off
//	               (failing when nothing is servable; else the token stays served)
//	served         a caller's read found a servable token: installed, and its flight ends
//	writeStarted   this process began a write of the record (echoes wait for it)
//	writeEnded     ... and ended it (installing what it wrote)
//	awaited        a flight waits for another process's refresh (signals wake it)
//	peekEnded      a read for an announcement ended: again, or done
//	read           a read of Redis ended: may an announcement heard meanwhile need another
//	corrupt        a corrupt record was read: log it once
//	reportSlot     a report (sent or acted on) takes the user's once-per-RetryMin slot
//	reportRead     a report of a newer version is read from Redis (one at a time)
//	watch          a Watch channel is added or removed
//	timer          the armed time came: the hot path is cleared, watched entries refresh
//	closed         the cache closed
//
// After every event the hot path is re-armed (rearm): the fresh cell holds tok while it
// may be served with no check, and a timer clears it at the next point where something
// must be looked at (refresh point, expiry leeway, MaxStaleness, retry time).
//
// Locking: every function of this file that takes an entry runs with e.mu held, and
// checks it with held in race-enabled builds (CI runs every test so): the rule is
// enforced, not only agreed. e.mu guards every field but user and fresh's cell, which the hot path reads
// with one atomic load and no lock, and at and slot, which the cache's timers also guard
// (see timers.go). Code holding e.mu does no I/O, takes no other lock
// but the cache's life lock (to start background work), and only sends on Watch
// channels without blocking.

// maxBad is how many reported-bad tokens an entry remembers.
const maxBad = 8

// entry is one login user's token in this process.
type entry struct {
	user string

	// fresh holds tok while it may be served with no further check; nil otherwise. The
	// hot path reads only this: no lock, no clock, no allocation. It lives in a block
	// shared with other entries (see cells) and never changes.
	fresh *atomic.Pointer[Token]

	mu sync.Mutex // guards the fields below; written only in this file

	// What Redis said.
	tok       *Token    // newest token read from or written to Redis; may be stale or expired
	confirmed time.Time // when Redis last said tok is the newest; zero: unconfirmed
	// hint is the newest version announced above tok's, until a read of Redis that began
	// after it answers. A message is only a hint: it makes the entry read Redis again,
	// never serve or expect more than Redis holds.
	hint  int64
	rerun int64 // newest hinted version a failed refresh was re-read for

	// What failed.
	retryAt time.Time // no background refresh before this (after a failure)
	lastErr error     // the last failure, returned until retryAt when nothing is servable

	// What this process was told.
	bad      []string // tokens reported bad: a token holding one is never served again
	reportAt int64    // Unix ns; writer: when a report was last acted on; reader: last sent

	// What runs now, and who waits.
	flight   *flight       // the refresh in progress, if any
	changed  chan struct{} // closed at the next signal; made only when someone waits
	watchers map[*watcher]struct{}
	at       time.Time // when fresh must be cleared (see timers; also guarded by timers.mu)

	failures      int32  // consecutive failed refreshes
	writing       int32  // writes of the record by this process in flight (Set, a refresh)
	gen           uint32 // counts signals (an announcement, a resubscription, a new token); compared for equality only
	slot          int32  // index in the cache's timers heap, -1 when not armed (guarded by timers.mu only)
	corrupt       bool   // a corrupt record was logged (log once)
	awaiting      bool   // the flight waits for another process's refresh (it reads when signalled)
	peeking       bool   // a read for an announcement runs (beside the flight, if any)
	reportReading bool   // a report naming a newer version than tok is being read
	// unchecked: a refresh could not get Redis to confirm tok (unconfirmed after a
	// resubscription) and ended without a token: tok is served until retryAt, then
	// looked at again. Cleared whenever confirmed is set or cleared.
	unchecked bool
}

func newEntry(user string, fresh *atomic.Pointer[Token]) *entry {
	return &entry{user: user, fresh: fresh, slot: -1}
}

// flight is one refresh of one user in this process; every caller that needs the
// user's token while it runs waits for it instead of starting another (singleflight).
type flight struct {
	// done is closed when tok and err are set. It is made (under e.mu) only when
	// someone waits: a caller's read served at once needs none.
	done chan struct{}
	tok  *Token
	err  error
}

// waitable makes fl's done channel if it has none yet, and returns it. e.mu must be held.
func (fl *flight) waitable() chan struct{} {
	if fl.done == nil {
		fl.done = make(chan struct{})
	}
	return fl.done
}

// phase is where an entry stands; see the table above.
type phase uint8

const (
	phaseEmpty phase = iota
	phaseUnconfirmed
	phaseFresh
	phaseDue
	phaseUnusable
	phaseFailing
)

// phase derives e's phase at now. e.mu must be held.
func (c *Cache) phase(e *entry, now time.Time) phase {
	e.held()
	switch {
	case c.servable(e, now) && c.due(e, now):
		return phaseDue
	case c.servable(e, now):
		return phaseFresh
	case e.flight == nil && e.lastErr != nil && now.Before(e.retryAt):
		return phaseFailing
	case e.tok == nil:
		return phaseEmpty
	case c.judge(e, e.tok, now) != invalid:
		return phaseUnconfirmed
	}
	return phaseUnusable
}

// tokenState is what may be done with a token at a given time.
type tokenState uint8

const (
	invalid tokenState = iota // never served: past its expiry leeway, or reported bad
	stale                     // served; past its refresh point, so a writer refreshes it
	fresh                     // served; nothing due
)

// state is a token's lifecycle at now, whoever holds it: invalid from Leeway before
// expiry (capped at a tenth of its lifetime), stale from RefreshBefore before expiry
// (capped at half its lifetime, minus this process's jitter).
func (c *Cache) state(t *Token, now time.Time) tokenState {
	if t == nil {
		return invalid
	}
	staleAt, unusable := c.points(t)
	switch {
	case !now.Before(unusable):
		return invalid
	case !now.Before(staleAt):
		return stale
	}
	return fresh
}

// judge is the one rule of whether this cache may serve t at now: the token's state,
// except that a token holding a reported-bad token is invalid, and a read-only cache,
// which never refreshes, serves a stale token as fresh. e.mu must be held.
func (c *Cache) judge(e *entry, t *Token, now time.Time) tokenState {
	e.held()
	s := c.state(t, now)
	switch {
	case s == invalid || e.isBad(t):
		return invalid
	case s == stale && c.auth == nil:
		return fresh
	}
	return s
}

// servable reports whether tok may be served without reading Redis: it is valid and
// Redis confirmed it since the last announcement or resubscription. e.mu must be held.
func (c *Cache) servable(e *entry, now time.Time) bool {
	e.held()
	return c.judge(e, e.tok, now) != invalid && (!e.confirmed.IsZero() || e.unchecked)
}

// due reports whether a background refresh of the servable tok should start now: its
// backoff is over, and either Redis has not confirmed it for MaxStaleness or a writer
// reached its refresh point. e.mu must be held.
func (c *Cache) due(e *entry, now time.Time) bool {
	e.held()
	if now.Before(e.retryAt) {
		return false
	}
	return !now.Before(e.confirmed.Add(c.opts.MaxStaleness)) || c.judge(e, e.tok, now) == stale
}

// newer reports whether stored, just read from Redis, may replace what the entry holds
// and be served as it is: fresh to this cache, and not older than tok. e.mu must be held.
func (c *Cache) newer(e *entry, stored *Token, now time.Time) bool {
	e.held()
	return c.judge(e, stored, now) == fresh && (e.tok == nil || stored.Version >= e.tok.Version)
}

// eventKind names an event; see the table above.
type eventKind uint8

const (
	evWant eventKind = iota
	evInstalled
	evAnnounced
	evKept
	evResubscribed
	evReportedBad
	evFlightDone
	evServed
	evWriteStarted
	evWriteEnded
	evAwaited
	evPeekEnded
	evRead
	evCorrupt
	evReportSlot
	evReportRead
	evWatch
	evTimer
	evClosed
)

// event is what happened, with what it carries.
type event struct {
	kind    eventKind
	tok     *Token   // installed, writeEnded (nil: the write failed), flightDone, served
	version int64    // announced, kept, peekEnded and read (the version read), reportRead
	gen     uint32   // read: the signal generation before the read
	err     error    // flightDone
	bad     string   // reportedBad
	fl      *flight  // flightDone, served
	w       *watcher // watch
	on      bool     // awaited, reportRead, watch: begins (true) or ends; reportSlot: taken whatever the time
}

// result is what apply tells its caller.
type result struct {
	tok  *Token  // want: serve it; installed, writeEnded: the entry's token afterwards
	err  error   // want: fail with it
	fl   *flight // want: wait for it; with lead, run it
	lead bool    // want: the caller leads fl
	ok   bool    // peekEnded, read: look again; corrupt: first time; reportSlot, reportRead: granted
}

// apply is the one place an entry's state changes: it applies ev at now and re-arms
// the hot path and the timer. It may start background work (a refresh, a peek) but does
// no I/O itself. e.mu must be held.
func (c *Cache) apply(e *entry, ev event, now time.Time) (out result) {
	e.held()
	switch ev.kind {
	case evWant:
		out = c.want(e, now)
	case evInstalled:
		c.install(e, ev.tok, now)
		out.tok = e.tok
	case evAnnounced:
		c.announced(e, ev.version)
	case evKept:
		if e.tok != nil && e.tok.Version == ev.version && e.isBad(e.tok) {
			e.unmarkBad(e.tok)
			c.log.Info("tokencache: the token this process reported is accepted by the broker; serving it again",
				"user", e.user, "version", ev.version)
		}
	case evResubscribed:
		e.unconfirm()
		e.signal()
		if len(e.watchers) > 0 {
			c.startFlight(e)
		}
	case evReportedBad:
		e.markBad(ev.bad)
	case evFlightDone:
		c.flightDone(e, ev.fl, ev.tok, ev.err, now)
	case evServed:
		c.install(e, ev.tok, now)
		c.flightDone(e, ev.fl, e.tok, nil, now)
		out.tok = e.tok
	case evWriteStarted:
		e.writing++
	case evWriteEnded:
		e.writing--
		if ev.tok != nil {
			c.install(e, ev.tok, now)
			out.tok = e.tok
		}
		if e.hint != 0 && (e.tok == nil || e.tok.Version < e.hint) {
			// A newer version was announced while the write ran (echoes wait for it).
			e.unconfirm()
			c.peek(e)
		}
	case evAwaited:
		e.awaiting = ev.on
	case evPeekEnded:
		out.ok = ev.err == nil && e.hint > ev.version && (e.tok == nil || e.tok.Version < e.hint)
		e.peeking = out.ok
	case evRead:
		// A newer version announced while the read ran: the read may have come just
		// before that write (a write is visible before its announcement), so read again.
		// Otherwise Redis answered after every announcement heard: it is the truth.
		out.ok = e.hint > ev.version && e.gen != ev.gen
		if !out.ok {
			e.hint = 0
		}
	case evCorrupt:
		out.ok = !e.corrupt
		e.corrupt = true
	case evReportSlot:
		if ns := now.UnixNano(); ev.on || ns-e.reportAt >= int64(c.opts.RetryMin) {
			e.reportAt, out.ok = ns, true
		}
	case evReportRead:
		out.ok = !ev.on || !e.reportReading
		e.reportReading = ev.on
	case evWatch:
		if !ev.on {
			delete(e.watchers, ev.w)
			close(ev.w.ch)
			break
		}
		if e.tok != nil {
			ev.w.since = e.tok.Version
		}
		if e.watchers == nil {
			e.watchers = map[*watcher]struct{}{}
		}
		e.watchers[ev.w] = struct{}{}
	case evTimer:
		if now.Before(e.at) {
			return // re-armed after it was taken off the heap
		}
		e.fresh.Store(nil)
		if len(e.watchers) > 0 {
			// Watch-only consumers hear of new tokens without anyone calling Token.
			if !c.servable(e, now) || e.flight == nil && c.due(e, now) {
				c.startFlight(e)
			}
		}
	case evClosed:
		e.fresh.Store(nil)
		c.timers.cancel(e)
		return
	}
	c.rearm(e, now)
	return out
}

// want decides a Token call: serve the entry's token (starting a due refresh in the
// background), return the failure still in its backoff, or wait for the refresh in
// progress, or lead a new one. e.mu must be held.
func (c *Cache) want(e *entry, now time.Time) result {
	switch c.phase(e, now) {
	case phaseDue:
		c.startFlight(e)
		fallthrough
	case phaseFresh:
		return result{tok: e.tok}
	case phaseFailing:
		return result{err: e.lastErr} // nothing valid is left and the broker just failed
	}
	if e.flight != nil {
		e.flight.waitable()
		return result{fl: e.flight}
	}
	e.flight = &flight{}
	return result{fl: e.flight, lead: true}
}

// install makes t, just read from or written to Redis, the entry's token if it is newer,
// and records that Redis agrees with it. Watchers hear of a newer token. e.mu must be
// held.
func (c *Cache) install(e *entry, t *Token, now time.Time) {
	if e.tok == nil || t.Version > e.tok.Version {
		e.fresh.Store(nil) // the old token leaves the hot path before anyone hears of t
		e.tok = t
		e.corrupt = false
		c.notify(e, t)
		e.signal() // a refresh waiting for another process may serve t (see heard)
	}
	if t.Version >= e.tok.Version {
		e.confirmed, e.unchecked = now, false
	}
	if e.hint <= e.tok.Version {
		e.hint = 0
	}
}

// announced marks the entry's token unconfirmed after another process announced
// version v above it, and reads Redis (a peek: never a lease or a broker call). e.mu
// must be held.
func (c *Cache) announced(e *entry, v int64) {
	if e.tok != nil && e.tok.Version >= v {
		return // this process has it (its own write's echo, usually)
	}
	if v > e.hint {
		e.hint = v
	}
	if h := c.opts.Hooks.Invalidated; h != nil && e.tok != nil {
		h(e.user, v)
	}
	e.unconfirm()
	if e.writing > 0 {
		// Probably the echo of this process's own write, heard before its reply: the
		// write installs its token (which wakes whoever waits), then looks at e.hint.
		return
	}
	e.signal() // a flight waiting for another process's refresh reads again
	if !e.awaiting {
		c.peek(e)
	}
}

// flightDone records a refresh's outcome in the entry and in fl. A failure while the
// token is still valid is not passed on: it keeps being served, and the next attempt
// waits a jittered, growing backoff. e.mu must be held; the caller closes fl.done.
func (c *Cache) flightDone(e *entry, fl *flight, tok *Token, err error, now time.Time) {
	e.flight = nil
	closed := c.closed.Load()
	if closed {
		tok, err = nil, ErrClosed
	}
	e.lastErr = nil
	switch {
	case err == nil:
		e.failures, e.retryAt = 0, time.Time{}
	case !closed && errors.Is(err, ErrRenewalNotDue) && c.judge(e, e.tok, now) != invalid:
		// No failure: the Renewer says a renewal now gains nothing.
		e.failures = 0
		e.retryAt = earliest(c.unusableAt(e.tok), now.Add(c.opts.RetryMax))
		e.unchecked = e.confirmed.IsZero()
		c.log.Debug("tokencache: renewal not due; serving the current token", "user", e.user,
			"retry_at", e.retryAt, "err", err)
		tok, err = e.tok, nil
	case !closed:
		c.reportFailure(e.user, err)
		e.failures++
		wait := c.backoff(int(e.failures))
		var tmp interface{ Temporary() bool }
		if errors.As(err, &tmp) && !tmp.Temporary() {
			// The broker said trying again soon will not help (bad credentials, a
			// captcha, a lockout): wait the longest.
			wait = c.opts.RetryMax
		}
		e.retryAt = now.Add(wait)
		if local := e.tok; c.judge(e, local, now) != invalid {
			// Redis could not confirm the token after a reconnect: serve it and try
			// again after the backoff rather than failing every caller.
			e.unchecked = e.confirmed.IsZero()
			c.log.Warn("tokencache: refresh failed; serving the current token", "user", e.user,
				"failures", e.failures, "retry_in", wait.Round(time.Millisecond), "err", err)
			tok, err = local, nil
		} else {
			e.lastErr = err
			level := slog.LevelError
			if errors.Is(err, ErrNoToken) {
				level = slog.LevelInfo // a read-only cache waiting for the writer
			}
			c.log.Log(context.Background(), level, "tokencache: refresh failed", "user", e.user,
				"failures", e.failures, "err", err)
		}
	}
	if e.hint > e.rerun && (e.tok == nil || e.tok.Version < e.hint) && !closed {
		// A newer version was announced while this attempt ran (it read Redis before the
		// write, or failed while a login landed): read it now rather than at the next
		// call, so watchers hear of it. A read only, once per version: neither a Redis
		// outage nor forged messages can make this spin or reach the broker.
		e.rerun = e.hint
		c.peek(e)
	}
	fl.tok, fl.err = tok, err
}

// startFlight starts a refresh in the background unless one is in progress. e.mu must
// be held.
func (c *Cache) startFlight(e *entry) {
	if e.flight != nil {
		return
	}
	fl := &flight{}
	e.flight = fl
	if !c.launchRefresh(e, fl) {
		// Closed: nothing will run it, and nobody waits for it yet.
		e.flight = nil
	}
}

// peek starts a read of the record in the background unless one runs. e.mu must be held.
func (c *Cache) peek(e *entry) {
	if e.peeking || c.closed.Load() {
		return
	}
	e.peeking = true
	if !c.launchPeek(e) {
		e.peeking = false
	}
}

// rearm publishes tok on the hot path until the next point where it must be looked at
// again, and sets the timer for that point; or clears the hot path when that point has
// come or tok may not be served. A failing entry that Watch-only consumers wait on is
// woken when its backoff ends. e.mu must be held.
func (c *Cache) rearm(e *entry, now time.Time) {
	if !c.servable(e, now) {
		e.fresh.Store(nil)
		if e.lastErr != nil && len(e.watchers) > 0 {
			c.schedule(e, now, e.retryAt) // try again then, without a caller
		}
		return
	}
	t := e.tok
	staleAt, next := c.points(t)
	if e.flight == nil {
		check := e.confirmed.Add(c.opts.MaxStaleness)
		if c.auth != nil {
			check = earliest(check, staleAt)
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

// schedule makes the cache's timers wake the entry at the given time. e.mu must be held.
func (c *Cache) schedule(e *entry, now, at time.Time) {
	c.timers.schedule(e, at, now)
}

// fire is the timers' event for an entry whose time came.
func (c *Cache) fire(e *entry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !c.closed.Load() {
		c.apply(e, event{kind: evTimer}, time.Now())
	}
}

// points returns when t turns stale in this process and when it stops being served.
//
// Stale: RefreshBefore before expiry, capped at half its lifetime, minus a per-process
// jitter of up to a tenth of that window, so a fleet does not wake at once; or t's
// RenewAt when that is earlier. Unusable:
// Leeway before expiry, capped at a tenth of its lifetime.
func (c *Cache) points(t *Token) (staleAt, unusable time.Time) {
	exp := t.Expiry.UnixNano()
	var life int64 // how long t was meant to live; 0 when unknown
	if !t.ObtainedAt.IsZero() {
		if obt := t.ObtainedAt.UnixNano(); exp > obt {
			life = exp - obt
		}
	}
	leeway, window := int64(c.opts.Leeway), int64(c.opts.RefreshBefore)
	if life > 0 {
		leeway, window = min(leeway, life/10), min(window, life/2)
	}
	if span := uint64(window / 10); span > 0 {
		// splitmix64 of seed and version: fixed for one token in one process.
		z := c.seed + uint64(t.Version)*0x9e3779b97f4a7c15
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		window += int64(z % span)
	}
	staleAt, unusable = t.Expiry.Add(-time.Duration(window)), t.Expiry.Add(-time.Duration(leeway))
	if !t.RenewAt.IsZero() && t.RenewAt.Before(staleAt) {
		staleAt = t.RenewAt // the Authenticator asked for an early renewal
	}
	return staleAt, unusable
}

// unusableAt is when t stops being served (see points).
func (c *Cache) unusableAt(t *Token) time.Time {
	_, u := c.points(t)
	return u
}

// refreshPoint is when t turns stale in this process (see points).
func (c *Cache) refreshPoint(t *Token) time.Time {
	s, _ := c.points(t)
	return s
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// isBad reports whether t's access or market-data token was reported bad. e.mu must be
// held.
func (e *entry) isBad(t *Token) bool {
	e.held()
	for _, b := range e.bad {
		if b == t.AccessToken || b == t.MDAccessToken {
			return true
		}
	}
	return false
}

// isBadAccess reports whether t's access token was reported bad. e.mu must be held.
func (e *entry) isBadAccess(t *Token) bool {
	e.held()
	for _, b := range e.bad {
		if b == t.AccessToken {
			return true
		}
	}
	return false
}

// markBad remembers s (an access or market-data token) as bad. e.mu must be held.
func (e *entry) markBad(s string) {
	for _, b := range e.bad {
		if b == s {
			return
		}
	}
	if len(e.bad) == maxBad {
		copy(e.bad, e.bad[1:])
		e.bad = e.bad[:maxBad-1]
	}
	e.bad = append(e.bad, s)
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

// unconfirm makes tok unconfirmed: it is not served until Redis is read again.
func (e *entry) unconfirm() {
	e.held()
	e.confirmed, e.unchecked = time.Time{}, false
}

// signal wakes everything waiting for this user's token to change. e.mu must be held.
func (e *entry) signal() {
	e.held()
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
	e.held()
	if e.gen != gen {
		return closedChan
	}
	if e.changed == nil {
		e.changed = make(chan struct{})
	}
	return e.changed
}

// held panics when e.mu is not held, in race-enabled builds (checkLocks). TryLock
// succeeding means nobody held it; it cannot tell the caller from another goroutine,
// so it catches a forgotten lock whenever the entry is otherwise idle, as it is in
// most tests.
func (e *entry) held() {
	if checkLocks && e.mu.TryLock() {
		e.mu.Unlock()
		panic("tokencache: the state of " + e.user + "'s entry used without e.mu held")
	}
}
