package tokencache

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// pingEvery is how long the invalidation listener waits for a message before it pings
// Redis; a ping left unanswered that long again means a dead connection.
const pingEvery = 5 * time.Second

// listen receives announcements (and, in a cache that can refresh, reports) until
// Close. Every (re)subscription drops the whole L1 layer: whatever was published while
// the connection was down is unknown. Messages are hints: an announcement makes the
// cache read Redis again, a report makes it check the token; neither is served or
// stored as it is.
func (c *Cache) listen() {
	defer c.wg.Done()
	ps := c.pubsub
	delay := 50 * time.Millisecond
	pinged := false
	failing := time.Time{} // when receiving started to fail; zero while it works
	for {
		msg, err := ps.ReceiveTimeout(c.base, pingEvery)
		if c.closed.Load() {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if !pinged {
					pinged = true
					_ = ps.Ping(c.base)
					continue
				}
				// No answer to our ping: the connection is half-open. Start over.
				c.log.Warn("tokencache: invalidation channel unresponsive; resubscribing")
				c.life.RLock()
				if !c.closed.Load() {
					_ = ps.Close()
					ps = c.subscribe()
					c.pubsub = ps
				}
				c.life.RUnlock()
				pinged = false
				continue
			}
			if failing.IsZero() {
				failing = time.Now()
			}
			if time.Since(failing) >= time.Second || isNoPerm(err) {
				// Still failing (e.g. an ACL without one of the channels): say so, since
				// entries then rely on MaxStaleness alone.
				c.log.Warn("tokencache: cannot receive invalidations; tokens are re-read every MaxStaleness instead",
					"channels", strings.Join(c.channels(), " "), "err", err)
				failing = time.Now() // once a second at most, while it lasts
			}
			select {
			case <-c.base.Done():
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, 2*time.Second)
			continue
		}
		delay, pinged, failing = 50*time.Millisecond, false, time.Time{}
		switch m := msg.(type) {
		case *redis.Subscription:
			// The announcement channel is subscribed last; its confirmation stands for
			// all: what was published before is unknown.
			if m.Kind == "subscribe" && m.Channel == c.store.channel {
				c.subs.Add(1)
				c.dropAll()
			}
		case *redis.Message:
			if m.Channel == c.store.reports {
				c.reported(m.Payload)
			} else {
				c.announce(m.Payload)
			}
		}
	}
}

// isNoPerm reports whether err is Redis refusing a command for lack of ACL rights.
func isNoPerm(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply) && strings.HasPrefix(reply.Error(), "NOPERM")
}

// channels lists what the cache subscribes to, the announcement channel last: reports
// too when the cache can act on them.
func (c *Cache) channels() []string {
	if c.auth == nil {
		return []string{c.store.channel}
	}
	return []string{c.store.reports, c.store.channel}
}

// subscribe subscribes to the cache's channels.
func (c *Cache) subscribe() *redis.PubSub {
	return c.opts.Redis.Subscribe(c.base, c.channels()...)
}

// announce handles "<version>:<user>": another process says it stored that version. It
// is a hint: the cache stops serving its copy until Redis confirms what it holds, and
// reads the record now (a read only: never a lease or a broker call), so the next call
// is a hit and watchers hear of the new token. A forged message costs each cache one
// read, never more than that: what Redis answers is served, whatever version the
// message named. "ok:<version>:<user>" is a writer's answer to a report: the broker
// accepts that version, so readers that reported it may serve it again.
func (c *Cache) announce(payload string) {
	if rest, ok := strings.CutPrefix(payload, keptAnswer); ok {
		c.kept(rest)
		return
	}
	user, v, ok := parseAnnouncement(payload)
	if !ok {
		c.log.Warn("tokencache: ignoring malformed invalidation message", "len", len(payload))
		return
	}
	if e := c.names.user(user); e != nil {
		e.mu.Lock()
		c.apply(e, event{kind: evAnnounced, version: v}, time.Now())
		e.mu.Unlock()
	}
}

// keptAnswer starts a writer's answer to a report whose token the broker accepts.
const keptAnswer = "ok:"

// kept handles "<version>:<user>" after keptAnswer: the writers checked that version
// with the broker, which accepts it. A cache that reported it (and so stopped serving
// it) may serve it again. A forged answer can only make a cache serve the token Redis
// holds, which it reported itself.
func (c *Cache) kept(payload string) {
	user, v, ok := parseAnnouncement(payload)
	if !ok {
		return
	}
	e := c.names.user(user)
	if e == nil {
		return
	}
	e.mu.Lock()
	c.apply(e, event{kind: evKept, version: v}, time.Now())
	e.mu.Unlock()
	if c.opts.Hooks.ReportKept != nil {
		c.opts.Hooks.ReportKept(user, v)
	}
}

// parseAnnouncement parses "<version>:<user>", the payload of announcements and reports.
func parseAnnouncement(payload string) (user string, v int64, ok bool) {
	vs, user, ok := strings.Cut(payload, ":")
	v, vok := parseVersion(vs)
	if !ok || !vok || user == "" {
		return "", 0, false
	}
	return user, v, true
}

// parseVersion reads a version the way set.lua writes it: a positive decimal of at most
// 16 digits with no sign and no leading zero. Anything else ("07", "+7", "0") is not a
// message of ours.
func parseVersion(s string) (int64, bool) {
	if s == "" || len(s) > maxVersionDigits || s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

// dropAll makes every entry confirm its token with Redis before serving it again.
func (c *Cache) dropAll() {
	for _, e := range c.names.users() {
		e.mu.Lock()
		c.apply(e, event{kind: evResubscribed}, time.Now())
		e.mu.Unlock()
	}
}

// Invalidate reports that the broker rejected badToken for account (an HTTP 401 from
// Tradovate, a 403 TokenException from Kite, a failed websocket authorize). badToken
// may be the access token or the market-data token: a stored token holding either is
// never served by this cache again. If Redis still holds it, one refresh starts (shared
// with every other report of the same token, in this process and others); if Redis
// already holds another token, nothing is refreshed. A read-only cache cannot refresh:
// it reports the stored version on the reports channel to the caches that can (the
// daemon), which check the token with the broker when they can (see [Checker]) and
// refresh at most once per RetryMin per user. Invalidate does not wait for the refresh:
// the next Token call does.
//
// Errors: ErrInvalidName, ErrClosed, ErrRedisUnavailable, or Redis's refusal (a
// read-only cache needs the right to PUBLISH on the reports channel).
func (c *Cache) Invalidate(ctx context.Context, account, badToken string) error {
	if c.closed.Load() {
		return ErrClosed
	}
	e, err := c.entryFor(account)
	if err != nil {
		return err
	}
	if badToken == "" {
		return nil
	}
	return c.invalidate(ctx, e, badToken)
}

// holds reports whether t's access or market-data token is tok.
func holds(t *Token, tok string) bool {
	return t.AccessToken == tok || t.MDAccessToken == tok
}

func (c *Cache) invalidate(ctx context.Context, e *entry, bad string) error {
	e.mu.Lock()
	c.apply(e, event{kind: evReportedBad, bad: bad}, time.Now())
	e.mu.Unlock()

	stored, _, err := c.read(ctx, e, time.Now())
	if err != nil {
		return err
	}
	if stored == nil {
		return nil // nothing to replace
	}
	if !holds(stored, bad) {
		c.installNewer(e, stored)
		return nil
	}
	if c.auth == nil {
		return c.report(ctx, e, stored)
	}
	e.mu.Lock()
	if e.flight == nil {
		c.log.Info("tokencache: token reported bad; refreshing", "user", e.user, "token", Redact(bad))
	}
	c.startFlight(e)
	e.mu.Unlock()
	return nil
}

// report asks the caches that can refresh (the daemon) to replace stored, which this
// read-only cache was told is bad: "<version>:<user>" when its access token is bad,
// "md:<version>:<user>" when only its market-data token is (that one cannot be checked
// cheaply). A writer acts on at most one report per user per RetryMin, so a report
// that came too soon after another may be dropped: while Redis still holds the bad
// token, the cache reports it again at its next read, once per RetryMin, instead of
// waiting for that token to expire.
func (c *Cache) report(ctx context.Context, e *entry, stored *Token) error {
	e.mu.Lock()
	c.apply(e, event{kind: evReportSlot, on: true}, time.Now())
	e.mu.Unlock()
	return c.publishReport(ctx, e, stored)
}

// publishReport publishes the report of stored.
func (c *Cache) publishReport(ctx context.Context, e *entry, stored *Token) error {
	e.mu.Lock()
	mdOnly := !e.isBadAccess(stored)
	e.mu.Unlock()
	msg := strconv.FormatInt(stored.Version, 10) + ":" + e.user
	if mdOnly {
		msg = mdReport + msg
	}
	if err := c.opts.Redis.Publish(ctx, c.store.reports, msg).Err(); err != nil {
		return redisErr("report a rejected token of "+e.user+" on "+c.store.reports, err)
	}
	return nil
}

// mdReport starts a report of a rejected market-data token.
const mdReport = "md:"

// reported handles another process's report that the stored version of a user's token
// was rejected by the broker. Anyone allowed to publish on the reports channel can send
// one, so a report costs little and never crowds out a genuine one:
//   - a version older than the one this process holds was replaced already: ignored;
//   - a newer one is read from Redis first, one such read at a time per user;
//   - one naming the stored version is acted on once per user per RetryMin: the token
//     is checked with the broker when the Authenticator is a [Checker] and refreshed
//     only if the broker refuses it (or cannot say); when the broker accepts it, the
//     writers say so ("ok:<version>:<user>"), so the reporters serve it again.
//
// A report of the market-data token alone cannot be checked cheaply: it is refreshed,
// once per RetryMin at most.
func (c *Cache) reported(payload string) {
	rest, mdOnly := strings.CutPrefix(payload, mdReport)
	user, v, ok := parseAnnouncement(rest)
	if !ok || c.auth == nil {
		return
	}
	e := c.names.user(user)
	if e == nil {
		return // not a user this process refreshes
	}
	e.mu.Lock()
	var held int64
	if e.tok != nil {
		held = e.tok.Version
	}
	now := time.Now()
	switch {
	case v < held:
		e.mu.Unlock()
		return
	case v > held && !c.apply(e, event{kind: evReportRead, on: true}, now).ok:
		e.mu.Unlock()
		return // one such read at a time
	case v == held && !c.apply(e, event{kind: evReportSlot}, now).ok:
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()
	c.goBackground(func() {
		if v > held {
			defer func() {
				e.mu.Lock()
				c.apply(e, event{kind: evReportRead}, time.Now())
				e.mu.Unlock()
			}()
		}
		ctx, cancel := context.WithTimeout(c.base, c.opts.RefreshTimeout)
		defer cancel()
		stored, _, err := c.read(ctx, e, time.Now())
		if err != nil || stored == nil || stored.Version != v {
			return // gone, replaced already, or not a version Redis holds
		}
		if v > held {
			e.mu.Lock()
			ok := c.apply(e, event{kind: evReportSlot}, time.Now()).ok
			e.mu.Unlock()
			if !ok {
				return
			}
		}
		if ch, ok := c.auth.(Checker); ok && !mdOnly {
			err := ch.Check(ctx, user, stored)
			switch {
			case err == nil:
				c.log.Info("tokencache: a token reported bad is accepted by the broker; keeping it",
					"user", user, "version", v)
				msg := keptAnswer + strconv.FormatInt(v, 10) + ":" + user
				if err := c.opts.Redis.Publish(ctx, c.store.channel, msg).Err(); err != nil {
					c.log.Warn("tokencache: could not tell the reporters the token is kept", "user", user, "err", err)
				}
				return
			case !errors.Is(err, ErrTokenRejected):
				c.log.Warn("tokencache: could not check a token reported bad; refreshing it", "user", user, "err", err)
			}
		}
		if err := c.invalidate(ctx, e, stored.AccessToken); err != nil {
			c.log.Warn("tokencache: acting on a reported bad token failed", "user", user, "err", err)
		}
	})
}
