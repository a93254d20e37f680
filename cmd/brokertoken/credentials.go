package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/brokertoken/brokertoken/internal/secretfile"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// credentialsFile is what a credentials file holds: one JSON array whose entries are
// told apart by their "broker" field. An entry without one is a Tradovate login (the
// original {"username","password"} objects stay valid); {"broker":"kite",...} is a Kite
// Connect app whose token a human obtains in a browser once a day;
// {"broker":"schwab",...} and {"broker":"oauth2",...} are OAuth2 apps a human
// authorizes in a browser, whose refresh token the daemon then uses until it lapses
// (oauthentry.go). Another broker kind is one more case in parseCredentials and one
// more list here.
type credentialsFile struct {
	path      string
	tradovate *tradovate.Credentials // nil when the file has no Tradovate entry
	kite      []kiteEntry            // in file order
	oauth     []oauthEntry           // in file order
	order     []fileUser             // every user, in file order
	warnings  []string               // problems that do not stop the load (a readable file)
}

// fileUser is one user of the file and its broker kind.
type fileUser struct {
	name   string
	broker string // "" (Tradovate), brokerKite, brokerSchwab or brokerOAuth2
}

// users returns every user of the file, in file order.
func (f *credentialsFile) users() []string {
	var out []string
	for _, u := range f.order {
		out = append(out, u.name)
	}
	return out
}

// Broker kinds of the "broker" field.
const (
	brokerTradovate = "tradovate"
	brokerKite      = "kite"
	brokerSchwab    = "schwab"
	brokerOAuth2    = "oauth2"
)

// kiteEntry is a {"broker":"kite"} entry: one Kite Connect app and the name its token is
// stored under. Formatting it with fmt (any verb) or log/slog never shows APISecret.
type kiteEntry struct {
	// Broker is "kite".
	Broker string `json:"broker"`
	// Name is the user name services ask the cache for (default: APIKey).
	Name string `json:"name,omitempty"`
	// APIKey is the app's api_key. Required.
	APIKey string `json:"api_key"`
	// APISecret is the app's api_secret. Required: the daemon exchanges the request
	// tokens and renews with the refresh token.
	APISecret string `json:"api_secret"`
	// UserID, when set, is the only Kite client ID whose login is stored.
	UserID string `json:"user_id,omitempty"`

	index int // position in the file
}

// String shows the entry without its secret.
func (e kiteEntry) String() string {
	secret := `""`
	if e.APISecret != "" {
		secret = "[REDACTED]"
	}
	s := fmt.Sprintf("kiteEntry{Name:%q APIKey:%q APISecret:%s", e.Name, e.APIKey, secret)
	if e.UserID != "" {
		s += fmt.Sprintf(" UserID:%q", e.UserID)
	}
	return s + "}"
}

// GoString is String, so %#v hides the secret too.
func (e kiteEntry) GoString() string { return e.String() }

// Format makes every fmt verb print String.
func (e kiteEntry) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, e.String()) }

// LogValue makes log/slog record the redacted form.
func (e kiteEntry) LogValue() slog.Value { return slog.StringValue(e.String()) }

// MarshalJSON writes the redacted form, so no encoder reaches the secret either (a
// slog JSON handler marshals the entries of a slice itself). The file is decoded with
// the field tags, never through this.
func (e kiteEntry) MarshalJSON() ([]byte, error) { return json.Marshal(e.String()) }

// maxCredentialsFile bounds what is read of a credentials file (as the tradovate
// package's own loader does).
const maxCredentialsFile = 4 << 20

// loadCredentials reads and checks a credentials file. Errors are one line naming the
// file and the entry index, never a secret; a missing file's error wraps
// fs.ErrNotExist.
func loadCredentials(path string) (*credentialsFile, error) {
	data, warning, err := secretfile.Read(path, maxCredentialsFile)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	cf, err := parseCredentials(path, data)
	if err != nil {
		return nil, err
	}
	if warning != "" {
		cf.warnings = append(cf.warnings, warning)
	}
	return cf, nil
}

// parseCredentials parses the contents of a credentials file; name is used in errors.
func parseCredentials(name string, data []byte) (*credentialsFile, error) {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("credentials file %s: %s", name, fmt.Sprintf(format, a...))
	}
	var raw []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return nil, fail("want a JSON array of objects (Tradovate logins, {\"broker\":\"kite\"|\"schwab\"|\"oauth2\",...} apps), found a JSON %s", typeErr.Value)
		}
		return nil, fail("%s", secretfile.JSONProblem(err))
	}
	if dec.More() || dec.InputOffset() < int64(len(bytes.TrimRight(data, " \t\r\n"))) {
		return nil, fail("unexpected data after the JSON array")
	}
	if len(raw) == 0 {
		return nil, fail("no credentials")
	}
	cf := &credentialsFile{path: name}
	var logins []tradovate.Credential
	seen := map[string]int{}    // user name -> entry
	apiKeys := map[string]int{} // Kite api_key -> entry
	for i, entry := range raw {
		broker, err := entryBroker(entry)
		if err != nil {
			return nil, fail("entry %d: %s", i, err)
		}
		var user string
		switch broker {
		case "", brokerTradovate:
			cr, err := parseTradovateEntry(name, entry)
			if err != nil {
				return nil, fail("entry %d: %s", i, err)
			}
			logins = append(logins, cr)
			user = cr.Username
		case brokerKite:
			k, err := parseKiteEntry(entry)
			if err != nil {
				return nil, fail("entry %d: %s", i, err)
			}
			if prev, dup := apiKeys[k.APIKey]; dup {
				return nil, fail("entry %d: api_key %q already given by entry %d (one entry per Kite app: its redirect URL leads to one user)", i, k.APIKey, prev)
			}
			apiKeys[k.APIKey] = i
			k.index = i
			cf.kite = append(cf.kite, k)
			user = k.Name
		case brokerSchwab, brokerOAuth2:
			o, err := parseOAuthEntry(entry, broker)
			if err != nil {
				return nil, fail("entry %d: %s", i, err)
			}
			o.index = i
			cf.oauth = append(cf.oauth, o)
			user = o.Name
		default:
			return nil, fail("entry %d: broker %q is not one of %q (the default), %q, %q or %q", i, clip(broker, 40),
				brokerTradovate, brokerKite, brokerSchwab, brokerOAuth2)
		}
		if prev, dup := seen[user]; dup {
			return nil, fail("entry %d: user name %q already given by entry %d", i, user, prev)
		}
		seen[user] = i
		cf.order = append(cf.order, fileUser{name: user, broker: broker})
	}
	if len(logins) > 0 {
		creds, err := tradovate.NewCredentials(logins...)
		if err != nil { // checked entry by entry above; kept for safety
			return nil, fail("%s", oneLine(err.Error()))
		}
		cf.tradovate = creds
	}
	return cf, nil
}

// entryBroker returns an entry's "broker" field ("" when absent).
func entryBroker(entry json.RawMessage) (string, error) {
	var probe struct {
		Broker *string `json:"broker"`
	}
	if err := json.Unmarshal(entry, &probe); err != nil {
		return "", errors.New(secretfile.JSONProblem(err))
	}
	if probe.Broker == nil {
		return "", nil
	}
	return strings.ToLower(strings.TrimSpace(*probe.Broker)), nil
}

// parseTradovateEntry checks one Tradovate entry with the tradovate package's own
// parser (the same fields, the same rules), without its "broker" field.
func parseTradovateEntry(name string, entry json.RawMessage) (tradovate.Credential, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(entry, &fields); err != nil {
		return tradovate.Credential{}, errors.New(secretfile.JSONProblem(err))
	}
	if _, ok := fields["broker"]; ok {
		delete(fields, "broker")
		entry, _ = json.Marshal(fields) // raw messages always marshal
	}
	creds, err := tradovate.ParseCredentials(name, append(append([]byte("["), entry...), ']'))
	if err != nil {
		// The tradovate parser saw a one-entry file: keep its words about the entry.
		msg := oneLine(err.Error())
		if rest, ok := strings.CutPrefix(msg, fmt.Sprintf("tradovate: credentials file %s: entry 0: ", name)); ok {
			msg = rest
		}
		return tradovate.Credential{}, errors.New(msg)
	}
	return creds.Credential(context.Background(), creds.Users()[0])
}

// parseKiteEntry decodes and checks a {"broker":"kite"} entry.
func parseKiteEntry(entry json.RawMessage) (kiteEntry, error) {
	var k kiteEntry
	d := json.NewDecoder(bytes.NewReader(entry))
	d.DisallowUnknownFields()
	if err := d.Decode(&k); err != nil {
		return k, errors.New(secretfile.JSONProblem(err))
	}
	k.Broker = brokerKite
	switch {
	case strings.TrimSpace(k.APIKey) == "":
		return k, errors.New("api_key of the Kite app is empty")
	case strings.ContainsAny(k.APIKey, " \t\r\n:{}"):
		return k, errors.New("api_key must not contain spaces, colons or braces")
	case k.APISecret == "":
		return k, fmt.Errorf("api_secret of Kite app %q is empty", k.APIKey)
	case strings.ContainsAny(k.UserID, " \t\r\n"):
		return k, fmt.Errorf("user_id of Kite app %q must not contain spaces", k.APIKey)
	}
	if k.Name == "" {
		k.Name = k.APIKey
	}
	if err := tokencache.CheckName(k.Name); err != nil {
		return k, fmt.Errorf("name of Kite app %q: %v", k.APIKey, err)
	}
	return k, nil
}

// clip shortens s to n bytes for an error message, keeping it printable.
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}
