package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
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

// daemon runs `brokertoken run` for cfg.daemonUsers users against the fake broker with
// 50 ms latency and measures its renew throughput once every user is due.
func daemon(cfg config, rs *redisSet, dir string) (row, error) {
	const latency = 50 * time.Millisecond
	const concurrency = 10
	bin := filepath.Join(dir, "brokertoken")
	build := exec.Command("go", "build", "-o", bin, "github.com/brokertoken/brokertoken/cmd/brokertoken")
	if out, err := build.CombinedOutput(); err != nil {
		return row{}, fmt.Errorf("go build brokertoken: %v\n%s", err, out)
	}
	tb := &shimTB{}
	defer tb.close()
	fake := tradovatefake.New(tb, tradovatefake.Options{Latency: latency, Lifetime: cfg.daemonLifetime, SessionLimit: 1000})
	type cred struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	creds := make([]cred, cfg.daemonUsers)
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
	cmd := exec.Command(bin, "run", "--listen", "", "--check-interval", "100ms",
		"--login-budget", "1000000", "--concurrency", strconv.Itoa(concurrency), "--log-level", "error")
	cmd.Env = append(os.Environ(),
		"REDIS_URL="+redisURL,
		"BROKERTOKEN_CREDENTIALS="+credFile,
		"TRADOVATE_URL="+fake.RESTURL(),
		"TRADOVATE_TV_URL="+fake.TradingViewURL(),
		"BROKERTOKEN_PREFIX="+randPrefix(),
	)
	stderr := &syncWriter{w: &strings.Builder{}}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return row{}, err
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	n := cfg.daemonUsers
	renews := func() int { return fake.Calls(tradovatefake.RenewAccessToken, "") }
	logins := func() int {
		return fake.Calls(tradovatefake.Authorize, "") + fake.Calls(tradovatefake.AccessTokenRequest, "")
	}
	// Window: from the first renewal to the n-th (every user renewed once).
	var t1, t2, l1, l2 time.Time
	var c1, c2, lc1, lc2 int
	var cpu1, cpu2 time.Duration
	deadline := time.Now().Add(cfg.daemonLifetime + 60*time.Second)
	for {
		if time.Now().After(deadline) {
			return row{}, fmt.Errorf("daemon: %d renewals, %d logins after %v; stderr: %s",
				renews(), logins(), cfg.daemonLifetime+60*time.Second, stderr)
		}
		time.Sleep(20 * time.Millisecond)
		c, lc := renews(), logins()
		if l1.IsZero() && lc > 0 {
			l1, lc1 = time.Now(), lc
		}
		if l2.IsZero() && lc >= n {
			l2, lc2 = time.Now(), lc
		}
		cpu, err := cpuTime(cmd.Process.Pid)
		if err != nil {
			return row{}, fmt.Errorf("daemon exited? %v; stderr: %s", err, stderr)
		}
		if t1.IsZero() && c > 0 {
			t1, c1, cpu1 = time.Now(), c, cpu
		}
		if c >= n {
			t2, c2, cpu2 = time.Now(), c, cpu
			break
		}
	}
	if c2 <= c1 {
		return row{}, fmt.Errorf("daemon: no renewal window (%d -> %d)", c1, c2)
	}
	bound := float64(concurrency) / latency.Seconds()
	rate := float64(c2-c1) / t2.Sub(t1).Seconds()
	perRenew := (cpu2 - cpu1) / time.Duration(c2-c1)
	loginRate := 0.0
	if lc2 > lc1 {
		loginRate = float64(lc2-lc1) / l2.Sub(l1).Seconds()
	}
	ratio := rate / bound
	return row{"6", fmt.Sprintf("daemon keeping %d users fresh (fake, %v latency, %v tokens)", n, latency, cfg.daemonLifetime),
		fmt.Sprintf("concurrency/latency = %d/%v = %.0f renews/s", concurrency, latency, bound),
		fmt.Sprintf("%.0f renews/s (%d renewals in %s); CPU %s per renew; start-up: %d logins at %.0f/s",
			rate, c2-c1, fmtDur(t2.Sub(t1)), fmtDur(perRenew), logins(), loginRate),
		fmt.Sprintf("%.0f%% of the bound", 100*ratio), ">= 80% of the bound", verdict(ratio >= 0.8)}, nil
}
