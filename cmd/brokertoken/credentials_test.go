package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/tokencache"
)

// kiteSecret marks the Kite app secrets of these tests, so scans can look for it.
const kiteSecret = "kite-api-secret-S3cr3t"

// writeCredentialsFile writes data to a fresh credentials file (mode 0600).
func writeCredentialsFile(t *testing.T, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "credentials.json")
	require.NoError(t, os.WriteFile(path, []byte(data), 0o600))
	return path
}

// Kite apps go in the same array as the Tradovate logins, told apart by "broker"; the
// original entries (no broker field) stay valid, and "broker":"tradovate" is the same.
func TestCredentialsFileHoldsTradovateLoginsAndKiteApps(t *testing.T) {
	path := writeCredentialsFile(t, `[
		{"username": "APEX_1", "password": "pw-APEX_1"},
		{"broker": "kite", "name": "kite_main", "api_key": "kitekey1", "api_secret": "`+kiteSecret+`", "user_id": "AB1234"},
		{"broker": "Tradovate", "username": "APEX_2", "password": "pw-APEX_2", "accounts": ["PA2"]},
		{"broker": "kite", "api_key": "kitekey2", "api_secret": "`+kiteSecret+`2"}
	]`)
	cf, err := loadCredentials(path)
	require.NoError(t, err)
	assert.Equal(t, []string{"APEX_1", "kite_main", "APEX_2", "kitekey2"}, cf.users(), "file order, every broker")
	require.NotNil(t, cf.tradovate)
	assert.Equal(t, []string{"APEX_1", "APEX_2"}, cf.tradovate.Users())
	require.Len(t, cf.kite, 2)
	assert.Equal(t, kiteEntry{Broker: brokerKite, Name: "kite_main", APIKey: "kitekey1", APISecret: kiteSecret, UserID: "AB1234", index: 1}, cf.kite[0])
	assert.Equal(t, "kitekey2", cf.kite[1].Name, "the name defaults to the api_key")
	assert.Empty(t, cf.warnings)

	// The original file: a plain array of Tradovate logins.
	plain, err := loadCredentials(writeCredentialsFile(t, `[{"username":"APEX_1","password":"pw"}]`))
	require.NoError(t, err)
	assert.Equal(t, []string{"APEX_1"}, plain.users())
	assert.Empty(t, plain.kite)

	// A Kite-only file has no Tradovate logins.
	only, err := loadCredentials(writeCredentialsFile(t, `[{"broker":"kite","api_key":"k","api_secret":"`+kiteSecret+`"}]`))
	require.NoError(t, err)
	assert.Nil(t, only.tradovate)
	assert.Equal(t, []string{"k"}, only.users())

	// A file others may read loads, with a warning.
	loose := writeCredentialsFile(t, `[{"username":"APEX_1","password":"pw"}]`)
	require.NoError(t, os.Chmod(loose, 0o644))
	lf, err := loadCredentials(loose)
	require.NoError(t, err)
	require.Len(t, lf.warnings, 1)
	assert.Contains(t, lf.warnings[0], "chmod 600")
}

// Every bad entry is one line naming the file and the entry's index, never a secret.
func TestCredentialsFileErrorsNameFileAndEntry(t *testing.T) {
	kite := func(fields string) string {
		return `{"broker":"kite",` + fields + `}`
	}
	tests := []struct{ name, data, want string }{
		{"not an array", `{"broker":"kite"}`, "want a JSON array"},
		{"empty", `[]`, "no credentials"},
		{"syntax", `[{"username":"u","password":"` + kiteSecret + `",}]`, "invalid JSON at byte"},
		{"trailing", `[{"username":"u","password":"p"}] [`, "after the JSON array"},
		{"entry not an object", `[{"username":"u","password":"p"}, "` + kiteSecret + `"]`, "entry 1: want a JSON object"},
		{"broker not a string", `[{"broker":7,"username":"u","password":"p"}]`, `entry 0: field "broker" must not be a JSON number`},
		{"unknown broker", `[{"username":"u","password":"p"},{"broker":"schwab","api_key":"k"}]`, `entry 1: broker "schwab" is not one of "tradovate" (the default) or "kite"`},
		{"tradovate rule", `[{"username":"u","password":"p"},{"username":"v"}]`, `entry 1: password of "v" is empty`},
		{"tradovate unknown field", `[{"username":"u","password":"` + kiteSecret + `","api_key":"x"}]`, `entry 0: json: unknown field "api_key"`},
		{"kite unknown field", `[` + kite(`"api_key":"k","api_secret":"`+kiteSecret+`","password":"x"`) + `]`, `entry 0: json: unknown field "password"`},
		{"kite without key", `[{"username":"u","password":"p"},` + kite(`"api_secret":"`+kiteSecret+`"`) + `]`, "entry 1: api_key of the Kite app is empty"},
		{"kite without secret", `[` + kite(`"api_key":"k"`) + `]`, `entry 0: api_secret of Kite app "k" is empty`},
		{"kite key with colon", `[` + kite(`"api_key":"k:1","api_secret":"`+kiteSecret+`"`) + `]`, "entry 0: api_key must not contain"},
		{"kite secret of the wrong type", `[` + kite(`"api_key":"k","api_secret":12345678`) + `]`, `entry 0: field "api_secret" must not be a JSON number`},
		{"kite bad name", `[` + kite(`"name":"a b","api_key":"k","api_secret":"`+kiteSecret+`"`) + `]`, `entry 0: name of Kite app "k": tokencache: invalid account or user name: "a b" contains a space`},
		{"kite name with brace", `[` + kite(`"name":"a{b}","api_key":"k","api_secret":"`+kiteSecret+`"`) + `]`, "entry 0: name of Kite app"},
		{"same api_key twice", `[` + kite(`"name":"a","api_key":"k","api_secret":"`+kiteSecret+`"`) + `,` + kite(`"name":"b","api_key":"k","api_secret":"`+kiteSecret+`"`) + `]`, `entry 1: api_key "k" already given by entry 0`},
		{"name shared across brokers", `[{"username":"kite_main","password":"p"},` + kite(`"name":"kite_main","api_key":"k","api_secret":"`+kiteSecret+`"`) + `]`, `entry 1: user name "kite_main" already given by entry 0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeCredentialsFile(t, tt.data)
			_, err := loadCredentials(path)
			require.Error(t, err)
			msg := err.Error()
			assert.Contains(t, msg, tt.want)
			assert.Contains(t, msg, path, "names the file")
			assert.NotContains(t, msg, kiteSecret)
			assert.NotContains(t, msg, "12345678")
			assert.NotContains(t, msg, "\n")
		})
	}
	_, err := loadCredentials(filepath.Join(t.TempDir(), "none.json"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// A Kite entry formats and logs without its secret, with every verb.
func TestKiteEntryNeverShowsItsSecret(t *testing.T) {
	e := kiteEntry{Broker: brokerKite, Name: "kite_main", APIKey: "kitekey1", APISecret: kiteSecret, UserID: "AB1234"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		out := fmt.Sprintf(verb, e)
		assert.NotContains(t, out, kiteSecret, verb)
		assert.NotContains(t, out, fmt.Sprintf("%x", kiteSecret), verb)
	}
	assert.Contains(t, e.String(), "kitekey1")
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("entry", "e", e, "list", []kiteEntry{e})
	slog.New(slog.NewTextHandler(&b, nil)).Info("entry", "e", e, "list", []kiteEntry{e}, "ptr", &e)
	raw, err := json.Marshal(map[string]any{"e": e, "p": &e})
	require.NoError(t, err)
	b.Write(raw)
	assert.NotContains(t, b.String(), kiteSecret)
	assert.Contains(t, b.String(), "kite_main")
}

// The parser never panics, accepts only names every process accepts, and keeps each
// error to one line.
func FuzzParseCredentials(f *testing.F) {
	for _, seed := range []string{
		`[{"username":"APEX_1","password":"pw"}]`,
		`[{"broker":"kite","name":"kite_main","api_key":"k","api_secret":"s","user_id":"AB1234"}]`,
		`[{"username":"u","password":"p"},{"broker":"tradovate","username":"v","password":"q","accounts":["A"]},{"broker":"kite","api_key":"k","api_secret":"s"}]`,
		`[{"broker":"KITE ","api_key":"k","api_secret":"s"}]`,
		`[{"broker":null,"username":"u","password":"p"}]`,
		`[{"broker":"kite","api_key":"k","api_secret":"s"},{"broker":"kite","api_key":"k","api_secret":"s"}]`,
		`[{"username":"u","password":"p","sec":"s","cid":7,"app_id":"a"},{"username":"u","Password":"q"}]`,
		`[{"broker":"kite","API_SECRET":"s","api_key":"k k"}]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSecretsNotShown(t, data)
		cf, err := parseCredentials("fuzz.json", data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error on more than one line: %q", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, u := range cf.users() {
			if err := tokencache.CheckName(u); err != nil || seen[u] {
				t.Fatalf("accepted user %q (duplicate %v): %v", u, seen[u], err)
			}
			seen[u] = true
		}
		for _, k := range cf.kite {
			if k.APIKey == "" || k.APISecret == "" || !utf8.ValidString(k.Name) {
				t.Fatalf("accepted an incomplete Kite entry %v", k)
			}
		}
	})
}

// checkSecretsNotShown parses data again with every secret field (a Kite api_secret, a
// Tradovate password or sec, whatever the case of the key) set to a distinctive value,
// and fails if an error shows one of them. Values found elsewhere in the input (an
// api_key equal to a marker, say) are not checked: quoting them is fine.
func checkSecretsNotShown(t *testing.T, data []byte) {
	var entries []any
	if json.Unmarshal(data, &entries) != nil {
		return
	}
	var markers []string
	for i, e := range entries {
		obj, ok := e.(map[string]any)
		if !ok {
			continue
		}
		for k := range obj {
			switch strings.ToLower(k) {
			case "api_secret", "password", "sec":
				m := fmt.Sprintf("Zq9SecretMarker%dx%dQ", i, len(markers))
				obj[k] = m
				markers = append(markers, m)
			}
		}
	}
	if len(markers) == 0 {
		return
	}
	marked, err := json.Marshal(entries)
	if err != nil {
		return
	}
	_, perr := parseCredentials("fuzz.json", marked)
	if perr == nil {
		return
	}
	for _, m := range markers {
		if strings.Count(string(marked), m) == 1 && strings.Contains(perr.Error(), m) {
			t.Fatalf("an error shows a secret field's value: %v", perr)
		}
	}
}
