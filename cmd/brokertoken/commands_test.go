package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
)

func TestTokenAndStatus(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"a", []string{"a1"}}, userSpec{"b", nil})
	a, b, a1 := f.users[0], f.users[1], f.redis.Name("a1")
	ctx := context.Background()
	env := f.env()
	var out strings.Builder // everything printed, for the secrets scan

	code, stdout, stderr := inProcess(t, ctx, env, "", "token", a1)
	require.Equal(t, 0, code, stderr)
	first, v1 := f.stored(a)
	assert.Equal(t, first+"\n", stdout)
	assert.Equal(t, 1, f.fake.Logins(a))
	assert.Empty(t, f.keys("token:"+a1), "legacy keys are off by default outside run")
	out.WriteString(stderr)

	// A TradingView-style login is followed by a renewal for a market-data token.
	code, stdout, stderr = inProcess(t, ctx, env, "", "token", a, "--md")
	assert.Equal(t, 0, code, stderr)
	assert.True(t, f.fake.Valid(strings.TrimSpace(stdout)), "the market-data token of the first login")
	assert.Equal(t, 1, f.fake.Renewals(a))
	out.WriteString(stderr)

	code, stdout, stderr = inProcess(t, ctx, env, "", "status")
	require.Equal(t, 0, code, stderr)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Len(t, lines, 4, stdout)
	assert.Regexp(t, `^USER\s+ACCOUNTS\s+STATE\s+EXPIRES IN\s+VERSION\s+LAST REFRESH\s+BY\s+TOKEN\s+DEVICE\s+NOTE`, lines[0])
	assert.Regexp(t, fmt.Sprintf(`^%s\s+%s\s+fresh\s+1h[12]\dm\s+%d\s+.*ago\)\s+login\s+eyJhbG…\(\d+\)\s+-\s+no daemon registered this user$`, a, a1, v1), lines[1])
	assert.Regexp(t, fmt.Sprintf(`^%s\s+-\s+missing\s+-`, b), lines[2])
	assert.Equal(t, "daemons: none running", lines[3])
	out.WriteString(stdout + stderr)

	// A captcha puts the user in a cool-down that status reports.
	f.fake.Script(tradovatefake.Authorize, b, tradovatefake.Captcha())
	code, stdout, stderr = inProcess(t, ctx, env, "", "token", b)
	assert.Equal(t, 1, code)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "captcha required")
	oneLineError(t, stderr)
	out.WriteString(stderr)

	code, stdout, stderr = inProcess(t, ctx, env, "", "status", "--json")
	require.Equal(t, 0, code, stderr)
	var st struct{ Users []userStatus }
	require.NoError(t, json.Unmarshal([]byte(stdout), &st), stdout)
	require.Len(t, st.Users, 2)
	assert.Equal(t, "fresh", st.Users[0].State)
	assert.Equal(t, v1, st.Users[0].Version)
	assert.Equal(t, []string{a1}, st.Users[0].Accounts)
	assert.Equal(t, "login", st.Users[0].ObtainedBy)
	assert.False(t, st.Users[0].Registered)
	assert.Equal(t, "locked out", st.Users[1].State)
	assert.Equal(t, "missing", st.Users[1].TokenState)
	require.NotNil(t, st.Users[1].Cooldown)
	assert.Equal(t, "captcha", st.Users[1].Cooldown.Reason)
	assert.WithinDuration(t, time.Now().Add(time.Hour), st.Users[1].Cooldown.Until, time.Minute)
	out.WriteString(stdout + stderr)

	code, stdout, _ = inProcess(t, ctx, env, "", "status", b)
	require.Equal(t, 0, code)
	assert.Regexp(t, `locked out .*captcha until \d\d:\d\d:\d\d; token missing`, stdout)
	out.WriteString(stdout)

	// Without a credentials file, token only reads what is stored.
	ro := f.env()
	delete(ro, "BROKERTOKEN_CREDENTIALS")
	code, stdout, stderr = inProcess(t, ctx, ro, "", "token", a)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, first+"\n", stdout)
	code, _, stderr = inProcess(t, ctx, ro, "", "token", b)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "read-only")
	oneLineError(t, stderr)
	out.WriteString(stderr)

	f.assertNoSecrets("command output", out.String())
	assert.Empty(t, f.keys(f.prefix+":*:lease"))
}

func TestDecode(t *testing.T) {
	// The test vector from the original system's notes (signature not verifiable).
	const jwt = "eyJraWQiOiI0IiwiYWxnIjoiRWREU0EifQ.eyJzdWIiOiIzODY1NjUxIiwiZXhwIjoxNzYwNzg5NzA3LCJqdGkiOiItNDM4MjEwOTUxMjgyOTcwNTM4NC0xNjMyMDc2ODcwNDU4NzM2NDMiLCJwaHMiOjk4NTY5MzU1MH0.dh1SjFQfE2vN6aixpz3aveEb7p_ElqMfnl9V3bc16zBXmX8IM0zaduP2cS25ZtCBb5CEsMFcKQVKiRoMl2k8Dw"
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
	}{
		{"argument", "", []string{"decode", jwt}},
		{"stdin with -", jwt + "\n", []string{"decode", "-"}},
		{"stdin", "Bearer " + jwt, []string{"decode"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := inProcess(t, ctx, nil, tc.stdin, tc.args...)
			require.Equal(t, 0, code, stderr)
			assert.Contains(t, stdout, `header:     {"kid":"4","alg":"EdDSA"}`)
			assert.Contains(t, stdout, `"sub": "3865651"`)
			assert.Contains(t, stdout, `"phs": 985693550`)
			assert.Contains(t, stdout, "expires:    2025-10-18T12:15:07Z (expired ")
			assert.Contains(t, stdout, "token:      eyJraW…(253) (signature not verified)")
			assert.NotContains(t, stdout, jwt)
			assert.NotContains(t, stdout, "dh1SjFQfE2vN6aixpz3")
		})
	}

	code, stdout, stderr := inProcess(t, ctx, nil, "", "decode", jwt, "--json")
	require.Equal(t, 0, code, stderr)
	var d decoded
	require.NoError(t, json.Unmarshal([]byte(stdout), &d))
	assert.Equal(t, time.Unix(1760789707, 0).UTC(), *d.ExpiresAt)
	assert.JSONEq(t, `{"kid":"4","alg":"EdDSA"}`, string(d.Header))
	assert.False(t, d.Verified)
	assert.Negative(t, *d.ExpiresIn)

	for _, bad := range []struct{ token, want string }{
		{"opaque-token-string", "not a JWT: want 3 dot-separated parts, found 1"},
		{"YQ.e30.c2ln", "not a JWT: the header is not a JSON object"},
		{"!!!.e30.sig", "not a JWT: the header is not base64url"},
		{"", "no token given"},
	} {
		code, stdout, stderr := inProcess(t, ctx, nil, "", "decode", bad.token)
		assert.Equal(t, 1, code, bad.token)
		assert.Empty(t, stdout)
		assert.Contains(t, stderr, bad.want)
		oneLineError(t, stderr)
	}
	code, _, stderr = inProcess(t, ctx, nil, "", "decode", "a", "b")
	assert.Equal(t, 2, code)
	oneLineError(t, stderr)
}

// Every usage or configuration error exits 2 with one line that says what and where,
// and leaves Redis untouched.
func TestConfigErrorsExitTwoAndWriteNothing(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{}, userSpec{"a", nil})
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	malformed := write("malformed.json", `[{"username":"x","password":"p"}, {"username":"y","password":"pw-y-S3cr3t!",}]`)
	noPassword := write("nopass.json", `[{"username":"x","password":"p"}, {"username":"y"}]`)
	notArray := write("object.json", `{"username":"x","password":"p"}`)
	unreachable := fmt.Sprintf("redis://:hunter2secret@127.0.0.1:%d/0", testutil.FreePort(t))
	// --listen names a port in use: every other error is still found first, since run
	// checks its whole configuration before it binds anything.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()

	tests := []struct {
		name string
		env  map[string]string // added to the fixture's
		args []string
		want []string
	}{
		{"no command", nil, nil, []string{"missing command"}},
		{"unknown command", nil, []string{"refresh"}, []string{`unknown command "refresh"`}},
		{"flags before the command", nil, []string{"--redis", "x", "run"}, []string{"flags go after the command"}},
		{"unknown flag", nil, []string{"token", "--nope", "X"}, []string{"token: flag provided but not defined: -nope"}},
		{"token without account", nil, []string{"token"}, []string{"token: want one ACCOUNT"}},
		{"run with an argument", nil, []string{"run", "extra"}, []string{`run: takes no arguments, found "extra"`}},
		{"missing credentials file", nil, []string{"run", "--credentials", filepath.Join(dir, "none.json")}, []string{"none.json", "no such file", "--credentials"}},
		{"malformed credentials", map[string]string{"BROKERTOKEN_CREDENTIALS": malformed}, []string{"run"}, []string{malformed, "invalid JSON at byte"}},
		{"credential without password", map[string]string{"BROKERTOKEN_CREDENTIALS": noPassword}, []string{"run"}, []string{noPassword, "entry 1", "password"}},
		{"credentials not an array", map[string]string{"BROKERTOKEN_CREDENTIALS": notArray}, []string{"run"}, []string{notArray, "JSON array"}},
		{"unknown environment", map[string]string{"TRADOVATE_ENV": "paper"}, []string{"run"}, []string{`TRADOVATE_ENV "paper": want demo, live`}},
		{"bad redis URL", map[string]string{"REDIS_URL": "http://127.0.0.1:6379"}, []string{"token", "X"}, []string{`REDIS_URL: unsupported scheme "http"`}},
		{"unreachable redis", map[string]string{"REDIS_URL": unreachable}, []string{"run"}, []string{"redis redis://:xxxxx@127.0.0.1:", "cannot connect", "connection refused"}},
		{"bad webhook", map[string]string{"BROKERTOKEN_ALERT_WEBHOOK": "ftp://hooks.example/secretpath"}, []string{"run"}, []string{"BROKERTOKEN_ALERT_WEBHOOK: want an http:// or https:// URL"}},
		{"bad tradovate URL", nil, []string{"token", "X", "--tv-url", "tv-demo.example"}, []string{`--tv-url "tv-demo.example": want an http:// or https:// URL`}},
		{"unknown account", nil, []string{"token", "NOBODY"}, []string{`account "NOBODY" is neither a user in`}},
		{"bad duration", map[string]string{"BROKERTOKEN_CHECK_INTERVAL": "often"}, []string{"run"}, []string{`BROKERTOKEN_CHECK_INTERVAL "often"`}},
		{"listen in use", nil, []string{"run"}, []string{"--listen " + busy.Addr().String() + ": ", "address already in use"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := f.env()
			env["BROKERTOKEN_LISTEN"] = busy.Addr().String()
			for k, v := range tt.env {
				env[k] = v
			}
			code, stdout, stderr := inProcess(t, context.Background(), env, "", tt.args...)
			assert.Equal(t, 2, code, stderr)
			assert.Empty(t, stdout)
			oneLineError(t, stderr)
			assert.True(t, strings.HasPrefix(stderr, "brokertoken: "), stderr)
			for _, w := range tt.want {
				assert.Contains(t, stderr, w)
			}
			f.assertNoSecrets("stderr", stderr, "hunter2secret", "secretpath")
		})
	}

	// The same through the real binary and its exit status.
	p := start(t, "run", f.env(), "run", "--env", "paper")
	assert.Equal(t, 2, p.wait(30*time.Second))
	assert.Equal(t, "brokertoken: --env \"paper\": want demo, live\n", p.stderr.String())

	if f.redis.Kind != "external" {
		assert.Empty(t, f.keys("*"), "a configuration error wrote to Redis")
	} else {
		assert.Empty(t, f.keys(f.prefix+"*"), "a configuration error wrote to Redis")
	}
}

func TestHelpAndVersion(t *testing.T) {
	ctx := context.Background()
	code, stdout, _ := inProcess(t, ctx, nil, "", "-h")
	assert.Equal(t, 0, code)
	for _, c := range []string{"run", "token ACCOUNT [--md]", "status", "decode [TOKEN|-]", "invalidate ACCOUNT"} {
		assert.Contains(t, stdout, "brokertoken "+c)
	}
	code, stdout, _ = inProcess(t, ctx, nil, "", "run", "-h")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "--redis URL")
	assert.Contains(t, stdout, "env REDIS_URL")
	assert.Contains(t, stdout, "env BROKERTOKEN_ALERT_WEBHOOK")
	code, stdout, _ = inProcess(t, ctx, nil, "", "version")
	assert.Equal(t, 0, code)
	assert.True(t, strings.HasPrefix(stdout, "brokertoken "))
}
