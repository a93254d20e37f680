package tokencache

import (
	"context"
	"time"
)

// watcher is one Watch channel; since is the newest version it was sent.
type watcher struct {
	ch    chan *Token
	since int64
}

// Watch returns a channel that receives each newer token of account's login user: every
// version stored after the one this process holds when Watch is called, each once. A
// slow reader is not sent a backlog: it gets the newest token when it reads. The channel
// is closed when ctx is done or the cache is closed.
//
// Websocket streamers reconnect once per received token. Call Watch before Token, and
// skip a received token whose Version is not above the one you connected with. For a
// name [CheckName] refuses, the channel is closed at once (Token says why).
func (c *Cache) Watch(ctx context.Context, account string) <-chan *Token {
	w := &watcher{ch: make(chan *Token, 1)}
	e, err := c.entryFor(account)
	if err != nil {
		close(w.ch)
		return w.ch
	}
	e.mu.Lock()
	c.apply(e, event{kind: evWatch, w: w, on: true}, time.Now())
	e.mu.Unlock()

	stop := func() {
		e.mu.Lock()
		c.apply(e, event{kind: evWatch, w: w}, time.Now())
		e.mu.Unlock()
	}
	if !c.goBackground(func() {
		select {
		case <-ctx.Done():
		case <-c.base.Done():
		}
		stop()
	}) {
		stop()
	}
	return w.ch
}

// notify sends t to every watcher that has not seen it, replacing an unread older token.
// e.mu must be held: it serialises the sends and the close.
func (c *Cache) notify(e *entry, t *Token) {
	e.held()
	for w := range e.watchers {
		if t.Version <= w.since {
			continue
		}
		w.since = t.Version
		select {
		case w.ch <- t:
		default:
			select {
			case <-w.ch:
			default:
			}
			w.ch <- t
		}
	}
}
