package tokencache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// flight is one refresh of one user in this process; every caller that needs the
// user's token while it runs waits for it instead of starting another (singleflight).
type flight struct {
	done chan struct{} // closed when tok and err are set
	tok  *Token
	err  error
}

// maxWaits bounds how often one Token call waits for a refresh whose result turned out
// unusable (reported bad or superseded meanwhile) before it gives up.
const maxWaits = 3

// token is the slow path of Token: the L1 entry is not fresh.
func (c *Cache) token(ctx context.Context, e *entry) (*Token, error) {
	for range maxWaits {
		e.mu.Lock()
		if c.closed.Load() {
			e.mu.Unlock()
			return nil, ErrClosed
		}
		now := time.Now()
		if c.servable(e, now) {
			t := e.tok
			c.kick(e, now)
			e.mu.Unlock()
			return t, nil
		}
		if e.flight == nil && e.lastErr != nil && now.Before(e.retryAt) {
			// Nothing valid is left and the broker just failed: do not hammer it.
			err := e.lastErr
			e.mu.Unlock()
			return nil, err
		}
		fl := e.flight
		leader := fl == nil
		if leader {
			fl = &flight{done: make(chan struct{})}
			e.flight = fl
		}
		e.mu.Unlock()
		if leader {
			c.lead(ctx, e, fl)
		}
		select {
		case <-fl.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("tokencache: waiting for the token of %s: %w", e.user, ctx.Err())
		}
		if fl.err != nil {
			return nil, fl.err
		}
		e.mu.Lock()
		ok := c.usable(e, fl.tok, time.Now())
		e.mu.Unlock()
		if ok {
			return fl.tok, nil
		}
	}
	return nil, fmt.Errorf("%w: every refresh of %s returned a token reported bad or expired", ErrNoToken, e.user)
}

// startFlight returns the entry's refresh in progress, starting one in the background
// if there is none. e.mu must be held.
func (c *Cache) startFlight(e *entry) *flight {
	if e.flight != nil {
		return e.flight
	}
	fl := &flight{done: make(chan struct{})}
	e.flight = fl
	if !c.goBackground(func() { c.runDetached(e, fl, nil) }) {
		// Closed. e.mu is held, so finish (which takes it) must not be called here.
		e.flight = nil
		fl.err = ErrClosed
		close(fl.done)
	}
	return fl
}

// detach runs the refresh of fl in the background, starting from the caller's read of
// Redis when there is one. e.mu must not be held.
func (c *Cache) detach(e *entry, fl *flight, first *snapshot) {
	if !c.goBackground(func() { c.runDetached(e, fl, first) }) {
		c.finish(e, fl, nil, ErrClosed)
	}
}

// runDetached runs a refresh detached from any caller's context, so one caller giving
// up never fails it for the others; RefreshTimeout and Close bound it.
func (c *Cache) runDetached(e *entry, fl *flight, first *snapshot) {
	ctx, cancel := context.WithTimeout(c.base, c.opts.RefreshTimeout)
	tok, err := c.refresh(ctx, e, first)
	cancel()
	c.finish(e, fl, tok, err)
}

// lead runs the refresh of fl for the caller that started it. The common case, a good
// token in Redis, is served in the caller's goroutine with one GET: no handoff to
// another goroutine on this path. Anything more (an error, a broker call) continues in
// the background, where the caller's context cannot cancel it for the others.
func (c *Cache) lead(ctx context.Context, e *entry, fl *flight) {
	snap, err := c.readLatest(ctx, e)
	if err != nil {
		c.detach(e, fl, nil)
		return
	}
	if c.fromStore(e, snap.stored, time.Now()) {
		c.finish(e, fl, c.install(e, snap.stored), nil)
		return
	}
	c.detach(e, fl, snap)
}

// snapshot is one read of a user's record, with the entry's signal generation as it was
// before the read, so an announcement made after the read is not missed.
type snapshot struct {
	gen    uint32
	stored *Token
	base   int64
}

// maxRereads bounds how often readLatest reads again for announcements heard meanwhile.
const maxRereads = 2

// readLatest reads the user's record. An announcement of a newer version than it read,
// heard while it read, means the read may have come just before that write (a write
// is visible before it is announced): it reads again, at most maxRereads times. After
// that Redis's answer stands, whatever the messages say: they are hints.
func (c *Cache) readLatest(ctx context.Context, e *entry) (*snapshot, error) {
	for i := 0; ; i++ {
		e.mu.Lock()
		snap := &snapshot{gen: e.gen} // before the read, so no announcement is missed
		e.mu.Unlock()
		var err error
		if snap.stored, snap.base, err = c.read(ctx, e); err != nil {
			return nil, err
		}
		e.mu.Lock()
		newer := e.hint > snap.base
		if newer && e.gen == snap.gen || !newer {
			// Redis answered after every announcement heard so far: it is the truth.
			e.hint = 0
			newer = false
		}
		e.mu.Unlock()
		if !newer || i == maxRereads {
			return snap, nil
		}
	}
}

// fromStore reports whether a token read from Redis can be served as it is, with no
// broker call: it is usable, not older than the one this process holds, and fresh
// unless the cache is read-only (a read-only cache serves stale tokens and leaves the
// refresh to the writer).
func (c *Cache) fromStore(e *entry, stored *Token, now time.Time) bool {
	e.mu.Lock()
	ok := c.usable(e, stored, now) && (e.tok == nil || stored.Version >= e.tok.Version)
	e.mu.Unlock()
	return ok && (c.auth == nil || now.Before(c.refreshPoint(stored)))
}

// finish records a refresh's outcome and wakes its waiters. A failure while the entry's
// token is still usable is not passed on: the token keeps being served, and the next
// attempt waits a jittered, growing backoff.
func (c *Cache) finish(e *entry, fl *flight, tok *Token, err error) {
	e.mu.Lock()
	now := time.Now()
	e.flight = nil
	if c.closed.Load() {
		tok, err = nil, ErrClosed
	}
	e.lastErr = nil
	if err != nil && !c.closed.Load() {
		c.reportFailure(e.user, err)
	}
	if err == nil {
		e.failures = 0
		e.retryAt = time.Time{}
	} else if !c.closed.Load() {
		e.failures++
		wait := c.backoff(int(e.failures))
		var tmp interface{ Temporary() bool }
		if errors.As(err, &tmp) && !tmp.Temporary() {
			// The broker said trying again soon will not help (bad credentials, a
			// captcha, a lockout): wait the longest.
			wait = c.opts.RetryMax
		}
		e.retryAt = now.Add(wait)
		if local := e.tok; c.usable(e, local, now) {
			if e.confirmed.IsZero() {
				// Redis could not confirm the token after a pub/sub reconnect: serve it
				// and try again after the backoff rather than failing every caller.
				e.confirmed = now.Add(wait - c.opts.MaxStaleness)
			}
			c.log.Warn("tokencache: refresh failed; serving the current token", "user", e.user,
				"failures", e.failures, "retry_in", wait.Round(time.Millisecond), "err", err)
			tok, err = local, nil
		} else {
			e.lastErr = err
			level := slog.LevelError
			if errors.Is(err, ErrNoToken) {
				level = slog.LevelInfo // a read-only cache waiting for the writer
			}
			c.log.Log(context.Background(), level, "tokencache: refresh failed", "user", e.user, "failures", e.failures, "err", err)
		}
	}
	if c.servable(e, now) {
		c.arm(e, now)
	}
	if e.lastErr != nil && len(e.watchers) > 0 {
		// Nothing servable and nobody calling Token: try again after the backoff, so
		// Watch-only consumers are not left waiting for someone else's write.
		c.schedule(e, now, e.retryAt)
	}
	if e.hint > e.rerun && (e.tok == nil || e.tok.Version < e.hint) && !c.closed.Load() {
		// A newer version was announced while this attempt ran (it read Redis before
		// the write, or failed while a login landed): read it now rather than at the
		// next call, so watchers hear of it. A read only, once per version: neither a
		// Redis outage nor forged messages can make this spin or reach the broker.
		e.rerun = e.hint
		c.peek(e)
	}
	fl.tok, fl.err = tok, err
	e.mu.Unlock()
	close(fl.done)
}

// backoff is the wait after the n-th consecutive failure: exponential from RetryMin,
// capped at RetryMax, with full jitter on its upper half.
func (c *Cache) backoff(n int) time.Duration {
	d := c.opts.RetryMin
	for i := 1; i < n && d < c.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, c.opts.RetryMax)
	return d/2 + rand.N(d/2+1)
}

// followerRecheck bounds how long a process waiting for another's refresh goes without
// looking at Redis again.
const followerRecheck = time.Second

// maxWrites bounds the compare-and-set attempts of one refresh. A write loses only when
// the record changed since it was read; each loss adopts the stored token when it can
// be served, and otherwise writes again over what the script reported: so a record in
// a layout Go and Lua read differently cannot turn into a loop of logins.
const maxWrites = 3

// refresh brings the entry up to date: from Redis when Redis holds a good token, else
// from the broker under the user's lease, else by waiting for the lease holder. first,
// when not nil, is a read of Redis the caller already made.
//
// Before a login the leader makes two round trips to Redis (the read, then the lease
// taken together with a second read); a follower makes the same two, waits for the
// leader's announcement, and reads once more.
func (c *Cache) refresh(ctx context.Context, e *entry, first *snapshot) (*Token, error) {
	for {
		snap := first
		first = nil
		if snap == nil {
			var err error
			if snap, err = c.readLatest(ctx, e); err != nil {
				return nil, err
			}
		}
		stored, base := snap.stored, snap.base
		now := time.Now()
		if c.fromStore(e, stored, now) {
			return c.install(e, stored), nil
		}
		e.mu.Lock()
		local := e.tok
		localOK := c.usable(e, local, now) && (stored == nil || local.Version >= stored.Version)
		e.mu.Unlock()

		switch {
		case c.auth == nil:
			e.mu.Lock()
			again := stored != nil && e.isBad(stored) && now.UnixNano()-e.reportAt >= int64(c.opts.RetryMin)
			e.mu.Unlock()
			if again {
				if err := c.report(ctx, e, stored); err != nil {
					c.log.Warn("tokencache: reporting a rejected token again failed", "user", e.user, "err", err)
				}
			}
			return nil, fmt.Errorf("%w for %s (read-only cache)", ErrNoToken, e.user)
		case localOK && (stored == nil || stored.Version < local.Version) && now.Before(c.refreshPoint(local)):
			// Redis lost the record (a restart without persistence) or went back to an
			// older one (a restored snapshot, a failover that lost writes): put ours
			// back rather than logging in again. Ours was read from or written to Redis
			// by this process: messages never reach this path.
			t := *local
			return c.save(ctx, e, base, &t, "reseed")
		}

		l, wait, stored, base, err := c.store.acquire(ctx, e.user, c.opts.LeaseTTL)
		stored, base, err = c.readable(e, stored, base, err)
		if err != nil {
			if l != nil {
				l.release()
			}
			return nil, err
		}
		if l == nil {
			if c.fromStore(e, stored, time.Now()) {
				return c.install(e, stored), nil // the holder finished just before
			}
			// Another process is refreshing: wait for its announcement, or for its lease
			// to run out (it may have died), then look again. Look again at least every
			// second: a holder that failed releases its lease without announcing anything.
			e.mu.Lock()
			changed := e.changedSince(snap.gen)
			e.awaiting = true
			e.mu.Unlock()
			waited := time.Now()
			timer := time.NewTimer(min(wait+10*time.Millisecond, followerRecheck))
			select {
			case <-changed:
			case <-timer.C:
			case <-ctx.Done():
			}
			timer.Stop()
			e.mu.Lock()
			e.awaiting = false
			e.mu.Unlock()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("tokencache: waiting for another process to refresh %s: %w", e.user, ctx.Err())
			}
			if h := c.opts.Hooks.LeaseWait; h != nil {
				h(e.user, time.Since(waited))
			}
			if t := c.heard(e, stored); t != nil {
				return t, nil // stored by this process meanwhile (a Set): no need to read it back
			}
			continue
		}
		t, err := c.obtain(ctx, e, stored, base)
		// The callers waiting here need not wait for the release too: the token is
		// stored, and whoever takes the lease next reads it together with the lease.
		if !c.goBackground(l.release) {
			l.release()
		}
		return t, err
	}
}

// heard returns the entry's own token if it is newer than stored and can be served as
// it is: it was written by this process meanwhile (a Set) or read by another of its
// calls. nil otherwise. The entry's token always came from Redis, never from a message.
func (c *Cache) heard(e *entry, stored *Token) *Token {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	t := e.tok
	if t == nil || stored != nil && t.Version <= stored.Version || !c.servable(e, now) ||
		c.auth != nil && !now.Before(c.refreshPoint(t)) {
		return nil
	}
	return t
}

// read returns the user's stored token. A corrupt record reads as a miss (logged once
// per record), with the base version that replaces it.
func (c *Cache) read(ctx context.Context, e *entry) (*Token, int64, error) {
	stored, base, err := c.store.get(ctx, e.user)
	return c.readable(e, stored, base, err)
}

// readable turns a corrupt record into a miss (logged once per record). A record of
// another format stays an error: it is neither served nor replaced.
func (c *Cache) readable(e *entry, stored *Token, base int64, err error) (*Token, int64, error) {
	if errors.Is(err, errCorrupt) {
		e.mu.Lock()
		if !e.corrupt {
			e.corrupt = true
			c.log.Warn("tokencache: corrupt token record treated as missing; it will be replaced",
				"user", e.user, "err", err)
		}
		e.mu.Unlock()
		return nil, base, nil
	}
	return stored, base, err
}

// save writes t (obtained by op) for the entry over the record of version base, and
// installs it. When another write won, it adopts the stored token if that can be
// served, and otherwise writes again over it, at most maxWrites times in all: whatever
// Redis holds, one token obtained from the broker is never thrown away for another
// login.
func (c *Cache) save(ctx context.Context, e *entry, base int64, t *Token, op string) (*Token, error) {
	for range maxWrites {
		e.mu.Lock()
		e.writing++
		e.mu.Unlock()
		o, err := c.store.write(ctx, e.user, base, t, op)
		err = c.announced(err)
		e.mu.Lock()
		e.writing--
		var installed *Token
		if err == nil && o.written {
			t.Version = o.version
			c.installLocked(e, t) // in the same section: an echo heard meanwhile waits for it
			installed = e.tok
		}
		e.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if o.written {
			if op == "reseed" {
				c.log.Info("tokencache: token restored to redis", "user", e.user, "version", o.version)
			} else {
				c.log.Info("tokencache: token refreshed", "user", e.user, "op", op, "version", o.version,
					"expires_in", time.Until(t.Expiry).Round(time.Second).String(), "token", Redact(t.AccessToken))
				if h := c.opts.Hooks.Refreshed; h != nil {
					h(e.user, op, t)
				}
			}
			c.writeLegacy(ctx, e.user, t)
			return installed, nil
		}
		stored, _, err := c.readable(e, o.stored, o.version, o.storedErr)
		if err != nil {
			return nil, err
		}
		if c.fromStore(e, stored, time.Now()) {
			c.log.Warn("tokencache: another process stored a token while this one refreshed (its lease ran out?); using theirs",
				"user", e.user, "op", op, "version", stored.Version)
			return c.install(e, stored), nil
		}
		base = o.version // what the script itself read: the next write matches it
	}
	return nil, &RefreshError{User: e.user, Op: op, Err: errRecordChurn}
}

// errRecordChurn is the failure of a refresh whose writes kept losing to records that
// could not be served.
var errRecordChurn = fmt.Errorf("the token record kept changing to unusable values during %d writes", maxWrites)

// announced logs a write whose announcement failed and returns nil for it: the write
// stands. Any other error is returned as it is.
func (c *Cache) announced(err error) error {
	var ue *unannouncedError
	if errors.As(err, &ue) {
		c.log.Warn("tokencache: token stored but not announced; other processes see it within MaxStaleness",
			"user", ue.user, "version", ue.version, "err", ue.reason)
		return nil
	}
	return err
}

// obtain gets a new token from the broker and stores it. The caller holds the lease;
// stored and base are the record as read when the lease was taken (the previous holder
// may have just finished).
func (c *Cache) obtain(ctx context.Context, e *entry, stored *Token, base int64) (*Token, error) {
	now := time.Now()
	if c.fromStore(e, stored, now) {
		return c.install(e, stored), nil
	}
	e.mu.Lock()
	current := stored
	if !c.usable(e, stored, now) {
		current = nil
		if c.usable(e, e.tok, now) {
			current = e.tok
		}
	}
	e.mu.Unlock()

	var tok *Token
	var err error
	op := "login"
	if r, ok := c.auth.(Renewer); ok && current != nil && now.Before(current.Expiry) {
		op = "renew"
		cctx, done := c.opts.Hooks.brokerCall(ctx, e.user, op)
		tok, err = r.Renew(cctx, e.user, current)
		done(err)
		if errors.Is(err, ErrTokenRejected) {
			c.log.Info("tokencache: broker rejected the token on renew; logging in", "user", e.user)
			op, tok, err = "login", nil, nil
		}
	}
	if op == "login" {
		cctx, done := c.opts.Hooks.brokerCall(ctx, e.user, op)
		tok, err = c.auth.Login(cctx, e.user)
		done(err)
	}
	if err == nil && (tok == nil || tok.AccessToken == "") {
		err = errors.New("no token returned")
	}
	if err != nil {
		return nil, &RefreshError{User: e.user, Op: op, Err: err}
	}

	t := *tok
	t.Version = 0
	if t.ObtainedAt.IsZero() {
		t.ObtainedAt = now
	}
	t.Expiry = ResolveExpiry(t.Expiry, t.AccessToken, t.ObtainedAt, c.opts.DefaultLifetime)
	if op == "renew" && t.MDAccessToken == "" {
		t.MDAccessToken = current.MDAccessToken
	}
	if err := checkStorable(&t, time.Now()); err != nil {
		return nil, &RefreshError{User: e.user, Op: op, Err: fmt.Errorf("broker returned a token that cannot be stored: %w", errNotTemporary{err})}
	}
	e.mu.Lock()
	reportedBad := e.isBad(&t)
	e.mu.Unlock()
	if reportedBad {
		// Storing it would bump the version, wake every watcher, and still not be served.
		return nil, &RefreshError{User: e.user, Op: op, Err: errors.New("broker returned a token already reported bad")}
	}
	if !now.Before(c.unusableAt(&t)) {
		return nil, &RefreshError{User: e.user, Op: op,
			Err: fmt.Errorf("broker returned a token that expires at %s", t.Expiry.UTC().Format(time.RFC3339))}
	}
	return c.save(ctx, e, base, &t, op)
}

// errNotTemporary marks a failure that retrying soon will not fix: the cache waits
// RetryMax before the next attempt.
type errNotTemporary struct{ error }

func (errNotTemporary) Temporary() bool { return false }
func (e errNotTemporary) Unwrap() error { return e.error }

// reportFailure passes a failed refresh to Hooks.RefreshFailed.
func (c *Cache) reportFailure(user string, err error) {
	h := c.opts.Hooks.RefreshFailed
	if h == nil || errors.Is(err, ErrNoToken) {
		return
	}
	op := "redis"
	var re *RefreshError
	if errors.As(err, &re) {
		op = re.Op
	}
	h(user, op, err)
}
