package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// shimTB lets tradovatefake.New run outside a test: it needs only Helper, Cleanup and
// Fatalf. Any other testing.TB method would panic (nil embedded interface).
type shimTB struct {
	testing.TB
	cleanups []func()
}

func (s *shimTB) Helper()                   {}
func (s *shimTB) Cleanup(f func())          { s.cleanups = append(s.cleanups, f) }
func (s *shimTB) Logf(string, ...any)       {}
func (s *shimTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (s *shimTB) Errorf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (s *shimTB) Name() string              { return "bench" }
func (s *shimTB) close() {
	for i := len(s.cleanups) - 1; i >= 0; i-- {
		s.cleanups[i]()
	}
}

// cpuTime returns the user+system CPU time of process pid so far.
func cpuTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(raw, ')')
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)              // utime, field 14
	s, _ := strconv.ParseInt(f[12], 10, 64)              // stime, field 15
	return time.Duration(u+s) * (time.Second / 100), nil // USER_HZ is 100 on Linux
}

// daemonProc is one running `brokertoken run`.
type daemonProc struct {
	cmd    *exec.Cmd
	stderr *syncWriter
	done   chan struct{}
}

// startDaemon runs bin with `run`, the common flags and args, and env added to this
// process's environment.
func startDaemon(bin string, env []string, args ...string) (*daemonProc, error) {
	args = append([]string{"run", "--listen", "", "--check-interval", "100ms", "--login-budget", "1000000",
		"--log-level", "error"}, args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	d := &daemonProc{cmd: cmd, stderr: &syncWriter{w: &strings.Builder{}}, done: make(chan struct{})}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait(); close(d.done) }()
	return d, nil
}

// cpu returns the daemon's CPU time so far.
func (d *daemonProc) cpu() (time.Duration, error) {
	t, err := cpuTime(d.cmd.Process.Pid)
	if err != nil {
		return 0, fmt.Errorf("daemon exited? %v; stderr: %s", err, d.stderr)
	}
	return t, nil
}

// stop interrupts the daemon and waits for it (kills it after 5 s).
func (d *daemonProc) stop() {
	_ = d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// arrivals returns the arrival times of the fake's requests to any of eps at or after
// since, in order.
func arrivals(fake *tradovatefake.Server, since time.Time, eps ...tradovatefake.Endpoint) []time.Time {
	var out []time.Time
	for _, r := range fake.Requests() {
		if slices.Contains(eps, r.Endpoint) && !r.Time.Before(since) {
			out = append(out, r.Time)
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// burst describes a run of requests to the fake: how many arrived, the time from the
// first arrival to the last answer (the last arrival plus the fake's latency), and the
// most that were in flight at once (each request lives at least the latency).
type burst struct {
	n           int
	span        time.Duration
	maxInFlight int
}

func burstOf(times []time.Time, latency time.Duration) burst {
	b := burst{n: len(times)}
	if b.n == 0 {
		return b
	}
	b.span = times[b.n-1].Sub(times[0]) + latency
	for i, t := range times {
		j := i
		for j > 0 && times[j-1].Add(latency).After(t) {
			j--
		}
		b.maxInFlight = max(b.maxInFlight, i-j+1)
	}
	return b
}

func (b burst) rate() float64 { return float64(b.n) / b.span.Seconds() }

// daemon runs `brokertoken run` for cfg.daemonUsers users against the fake broker with
// 50 ms latency, in two phases, each a backlog that only the daemon's capacity limits:
//
//  1. start-up: Redis is empty, so the daemon logs every user in;
//  2. renewal: a second daemon (its own prefix) starts with every user's token stored
//     already past its refresh point but still valid, so it must renew all of them at
//     once. The renew throughput is measured from the first renew request's arrival at
//     the fake to the last one's answer.
//
// Measuring renewals after phase 1 instead would measure their arrival rate: tokens
// turn stale at the pace they were logged in, spread by the refresh jitter.
func daemon(cfg config, rs *redisSet, dir string) (row, error) {
	const latency = 50 * time.Millisecond
	const concurrency = 10
	n, lifetime := cfg.daemonUsers, cfg.daemonLifetime
	bin := filepath.Join(dir, "brokertoken")
	build := exec.Command("go", "build", "-o", bin, "github.com/brokertoken/brokertoken/cmd/brokertoken")
	if out, err := build.CombinedOutput(); err != nil {
		return row{}, fmt.Errorf("go build brokertoken: %v\n%s", err, out)
	}
	tb := &shimTB{}
	defer tb.close()
	fake := tradovatefake.New(tb, tradovatefake.Options{Latency: latency, Lifetime: lifetime, SessionLimit: 1000})
	type cred struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	creds := make([]cred, n)
	for i := range creds {
		creds[i] = cred{fmt.Sprintf("daemon-%04d", i), "pw"}
		fake.AddUser(creds[i].Username, "pw")
	}
	raw, _ := json.Marshal(creds)
	credFile := filepath.Join(dir, "credentials.json")
	if err := os.WriteFile(credFile, raw, 0o600); err != nil {
		return row{}, err
	}
	redisURL := "redis://" + rs.addrs[0] + "/0"
	if len(rs.addrs) > 1 {
		redisURL = "redis+cluster://" + strings.Join(rs.addrs, ",")
	}
	env := func(prefix string) []string {
		return []string{"REDIS_URL=" + redisURL, "BROKERTOKEN_CREDENTIALS=" + credFile,
			"TRADOVATE_URL=" + fake.RESTURL(), "TRADOVATE_TV_URL=" + fake.TradingViewURL(),
			"BROKERTOKEN_PREFIX=" + prefix, "BROKERTOKEN_CONCURRENCY=" + strconv.Itoa(concurrency)}
	}
	loginEPs := []tradovatefake.Endpoint{tradovatefake.Authorize, tradovatefake.AccessTokenRequest}
	logins := func() int {
		return fake.Calls(tradovatefake.Authorize, "") + fake.Calls(tradovatefake.AccessTokenRequest, "")
	}
	renews := func() int { return fake.Calls(tradovatefake.RenewAccessToken, "") }

	// Phase 1: start-up logins.
	started := time.Now()
	d, err := startDaemon(bin, env(randPrefix()))
	if err != nil {
		return row{}, err
	}
	err = waitFor(time.Now().Add(lifetime+60*time.Second), d, func() bool { return logins() >= n })
	d.stop()
	if err != nil {
		return row{}, fmt.Errorf("daemon start-up: %d of %d logins: %w", logins(), n, err)
	}
	login := burstOf(arrivals(fake, started, loginEPs...)[:n], latency)

	// Phase 2: every token stale at start. It claims a lifetime of 4×lifetime (ObtainedAt
	// back-dated), so with --refresh-before 2×lifetime its refresh point (minus jitter)
	// is a lifetime before now; --leeway keeps it served until just before it expires.
	prefix := randPrefix()
	// The first daemon's claim on the legacy keys outlives it by two minutes; a fleet
	// moving to a new prefix waits that long, the benchmark does not.
	if err := dropLegacyClaim(rs); err != nil {
		return row{}, err
	}
	if err := seedStale(fake, credFile, rs, prefix, lifetime); err != nil {
		return row{}, fmt.Errorf("daemon: storing stale tokens: %w", err)
	}
	loginsBefore, renewsBefore := logins(), renews()
	started = time.Now()
	d, err = startDaemon(bin, env(prefix), "--refresh-before", (2 * lifetime).String(), "--leeway", (lifetime / 20).String())
	if err != nil {
		return row{}, err
	}
	defer d.stop()
	var c1, c2 int
	var cpu1, cpu2 time.Duration
	err = waitFor(time.Now().Add(lifetime), d, func() bool {
		c := renews() - renewsBefore
		cpu, err := d.cpu()
		if err != nil {
			return false
		}
		if c1 == 0 && c > 0 {
			c1, cpu1 = c, cpu
		}
		c2, cpu2 = c, cpu
		return c >= n
	})
	if err != nil {
		return row{}, fmt.Errorf("daemon renewal: %d of %d renewals: %w", renews()-renewsBefore, n, err)
	}
	if l := logins() - loginsBefore; l > 0 {
		return row{}, fmt.Errorf("daemon renewal: %d logins where every token was renewable", l)
	}
	renew := burstOf(arrivals(fake, started, tradovatefake.RenewAccessToken)[:n], latency)
	if c2 <= c1 {
		return row{}, fmt.Errorf("daemon: no renewal window for CPU time (%d -> %d)", c1, c2)
	}
	perRenew := (cpu2 - cpu1) / time.Duration(c2-c1)

	bound := float64(concurrency) / latency.Seconds()
	ratio := renew.rate() / bound
	return row{"6", fmt.Sprintf("daemon keeping %d users fresh (fake, %v latency, %v tokens)", n, latency, lifetime),
		fmt.Sprintf("concurrency/latency = %d/%v = %.0f renews/s", concurrency, latency, bound),
		fmt.Sprintf("%.0f renews/s (%d due at once, renewed in %s, at most %d in flight); CPU %s per renew; "+
			"start-up: %d logins at %.0f/s (%.0f%%, at most %d in flight)",
			renew.rate(), renew.n, fmtDur(renew.span), renew.maxInFlight, fmtDur(perRenew),
			login.n, login.rate(), 100*login.rate()/bound, login.maxInFlight),
		fmt.Sprintf("%.0f%% of the bound", 100*ratio), ">= 80% of the bound", verdict(ratio >= 0.8)}, nil
}

// waitFor polls done every 20 ms until it reports true, the daemon exits, or deadline.
func waitFor(deadline time.Time, d *daemonProc, done func() bool) error {
	for !done() {
		select {
		case <-d.done:
			return fmt.Errorf("daemon exited; stderr: %s", d.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out; stderr: %s", d.stderr)
		}
	}
	return nil
}

// seedStale logs every user of credFile in at the fake (concurrently, not through the
// daemon) and stores each token under prefix, back-dated so that it claims a lifetime
// of 4×lifetime.
func seedStale(fake *tradovatefake.Server, credFile string, rs *redisSet, prefix string, lifetime time.Duration) error {
	creds, err := tradovate.LoadCredentials(credFile)
	if err != nil {
		return err
	}
	transport := &http.Transport{MaxIdleConnsPerHost: 64}
	defer transport.CloseIdleConnections()
	auth, err := tradovate.New(tradovate.Options{RESTURL: fake.RESTURL(), TradingViewURL: fake.TradingViewURL(),
		Credentials: creds, LoginBudget: 1 << 30, HTTPClient: &http.Client{Transport: transport, Timeout: time.Minute},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	rdb := rs.client()
	defer rdb.Close()
	cache, err := tokencache.New(tokencache.Options{Redis: rdb, Prefix: prefix})
	if err != nil {
		return err
	}
	defer cache.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	users := creds.Users()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 64)
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(users) && errs[w] == nil; i = int(next.Add(1)) - 1 {
				tok, err := auth.Login(ctx, users[i])
				if err != nil {
					errs[w] = err
					break
				}
				stale := *tok
				stale.ObtainedAt = tok.Expiry.Add(-4 * lifetime)
				_, errs[w] = cache.Set(ctx, users[i], &stale)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// dropLegacyClaim deletes the claim a stopped daemon left on the legacy keys.
func dropLegacyClaim(rs *redisSet) error {
	rdb := rs.client()
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Del(ctx, tokencache.LegacyOwnerKey).Err(); err != nil {
		return fmt.Errorf("daemon: dropping the legacy keys' claim: %w", err)
	}
	return nil
}
