//go:build linux

package tokencache_test

// Item 4 of the reliability tests (see reliability_test.go): it freezes a real process
// with SIGSTOP, and relies on Pdeathsig, so it runs on Linux only (as CI does).

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
)

// pausedLeaderEnv passes the Redis address, prefix and user to the helper process.
const pausedLeaderEnv = "BROKERTOKEN_TEST_PAUSED_LEADER"

// TestReliabilityHelperPausedLeader is not a test: it is the leader process of
// TestReliabilityPausedLeader, run from this test binary with pausedLeaderEnv set.
func TestReliabilityHelperPausedLeader(t *testing.T) {
	spec := os.Getenv(pausedLeaderEnv)
	if spec == "" {
		return // run only as the helper process of TestReliabilityPausedLeader
	}
	parts := strings.Split(spec, "|")
	require.Len(t, parts, 3)
	rdb := redis.NewClient(&redis.Options{Addr: parts[0]})
	defer rdb.Close()
	c, err := tokencache.New(tokencache.Options{
		Redis: rdb, Prefix: parts[1], Authenticator: frozenLogin{}, LeaseTTL: 600 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok, err := c.Token(ctx, parts[2])
	if err != nil {
		fmt.Printf("HELPER-ERR %v\n", err)
		return
	}
	fmt.Printf("HELPER-RESULT %s %d\n", tok.AccessToken, tok.Version)
}

// frozenLogin announces its login on stdout, then waits for a line on stdin: the
// parent freezes the process in between, and sends the line once it resumed it, so the
// login cannot end before the freeze however slow the machine is.
type frozenLogin struct{}

func (frozenLogin) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	fmt.Println("HELPER-LOGIN")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	now := time.Now()
	return &tokencache.Token{AccessToken: "frozen-leader-token", Expiry: now.Add(time.Hour), ObtainedAt: now}, nil
}

// Item 4: a paused leader. A separate OS process takes the refresh lease and is frozen
// with SIGSTOP in the middle of its login, for longer than its lease. This process takes
// over and refreshes; when the frozen one is resumed, its late write (based on an older
// version) is rejected, and nobody, not even the leader itself, is served its token.
func TestReliabilityPausedLeader(t *testing.T) {
	srv := testutil.StartRedis(t) // a real server: the helper process must reach it
	e := &env{t: t, srv: srv}
	user := e.user("U")
	ctx := context.Background()

	cmd := exec.Command(os.Args[0], "-test.run=^TestReliabilityHelperPausedLeader$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), pausedLeaderEnv+"="+srv.Addr()+"|"+srv.Prefix+"|"+user)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = cmd.Stdout
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	var exitErr error
	var exitOnce sync.Once
	wait := func() error {
		exitOnce.Do(func() {
			for range lines {
			}
			exitErr = <-exited
		})
		return exitErr
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = in.Close()
		_ = wait()
	})
	var output []string
	await := func(prefix string) string {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("helper exited before %q; output:\n%s", prefix, strings.Join(output, "\n"))
				}
				output = append(output, l)
				if strings.HasPrefix(l, prefix) {
					return l
				}
			case <-timeout:
				t.Fatalf("no %q from the helper; output:\n%s", prefix, strings.Join(output, "\n"))
			}
		}
	}
	await("HELPER-LOGIN")
	require.NoError(t, cmd.Process.Signal(syscall.SIGSTOP))
	frozen := time.Now()
	lease := srv.Prefix + ":{" + user + "}:lease"
	leaseHeld := e.client().Exists(ctx, lease).Val() == 1

	b := &broker{}
	var served sync.Map
	var fleet []*tokencache.Cache
	for range 2 {
		fleet = append(fleet, e.cache(b, func(o *tokencache.Options) { o.LeaseTTL = 600 * time.Millisecond }))
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	taken, err := fleet[0].Token(tctx, user)
	require.NoError(t, err)
	takeover := time.Since(frozen)
	served.Store(taken.AccessToken, true)
	time.Sleep(300 * time.Millisecond) // frozen well past the lease
	require.NoError(t, cmd.Process.Signal(syscall.SIGCONT))
	_, err = in.Write([]byte("go\n")) // the broker answers, late
	require.NoError(t, err)
	pausedFor := time.Since(frozen)

	result := await("HELPER-")
	require.NoError(t, wait(), "helper output:\n%s", strings.Join(output, "\n"))
	assert.Contains(t, strings.Join(output, "\n"), "another process stored a token while this one refreshed",
		"the resumed leader tried its write and was refused")
	assert.Equal(t, fmt.Sprintf("HELPER-RESULT %s %d", taken.AccessToken, taken.Version), result,
		"the resumed leader is served the takeover's token, not its own")

	for _, c := range fleet {
		for range 20 {
			got, err := c.Token(ctx, user)
			require.NoError(t, err)
			served.Store(got.AccessToken, true)
		}
	}
	st, err := fleet[1].Status(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, taken.AccessToken, st.Token.AccessToken, "Redis keeps the takeover's token")
	_, bad := served.Load("frozen-leader-token")
	assert.False(t, bad, "nobody is served the late token")
	assert.True(t, leaseHeld, "the frozen process held the lease")
	assert.EqualValues(t, 1, b.logins.Load())
	t.Logf("figures: leader frozen %s with a 600 ms lease; takeover refreshed %s after the freeze; late write rejected; leader then served version %d",
		pausedFor.Round(time.Millisecond), takeover.Round(time.Millisecond), taken.Version)
}
