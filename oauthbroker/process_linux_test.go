//go:build linux

package oauthbroker_test

// Tests with separate OS processes: this test binary started again as a child
// (TestChildProcess), the way tokencache's reliability tests do. They rely on Pdeathsig
// and SIGKILL, so they run on Linux only (as CI does).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/oauthfake"
	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/oauthbroker/schwab"
	"github.com/brokertoken/brokertoken/tokencache"
)

// childEnv carries a childSpec (JSON) to a child process.
const childEnv = "BROKERTOKEN_OAUTH_CHILD"

// childSpec tells a child what to do.
type childSpec struct {
	Mode           string // "fleet", "login" or "alerts"
	Redis, Prefix  string
	User, FakeURL  string
	ClientID       string
	Secret         string
	Redirect       string
	RequestTimeout time.Duration
	Goroutines     int           // fleet
	Duration       time.Duration // fleet, alerts
	Point          string        // login: stop at this point of the refresh until killed
	AlertLeads     []time.Duration
}

// TestChildProcess is not a test: it is the child process of the tests below, run from
// this test binary with childEnv set. It prints what it did on stdout, one line each.
func TestChildProcess(t *testing.T) {
	raw := os.Getenv(childEnv)
	if raw == "" {
		return // run only as a child
	}
	var spec childSpec
	require.NoError(t, json.Unmarshal([]byte(raw), &spec))
	rdb := redis.NewClient(&redis.Options{Addr: spec.Redis, ContextTimeoutEnabled: true})
	defer rdb.Close()
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	opts := oauthbroker.Options{
		Provider: schwab.ProviderAt(spec.FakeURL), ClientID: spec.ClientID, ClientSecret: spec.Secret,
		RedirectURL: spec.Redirect, User: spec.User, Redis: rdb, Prefix: spec.Prefix,
		RequestTimeout: spec.RequestTimeout, AlertLeads: spec.AlertLeads,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Hooks: oauthbroker.Hooks{Revoked: func(user string, err *oauthbroker.LoginRequiredError) {
			say("HOOK revoked %s", err.Detail)
		}},
	}
	opts.Provider.AccessTokenLifetime = 0
	b, err := oauthbroker.New(opts)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch spec.Mode {
	case "login":
		if spec.Point != "" {
			oauthbroker.SetTestHook(b, func(p string) {
				if p == spec.Point {
					say("POINT %s", p)
					_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until killed
				}
			})
		}
		say("READY")
		tok, err := b.Authenticator().Login(ctx, spec.User)
		switch {
		case err == nil:
			say("RESULT ok %s", tokencache.Redact(tok.AccessToken))
		case errors.Is(err, oauthbroker.ErrRevoked):
			say("RESULT revoked")
		case errors.Is(err, oauthbroker.ErrNotAuthorized):
			say("RESULT notauthorized")
		default:
			say("RESULT error %v", err)
		}
	case "fleet":
		runFleetChild(t, ctx, spec, rdb, b, say)
	case "alerts":
		say("READY")
		end := time.Now().Add(spec.Duration)
		for time.Now().Before(end) {
			alerts, err := b.Alerts(ctx)
			if err != nil {
				say("ERR %v", err)
			}
			for _, a := range alerts {
				if _, err := b.Ack(ctx, a); err != nil {
					say("ERR %v", err)
				}
				say("ALERT %s", a.Lead)
			}
			time.Sleep(time.Duration(5+rand.IntN(15)) * time.Millisecond)
		}
	}
	if err := b.Close(); err != nil {
		say("ERR close: %v", err)
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections() // for goleak
	say("DONE")
}

// runFleetChild serves tokens to spec.Goroutines goroutines for spec.Duration through a
// writer cache, and checks each new token with the provider's API (in a few of them).
func runFleetChild(t *testing.T, ctx context.Context, spec childSpec, rdb redis.UniversalClient, b *oauthbroker.Broker, say func(string, ...any)) {
	cache, err := tokencache.New(tokencache.Options{Redis: rdb, Prefix: spec.Prefix, Authenticator: b.Authenticator(),
		RetryMin: 50 * time.Millisecond, RetryMax: time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	require.NoError(t, err)
	defer cache.Close()
	say("READY")
	var calls, errs, apiOK, apiRejected atomic.Int64
	var distinct sync.Map
	var firstErr atomic.Value
	end := time.Now().Add(spec.Duration)
	var wg sync.WaitGroup
	for g := range spec.Goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := ""
			for time.Now().Before(end) {
				tok, err := cache.Token(ctx, spec.User)
				calls.Add(1)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else if tok.AccessToken != last {
					last = tok.AccessToken
					distinct.Store(last, true)
					if g < 3 {
						if apiAccepts(ctx, spec.FakeURL, last) {
							apiOK.Add(1)
						} else {
							apiRejected.Add(1)
						}
					}
				}
				time.Sleep(time.Duration(50+rand.IntN(100)) * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	n := 0
	distinct.Range(func(any, any) bool { n++; return true })
	say("FLEET calls=%d errors=%d distinct=%d api_ok=%d api_rejected=%d", calls.Load(), errs.Load(), n, apiOK.Load(), apiRejected.Load())
	if e := firstErr.Load(); e != nil {
		say("ERR %s", e)
	}
}

// apiAccepts asks the fake's API whether it accepts tok.
func apiAccepts(ctx context.Context, base, tok string) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+oauthfake.AccountsPath, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// child is a running child process.
type child struct {
	logs  *testutil.Buffer // stderr
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
	mu    sync.Mutex
	out   []string
	err   error
}

// startChild starts a child with spec. It is killed at cleanup.
func (f *fixture) startChild(t *testing.T, spec childSpec) *child {
	t.Helper()
	spec.Redis, spec.Prefix, spec.User = f.redis.Addr(), f.redis.Prefix, f.opts.User
	spec.FakeURL, spec.ClientID, spec.Secret, spec.Redirect = f.fake.URL(), appKey, appSecret, f.opts.RedirectURL
	if spec.RequestTimeout == 0 {
		spec.RequestTimeout = f.opts.RequestTimeout
	}
	js, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+string(js))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	logs := &testutil.Buffer{}
	cmd.Stderr = logs
	_, err = cmd.StdinPipe() // never written: a child stopped at a point waits on it
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	c := &child{logs: logs, cmd: cmd, lines: make(chan string, 1000), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.mu.Lock()
			c.out = append(c.out, sc.Text())
			c.mu.Unlock()
			select {
			case c.lines <- sc.Text():
			default:
			}
		}
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
	})
	return c
}

// await returns the child's first line starting with prefix.
func (c *child) await(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l := <-c.lines:
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-c.done:
			for {
				select {
				case l := <-c.lines:
					if strings.HasPrefix(l, prefix) {
						return l
					}
				default:
					t.Fatalf("child exited (%v) before %q; output:\n%s", c.err, prefix, c.output())
				}
			}
		case <-timeout:
			t.Fatalf("no %q from the child; output:\n%s", prefix, c.output())
		}
	}
}

// kill sends SIGKILL and waits for the child to be gone.
func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// wait waits for the child's exit.
func (c *child) wait(t *testing.T) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("child did not finish; output:\n%s", c.output())
	}
	require.NoError(t, c.err, "child output:\n%s\nlogs:\n%s", c.output(), c.logs)
}

func (c *child) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.out, "\n")
}

// count returns how many lines of the child's output start with prefix.
func (c *child) count(prefix string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, l := range c.out {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// 20 processes of 50 goroutines each share one user through many access-token
// lifetimes: every rotation is one refresh, each refresh token is used once, every
// token served is accepted by the provider, and the family is never revoked.
func TestFleetOfProcessesRotatesLinearly(t *testing.T) {
	if testing.Short() {
		t.Skip("20 processes for 15 s")
	}
	const procs, goroutines, lifetime, duration = 20, 50, 1500 * time.Millisecond, 15 * time.Second
	f := newFixture(t, fixtureConfig{fake: oauthfake.Options{AccessTokenLifetime: lifetime}})
	f.mustAuthorize(t)
	var children []*child
	for range procs {
		children = append(children, f.startChild(t, childSpec{Mode: "fleet", Goroutines: goroutines, Duration: duration}))
	}
	var calls, distinctMax int
	for _, c := range children {
		c.wait(t)
		line := c.await(t, "FLEET ")
		var n, e, d, ok, rej int
		_, err := fmt.Sscanf(line, "FLEET calls=%d errors=%d distinct=%d api_ok=%d api_rejected=%d", &n, &e, &d, &ok, &rej)
		require.NoError(t, err, line)
		assert.Zero(t, e, "no caller failed: %s", c.output())
		assert.Zero(t, rej, "every token served was accepted by the provider")
		assert.Positive(t, ok)
		calls += n
		distinctMax = max(distinctMax, d)
	}
	st, err := f.b.Status(context.Background())
	require.NoError(t, err)
	stats := f.fake.Stats()
	assert.Equal(t, oauthbroker.StateActive, st.State)
	assert.EqualValues(t, stats.Refreshes, st.Rotations, "exactly one refresh per rotation, each stored")
	assert.EqualValues(t, 1+st.Rotations, st.Generation)
	assert.Zero(t, stats.ReuseDetections, "no refresh token was used twice")
	assert.Zero(t, stats.Revocations)
	assert.Equal(t, 1, f.fake.ValidRefreshTokens())
	assert.Equal(t, "valid", f.fake.RefreshTokenState(f.storedRefreshToken(t)))
	assert.GreaterOrEqual(t, st.Rotations, int64(duration/lifetime), "many access-token lifetimes")
	t.Logf("figures: %d processes x %d goroutines, %s, access tokens of %s: %d calls, %d rotations = %d refreshes, up to %d tokens seen per process, %d reuse",
		procs, goroutines, duration, lifetime, calls, st.Rotations, stats.Refreshes, distinctMax, stats.ReuseDetections)
}
