package tokencache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/brokertoken/brokertoken/internal/backoff"
)

// This file does the I/O of a refresh: it reads Redis, takes the lease, calls the
// broker and writes. Every decision about the entry's state is state.go's: this file
// raises events (apply) and never writes an entry's fields.

// maxWaits bounds how often one Token call waits for a refresh whose result turned out
// unusable (reported bad or superseded meanwhile) before it gives up.
const maxWaits = 3

// token is the slow path of Token: the entry's token is not on the hot path.
func (c *Cache) token(ctx context.Context, e *entry) (*Token, error) {
	for range maxWaits {
		if c.closed.Load() {
			return nil, ErrClosed
		}
		now := time.Now()
		e.mu.Lock()
		o := c.apply(e, event{kind: evWant}, now)
		e.mu.Unlock()
		switch {
		case o.tok != nil:
			return o.tok, nil
		case o.err != nil:
			return nil, o.err
		}
		if !o.lead || !c.lead(ctx, e, o.fl, now) {
			// Another caller's refresh, or the rest of this one's, in the background.
			select {
			case <-o.fl.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("tokencache: waiting for the token of %s: %w", e.user, ctx.Err())
			}
		}
		if o.fl.err != nil {
			return nil, o.fl.err
		}
		e.mu.Lock()
		ok := c.judge(e, o.fl.tok, time.Now()) != invalid
		e.mu.Unlock()
		if ok {
			return o.fl.tok, nil
		}
	}
	return nil, fmt.Errorf("%w: every refresh of %s returned a token reported bad or expired", ErrNoToken, e.user)
}

// lead runs the refresh of fl for the caller that started it, and reports whether it
// finished it. The common case, a good token in Redis, is served in the caller's
// goroutine with one GET: no handoff to another goroutine, no channel; so is a read that
// Redis failed. Anything more (a lease, a broker call, or a read the caller gave up on)
// continues in the background, where the caller's context cannot cancel it for the
// others; the caller then waits for fl.done.
func (c *Cache) lead(ctx context.Context, e *entry, fl *flight, now time.Time) (finished bool) {
	snap, err := c.readLatest(ctx, e, now)
	var first *snapshot
	now = time.Now() // after the round trip
	e.mu.Lock()
	if err != nil && ctx.Err() == nil {
		// Redis's own answer (unreachable, refused): the refresh would start with the
		// same read and end with the same error, after go-redis's retries once more.
		// Only a caller giving up hands the flight to the background.
		c.done(e, fl, nil, err, now)
		return true
	}
	if err == nil {
		if c.newer(e, snap.stored, now) {
			c.apply(e, event{kind: evServed, fl: fl, tok: snap.stored}, now)
			ch := fl.done // made under e.mu by whoever waits
			e.mu.Unlock()
			if ch != nil {
				close(ch)
			}
			return true
		}
		read := snap // escapes only on this path: the hit above allocates nothing for it
		first = &read
	}
	fl.waitable()
	e.mu.Unlock()
	if !c.goBackground(func() { c.runDetached(e, fl, first) }) {
		e.mu.Lock()
		c.done(e, fl, nil, ErrClosed, time.Now())
	}
	return false
}

// launchRefresh runs fl in the background (state.go starts refreshes through it).
func (c *Cache) launchRefresh(e *entry, fl *flight) bool {
	return c.goBackground(func() { c.runDetached(e, fl, nil) })
}

// runDetached runs a refresh detached from any caller's context, so one caller giving
// up never fails it for the others; RefreshTimeout and Close bound it.
func (c *Cache) runDetached(e *entry, fl *flight, first *snapshot) {
	ctx, cancel := context.WithTimeout(c.base, c.opts.RefreshTimeout)
	tok, err := c.refresh(ctx, e, first)
	cancel()
	e.mu.Lock()
	c.done(e, fl, tok, err, time.Now())
}

// done records fl's outcome at now and wakes its waiters, if any. e.mu must be held;
// done releases it.
func (c *Cache) done(e *entry, fl *flight, tok *Token, err error, now time.Time) {
	c.apply(e, event{kind: evFlightDone, fl: fl, tok: tok, err: err}, now)
	ch := fl.done // made under e.mu by whoever waits
	e.mu.Unlock()
	if ch != nil {
		close(ch)
	}
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
func (c *Cache) readLatest(ctx context.Context, e *entry, now time.Time) (snapshot, error) {
	for i := 0; ; i++ {
		e.mu.Lock()
		snap := snapshot{gen: e.gen} // before the read, so no announcement is missed
		e.mu.Unlock()
		var err error
		if snap.stored, snap.base, err = c.read(ctx, e, now); err != nil {
			return snap, err
		}
		e.mu.Lock()
		again := c.apply(e, event{kind: evRead, version: snap.base, gen: snap.gen}, now).ok
		e.mu.Unlock()
		if !again || i == maxRereads {
			return snap, nil
		}
	}
}

// launchPeek reads the record in the background (state.go's peek): it installs a newer
// record, so an announced token reaches watchers and waiting callers at once, even while
// a refresh runs (it may be waiting at the broker: a failing refresh then serves the
// token installed, a successful one finds it stored). It only reads: whatever a message
// says, it never takes a lease, calls the broker or touches the backoff.
func (c *Cache) launchPeek(e *entry) bool {
	return c.goBackground(func() {
		ctx, cancel := context.WithTimeout(c.base, c.opts.RefreshTimeout)
		defer cancel()
		for i := 0; ; i++ {
			snap, err := c.readLatest(ctx, e, time.Now())
			e.mu.Lock()
			now := time.Now()
			if err == nil && c.newer(e, snap.stored, now) {
				c.apply(e, event{kind: evInstalled, tok: snap.stored}, now)
			}
			if i == maxRereads && err == nil {
				err = errGaveUp
			}
			// An announcement heard after readLatest's last look (it skipped a peek of its
			// own, since this one ran) makes it look again.
			again := c.apply(e, event{kind: evPeekEnded, version: snap.base, err: err}, now).ok
			e.mu.Unlock()
			if !again {
				return
			}
		}
	})
}

// errGaveUp ends a peek that looked as often as it may.
var errGaveUp = errors.New("tokencache: looked often enough")

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
		var snap snapshot
		if first != nil {
			snap, first = *first, nil
		} else {
			var err error
			if snap, err = c.readLatest(ctx, e, time.Now()); err != nil {
				return nil, err
			}
		}
		stored, base := snap.stored, snap.base
		now := time.Now()
		e.mu.Lock()
		if c.newer(e, stored, now) {
			t := c.apply(e, event{kind: evInstalled, tok: stored}, now).tok
			e.mu.Unlock()
			return t, nil
		}
		local := e.tok
		restore := c.auth != nil && c.judge(e, local, now) == fresh && (stored == nil || stored.Version < local.Version)
		reportAgain := c.auth == nil && stored != nil && e.isBad(stored) &&
			c.apply(e, event{kind: evReportSlot}, now).ok
		e.mu.Unlock()

		switch {
		case c.auth == nil:
			if reportAgain {
				if err := c.publishReport(ctx, e, stored); err != nil {
					c.log.Warn("tokencache: reporting a rejected token again failed", "user", e.user, "err", err)
				}
			}
			return nil, fmt.Errorf("%w for %s (read-only cache)", ErrNoToken, e.user)
		case restore:
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
			if t := c.installNewer(e, stored); t != nil {
				return t, nil // the holder finished just before
			}
			if err := c.await(ctx, e, snap.gen, wait); err != nil {
				return nil, err
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

// await waits for another process's refresh: for an announcement (any signal after
// generation gen), or for the holder's lease to run out (it may have died), and at most
// followerRecheck, since a holder that failed releases its lease without announcing.
func (c *Cache) await(ctx context.Context, e *entry, gen uint32, wait time.Duration) error {
	e.mu.Lock()
	changed := e.changedSince(gen)
	c.apply(e, event{kind: evAwaited, on: true}, time.Now())
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
	c.apply(e, event{kind: evAwaited}, time.Now())
	e.mu.Unlock()
	if ctx.Err() != nil {
		return fmt.Errorf("tokencache: waiting for another process to refresh %s: %w", e.user, ctx.Err())
	}
	if h := c.opts.Hooks.LeaseWait; h != nil {
		h(e.user, time.Since(waited))
	}
	return nil
}

// installNewer installs stored, just read, when it may replace the entry's token and be
// served as it is, and returns the entry's token then; nil otherwise.
func (c *Cache) installNewer(e *entry, stored *Token) *Token {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if !c.newer(e, stored, now) {
		return nil
	}
	return c.apply(e, event{kind: evInstalled, tok: stored}, now).tok
}

// heard returns the entry's own token if it is newer than stored and can be served as
// it is: it was written by this process meanwhile (a Set) or read by another of its
// calls. nil otherwise. The entry's token always came from Redis, never from a message.
func (c *Cache) heard(e *entry, stored *Token) *Token {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, now := e.tok, time.Now()
	if t == nil || stored != nil && t.Version <= stored.Version || !c.servable(e, now) || c.judge(e, t, now) != fresh {
		return nil
	}
	return t
}

// read returns the user's stored token, read at now (give or take the round trip). A
// corrupt record reads as a miss (logged once per record), with the base version that
// replaces it.
func (c *Cache) read(ctx context.Context, e *entry, now time.Time) (*Token, int64, error) {
	stored, base, err := c.store.get(ctx, e.user, now)
	return c.readable(e, stored, base, err)
}

// readable turns a corrupt record into a miss (logged once per record). A record of
// another format stays an error: it is neither served nor replaced.
func (c *Cache) readable(e *entry, stored *Token, base int64, err error) (*Token, int64, error) {
	if errors.Is(err, errCorrupt) {
		e.mu.Lock()
		first := c.apply(e, event{kind: evCorrupt}, time.Now()).ok
		e.mu.Unlock()
		if first {
			c.log.Warn("tokencache: corrupt token record treated as missing; it will be replaced",
				"user", e.user, "err", err)
		}
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
		c.apply(e, event{kind: evWriteStarted}, time.Now())
		e.mu.Unlock()
		o, err := c.store.write(ctx, e.user, base, t, op)
		err = c.keepUnannounced(err)
		var written *Token
		if err == nil && o.written {
			t.Version = o.version
			written = t
		}
		e.mu.Lock()
		// In one section with the write's end: an echo heard meanwhile waits for it.
		installed := c.apply(e, event{kind: evWriteEnded, tok: written}, time.Now()).tok
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
		if t := c.installNewer(e, stored); t != nil {
			c.log.Warn("tokencache: another process stored a token while this one refreshed (its lease ran out?); using theirs",
				"user", e.user, "op", op, "version", stored.Version)
			return t, nil
		}
		base = o.version // what the script itself read: the next write matches it
	}
	return nil, &RefreshError{User: e.user, Op: op, Err: errRecordChurn}
}

// errRecordChurn is the failure of a refresh whose writes kept losing to records that
// could not be served.
var errRecordChurn = fmt.Errorf("the token record kept changing to unusable values during %d writes", maxWrites)

// keepUnannounced logs a write whose announcement failed and returns nil for it: the
// write stands. Any other error is returned as it is.
func (c *Cache) keepUnannounced(err error) error {
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
	if t := c.installNewer(e, stored); t != nil {
		return t, nil
	}
	now := time.Now()
	e.mu.Lock()
	current := stored
	if c.judge(e, stored, now) == invalid {
		current = nil
		if c.judge(e, e.tok, now) != invalid {
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
	t.Expiry = resolveExpiry(t.Expiry, t.AccessToken, t.ObtainedAt, c.opts.DefaultLifetime)
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
	if c.state(&t, now) == invalid {
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

// backoff is the wait after the n-th consecutive failure (see internal/backoff).
func (c *Cache) backoff(n int) time.Duration {
	return backoff.Jittered(n, c.opts.RetryMin, c.opts.RetryMax)
}

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
