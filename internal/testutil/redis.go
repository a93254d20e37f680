// Package testutil provides isolated Redis servers for tests: a real
// redis-server started on a free loopback port, a real 3-master Redis
// Cluster, a TLS-only redis-server with ACL users, an external server named
// by $REDIS_URL, or, as a last resort, an in-process miniredis.
//
// Every server binds to 127.0.0.1, keeps its files in t.TempDir(), runs
// without persistence, and is stopped in t.Cleanup. Each server carries a
// Prefix unique to the test that tests use to namespace keys and names.
//
// Set BROKERTOKEN_REQUIRE_REAL_REDIS=1 (see EnvRequireReal), as CI does, to
// turn every fallback to miniredis and every skip for a missing binary into
// a test failure.
package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// EnvRequireReal is "BROKERTOKEN_REQUIRE_REAL_REDIS": when "1", any
// fallback to miniredis or any skip for a missing binary fails the test
// instead.
const EnvRequireReal = "BROKERTOKEN_REQUIRE_REAL_REDIS"

// Values of Server.Kind.
const (
	kindExternal    = "external"
	kindRedisServer = "redis-server"
	kindMiniredis   = "miniredis"
)

// envRedisURL names the variable that points Redis at an external server.
const envRedisURL = "REDIS_URL"

// Redis returns an isolated Redis for one test, chosen in this order:
//  1. the server at $REDIS_URL if set (parsed with redis.ParseURL);
//     isolation by Prefix only, never FLUSHDB/FLUSHALL; Kind "external";
//     Stop/Start not supported (they call t.Skip with a reason, or t.Fatal
//     under EnvRequireReal).
//  2. a redis-server started from PATH (exec.LookPath) on a free loopback
//     port; Kind "redis-server".
//  3. an in-process miniredis, logged with t.Log; Kind "miniredis". Under
//     EnvRequireReal=1 this case calls t.Fatal instead.
//
// Tests that need Stop/Start should call StartRedis instead.
func Redis(t testing.TB) *Server {
	t.Helper()
	redisURL := os.Getenv(envRedisURL)
	_, lookErr := exec.LookPath("redis-server")
	kind, err := chooseBackend(redisURL, lookErr, os.Getenv(EnvRequireReal))
	if err != nil {
		t.Fatal(err)
	}
	switch kind {
	case kindExternal:
		return newExternal(t, redisURL)
	case kindRedisServer:
		return startRedisServer(t)
	default:
		t.Log("testutil: redis-server not on PATH; using in-process miniredis")
		return newMiniredis(t)
	}
}

// chooseBackend decides which kind of server Redis uses, given the value of
// $REDIS_URL, the result of exec.LookPath("redis-server") and the value of
// EnvRequireReal. It returns an error when only miniredis is available but
// a real server is required.
func chooseBackend(redisURL string, lookPathErr error, requireRealEnv string) (string, error) {
	switch {
	case redisURL != "":
		return kindExternal, nil
	case lookPathErr == nil:
		return kindRedisServer, nil
	case requireRealEnv == "1":
		return "", fmt.Errorf("testutil: redis-server not on PATH (%v) and %s is empty, "+
			"but %s=1 forbids falling back to miniredis; install redis-server or set %s",
			lookPathErr, envRedisURL, EnvRequireReal, envRedisURL)
	default:
		return kindMiniredis, nil
	}
}

// StartRedis always starts a dedicated real redis-server (never $REDIS_URL,
// never miniredis) with optional extra args (e.g. "--maxmemory", "1mb").
// When redis-server is missing it skips with a clear reason, or fails under
// EnvRequireReal=1.
func StartRedis(t testing.TB, args ...string) *Server {
	t.Helper()
	return startRedisServer(t, args...)
}

// FreePort returns a free loopback TCP port. The port is free when
// FreePort returns; callers that fail to bind it should retry with a new
// one.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testutil: find a free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("testutil: release port %d: %v", port, err)
	}
	return port
}

// requireReal reports whether EnvRequireReal is set to "1".
func requireReal() bool {
	return os.Getenv(EnvRequireReal) == "1"
}

// skipOrFail skips the test with the given reason, or fails it when
// EnvRequireReal=1 so that CI never silently skips real-Redis tests.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := "testutil: " + fmt.Sprintf(format, args...)
	if requireReal() {
		t.Fatalf("%s (%s=1 forbids skipping)", msg, EnvRequireReal)
	}
	t.Skip(msg)
}

// lookBinary returns the path of the named binary, or skips/fails the test
// when it is not on PATH.
func lookBinary(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		skipOrFail(t, "%s not found on PATH: %v", name, err)
	}
	return path
}

// newPrefix returns "bt-<sanitized test name>-<8 random hex>".
func newPrefix(t testing.TB) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testutil: random prefix: %v", err)
	}
	return "bt-" + sanitize(t.Name()) + "-" + hex.EncodeToString(b[:])
}

// sanitize keeps ASCII letters, digits, '_' and '-' of name, replaces
// anything else (subtest '/', spaces, '{' which would be a cluster hash
// tag, ...) with '-', and truncates the result to a reasonable length.
func sanitize(name string) string {
	const maxLen = 40
	b := []byte(name)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			b[i] = '-'
		}
	}
	if len(b) > maxLen {
		b = b[:maxLen]
	}
	return string(b)
}

// randomSecret returns 32 random hex characters, e.g. for passwords.
func randomSecret(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testutil: random secret: %v", err)
	}
	return hex.EncodeToString(b[:])
}

// newExternal returns a Server for the external Redis at redisURL, after
// checking that it answers PING. It never flushes data: tests are isolated
// by Prefix only.
func newExternal(t testing.TB, redisURL string) *Server {
	t.Helper()
	opts, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatalf("testutil: parse %s: %v", envRedisURL, err)
	}
	s := &Server{Kind: kindExternal, Prefix: newPrefix(t), addr: opts.Addr, opts: opts}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := redis.NewClient(s.Options())
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("testutil: %s=%s does not answer PING: %v", envRedisURL, redactURL(redisURL), err)
	}
	return s
}

// redactURL hides the password of a Redis URL for log messages.
func redactURL(raw string) string {
	i := strings.Index(raw, "://")
	at := strings.LastIndex(raw, "@")
	if i < 0 || at < i {
		return raw
	}
	userinfo := raw[i+3 : at]
	if j := strings.Index(userinfo, ":"); j >= 0 {
		userinfo = userinfo[:j] + ":xxxxx"
	}
	return raw[:i+3] + userinfo + raw[at:]
}

// newMiniredis returns a Server backed by an in-process miniredis on a
// loopback port, closed in t.Cleanup.
func newMiniredis(t testing.TB) *Server {
	t.Helper()
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		t.Fatalf("testutil: start miniredis: %v", err)
	}
	t.Cleanup(m.Close)
	passRealTime(t, m)
	addr := m.Addr()
	return &Server{
		Kind:   kindMiniredis,
		Prefix: newPrefix(t),
		addr:   addr,
		opts:   &redis.Options{Addr: addr},
		mini:   m,
	}
}

// startRedisServer starts a dedicated redis-server with extra args and
// stops it in t.Cleanup.
func startRedisServer(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin := lookBinary(t, "redis-server")
	s := &Server{
		Kind:   kindRedisServer,
		Prefix: newPrefix(t),
		bin:    bin,
		dir:    t.TempDir(),
		extra:  append([]string(nil), extra...),
	}
	p, port, err := launch(t, s.launchSpec(0))
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	s.proc = p
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.port = port
	s.opts = &redis.Options{Addr: s.addr}
	t.Cleanup(s.shutdown)
	return s
}

// passRealTime makes miniredis expire keys as time passes. miniredis only ages TTLs
// when told to (FastForward); leases and token records rely on real expiry.
func passRealTime(t testing.TB, m *miniredis.Miniredis) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				m.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		<-stopped
	})
}
