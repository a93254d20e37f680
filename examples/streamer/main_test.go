package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/demoenv"
	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/internal/testutil/wsfake"
	"github.com/brokertoken/brokertoken/tokencache"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

// fixture is a real Redis, the fake broker, the fake market-data socket, a daemon
// storing tokens, and the streamer running in the background.
type fixture struct {
	t      *testing.T
	ctx    context.Context
	redis  *testutil.Server
	broker *tradovatefake.Server
	md     *wsfake.Server
	daemon *demoenv.Daemon
	user   string
	out    *testutil.Buffer
	stop   context.CancelFunc
	done   chan error
}

func newFixture(t *testing.T) *fixture {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	f := &fixture{t: t, ctx: ctx, redis: testutil.Redis(t), broker: tradovatefake.New(t, tradovatefake.Options{}), out: &testutil.Buffer{}}
	f.user = f.redis.Name("user")
	f.broker.AddUser(f.user, "demo-password")
	f.md = wsfake.New(wsfake.Options{Valid: f.broker.Valid, QuoteInterval: 20 * time.Millisecond, RecheckInterval: 5 * time.Millisecond})
	t.Cleanup(f.md.Close)
	d, err := demoenv.NewDaemon(f.redis.Client(t), f.redis.Prefix, f.broker, f.user)
	require.NoError(t, err)
	t.Cleanup(d.Close)
	f.daemon = d
	return f
}

// start runs the streamer until stop.
func (f *fixture) start() {
	ctx, cancel := context.WithCancel(f.ctx)
	f.stop, f.done = cancel, make(chan error, 1)
	go func() {
		f.done <- run(ctx, f.out, config{
			Redis: f.redis.Client(f.t), Prefix: f.redis.Prefix, User: f.user, URL: f.md.URL(),
			Symbols: []string{"ESZ6", "NQZ6"}, Heartbeat: 30 * time.Millisecond, RetryMin: 20 * time.Millisecond,
		})
	}()
	f.t.Cleanup(func() {
		cancel()
		<-f.done
	})
}

// finish stops the streamer and returns its output.
func (f *fixture) finish() string {
	f.stop()
	select {
	case err := <-f.done:
		require.NoError(f.t, err)
	case <-time.After(20 * time.Second):
		f.t.Fatal("the streamer did not stop")
	}
	f.done <- nil // for the cleanup
	out := f.out.String()
	f.t.Log("\n" + withoutQuotes(out))
	return out
}

func withoutQuotes(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "quote ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

func (f *fixture) login() *tokencache.Token {
	t, err := f.daemon.Login(f.ctx)
	require.NoError(f.t, err)
	return t
}

// connOf returns the connection that md authorized with token, or 0.
func (f *fixture) connOf(token string) int {
	for _, a := range f.md.Authorizations() {
		if a.Accepted && a.Token == token {
			return a.Conn
		}
	}
	return 0
}

// subscriptions lists the symbols subscribed on connection conn, in order.
func (f *fixture) subscriptions(conn int) []string {
	var syms []string
	for _, m := range f.md.Received() {
		if m.Conn == conn && m.Request.Op == "md/subscribeQuote" {
			syms = append(syms, m.Request.Body)
		}
	}
	return syms
}

// waitStreaming waits until a socket authorized with tok's market-data token has
// re-subscribed both symbols, sent a heartbeat and printed quotes of both.
func (f *fixture) waitStreaming(tok *tokencache.Token) int {
	f.t.Helper()
	var conn int
	require.Eventually(f.t, func() bool {
		conn = f.connOf(tok.MDAccessToken)
		if conn == 0 || len(f.subscriptions(conn)) != 2 || !f.heartbeatFrom(conn) {
			return false
		}
		_, since, _ := strings.Cut(f.out.String(), fmt.Sprintf("connected (connection %d)", conn))
		return strings.Contains(since, "quote ESZ6") && strings.Contains(since, "quote NQZ6")
	}, 20*time.Second, 5*time.Millisecond, "never streaming with version %d", tok.Version)
	return conn
}

// heartbeatFrom reports whether connection conn sent a heartbeat.
func (f *fixture) heartbeatFrom(conn int) bool {
	for _, m := range f.md.Received() {
		if m.Conn == conn && m.Heartbeat {
			return true
		}
	}
	return false
}

func (f *fixture) waitOutput(re string) {
	f.t.Helper()
	require.Eventually(f.t, func() bool { return regexp.MustCompile(re).MatchString(f.out.String()) },
		20*time.Second, 5*time.Millisecond, "output never matched %q:\n%s", re, f.out.String())
}

// checkNoRevokedTokenSent asserts that every authorize the socket received carried a
// token the broker accepted at that moment (the fake checks with the broker's Valid).
func (f *fixture) checkNoRevokedTokenSent() {
	for _, a := range f.md.Authorizations() {
		assert.True(f.t, a.Accepted, "connection %d sent a revoked or unknown token %s", a.Conn, tokencache.Redact(a.Token))
	}
}

func TestStreamerReconnectsOncePerTokenChange(t *testing.T) {
	f := newFixture(t)
	v1 := f.login()
	f.start()
	versions := []*tokencache.Token{v1}
	f.waitStreaming(v1)

	// Change 1: the daemon logs in again; the old token stays valid meanwhile.
	v2 := f.login()
	versions = append(versions, v2)
	f.waitStreaming(v2)

	// Change 2: the broker revokes the market-data token first (a login elsewhere closed
	// the session): the socket is closed; the streamer must not send that token again.
	// Its report reaches the daemon's cache, which logs in once by itself.
	f.broker.Revoke(v2.MDAccessToken)
	f.waitOutput(`rejected \(server closed the socket: Access token revoked\)`)
	var v3 *tokencache.Token
	require.Eventually(t, func() bool {
		tok, err := f.daemon.Cache.Token(f.ctx, f.user)
		if err == nil && tok.Version > v2.Version {
			v3 = tok
			return true
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "the daemon replaces the reported token")
	versions = append(versions, v3)
	f.waitStreaming(v3)

	// Change 3: another login, which also ends v1's session (2 sessions per user).
	v4 := f.login()
	versions = append(versions, v4)
	f.waitStreaming(v4)
	out := f.finish()

	auths := f.md.Authorizations()
	require.Len(t, auths, 4, "one connection per token version")
	assert.Equal(t, 4, f.md.Connections())
	for i, a := range auths {
		assert.Equal(t, i+1, a.Conn)
		assert.Equal(t, versions[i].MDAccessToken, a.Token, "connection %d", i+1)
		assert.Equal(t, []string{`{"symbol":"ESZ6"}`, `{"symbol":"NQZ6"}`}, f.subscriptions(a.Conn), "connection %d re-subscribed", a.Conn)
	}
	f.checkNoRevokedTokenSent()

	assert.Contains(t, out, "stopped: 4 connections (3 for new tokens, 0 after drops)")
	assert.Equal(t, 2, strings.Count(out, "has a new market-data token: reconnecting"))
	assert.Equal(t, 1, strings.Count(out, "arrived: reconnecting"))
	assert.Regexp(t, `quote ESZ6 bid \d+\.\d\d x \d+, ask \d+\.\d\d x \d+`, out)
	for _, v := range versions {
		assert.NotContains(t, out, v.MDAccessToken)
		assert.NotContains(t, out, v.AccessToken)
	}
}

func TestStreamerKeepsItsSocketWhenOnlyTheAccessTokenChanges(t *testing.T) {
	f := newFixture(t)
	v1 := f.login()
	f.start()
	f.waitStreaming(v1)

	renewed, err := f.daemon.Renew(f.ctx) // Tradovate's renewal keeps the market-data token
	require.NoError(t, err)
	require.Equal(t, v1.MDAccessToken, renewed.MDAccessToken)
	require.NotEqual(t, v1.AccessToken, renewed.AccessToken)
	f.waitOutput(`token version \d+ keeps the market-data token: socket kept`)

	v3 := f.login()
	f.waitStreaming(v3)
	out := f.finish()
	assert.Equal(t, 2, f.md.Connections())
	assert.Contains(t, out, "stopped: 2 connections (1 for new tokens, 0 after drops)")
	f.checkNoRevokedTokenSent()
}

func TestStreamerWaitsForTheFirstTokenAndSurvivesADrop(t *testing.T) {
	f := newFixture(t)
	f.start() // nothing stored yet: read-only caches get ErrNoToken
	f.waitOutput(`no token for \S+ \(none stored yet\): waiting for the daemon`)
	v1 := f.login()
	first := f.waitStreaming(v1)

	require.Equal(t, 1, f.md.DropAll()) // a network failure: no close frame
	f.waitOutput(`connection lost \(.*\): reconnecting in`)
	require.Eventually(t, func() bool {
		return len(f.md.Authorizations()) == 2 && len(f.subscriptions(2)) == 2
	}, 20*time.Second, 5*time.Millisecond)
	out := f.finish()

	auths := f.md.Authorizations()
	assert.Equal(t, 1, first)
	assert.Equal(t, v1.MDAccessToken, auths[1].Token, "same token after a drop")
	assert.Equal(t, 1, strings.Count(out, "waiting for the daemon"), "said once")
	assert.Contains(t, out, "stopped: 2 connections (0 for new tokens, 1 after drops)")
	f.checkNoRevokedTokenSent()
}

// TestDemo runs what `go run ./examples/streamer` runs, faster.
func TestDemo(t *testing.T) {
	srv := testutil.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var out testutil.Buffer
	require.NoError(t, demo(ctx, &out, srv.Options(), srv.Prefix, 600*time.Millisecond))
	got := out.String()
	t.Log("\n" + withoutQuotes(got))
	for _, want := range []string{
		`no token for APEX_272045 \(none stored yet\): waiting for the daemon`,
		`\[daemon\] first login: stored version \d+`,
		`connected \(connection 1\) with market-data token eyJhbG…\(\d+\), version \d+`,
		`subscribed NQZ6`,
		`quote NQZ6 bid`,
		`\[daemon\] replaced the reported token: stored version \d+`,
		`stopped: 4 connections \(3 for new tokens, 0 after drops\)`,
		`market-data socket: 4 connections, 0 authorizations refused`,
	} {
		assert.Regexp(t, want, got)
	}
}
