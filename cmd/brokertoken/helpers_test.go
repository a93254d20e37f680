package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
)

// binDir holds the brokertoken binary built once for this test binary.
var binDir string

type cleanupM struct {
	*testing.M
	after func()
}

func (m cleanupM) Run() int {
	defer m.after()
	return m.M.Run()
}

func TestMain(m *testing.M) {
	if os.Getenv(watcherEnv) != "" {
		os.Exit(watcherMain()) // this binary, re-run as another process's Watch-er
	}
	redis.SetLogger(quietRedis{}) // as main does
	dir, err := os.MkdirTemp("", "brokertoken-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	goleak.VerifyTestMain(cleanupM{m, func() { _ = os.RemoveAll(dir) }}, testutil.LeakOptions()...)
}

var (
	buildOnce sync.Once
	buildErr  error
	buildOut  []byte
)

// binary builds the real brokertoken command (with -race when the tests run with it)
// once, and returns its path.
func binary(t *testing.T) string {
	t.Helper()
	path := filepath.Join(binDir, "brokertoken")
	buildOnce.Do(func() {
		args := []string{"build", "-o", path}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, ".")...)
		start := time.Now()
		buildOut, buildErr = cmd.CombinedOutput()
		t.Logf("go %s: %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	})
	require.NoError(t, buildErr, "go build: %s", buildOut)
	return path
}

// password is a distinctive password per user, so the secrets scan can look for it.
func password(user string) string { return "pw-" + user + "-S3cr3t!" }

// fixture is one test's Redis, fake broker and credentials file.
type fixture struct {
	t      *testing.T
	redis  *testutil.Server
	rdb    *redis.Client
	fake   *tradovatefake.Server
	users  []string
	creds  string // credentials file path
	prefix string
}

type userSpec struct {
	suffix   string
	accounts []string // suffixes of sub-accounts
}

// newFixture starts a Redis and a fake broker and writes a credentials file with one
// user per spec (names unique to the test).
func newFixture(t *testing.T, fakeOpts tradovatefake.Options, specs ...userSpec) *fixture {
	t.Helper()
	return newFixtureOn(t, testutil.Redis(t), fakeOpts, specs...)
}

// newFixtureOn is newFixture on a given Redis.
func newFixtureOn(t *testing.T, srv *testutil.Server, fakeOpts tradovatefake.Options, specs ...userSpec) *fixture {
	t.Helper()
	f := &fixture{t: t, redis: srv, fake: tradovatefake.New(t, fakeOpts)}
	f.rdb = f.redis.Client(t)
	f.prefix = f.redis.Prefix
	type entry struct {
		Username string   `json:"username"`
		Password string   `json:"password"`
		Accounts []string `json:"accounts,omitempty"`
	}
	var entries []entry
	for _, s := range specs {
		u := f.redis.Name(s.suffix)
		f.fake.AddUser(u, password(u))
		f.users = append(f.users, u)
		e := entry{Username: u, Password: password(u)}
		for _, a := range s.accounts {
			e.Accounts = append(e.Accounts, f.redis.Name(a))
		}
		entries = append(entries, e)
	}
	raw, err := json.Marshal(entries)
	require.NoError(t, err)
	f.creds = filepath.Join(t.TempDir(), "credentials.json")
	require.NoError(t, os.WriteFile(f.creds, raw, 0o600))
	return f
}

// redisURL is the fixture's Redis as a redis:// URL.
func (f *fixture) redisURL() string {
	o := f.redis.Options()
	u := url.URL{Scheme: "redis", Host: o.Addr, Path: fmt.Sprintf("/%d", o.DB)}
	if o.Username != "" || o.Password != "" {
		u.User = url.UserPassword(o.Username, o.Password)
	}
	return u.String()
}

// env is the configuration every command of the fixture shares, given through the
// environment (flags are added per test).
func (f *fixture) env() map[string]string {
	return map[string]string{
		"REDIS_URL":               f.redisURL(),
		"BROKERTOKEN_CREDENTIALS": f.creds,
		"TRADOVATE_URL":           f.fake.RESTURL(),
		"TRADOVATE_TV_URL":        f.fake.TradingViewURL(),
		"BROKERTOKEN_PREFIX":      f.prefix,
	}
}

// stored returns the access token Redis holds for user ("" if none), read through
// tokencache's Status (the record's format is tokencache's own).
func (f *fixture) stored(user string) (access string, version int64) {
	f.t.Helper()
	c, err := tokencache.New(tokencache.Options{Redis: f.rdb, Prefix: f.prefix})
	require.NoError(f.t, err)
	defer c.Close()
	st, err := c.Status(context.Background(), user)
	require.NoError(f.t, err)
	if st.Token == nil {
		return "", 0
	}
	return st.Token.AccessToken, st.Token.Version
}

// keys returns the keys matching pattern.
func (f *fixture) keys(pattern string) []string {
	f.t.Helper()
	var out []string
	iter := f.rdb.Scan(context.Background(), 0, pattern, 1000).Iterator()
	for iter.Next(context.Background()) {
		out = append(out, iter.Val())
	}
	require.NoError(f.t, iter.Err())
	return out
}

// inProcess runs the command in this process and returns its exit code and output.
func inProcess(t *testing.T, ctx context.Context, env map[string]string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code = run(ctx, args, lookup, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// proc is a running brokertoken process.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdout testutil.Buffer
	stderr testutil.Buffer
	done   chan struct{}
	code   int
}

// cleanEnv is this process's environment without anything brokertoken reads.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "REDIS_") || strings.HasPrefix(k, "BROKERTOKEN_") || strings.HasPrefix(k, "TRADOVATE_") {
			continue
		}
		out = append(out, kv)
	}
	// A -race binary sleeps a second before exiting unless told not to; a data race
	// still makes it exit with status 66.
	return append(out, "GORACE=atexit_sleep_ms=0")
}

// start runs the binary with env and args. The process is killed in t.Cleanup if it
// is still running.
func start(t *testing.T, name string, env map[string]string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, done: make(chan struct{})}
	p.cmd = exec.Command(binary(t), args...)
	p.cmd.Env = cleanEnv()
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	require.NoError(t, p.cmd.Start())
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() || os.Getenv("BROKERTOKEN_TEST_SHOW_LOGS") == "1" {
			t.Logf("%s stderr:\n%s", p.name, p.stderr.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code; it fails the test
// after timeout.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s; stderr:\n%s", p.name, timeout, p.stderr.String())
		return -1
	}
}

// stop sends SIGTERM and returns the exit code and how long the process took to exit.
func (p *proc) stop(timeout time.Duration) (int, time.Duration) {
	p.t.Helper()
	start := time.Now()
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	code := p.wait(timeout)
	return code, time.Since(start)
}

// get fetches url and returns the status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitHTTP polls url until it answers want, and returns the body.
func waitHTTP(t *testing.T, url string, want int, timeout time.Duration) string {
	t.Helper()
	var code int
	var body string
	ok := assert.Eventually(t, func() bool {
		code, body = get(t, url)
		return code == want
	}, timeout, 50*time.Millisecond)
	require.True(t, ok, "GET %s: want %d, last got %d: %s", url, want, code, body)
	return body
}

// webhook is a local alert receiver.
type webhook struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
	raw    []string
	status func() int // the answer; nil: 204
}

func newWebhook(t *testing.T) *webhook {
	w := &webhook{}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		w.mu.Lock()
		w.bodies = append(w.bodies, m)
		w.raw = append(w.raw, string(b))
		status := w.status
		w.mu.Unlock()
		if status == nil {
			rw.WriteHeader(http.StatusNoContent)
			return
		}
		rw.WriteHeader(status())
	}))
	t.Cleanup(w.srv.Close)
	return w
}

// events returns how many alerts of each event arrived.
func (w *webhook) events() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for _, b := range w.bodies {
		ev, _ := b["event"].(string)
		out[ev]++
	}
	return out
}

// last returns the body of the last alert of event, or nil.
func (w *webhook) last(event string) map[string]any {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.bodies) - 1; i >= 0; i-- {
		if w.bodies[i]["event"] == event {
			return w.bodies[i]
		}
	}
	return nil
}

func (w *webhook) all() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.raw, "\n")
}

// jwtPattern matches a whole JWT (a redacted one, "eyJraW…(215)", does not match).
var jwtPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}`)

// assertNoSecrets checks that text contains no password of the fixture, no whole
// token, and none of the extra secrets.
func (f *fixture) assertNoSecrets(what, text string, extra ...string) {
	f.t.Helper()
	for _, u := range f.users {
		assert.NotContains(f.t, text, password(u), "%s shows a password", what)
	}
	for _, s := range extra {
		if s != "" {
			assert.NotContains(f.t, text, s, "%s shows a secret", what)
		}
	}
	assert.False(f.t, jwtPattern.MatchString(text), "%s shows a whole token: %s", what, jwtPattern.FindString(text))
}

// oneLineError checks that stderr is exactly one line.
func oneLineError(t *testing.T, stderr string) {
	t.Helper()
	assert.True(t, strings.HasSuffix(stderr, "\n") && strings.Count(stderr, "\n") == 1, "want one line on stderr, got %q", stderr)
}

// daemonResult is what an in-process run returned.
type daemonResult struct {
	code           int
	stdout, stderr string
}

// runInProcess starts the run command in this process; stop ends it (as SIGTERM
// would) and returns what it printed. stop fails the test if run does not return
// within 10 s.
func runInProcess(t *testing.T, env map[string]string, args ...string) (stop func() daemonResult) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan daemonResult, 1)
	go func() {
		code, stdout, stderr := inProcess(t, ctx, env, "", append([]string{"run"}, args...)...)
		done <- daemonResult{code, stdout, stderr}
	}()
	var once sync.Once
	var r daemonResult
	stop = func() daemonResult {
		once.Do(func() {
			cancel()
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Error("run did not return within 10s of its context ending")
			}
		})
		return r
	}
	t.Cleanup(func() { stop() })
	return stop
}

// testMetrics returns daemon metrics with no users, Redis up.
func testMetrics(t *testing.T) *metrics {
	t.Helper()
	m, err := newMetrics(func() []userView { return nil }, func() bool { return true })
	require.NoError(t, err)
	return m
}
