package tradovate_test

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tradovate"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testutil.LeakOptions()...)
}

// password returns a distinctive password for user, so redaction checks can scan for it.
func password(user string) string { return "pw-" + user + "-S3cr3t!" }

// fixture is a fake broker plus a real Redis for one test.
type fixture struct {
	fake  *tradovatefake.Server
	redis *testutil.Server
	users []string
	creds []tradovate.Credential
}

// newFixture starts a fake and a Redis and registers n users named after the test.
func newFixture(t *testing.T, fakeOpts tradovatefake.Options, n int) *fixture {
	t.Helper()
	return newFixtureOn(t, testutil.Redis(t), fakeOpts, n)
}

// newFixtureOn is newFixture with a given Redis (e.g. one from testutil.StartRedis, which
// can be restarted).
func newFixtureOn(t *testing.T, rs *testutil.Server, fakeOpts tradovatefake.Options, n int) *fixture {
	t.Helper()
	f := &fixture{fake: tradovatefake.New(t, fakeOpts), redis: rs}
	for i := range n {
		u := f.redis.Name(string(rune('a' + i)))
		f.fake.AddUser(u, password(u))
		f.users = append(f.users, u)
		f.creds = append(f.creds, tradovate.Credential{Username: u, Password: password(u)})
	}
	return f
}

// credentials returns the fixture's credentials with edit applied to each.
func (f *fixture) credentials(t testing.TB, edit func(*tradovate.Credential)) *tradovate.Credentials {
	t.Helper()
	list := append([]tradovate.Credential(nil), f.creds...)
	for i := range list {
		if edit != nil {
			edit(&list[i])
		}
	}
	c, err := tradovate.NewCredentials(list...)
	require.NoError(t, err)
	return c
}

// options returns test Options: the fake's URLs, a new Redis client (one per
// "process"), the test's prefix, fast retries and a quiet logger.
func (f *fixture) options(t testing.TB, creds tradovate.CredentialSource) tradovate.Options {
	return tradovate.Options{
		RESTURL:         f.fake.RESTURL(),
		TradingViewURL:  f.fake.TradingViewURL(),
		Credentials:     creds,
		Redis:           f.redis.Client(t),
		Namespace:       f.redis.Prefix + ":tradovate",
		RetryBackoff:    10 * time.Millisecond,
		MaxRetryBackoff: 40 * time.Millisecond,
		Logger:          quietLogger(),
	}
}

// auth builds an Authenticator from the fixture's options after edit.
func (f *fixture) auth(t testing.TB, creds tradovate.CredentialSource, edit func(*tradovate.Options)) *tradovate.Authenticator {
	t.Helper()
	opts := f.options(t, creds)
	if edit != nil {
		edit(&opts)
	}
	a, err := tradovate.New(opts)
	require.NoError(t, err)
	return a
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// bufferLogger returns a logger writing text lines to a buffer the test can read.
func bufferLogger() (*slog.Logger, *testutil.Buffer) {
	var b testutil.Buffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}
