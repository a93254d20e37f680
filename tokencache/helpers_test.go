package tokencache_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the fault tests cause many on purpose.
	redis.SetLogger(quietLogger{})
	goleak.VerifyTestMain(m, testutil.LeakOptions()...)
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// broker is a hand-written fake Authenticator and Renewer. It issues opaque tokens
// "tok-<user>-<n>" living for lifetime, counts calls, and fails when told to.
type broker struct {
	lifetime time.Duration // default 1h
	delay    time.Duration // how long each call takes (honours ctx)

	logins, renews atomic.Int64
	seq            atomic.Int64

	mu       sync.Mutex // guards the hooks
	loginErr func(ctx context.Context, n int64) error
	renewErr func(ctx context.Context, n int64) error
	issued   func(access string) // told of every token issued, before it is returned
}

var (
	_ tokencache.Authenticator = (*broker)(nil)
	_ tokencache.Renewer       = (*broker)(nil)
)

func (b *broker) issue(ctx context.Context, user, kind string) (*tokencache.Token, error) {
	if b.delay > 0 {
		select {
		case <-time.After(b.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	life := b.lifetime
	if life == 0 {
		life = time.Hour
	}
	now := time.Now()
	access := fmt.Sprintf("%s-tok-%s-%d", kind, user, b.seq.Add(1))
	b.mu.Lock()
	issued := b.issued
	b.mu.Unlock()
	if issued != nil {
		issued(access)
	}
	return &tokencache.Token{
		AccessToken:   access,
		MDAccessToken: fmt.Sprintf("md-%s-%d", user, b.seq.Load()),
		Expiry:        now.Add(life),
		ObtainedAt:    now,
	}, nil
}

func (b *broker) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	n := b.logins.Add(1)
	b.mu.Lock()
	hook := b.loginErr
	b.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, n); err != nil {
			return nil, err
		}
	}
	return b.issue(ctx, user, "login")
}

func (b *broker) Renew(ctx context.Context, user string, current *tokencache.Token) (*tokencache.Token, error) {
	n := b.renews.Add(1)
	b.mu.Lock()
	hook := b.renewErr
	b.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, n); err != nil {
			return nil, err
		}
	}
	t, err := b.issue(ctx, user, "renew")
	if err == nil {
		t.MDAccessToken = "" // like Tradovate: a renewal may omit the md token
	}
	return t, err
}

func (b *broker) failLogins(f func(ctx context.Context, n int64) error) {
	b.mu.Lock()
	b.loginErr = f
	b.mu.Unlock()
}

func (b *broker) failRenewals(f func(ctx context.Context, n int64) error) {
	b.mu.Lock()
	b.renewErr = f
	b.mu.Unlock()
}

// loginOnly hides the Renewer of a broker.
type loginOnly struct{ b *broker }

func (l loginOnly) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	return l.b.Login(ctx, user)
}

// env is one test's Redis and the options every cache of the test shares.
type env struct {
	t   *testing.T
	srv *testutil.Server
}

func newEnv(t *testing.T) *env {
	return &env{t: t, srv: testutil.Redis(t)}
}

// user returns a login user name unique to this test.
func (e *env) user(s string) string { return e.srv.Name(s) }

// client returns a new Redis client, as a separate process would have.
func (e *env) client() *redis.Client { return e.srv.Client(e.t) }

// cache returns a new Cache on its own Redis client, closed at the end of the test.
func (e *env) cache(auth tokencache.Authenticator, tweak ...func(*tokencache.Options)) *tokencache.Cache {
	e.t.Helper()
	return newCache(e.t, e.client(), e.srv.Prefix, auth, tweak...)
}

func newCache(t testing.TB, rdb redis.UniversalClient, prefix string, auth tokencache.Authenticator, tweak ...func(*tokencache.Options)) *tokencache.Cache {
	t.Helper()
	opts := tokencache.Options{
		Redis:         rdb,
		Authenticator: auth,
		Prefix:        prefix,
		Logger:        testLogger(t),
	}
	for _, f := range tweak {
		f(&opts)
	}
	c, err := tokencache.New(opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	// Like a process that has been running: subscribed before another process writes, so
	// a test's announcement is not made before this cache can hear it (it would still
	// converge, through the resubscription, but without the hooks a test may count).
	// Bounded, for the tests whose Redis is unreachable on purpose.
	for deadline := time.Now().Add(time.Second); !c.Subscribed() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return c
}

// testLogger sends the cache's log to the test log when -v is given.
func testLogger(t testing.TB) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// shortLived makes tokens of the given lifetime stale after half of it and unusable a
// tenth of it before expiry.
func shortLived(o *tokencache.Options) {
	o.RefreshBefore = time.Hour // capped at half the lifetime
	o.Leeway = time.Hour        // capped at a tenth of the lifetime
	o.RetryMin = 20 * time.Millisecond
	o.RetryMax = 200 * time.Millisecond
}

// commandCounter counts the commands a client sends, by name.
type commandCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func countCommands(rdb *redis.Client) *commandCounter {
	cc := &commandCounter{counts: map[string]int{}}
	rdb.AddHook(cc)
	return cc
}

func (cc *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (cc *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		cc.add(cmd)
		return next(ctx, cmd)
	}
}

func (cc *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			cc.add(c)
		}
		return next(ctx, cmds)
	}
}

func (cc *commandCounter) add(cmd redis.Cmder) {
	cc.mu.Lock()
	cc.counts[cmd.Name()]++
	cc.mu.Unlock()
}

func (cc *commandCounter) get(name string) int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.counts[name]
}

func (cc *commandCounter) reset() {
	cc.mu.Lock()
	cc.counts = map[string]int{}
	cc.mu.Unlock()
}

// checkingBroker is a broker that can also check a token cheaply (tokencache.Checker):
// it accepts every token it issued that has not been revoked.
type checkingBroker struct {
	*broker
	checks atomic.Int64

	mu      sync.Mutex // guards revoked
	revoked map[string]bool
}

var _ tokencache.Checker = (*checkingBroker)(nil)

func (c *checkingBroker) Check(_ context.Context, _ string, t *tokencache.Token) error {
	c.checks.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.revoked[t.AccessToken] || !strings.Contains(t.AccessToken, "-tok-") {
		return fmt.Errorf("%w: not a live session", tokencache.ErrTokenRejected)
	}
	return nil
}

// revoke makes the broker refuse access from now on.
func (c *checkingBroker) revoke(access string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.revoked == nil {
		c.revoked = map[string]bool{}
	}
	c.revoked[access] = true
}
