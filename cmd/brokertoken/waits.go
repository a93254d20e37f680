package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Waits. Anything that makes a refresh wait over a second is logged at INFO or above
// when it starts, saying what is waited for, why, and for how long: the record carries
// a "user" attribute and a "wait" attribute (a duration, or words when the length is
// not known). The tradovate package logs its waits this way (the login budget, a time
// penalty, a retry after a temporary failure); this file adds the waits tokencache and
// the daemon know of (another process's refresh, a cool-down, a broker slot).
//
// The daemon also records each wait in the user's health record (see waitTap), so
// `status` and `invalidate` show what the daemon waits for; the CLI prints wait records
// on stderr as they happen even when its logging is off (see progressHandler).

// waitKey is the attribute that marks a log record as the announcement of a wait.
const waitKey = "wait"

// longWait is how long a wait lasts before it is worth a log line.
const longWait = time.Second

// waitTap is a slog.Handler that passes every record on and reports each wait of a
// user (a record at INFO or above with "user" and "wait" attributes) to on: the
// message, and how long the wait lasts when "wait" is a duration (else 0).
type waitTap struct {
	h  slog.Handler
	on func(user, msg string, d time.Duration)
}

func (w waitTap) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || w.h.Enabled(ctx, l)
}

func (w waitTap) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		var user string
		var d time.Duration
		isWait := false
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "user":
				user = a.Value.String()
			case waitKey:
				isWait = true
				if a.Value.Kind() == slog.KindDuration {
					d = a.Value.Duration()
				}
			}
			return true
		})
		if isWait && user != "" {
			w.on(user, r.Message, d)
		}
	}
	if !w.h.Enabled(ctx, r.Level) {
		return nil
	}
	return w.h.Handle(ctx, r)
}

func (w waitTap) WithAttrs(as []slog.Attr) slog.Handler {
	return waitTap{h: w.h.WithAttrs(as), on: w.on}
}

func (w waitTap) WithGroup(name string) slog.Handler {
	return waitTap{h: w.h.WithGroup(name), on: w.on}
}

// progressHandler shows the CLI's waits on stderr as they happen, as one line each,
// even when the log level would drop them; every other record goes to h as configured.
type progressHandler struct {
	h   slog.Handler
	w   io.Writer
	mu  *sync.Mutex // serialises writes to w
	s   *scrubber
	pre []slog.Attr // from WithAttrs
}

func newProgressHandler(h slog.Handler, w io.Writer, s *scrubber) progressHandler {
	return progressHandler{h: h, w: w, mu: &sync.Mutex{}, s: s}
}

func (p progressHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || p.h.Enabled(ctx, l)
}

func (p progressHandler) Handle(ctx context.Context, r slog.Record) error {
	if p.h.Enabled(ctx, r.Level) {
		return p.h.Handle(ctx, r)
	}
	if r.Level < slog.LevelInfo {
		return nil
	}
	var attrs []string
	isWait := false
	add := func(a slog.Attr) bool {
		if a.Key == waitKey {
			isWait = true
		}
		v := a.Value.Resolve()
		s := v.String()
		if v.Kind() == slog.KindDuration {
			s = v.Duration().Round(time.Millisecond).String()
		}
		attrs = append(attrs, a.Key+"="+s)
		return true
	}
	for _, a := range p.pre {
		add(a)
	}
	r.Attrs(add)
	if !isWait {
		return nil
	}
	line := "brokertoken: " + strings.TrimPrefix(r.Message, "brokertoken: ")
	if len(attrs) > 0 {
		line += " (" + strings.Join(attrs, " ") + ")"
	}
	line = p.s.scrub(oneLine(line)) + "\n"
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := io.WriteString(p.w, line)
	return err
}

func (p progressHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := p
	c.h = p.h.WithAttrs(as)
	c.pre = append(append([]slog.Attr(nil), p.pre...), as...)
	return c
}

func (p progressHandler) WithGroup(name string) slog.Handler {
	c := p
	c.h = p.h.WithGroup(name)
	return c
}

// leaseWaits turns tokencache's LeaseWait hook, called after each step of at most a
// second spent waiting for another process's refresh, into two log lines per wait
// longer than a second: one when it passes a second, one when it ends (done). Its
// methods are safe for concurrent use.
type leaseWaits struct {
	log   *slog.Logger
	bound time.Duration // the longest such a wait may last (the refresh timeout)

	mu    sync.Mutex // guards users
	users map[string]*leaseWait
}

type leaseWait struct {
	total     time.Duration
	announced bool
}

func newLeaseWaits(log *slog.Logger, bound time.Duration) *leaseWaits {
	return &leaseWaits{log: log, bound: bound, users: map[string]*leaseWait{}}
}

// waited is the LeaseWait hook.
func (l *leaseWaits) waited(user string, d time.Duration) {
	l.mu.Lock()
	w := l.users[user]
	if w == nil {
		w = &leaseWait{}
		l.users[user] = w
	}
	w.total += d
	announce := !w.announced && w.total >= longWait
	if announce {
		w.announced = true
	}
	total := w.total
	l.mu.Unlock()
	if announce {
		l.log.Info("brokertoken: waiting for another process's refresh of the token: it holds the user's refresh lease",
			"user", user, waitKey, fmt.Sprintf("until it stores a token, at most %s", l.bound), "waited", total.Round(time.Millisecond))
	}
}

// done ends user's wait, if any, logging how long it lasted when it was announced.
func (l *leaseWaits) done(user string) {
	l.mu.Lock()
	w := l.users[user]
	delete(l.users, user)
	l.mu.Unlock()
	if w != nil && w.announced {
		l.log.Info("brokertoken: done waiting for another process's refresh", "user", user,
			"waited", w.total.Round(time.Millisecond))
	}
}
