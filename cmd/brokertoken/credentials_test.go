package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/tokencache"
)

// fuzzRedis stands for a Redis client that is never used (oauthbroker.New contacts
// nobody).
var fuzzRedis redis.UniversalClient = (*redis.Client)(nil)

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

// schwabApp and oauthApp are a {"broker":"schwab"} and a {"broker":"oauth2"} entry with
// fields.
func schwabApp(fields string) string { return `{"broker":"schwab",` + fields + `}` }
func oauthApp(fields string) string  { return `{"broker":"oauth2",` + fields + `}` }

// OAuth2 apps go in the same array: "schwab" takes the preset's endpoints and
// lifetimes, "oauth2" names its provider's; the name defaults to the app key; several
// users may share one app (one grant each).
func TestCredentialsFileHoldsOAuthApps(t *testing.T) {
	path := writeCredentialsFile(t, `[
		{"username": "APEX_1", "password": "pw-APEX_1"},
		`+schwabApp(`"name": "schwab_main", "app_key": "schwabkey", "app_secret": "`+kiteSecret+`", "callback_url": "https://127.0.0.1"`)+`,
		`+schwabApp(`"app_key": "schwabkey2", "app_secret": "`+kiteSecret+`"`)+`,
		`+schwabApp(`"name": "schwab_ira", "app_key": "schwabkey", "app_secret": "`+kiteSecret+`"`)+`,
		`+oauthApp(`"name": "other", "app_key": "ok", "app_secret": "`+kiteSecret+`", "provider": "Broker X",
			"authorize_url": "https://auth.example/authorize", "token_url": "https://auth.example/token", "scopes": ["read", "trade"],
			"client_auth": "body", "pkce": true, "access_token_lifetime": "20m", "refresh_token_lifetime": "720h"`)+`
	]`)
	cf, err := loadCredentials(path)
	require.NoError(t, err)
	assert.Equal(t, []string{"APEX_1", "schwab_main", "schwabkey2", "schwab_ira", "other"}, cf.users())
	require.Len(t, cf.oauth, 4)
	s := cf.oauth[0]
	assert.Equal(t, oauthEntry{Broker: brokerSchwab, Name: "schwab_main", AppKey: "schwabkey", AppSecret: kiteSecret,
		CallbackURL: "https://127.0.0.1", index: 1}, s)
	assert.Equal(t, "Schwab", s.brokerName())
	p := s.provider("")
	assert.Equal(t, "https://api.schwabapi.com/v1/oauth/token", p.TokenURL)
	assert.Equal(t, 7*24*time.Hour, p.RefreshTokenLifetime)
	assert.Equal(t, "http://fake.example/v1/oauth/authorize", s.provider("http://fake.example/").AuthURL, "--schwab-url")
	assert.Equal(t, "schwabkey2", cf.oauth[1].Name, "the name defaults to the app key")

	o := cf.oauth[3]
	assert.Equal(t, "Broker X", o.brokerName())
	op := o.provider("http://ignored.example")
	assert.Equal(t, oauthbroker.Provider{Name: "Broker X", AuthURL: "https://auth.example/authorize", TokenURL: "https://auth.example/token",
		Scopes: []string{"read", "trade"}, PKCE: true, AuthStyle: oauth2.AuthStyleInParams, AccessTokenLifetime: 20 * time.Minute,
		RefreshTokenLifetime: 720 * time.Hour}, op)
	bare, err := parseOAuthEntry([]byte(`{"app_key":"k","app_secret":"s","authorize_url":"https://a.example/x","token_url":"https://t.example/y"}`), brokerOAuth2)
	require.NoError(t, err)
	assert.Equal(t, "t.example", bare.providerName(), "the provider's name defaults to the token URL's host")
	assert.Equal(t, oauth2.AuthStyleInHeader, bare.provider("").AuthStyle, "HTTP Basic by default")
}

// An OAuth2 entry formats, logs and marshals without its secret, with every verb.
func TestOAuthEntryNeverShowsItsSecret(t *testing.T) {
	e := oauthEntry{Broker: brokerSchwab, Name: "schwab_main", AppKey: "schwabkey", AppSecret: kiteSecret, CallbackURL: "https://127.0.0.1"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		out := fmt.Sprintf(verb, e)
		assert.NotContains(t, out, kiteSecret, verb)
		assert.NotContains(t, out, fmt.Sprintf("%x", kiteSecret), verb)
	}
	assert.Contains(t, e.String(), "schwabkey")
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("entry", "e", e, "list", []oauthEntry{e})
	slog.New(slog.NewTextHandler(&b, nil)).Info("entry", "e", e, "ptr", &e)
	raw, err := json.Marshal(map[string]any{"e": e, "p": &e})
	require.NoError(t, err)
	b.Write(raw)
	assert.NotContains(t, b.String(), kiteSecret)
	assert.Contains(t, b.String(), "schwab_main")
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
		{"unknown broker", `[{"username":"u","password":"p"},{"broker":"etrade","api_key":"k"}]`, `entry 1: broker "etrade" is not one of "tradovate" (the default), "kite", "schwab" or "oauth2"`},
		{"schwab unknown field", `[` + schwabApp(`"app_key":"k","app_secret":"`+kiteSecret+`","api_key":"x"`) + `]`, `entry 0: json: unknown field "api_key"`},
		{"schwab without key", `[{"username":"u","password":"p"},` + schwabApp(`"app_secret":"`+kiteSecret+`"`) + `]`, "entry 1: app_key of the Schwab app is empty"},
		{"schwab without secret", `[` + schwabApp(`"app_key":"k"`) + `]`, `entry 0: app_secret of Schwab app "k" is empty`},
		{"schwab key with space", `[` + schwabApp(`"app_key":"k 1","app_secret":"`+kiteSecret+`"`) + `]`, "entry 0: app_key must not contain spaces"},
		{"schwab with endpoints", `[` + schwabApp(`"app_key":"k","app_secret":"`+kiteSecret+`","token_url":"https://x.example/t"`) + `]`, `entry 0: Schwab app "k": provider, authorize_url, token_url`},
		{"schwab callback with password", `[` + schwabApp(`"app_key":"k","app_secret":"`+kiteSecret+`","callback_url":"https://u:`+kiteSecret+`@h.example/cb"`) + `]`, `entry 0: callback_url of Schwab app "k": want a URL without user information`},
		{"schwab callback not http", `[` + schwabApp(`"app_key":"k","app_secret":"`+kiteSecret+`","callback_url":"ftp://h.example/cb"`) + `]`, `entry 0: callback_url of Schwab app "k": want an http:// or https:// URL`},
		{"schwab callback with fragment", `[` + schwabApp(`"app_key":"k","app_secret":"`+kiteSecret+`","callback_url":"https://h.example/cb#x"`) + `]`, `want a URL without a fragment`},
		{"schwab bad name", `[` + schwabApp(`"name":"a:b","app_key":"k","app_secret":"`+kiteSecret+`"`) + `]`, `entry 0: name of Schwab app "k": tokencache: invalid account or user name`},
		{"schwab secret of the wrong type", `[` + schwabApp(`"app_key":"k","app_secret":12345678`) + `]`, `entry 0: field "app_secret" must not be a JSON number`},
		{"oauth2 without authorize_url", `[` + oauthApp(`"app_key":"k","app_secret":"`+kiteSecret+`","token_url":"https://x.example/t"`) + `]`, `entry 0: authorize_url of OAuth2 app "k" is empty`},
		{"oauth2 without token_url", `[` + oauthApp(`"app_key":"k","app_secret":"`+kiteSecret+`","authorize_url":"https://x.example/a"`) + `]`, `entry 0: token_url of OAuth2 app "k" is empty`},
		{"oauth2 relative token_url", `[` + oauthApp(`"app_key":"k","app_secret":"`+kiteSecret+`","authorize_url":"https://x.example/a","token_url":"/t"`) + `]`, `entry 0: token_url of OAuth2 app "k": want an http:// or https:// URL`},
		{"oauth2 client_auth", `[` + oauthApp(`"app_key":"k","app_secret":"`+kiteSecret+`","authorize_url":"https://x.example/a","token_url":"https://x.example/t","client_auth":"jwt"`) + `]`, `entry 0: client_auth of OAuth2 app "k": want basic`},
		{"oauth2 lifetime", `[` + oauthApp(`"app_key":"k","app_secret":"`+kiteSecret+`","authorize_url":"https://x.example/a","token_url":"https://x.example/t","refresh_token_lifetime":"7 days"`) + `]`, `entry 0: refresh_token_lifetime of OAuth2 app "k": want a positive duration`},
		{"name shared with an oauth app", `[` + kite(`"name":"main","api_key":"k","api_secret":"`+kiteSecret+`"`) + `,` + schwabApp(`"name":"main","app_key":"k","app_secret":"`+kiteSecret+`"`) + `]`, `entry 1: user name "main" already given by entry 0`},
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
		`[{"broker":"schwab","name":"schwab_main","app_key":"k","app_secret":"s","callback_url":"https://127.0.0.1"}]`,
		`[{"broker":"oauth2","app_key":"k","app_secret":"s","authorize_url":"https://a.example/x","token_url":"https://t.example/y","scopes":["a"],"client_auth":"body","pkce":true,"refresh_token_lifetime":"168h"}]`,
		`[{"broker":"Schwab","app_key":"k","app_secret":"s","token_url":"https://t.example/y"},{"broker":"oauth2","app_key":"k","app_secret":"s"}]`,
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
		for _, o := range cf.oauth {
			if o.AppKey == "" || o.AppSecret == "" {
				t.Fatalf("accepted an incomplete OAuth2 entry %v", o)
			}
			if o.CallbackURL != "" && checkCallbackURL(o.CallbackURL) != nil {
				t.Fatalf("accepted a bad callback_url in %v", o)
			}
			p := o.provider("")
			if !strings.HasPrefix(p.AuthURL, "http") || !strings.HasPrefix(p.TokenURL, "http") {
				t.Fatalf("accepted an OAuth2 entry without endpoints: %v", o)
			}
			if _, err := oauthbroker.New(oauthbroker.Options{Provider: p, ClientID: o.AppKey, ClientSecret: o.AppSecret,
				RedirectURL: o.CallbackURL, User: o.Name, Redis: fuzzRedis}); err != nil {
				t.Fatalf("an accepted OAuth2 entry makes no broker: %v: %v", o, err)
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
			case "api_secret", "password", "sec", "app_secret":
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
