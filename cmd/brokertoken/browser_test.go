package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/browser"
	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/tokencache"
)

// watcherEnv makes this test binary a Watch-er in a process of its own (see TestMain):
// it names the user to watch; REDIS_URL and BROKERTOKEN_PREFIX say where.
const watcherEnv = "BROKERTOKEN_TEST_WATCHER"

// watcherMain watches one user with a read-only cache, as a service would, and prints
// "watching" once its subscription is live, then "token <version> <sha256 of the access
// token> <unix ns received>" for each token it receives (never the token itself). It
// stops on SIGTERM or when its standard input closes.
func watcherMain() int {
	user := os.Getenv(watcherEnv)
	opts, err := redis.ParseURL(os.Getenv("REDIS_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "watcher:", err)
		return 2
	}
	name := "watcher-" + strconv.Itoa(os.Getpid())
	opts.ClientName = name
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	// MaxStaleness of an hour: a token that arrives within the test came through the
	// announcement, not a periodic re-read.
	cache, err := tokencache.New(tokencache.Options{Redis: rdb, Prefix: os.Getenv("BROKERTOKEN_PREFIX"), MaxStaleness: time.Hour})
	if err != nil {
		fmt.Fprintln(os.Stderr, "watcher:", err)
		return 2
	}
	defer cache.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	go func() { // the parent closing stdin ends the watch
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		cancel()
	}()
	changes := cache.Watch(ctx, user)
	for { // until this process's own subscription is live
		list, err := rdb.ClientList(ctx).Result()
		if err != nil {
			fmt.Fprintln(os.Stderr, "watcher:", err)
			return 1
		}
		live := false
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, " name="+name+" ") && strings.Contains(line, " sub=") && !strings.Contains(line, " sub=0 ") {
				live = true
			}
		}
		if live {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("watching")
	for tok := range changes {
		sum := sha256.Sum256([]byte(tok.AccessToken))
		fmt.Printf("token %d %s %d\n", tok.Version, hex.EncodeToString(sum[:]), time.Now().UnixNano())
	}
	return 0
}

// watcher is a Watch-er process.
type watcher struct {
	lines chan string
}

// startWatcher runs this test binary as a Watch-er of user, in another process, and
// waits until it is subscribed.
func startWatcher(t *testing.T, env map[string]string, user string) *watcher {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(cleanEnv(), watcherEnv+"="+user, "REDIS_URL="+env["REDIS_URL"], "BROKERTOKEN_PREFIX="+env["BROKERTOKEN_PREFIX"])
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	w := &watcher{lines: make(chan string, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		exited := make(chan struct{})
		go func() { <-done; _ = cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("watcher stderr:\n%s", stderr.String())
		}
	})
	select {
	case line := <-w.lines:
		require.Equal(t, "watching", line)
	case <-time.After(30 * time.Second):
		t.Fatal("the watcher process did not subscribe")
	}
	return w
}

// next returns the next token the watcher received: its version, the access token's
// hash and when it arrived.
func (w *watcher) next(t *testing.T, timeout time.Duration) (version int64, hash string, at time.Time) {
	t.Helper()
	select {
	case line, ok := <-w.lines:
		require.True(t, ok, "the watcher stopped")
		f := strings.Fields(line)
		require.Len(t, f, 4, line)
		version, _ = strconv.ParseInt(f[1], 10, 64)
		ns, _ := strconv.ParseInt(f[3], 10, 64)
		return version, f[2], time.Unix(0, ns)
	case <-time.After(timeout):
		t.Fatal("the watcher received no token")
	}
	return 0, "", time.Time{}
}

// The human's daily login in a real browser (headless Chromium, a phone's screen): open
// the daemon's page, give its access code, press "Log in with Kite", fill in Kite's
// login form, land on the success page. Meanwhile a Watch-er in another process
// receives the token through the announcement. Replaying Kite's redirect shows the
// error page and stores nothing.
func TestHumanLogsInWithARealBrowser(t *testing.T) {
	b := browser.Start(t)
	const pageSecret, kitePassword = "page-secret-0123456789", "kite-pw-0123"
	d := newKiteDaemon(t, kitefake.Options{LoginPassword: kitePassword}, "--login-secret", pageSecret)
	waitHTTP(t, d.pageURL, http.StatusForbidden, 30*time.Second) // up, asking for the access code
	w := startWatcher(t, d.env, kiteName)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	p := b.NewPage(t)
	p.ShowOnFailure(t)
	require.NoError(t, p.SetViewport(ctx, browser.Phone))
	require.NoError(t, p.Navigate(ctx, d.pageURL))
	require.NoError(t, p.Type(ctx, "#secret", pageSecret))
	require.NoError(t, p.Click(ctx, `button[type="submit"]`))
	section := `section[data-user="` + kiteName + `"]`
	require.NoError(t, p.WaitFor(ctx, `document.querySelector('`+section+`')`))

	// Usable on a phone: nothing wider than the screen, a wide button.
	var fits bool
	require.NoError(t, p.Eval(ctx, `document.documentElement.scrollWidth <= innerWidth &&
		document.querySelector('`+section+` button').getBoundingClientRect().width >= innerWidth * 0.7`, &fits))
	assert.True(t, fits, "the page fits a phone's screen")
	state, err := p.Attr(ctx, section, "data-state")
	require.NoError(t, err)
	assert.Contains(t, []string{"missing", "failing"}, state)

	require.NoError(t, p.Click(ctx, section+" button"))
	require.NoError(t, p.WaitFor(ctx, `location.href.startsWith(`+strconv.Quote(d.kite.LoginURL())+`) && document.querySelector("#user_id")`))
	require.NoError(t, p.Type(ctx, "#user_id", "AB1234"))
	require.NoError(t, p.Type(ctx, "#password", kitePassword))
	require.NoError(t, p.Click(ctx, `button[type="submit"]`))
	require.NoError(t, p.WaitFor(ctx, `document.body && document.body.innerText.includes("Logged in to Kite")`))
	redirect, err := p.URL(ctx)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(redirect, d.pageURL+"/"+kiteName+"/redirect?"), redirect)

	reader, err := tokencache.New(tokencache.Options{Redis: d.rdb, Prefix: d.prefix})
	require.NoError(t, err)
	defer reader.Close()
	st, err := reader.Status(ctx, kiteName)
	require.NoError(t, err)
	require.NotNil(t, st.Token)
	assert.True(t, d.kite.Valid(st.Token.AccessToken))
	version, hash, at := w.next(t, 30*time.Second)
	sum := sha256.Sum256([]byte(st.Token.AccessToken))
	assert.Equal(t, st.Token.Version, version)
	assert.Equal(t, hex.EncodeToString(sum[:]), hash, "the watcher in another process has the stored token")
	t.Logf("the watcher process received the token %s after the redirect handler obtained it", at.Sub(st.Token.ObtainedAt).Round(time.Millisecond))

	// Kite's redirect replayed (the browser's back button, a reload): the error page,
	// nothing exchanged or stored.
	require.NoError(t, p.Navigate(ctx, redirect))
	require.NoError(t, p.WaitFor(ctx, `document.body.innerText.includes("expired or was already used")`))
	text, err := p.Text(ctx)
	require.NoError(t, err)
	assert.NotContains(t, text, "Logged in")
	again, err := reader.Status(ctx, kiteName)
	require.NoError(t, err)
	assert.Equal(t, st.Token.Version, again.Token.Version)
	assert.Equal(t, 1, d.kite.Calls(kitefake.SessionToken, http.MethodPost, 0), "one exchange")

	// The page shows the token as valid now; no page held a secret.
	require.NoError(t, p.Navigate(ctx, d.pageURL))
	require.NoError(t, p.WaitFor(ctx, `document.querySelector('`+section+`[data-state="valid"]')`))
	html, err := p.HTML(ctx)
	require.NoError(t, err)
	for _, secret := range []string{st.Token.AccessToken, kiteSecretOf(kiteName), pageSecret, kitePassword} {
		assert.NotContains(t, html+text, secret)
	}
	select {
	case line := <-w.lines:
		t.Errorf("the watcher received another token after the replay: %s", line)
	default:
	}
}
