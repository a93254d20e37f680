package tradovate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tradovate"
)

const secretPassword = "hunter2-Sup3rS3cret"

// writeFile writes data to a file of mode perm in a temp dir and returns its path.
func writeFile(t *testing.T, data string, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "credentials.json")
	require.NoError(t, os.WriteFile(path, []byte(data), perm))
	require.NoError(t, os.Chmod(path, perm))
	return path
}

func TestLoadCredentialsReadsTheOriginalFile(t *testing.T) {
	t.Parallel()
	path := writeFile(t, `[
  {"username": "APEX_272045", "password": "`+secretPassword+`"},
  {"username": "APEX_272046", "password": "other-pass"}
]`, 0o600)
	c, err := tradovate.LoadCredentials(path)
	require.NoError(t, err)
	assert.Empty(t, c.Warnings)
	assert.Equal(t, []string{"APEX_272045", "APEX_272046"}, c.Users())
	assert.Equal(t, 2, c.Len())
	cr, err := c.Credential(context.Background(), "APEX_272045")
	require.NoError(t, err)
	assert.Equal(t, tradovate.Credential{Username: "APEX_272045", Password: secretPassword}, cr)
	_, err = c.Credential(context.Background(), "APEX_1")
	assert.ErrorIs(t, err, tradovate.ErrUnknownUser)
}

func TestLoadCredentialsReadsOptionalFields(t *testing.T) {
	t.Parallel()
	path := writeFile(t, `[
  {"username": "u1", "password": "p1", "method": "official", "appId": "My App", "appVersion": "2.0",
   "cid": 1234, "sec": "s1", "deviceId": "dev-1", "accounts": ["A1", "A2"]},
  {"username": "u2", "password": "p2", "method": "tradingview", "cid": "abc"}
]`, 0o600)
	c, err := tradovate.LoadCredentials(path)
	require.NoError(t, err)
	u1, err := c.Credential(context.Background(), "u1")
	require.NoError(t, err)
	assert.Equal(t, tradovate.Credential{Username: "u1", Password: "p1", Method: tradovate.MethodOfficial,
		AppID: "My App", AppVersion: "2.0", CID: "1234", Sec: "s1", DeviceID: "dev-1", Accounts: []string{"A1", "A2"}}, u1)
	u2, err := c.Credential(context.Background(), "u2")
	require.NoError(t, err)
	assert.Equal(t, tradovate.CID("abc"), u2.CID)
	assert.Equal(t, tradovate.MethodTradingView, u2.Method)
}

func TestLoadCredentialsWarnsAboutReadableFiles(t *testing.T) {
	t.Parallel()
	for _, perm := range []os.FileMode{0o644, 0o640, 0o604} {
		path := writeFile(t, `[{"username":"u","password":"p"}]`, perm)
		c, err := tradovate.LoadCredentials(path)
		require.NoError(t, err)
		require.Len(t, c.Warnings, 1, "mode %04o", perm)
		assert.Contains(t, c.Warnings[0], path)
		assert.Contains(t, c.Warnings[0], "chmod 600")
	}
}

func TestNewLogsCredentialWarnings(t *testing.T) {
	t.Parallel()
	path := writeFile(t, `[{"username":"u","password":"p"}]`, 0o644)
	c, err := tradovate.LoadCredentials(path)
	require.NoError(t, err)
	var logs testutil.Buffer
	_, err = tradovate.New(tradovate.Options{Credentials: c, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	assert.Contains(t, logs.String(), "readable by group or others")
}

func TestLoadCredentialsRejectsBadFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, data, want string
	}{
		{"object instead of array", `{"username":"u","password":"` + secretPassword + `"}`, "want a JSON array"},
		{"empty array", `[]`, "no credentials"},
		{"empty file", ``, "unexpected end of JSON"},
		{"syntax error", `[{"username":"u","password":"` + secretPassword + `",}]`, "invalid JSON at byte"},
		{"unterminated", `[{"username":"u","password":"` + secretPassword, "unexpected end of JSON"},
		{"trailing data", `[{"username":"u","password":"` + secretPassword + `"}] x`, "after the JSON array"},
		{"unknown field", `[{"username":"u","password":"` + secretPassword + `","pasword":"x"}]`, `entry 0: json: unknown field "pasword"`},
		{"missing password", `[{"username":"u","password":"` + secretPassword + `"},{"username":"v"}]`, `entry 1: password of "v" is empty`},
		{"empty username", `[{"username":"","password":"` + secretPassword + `"}]`, "entry 0: username is empty"},
		{"duplicate user", `[{"username":"u","password":"` + secretPassword + `"},{"username":"u","password":"b"}]`, `entry 1: username "u" already given by entry 0`},
		{"bad method", `[{"username":"u","password":"` + secretPassword + `","method":"oauth"}]`, `method "oauth"`},
		{"long deviceId", `[{"username":"u","password":"` + secretPassword + `","deviceId":"` + strings.Repeat("d", 65) + `"}]`, "65 characters"},
		{"password of the wrong type", `[{"username":"u","password":12345678}]`, `field "password" must not be a JSON number`},
		{"cid of the wrong type", `[{"username":"u","password":"` + secretPassword + `","cid":true}]`, "cid must be a number or a string"},
		{"entry not an object", `[["u","` + secretPassword + `"]]`, "entry 0: want a JSON object"},
		{"empty account", `[{"username":"u","password":"` + secretPassword + `","accounts":["A",""]}]`, `account 1 of "u" is empty`},
		{"brace in username", `[{"username":"u{1}","password":"` + secretPassword + `"}]`, "brace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, tt.data, 0o600)
			_, err := tradovate.LoadCredentials(path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.Contains(t, err.Error(), path, "the error names the file")
			assert.NotContains(t, err.Error(), secretPassword)
			assert.NotContains(t, err.Error(), "12345678")
		})
	}
}

func TestLoadCredentialsMissingFile(t *testing.T) {
	t.Parallel()
	_, err := tradovate.LoadCredentials(filepath.Join(t.TempDir(), "nope.json"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestCredentialsFromEnv(t *testing.T) {
	t.Setenv(tradovate.EnvUsername, "APEX_1")
	t.Setenv(tradovate.EnvPassword, secretPassword)
	t.Setenv(tradovate.EnvMethod, "Official")
	t.Setenv(tradovate.EnvAppID, "app")
	t.Setenv(tradovate.EnvAppVersion, "3")
	t.Setenv(tradovate.EnvCID, "42")
	t.Setenv(tradovate.EnvSec, "sec")
	t.Setenv(tradovate.EnvDeviceID, "dev")
	t.Setenv(tradovate.EnvAccounts, "A1, A2,,")
	c, err := tradovate.CredentialsFromEnv()
	require.NoError(t, err)
	cr, err := c.Credential(context.Background(), "APEX_1")
	require.NoError(t, err)
	assert.Equal(t, tradovate.Credential{Username: "APEX_1", Password: secretPassword, Method: tradovate.MethodOfficial,
		AppID: "app", AppVersion: "3", CID: "42", Sec: "sec", DeviceID: "dev", Accounts: []string{"A1", "A2"}}, cr)
}

func TestCredentialsFromEnvErrors(t *testing.T) {
	t.Setenv(tradovate.EnvUsername, "")
	_, err := tradovate.CredentialsFromEnv()
	require.ErrorIs(t, err, tradovate.ErrNoEnvCredential)

	t.Setenv(tradovate.EnvUsername, "u")
	t.Setenv(tradovate.EnvPassword, "")
	_, err = tradovate.CredentialsFromEnv()
	require.ErrorContains(t, err, tradovate.EnvPassword)

	t.Setenv(tradovate.EnvPassword, secretPassword)
	t.Setenv(tradovate.EnvMethod, "carrier-pigeon")
	_, err = tradovate.CredentialsFromEnv()
	require.ErrorContains(t, err, "carrier-pigeon")
	assert.NotContains(t, err.Error(), secretPassword)
}

func TestCredentialFormattingHidesSecrets(t *testing.T) {
	t.Parallel()
	cr := tradovate.Credential{Username: "APEX_1", Password: secretPassword, Sec: "api-secret-value", CID: "7"}
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		out := fmt.Sprintf(format, cr)
		assert.NotContains(t, out, secretPassword, format)
		assert.NotContains(t, out, "api-secret-value", format)
		assert.Contains(t, out, "APEX_1", format)
	}
	out := fmt.Sprintf("%v", &cr)
	assert.NotContains(t, out, secretPassword)
	out = fmt.Sprintf("%v", []tradovate.Credential{cr})
	assert.NotContains(t, out, secretPassword)

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("loaded", "cred", cr)
	assert.NotContains(t, buf.String(), secretPassword)
	assert.Contains(t, buf.String(), "APEX_1")
}

func TestCIDIsSentAsANumberWhenItIsOne(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		cid  tradovate.CID
		json string
	}{
		{`1234`, "1234", `1234`},
		{`"1234"`, "1234", `1234`},
		{`"abc-1"`, "abc-1", `"abc-1"`},
		{`null`, "", `""`},
	}
	for _, tt := range tests {
		var c tradovate.CID
		require.NoError(t, json.Unmarshal([]byte(tt.in), &c), tt.in)
		assert.Equal(t, tt.cid, c)
		out, err := json.Marshal(c)
		require.NoError(t, err)
		assert.Equal(t, tt.json, string(out))
	}
}
