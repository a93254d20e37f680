package tokencache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// pingEvery is how long the invalidation listener waits for a message before it pings
// Redis; a ping left unanswered that long again means a dead connection.
const pingEvery = 5 * time.Second

// listen receives invalidation messages until Close. Every (re)subscription drops the
// whole L1 layer: whatever was published while the connection was down is unknown.
func (c *Cache) listen() {
	defer c.wg.Done()
	ps := c.pubsub
	delay := 50 * time.Millisecond
	pinged := false
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
			if delay >= 2*time.Second {
				// Still failing after several tries (e.g. an ACL without one of the
				// channels): say so, since entries then rely on MaxStaleness alone.
				c.log.Warn("tokencache: cannot receive invalidations", "channels", c.store.records+" "+c.store.channel, "err", err)
			}
			select {
			case <-c.base.Done():
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, 2*time.Second)
			continue
		}
		delay, pinged = 50*time.Millisecond, false
		switch m := msg.(type) {
		case *redis.Subscription:
			// Both channels are subscribed by one command; the invalidation channel's
			// confirmation stands for both: what was published before is unknown.
			if m.Kind == "subscribe" && m.Channel == c.store.channel {
				c.subs.Add(1)
				c.dropAll()
			}
		case *redis.Message:
			if m.Channel == c.store.records {
				c.record(m.Payload)
			} else {
				c.announce(m.Payload)
			}
		}
	}
}

// subscribe subscribes to the records channel, then the invalidation channel.
func (c *Cache) subscribe() *redis.PubSub {
	return c.opts.Redis.Subscribe(c.base, c.store.records, c.store.channel)
}

// record handles "<version>:<user>\n<record>", published just before the same version's
// announcement: a process holding an older token of the user installs the new one from
// the message, without reading it back from Redis. Anything it cannot use that way is
// left to the announcement that follows.
func (c *Cache) record(payload string) {
	head, _, _ := strings.Cut(payload, "\n")
	if _, user, ok := strings.Cut(head, ":"); !ok || c.names.user(user) == nil {
		return // never asked for here (or malformed: the announcement will say)
	}
	user, t, err := parseRecordMessage(payload)
	if err != nil {
		c.log.Warn("tokencache: ignoring malformed record message", "len", len(payload), "err", err)
		return
	}
	e := c.names.user(user)
	v := t.Version
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tok != nil && e.tok.Version >= v || !c.usable(e, t, now) || c.auth != nil && !now.Before(c.refreshPoint(t)) {
		return
	}
	if h := c.opts.Hooks.Invalidated; h != nil && e.tok != nil {
		h(user, v)
	}
	c.installLocked(e, t)
}

// announce handles "<version>:<user>": the user's token now has that version in Redis.
func (c *Cache) announce(payload string) {
	user, v, bad, ok := parseAnnouncement(payload)
	if !ok {
		c.log.Warn("tokencache: ignoring malformed invalidation message", "len", len(payload))
		return
	}
	if bad {
		c.reported(user, v)
		return
	}
	e := c.names.user(user)
	if e == nil {
		return // never asked for here
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if v > e.known {
		e.known = v
	}
	if e.setting > 0 && e.flight == nil {
		// Probably the echo of this process's own Set, heard before the Set's reply:
		// the Set looks at e.known when it installs its token. Until then the old
		// token is not served.
		if e.tok == nil || e.tok.Version < v {
			e.fresh.Store(nil)
		}
		return
	}
	c.superseded(e)
}

// superseded acts on a newer version announced than the entry holds: the old token
// leaves the hot path, waiters wake, and the new one is fetched now, so the next call
// is a hit and watchers hear of it. e.mu must be held.
func (c *Cache) superseded(e *entry) {
	if e.known == 0 || e.tok != nil && e.tok.Version >= e.known {
		return
	}
	if h := c.opts.Hooks.Invalidated; h != nil && e.tok != nil {
		h(e.user, e.known)
	}
	e.fresh.Store(nil)
	e.signal()
	c.startFlight(e)
}

// parseRecordMessage parses "<version>:<user>\n<record>". Its errors never quote the
// payload (it holds a token).
func parseRecordMessage(payload string) (user string, t *Token, err error) {
	head, raw, ok := strings.Cut(payload, "\n")
	vs, user, ok2 := strings.Cut(head, ":")
	v, vok := parseVersion(vs)
	if !ok || !ok2 || !vok || user == "" {
		return "", nil, errors.New("not <version>:<user> and a record")
	}
	if t, err = decodeRecord([]byte(raw)); err != nil {
		return "", nil, errors.New("record does not decode")
	}
	if t.Version != v {
		return "", nil, fmt.Errorf("record has version %d, message %d", t.Version, v)
	}
	return user, t, nil
}

// parseAnnouncement parses "<version>:<user>", or "!<version>:<user>" (bad) from a
// read-only cache reporting a rejected token.
func parseAnnouncement(payload string) (user string, v int64, bad, ok bool) {
	rest, bad := strings.CutPrefix(payload, badPrefix)
	vs, user, ok := strings.Cut(rest, ":")
	v, vok := parseVersion(vs)
	if !ok || !vok || user == "" {
		return "", 0, false, false
	}
	return user, v, bad, true
}

// parseVersion reads a version the way set.lua writes it: a positive decimal with no
// sign and no leading zero. Anything else ("07", "+7", "0") is not a message of ours.
func parseVersion(s string) (int64, bool) {
	if s == "" || s[0] < '1' || s[0] > '9' {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

// dropAll makes every entry confirm its token with Redis before serving it again.
func (c *Cache) dropAll() {
	for _, e := range c.names.users() {
		e.mu.Lock()
		e.fresh.Store(nil)
		e.confirmed = time.Time{}
		e.signal()
		if len(e.watchers) > 0 {
			c.startFlight(e)
		}
		e.mu.Unlock()
	}
}

// Invalidate reports that the broker rejected badAccessToken for account (an HTTP 401
// from Tradovate, a 403 TokenException from Kite, a failed websocket authorize). The
// token is never served by this cache again. If Redis still holds it, one refresh
// starts (shared with every other report of the same token, in this process and
// others); if Redis already holds another token, nothing is refreshed. A read-only
// cache cannot refresh: it asks the caches that can (the daemon) over the invalidation
// channel. Invalidate does not wait for the refresh: the next Token call does.
func (c *Cache) Invalidate(ctx context.Context, account, badAccessToken string) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if account == "" {
		return ErrEmptyName
	}
	if badAccessToken == "" {
		return nil
	}
	return c.invalidate(ctx, c.entryFor(account), badAccessToken)
}

// badPrefix starts the message a read-only cache publishes for a rejected token:
// "!<version>:<user>".
const badPrefix = "!"

func (c *Cache) invalidate(ctx context.Context, e *entry, bad string) error {
	e.mu.Lock()
	e.markBad(bad)
	if e.tok != nil && e.tok.AccessToken == bad {
		e.fresh.Store(nil)
	}
	e.mu.Unlock()

	stored, _, err := c.read(ctx, e)
	if err != nil {
		return err
	}
	if stored != nil && stored.AccessToken != bad {
		c.install(e, stored)
		return nil
	}
	if stored == nil {
		return nil // nothing to replace
	}
	if c.auth == nil {
		msg := badPrefix + strconv.FormatInt(stored.Version, 10) + ":" + e.user
		if err := c.opts.Redis.Publish(ctx, c.store.channel, msg).Err(); err != nil {
			return redisErr("report a rejected token of "+e.user, err)
		}
		return nil
	}
	e.mu.Lock()
	if e.flight == nil {
		c.log.Info("tokencache: token reported bad; refreshing", "user", e.user, "token", Redact(bad))
	}
	c.startFlight(e)
	e.mu.Unlock()
	return nil
}

// reported handles a read-only cache's report that version v of user's token was
// rejected: a cache that can refresh does, if Redis still holds that version.
func (c *Cache) reported(user string, v int64) {
	if c.auth == nil {
		return
	}
	e := c.userEntry(user)
	c.goBackground(func() {
		ctx, cancel := context.WithTimeout(c.base, c.opts.RefreshTimeout)
		defer cancel()
		stored, _, err := c.read(ctx, e)
		if err != nil || stored == nil || stored.Version != v {
			return
		}
		if err := c.invalidate(ctx, e, stored.AccessToken); err != nil {
			c.log.Warn("tokencache: acting on a reported bad token failed", "user", user, "err", err)
		}
	})
}
