package testutil

import (
	"strings"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Server is one Redis for one test, as returned by Redis or StartRedis.
// Its methods are safe for concurrent use.
type Server struct {
	// Kind is "external", "redis-server" or "miniredis".
	Kind string
	// Prefix is unique per test ("bt-<sanitized test name>-<8 random
	// hex>"); tests use it as key namespace and in user names.
	Prefix string

	addr string
	opts *redis.Options // template; Options returns copies

	// redis-server only.
	bin   string
	dir   string
	port  int
	extra []string

	// miniredis only.
	mini *miniredis.Miniredis

	mu      sync.Mutex
	proc    *process // current redis-server process; nil when stopped
	stopped bool
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return s.addr }

// Options returns a fresh copy of the client options each call, ready for
// redis.NewClient (Addr, and Username, Password, DB and TLSConfig as
// needed).
func (s *Server) Options() *redis.Options {
	o := *s.opts
	if o.TLSConfig != nil {
		o.TLSConfig = o.TLSConfig.Clone()
	}
	return &o
}

// Client returns a new client with its own connection pool, closed in
// t.Cleanup. Call it several times to imitate separate processes.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(s.Options())
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Key returns s.Prefix + ":" + strings.Join(parts, ":"), a key in this
// test's namespace.
func (s *Server) Key(parts ...string) string {
	return s.Prefix + ":" + strings.Join(parts, ":")
}

// Name returns s.Prefix + "-" + suffix, a user or account name unique to
// this test. Use it for keys outside the prefix namespace, such as legacy
// "token:NAME" keys.
func (s *Server) Name(suffix string) string {
	return s.Prefix + "-" + suffix
}

// Stop stops the server; its port stays reserved for Start. For
// redis-server it kills the process and waits for it; for miniredis it
// closes the listener. Stopping a stopped server does nothing. The
// external server cannot be stopped: Stop skips the test (or fails it
// under EnvRequireReal=1).
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	if s.Kind == kindExternal {
		skipOrFail(t, "Stop is not supported for the external server at $%s; use StartRedis", envRedisURL)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	if s.mini != nil {
		s.mini.Close()
		return
	}
	s.proc.kill()
	s.proc = nil
}

// Start starts a stopped server again on the same port with empty data:
// redis-server runs as a new process; miniredis is flushed and restarted.
// Clients created before Stop reconnect by themselves. Calling Start on a
// running server fails the test. The external server cannot be restarted:
// Start skips the test (or fails it under EnvRequireReal=1).
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if s.Kind == kindExternal {
		skipOrFail(t, "Start is not supported for the external server at $%s; use StartRedis", envRedisURL)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		t.Fatalf("testutil: Start called on running server %s; call Stop first", s.addr)
	}
	if s.mini != nil {
		// miniredis keeps its data across Restart; flush first so that no
		// client ever sees the old data.
		s.mini.FlushAll()
		if err := s.mini.Restart(); err != nil {
			t.Fatalf("testutil: restart miniredis on %s: %v", s.addr, err)
		}
		s.stopped = false
		return
	}
	p, _, err := launch(t, s.launchSpec(s.port))
	if err != nil {
		t.Fatalf("testutil: restart: %v", err)
	}
	s.proc = p
	s.stopped = false
}

// launchSpec describes the redis-server of s on port (0: choose one).
func (s *Server) launchSpec(port int) launchSpec {
	return launchSpec{
		bin:  s.bin,
		dir:  s.dir,
		port: port,
		args: func(int) []string { return s.extra },
	}
}

// shutdown kills the current redis-server process, if any. It runs in
// t.Cleanup.
func (s *Server) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.kill()
		s.proc = nil
	}
	s.stopped = true
}
