package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
)

// writeCreds writes a credentials file for users and returns its path.
func writeCreds(t *testing.T, users ...string) string {
	t.Helper()
	var entries []string
	for _, u := range users {
		entries = append(entries, fmt.Sprintf(`{"username":%q,"password":%q}`, u, password(u)))
	}
	p := filepath.Join(t.TempDir(), "credentials.json")
	require.NoError(t, os.WriteFile(p, []byte("["+strings.Join(entries, ",")+"]"), 0o600))
	return p
}

// rediss:// with the server's CA from --redis-ca, and the password from REDIS_PASSWORD
// (the Azure Cache for Redis setup: TLS, password in the environment).
func TestTokenOverTLSRedis(t *testing.T) {
	srv := testutil.TLSRedis(t)
	fake := tradovatefake.New(t, tradovatefake.Options{})
	user := srv.Name("tls")
	fake.AddUser(user, password(user))
	env := map[string]string{
		"REDIS_URL":               "rediss://" + srv.User + "@" + srv.Addr() + "/0",
		"REDIS_PASSWORD":          srv.Password,
		"BROKERTOKEN_REDIS_CA":    srv.CAFile(),
		"BROKERTOKEN_CREDENTIALS": writeCreds(t, user),
		"TRADOVATE_URL":           fake.RESTURL(),
		"TRADOVATE_TV_URL":        fake.TradingViewURL(),
		"BROKERTOKEN_PREFIX":      srv.Prefix,
	}
	code, stdout, stderr := inProcess(t, context.Background(), env, "", "token", user, "--legacy-keys")
	require.Equal(t, 0, code, stderr)
	v, err := srv.Client(t).Get(context.Background(), "token:"+user).Result()
	require.NoError(t, err)
	assert.Equal(t, v+"\n", stdout)

	// Without the CA the server's certificate is not trusted: a configuration error.
	delete(env, "BROKERTOKEN_REDIS_CA")
	code, _, stderr = inProcess(t, context.Background(), env, "", "status")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "cannot connect")
	assert.Contains(t, stderr, "certificate")
	assert.NotContains(t, stderr, srv.Password)
	oneLineError(t, stderr)
}

func TestTokenOnRedisCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node Redis Cluster")
	}
	cl := testutil.Cluster(t)
	fake := tradovatefake.New(t, tradovatefake.Options{})
	user := cl.Name("cl")
	fake.AddUser(user, password(user))
	env := map[string]string{
		"REDIS_URL":               "redis+cluster://" + strings.Join(cl.Addrs(), ","),
		"BROKERTOKEN_CREDENTIALS": writeCreds(t, user),
		"TRADOVATE_URL":           fake.RESTURL(),
		"TRADOVATE_TV_URL":        fake.TradingViewURL(),
		"BROKERTOKEN_PREFIX":      cl.Prefix,
	}
	code, stdout, stderr := inProcess(t, context.Background(), env, "", "token", user, "--legacy-keys")
	require.Equal(t, 0, code, stderr)
	v, err := cl.Client(t).Get(context.Background(), "token:"+user).Result()
	require.NoError(t, err)
	assert.Equal(t, v+"\n", stdout)

	addrs := cl.Addrs()
	dead := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)) // a seed that answers nothing
	for _, u := range []string{
		"redis://" + strings.Join(addrs, ","),                                    // the comma-list form
		"redis://" + dead + "?addr=" + addrs[1] + "&addr=" + addrs[2],            // go-redis's form: only the addr seeds answer
		"redis+cluster://" + addrs[0] + "?addr=" + addrs[1] + "&dial_timeout=5s", // seeds in both places
	} {
		env["REDIS_URL"] = u
		code, stdout, stderr = inProcess(t, context.Background(), env, "", "status", "--json")
		require.Equal(t, 0, code, "%s: %s", u, stderr)
		assert.Contains(t, stdout, `"state": "fresh"`, u)
	}
	assert.Equal(t, 1, fake.Logins(user))
}

// The wrong scheme for the port says so: rediss:// against a plain server is a failed
// TLS handshake (not a timeout), redis:// against a TLS-only server suggests rediss://.
func TestRedisTLSMismatchSaysSo(t *testing.T) {
	plain := testutil.StartRedis(t)
	tlsSrv := testutil.TLSRedis(t)
	for _, tc := range []struct {
		name, url string
		want      []string
	}{
		{"rediss to a plain port", "rediss://" + plain.Addr() + "/0",
			[]string{"cannot connect: TLS handshake with " + plain.Addr(), "does not speak TLS there", "use redis://"}},
		{"redis to a TLS port", "redis://" + tlsSrv.User + ":" + tlsSrv.Password + "@" + tlsSrv.Addr() + "/0",
			[]string{"cannot connect", "use rediss://"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"REDIS_URL": tc.url, "BROKERTOKEN_PREFIX": plain.Prefix}
			code, stdout, stderr := inProcess(t, context.Background(), env, "", "status", "--timeout", "30s")
			assert.Equal(t, 2, code, stderr)
			assert.Empty(t, stdout)
			oneLineError(t, stderr)
			for _, w := range tc.want {
				assert.Contains(t, stderr, w)
			}
			assert.NotContains(t, stderr, "context deadline exceeded")
			assert.NotContains(t, stderr, tlsSrv.Password)
		})
	}
}
