package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/brokertoken/brokertoken/tokencache"
)

// scrubber removes secrets from text on its way out (logs, errors, alerts, HTTP
// answers): the libraries already redact what they print, this is the second line.
// It replaces every JWT-shaped string with its tokencache.Redact form and every known
// secret (passwords, API secrets, the Redis password, the webhook URL) with
// "[REDACTED]". It is safe for concurrent use.
type scrubber struct {
	mu      sync.RWMutex
	secrets []string // longest first, so a secret containing another is replaced whole
}

// jwtLike matches three dot-separated base64url segments, the shape of a JWT.
var jwtLike = regexp.MustCompile(`[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`)

// add registers secrets; values shorter than 4 characters are ignored (replacing them
// would garble ordinary text and they protect nothing).
func (s *scrubber) add(secrets ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range secrets {
		if len(v) >= 4 {
			s.secrets = append(s.secrets, v)
		}
	}
	sort.Slice(s.secrets, func(i, j int) bool { return len(s.secrets[i]) > len(s.secrets[j]) })
}

// scrub returns text without secrets.
func (s *scrubber) scrub(text string) string {
	if s == nil {
		return text
	}
	s.mu.RLock()
	for _, v := range s.secrets {
		if strings.Contains(text, v) {
			text = strings.ReplaceAll(text, v, "[REDACTED]")
		}
	}
	s.mu.RUnlock()
	if jwtLike.MatchString(text) {
		text = jwtLike.ReplaceAllStringFunc(text, tokencache.Redact)
	}
	return text
}

// newLogger returns the slog logger for format ("text" or "json") and level, writing
// to w through the scrubber. With progress, waits of over a second are also shown on w
// as one line each when the level would drop them (see progressHandler): the CLI's
// commands say what they wait for even with their logging off.
func newLogger(w io.Writer, format, level string, s *scrubber, progress bool) *slog.Logger {
	out := w
	if level == "off" {
		w = io.Discard
	}
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // checked by config; the zero value is info
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	if format == "json" {
		// Durations as Go writes them ("1m30s"), not as nanoseconds: an operator
		// reads "wait":"57s", as the text format shows it.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	var sh slog.Handler = scrubHandler{h: h, s: s}
	if level == "off" {
		sh = scrubHandler{h: offHandler{}, s: s}
	}
	if progress {
		sh = newProgressHandler(sh, out, s)
	}
	return slog.New(sh)
}

// offHandler drops every record.
type offHandler struct{}

func (offHandler) Enabled(context.Context, slog.Level) bool  { return false }
func (offHandler) Handle(context.Context, slog.Record) error { return nil }
func (h offHandler) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h offHandler) WithGroup(string) slog.Handler           { return h }

// scrubHandler passes every message and attribute through a scrubber.
type scrubHandler struct {
	h slog.Handler
	s *scrubber
}

func (h scrubHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h scrubHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.s.scrub(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h scrubHandler) WithAttrs(as []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(as))
	for i, a := range as {
		clean[i] = h.attr(a)
	}
	return scrubHandler{h: h.h.WithAttrs(clean), s: h.s}
}

func (h scrubHandler) WithGroup(name string) slog.Handler {
	return scrubHandler{h: h.h.WithGroup(name), s: h.s}
}

// attr returns a with every string in it scrubbed. Values of other kinds that may
// carry text (errors, Stringers, anything else) are turned into scrubbed strings.
func (h scrubHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.s.scrub(v.String()))
	case slog.KindGroup:
		group := v.Group()
		clean := make([]any, len(group))
		for i, g := range group {
			clean[i] = h.attr(g)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		return slog.String(a.Key, h.s.scrub(fmt.Sprint(v.Any())))
	}
	return slog.Attr{Key: a.Key, Value: v}
}
