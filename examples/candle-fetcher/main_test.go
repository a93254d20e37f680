package main

import (
	"context"
	"regexp"
	"strconv"
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

type fixture struct {
	t      *testing.T
	ctx    context.Context
	redis  *testutil.Server
	broker *tradovatefake.Server
	md     *wsfake.Server
	daemon *demoenv.Daemon
	user   string
	out    *testutil.Buffer
}

func newFixture(t *testing.T) *fixture {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	f := &fixture{t: t, ctx: ctx, redis: testutil.Redis(t), broker: tradovatefake.New(t, tradovatefake.Options{}), out: &testutil.Buffer{}}
	f.user = f.redis.Name("user")
	f.broker.AddUser(f.user, "demo-password")
	f.md = wsfake.New(wsfake.Options{Valid: f.broker.Valid})
	t.Cleanup(f.md.Close)
	d, err := demoenv.NewDaemon(f.redis.Client(t), f.redis.Prefix, f.broker, f.user)
	require.NoError(t, err)
	t.Cleanup(d.Close)
	f.daemon = d
	return f
}

// start runs the fetcher in the background; the returned channel gives run's result.
func (f *fixture) start(cfg config) <-chan error {
	cfg.Redis, cfg.Prefix, cfg.User, cfg.URL = f.redis.Client(f.t), f.redis.Prefix, f.user, f.md.URL()
	done := make(chan error, 1)
	go func() { done <- run(f.ctx, f.out, cfg) }()
	return done
}

func (f *fixture) wait(done <-chan error) string {
	select {
	case err := <-done:
		require.NoError(f.t, err)
	case <-f.ctx.Done():
		f.t.Fatalf("the fetcher did not finish:\n%s", f.out.String())
	}
	out := f.out.String()
	f.t.Log("\n" + out)
	return out
}

func (f *fixture) waitOutput(re string) {
	f.t.Helper()
	require.Eventually(f.t, func() bool { return regexp.MustCompile(re).MatchString(f.out.String()) },
		20*time.Second, 5*time.Millisecond, "output never matched %q:\n%s", re, f.out.String())
}

func TestFetcherWaitsForTheDaemonSayingSoOnce(t *testing.T) {
	f := newFixture(t)
	const interval = 40 * time.Millisecond
	done := f.start(config{Symbols: []string{"ESZ6", "NQZ6"}, Bars: 5, Interval: interval, Rounds: 2})
	f.waitOutput(`no token for \S+ \(none stored yet\): waiting for the daemon`)
	time.Sleep(6 * interval) // let it check a few more times, silently
	_, err := f.daemon.Login(f.ctx)
	require.NoError(t, err)
	out := f.wait(done)

	assert.Equal(t, 1, strings.Count(out, "no token"), "said once")
	m := regexp.MustCompile(`token version \d+ arrived after (\d+) checks`).FindStringSubmatch(out)
	require.NotNil(t, m)
	checks, _ := strconv.Atoi(m[1])
	assert.GreaterOrEqual(t, checks, 2)
	for _, want := range []string{
		`fetch 1: ESZ6 5 one-minute bars \S+\.\.\S+, last close \d+\.\d\d`,
		`fetch 1: NQZ6 5 one-minute bars`,
		`fetch 2: ESZ6 5 one-minute bars`,
		`fetch 2: NQZ6 5 one-minute bars`,
		`done: 2 fetches`,
	} {
		assert.Regexp(t, want, out)
	}
	assert.Equal(t, 1, f.broker.Logins(f.user), "only the daemon logged in")
	assert.Equal(t, 2, f.md.Connections(), "one socket per fetch")
	for _, a := range f.md.Authorizations() {
		assert.True(t, a.Accepted)
	}
	// Each fetch asked for its charts and cancelled them.
	ops := map[string]int{}
	for _, m := range f.md.Received() {
		ops[m.Request.Op]++
	}
	assert.Equal(t, map[string]int{"authorize": 2, "md/getChart": 4, "md/cancelChart": 4}, ops)
}

func TestFetcherReportsARejectedTokenAndUsesItNoMore(t *testing.T) {
	f := newFixture(t)
	v1, err := f.daemon.Login(f.ctx)
	require.NoError(t, err)
	done := f.start(config{Bars: 3, Interval: 30 * time.Millisecond, Rounds: 3})
	f.waitOutput(`fetch 1: ESZ6 3 one-minute bars`)

	f.broker.Revoke(v1.MDAccessToken) // the broker drops it; the fetcher learns at its next authorize
	f.waitOutput(`market-data token rejected: authorize answered 401 Invalid access token: reported`)
	// The report reaches the daemon's cache, which logs in once by itself.
	var v2 *tokencache.Token
	require.Eventually(t, func() bool {
		tok, err := f.daemon.Cache.Token(f.ctx, f.user)
		if err == nil && tok.Version > v1.Version {
			v2 = tok
			return true
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "the daemon replaces the reported token")
	out := f.wait(done)

	assert.Contains(t, out, "done: 3 fetches")
	refused := 0
	for _, a := range f.md.Authorizations() {
		if !a.Accepted {
			refused++
			assert.Equal(t, v1.MDAccessToken, a.Token)
		}
	}
	assert.Equal(t, 1, refused, "the revoked token was sent once, then never again")
	last := f.md.Authorizations()[len(f.md.Authorizations())-1]
	assert.Equal(t, v2.MDAccessToken, last.Token)
	assert.Equal(t, 2, f.broker.Logins(f.user))
}

// TestDemo runs what `go run ./examples/candle-fetcher` runs, faster.
func TestDemo(t *testing.T) {
	srv := testutil.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var out testutil.Buffer
	require.NoError(t, demo(ctx, &out, srv.Options(), srv.Prefix, 150*time.Millisecond))
	got := out.String()
	t.Log("\n" + got)
	for _, want := range []string{
		`no token for APEX_272045 \(none stored yet\): waiting for the daemon \(brokertoken run\) to store one`,
		`token version \d+ arrived after \d+ checks`,
		`fetch 3: NQZ6 10 one-minute bars`,
		`done: 3 fetches`,
		`broker logins: 1 \(by the daemon; the fetcher never logs in\)`,
	} {
		assert.Regexp(t, want, got)
	}
}
