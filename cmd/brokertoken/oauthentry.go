package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/internal/secretfile"
	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/oauthbroker/schwab"
	"github.com/brokertoken/brokertoken/tokencache"
)

// oauthEntry is a {"broker":"schwab"} or {"broker":"oauth2"} entry: one OAuth2 app
// (authorization code plus refresh token) and the name its access token is stored
// under. "schwab" takes Schwab's endpoints and lifetimes from the oauthbroker/schwab
// preset; "oauth2" names any provider's endpoints. Formatting it with fmt (any verb),
// log/slog or encoding/json never shows AppSecret.
type oauthEntry struct {
	// Broker is "schwab" or "oauth2".
	Broker string `json:"broker"`
	// Name is the user name services ask the cache for (default: AppKey).
	Name string `json:"name,omitempty"`
	// AppKey is the app's client ID (Schwab's "App Key"). Required.
	AppKey string `json:"app_key"`
	// AppSecret is the app's client secret. Required: the daemon exchanges codes and
	// refreshes.
	AppSecret string `json:"app_secret"`
	// CallbackURL is the callback URL registered for the app, sent as redirect_uri.
	// Default: the login page's redirect URL of the user, <page>/<name>/redirect.
	CallbackURL string `json:"callback_url,omitempty"`

	// The provider, for "oauth2" only (the "schwab" preset has its own).
	Provider             string   `json:"provider,omitempty"`      // its name in messages (default: the token URL's host)
	AuthorizeURL         string   `json:"authorize_url,omitempty"` // required
	TokenURL             string   `json:"token_url,omitempty"`     // required
	Scopes               []string `json:"scopes,omitempty"`
	ClientAuth           string   `json:"client_auth,omitempty"` // "basic" (default) or "body"
	PKCE                 bool     `json:"pkce,omitempty"`
	AccessTokenLifetime  string   `json:"access_token_lifetime,omitempty"`  // when answers lack expires_in
	RefreshTokenLifetime string   `json:"refresh_token_lifetime,omitempty"` // when answers lack refresh_token_expires_in

	index int // position in the file
}

// String shows the entry without its secret.
func (e oauthEntry) String() string {
	secret := `""`
	if e.AppSecret != "" {
		secret = "[REDACTED]"
	}
	s := fmt.Sprintf("oauthEntry{Broker:%q Name:%q AppKey:%q AppSecret:%s", e.Broker, e.Name, e.AppKey, secret)
	if e.CallbackURL != "" {
		s += fmt.Sprintf(" CallbackURL:%q", e.CallbackURL)
	}
	if e.TokenURL != "" {
		s += fmt.Sprintf(" TokenURL:%q", e.TokenURL)
	}
	return s + "}"
}

// GoString is String, so %#v hides the secret too.
func (e oauthEntry) GoString() string { return e.String() }

// Format makes every fmt verb print String.
func (e oauthEntry) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, e.String()) }

// LogValue makes log/slog record the redacted form.
func (e oauthEntry) LogValue() slog.Value { return slog.StringValue(e.String()) }

// MarshalJSON writes the redacted form (the file is decoded with the field tags, never
// through this).
func (e oauthEntry) MarshalJSON() ([]byte, error) { return json.Marshal(e.String()) }

// brokerName is the provider as humans know it, for the page and alerts: "Schwab", or
// the oauth2 entry's provider name.
func (e oauthEntry) brokerName() string {
	if e.Broker == brokerSchwab {
		return "Schwab"
	}
	return e.providerName()
}

// providerName is the provider's name for oauthbroker: "schwab", or the entry's
// provider (default: the token URL's host).
func (e oauthEntry) providerName() string {
	if e.Broker == brokerSchwab {
		return "schwab"
	}
	if e.Provider != "" {
		return e.Provider
	}
	if u, err := url.Parse(e.TokenURL); err == nil && u.Hostname() != "" {
		return u.Hostname()
	}
	return "oauth2"
}

// provider returns the entry's oauthbroker.Provider; schwabURL, when not "", replaces
// Schwab's API root (--schwab-url, for a fake or a proxy).
func (e oauthEntry) provider(schwabURL string) oauthbroker.Provider {
	if e.Broker == brokerSchwab {
		if schwabURL != "" {
			return schwab.ProviderAt(schwabURL)
		}
		return schwab.Provider()
	}
	p := oauthbroker.Provider{Name: e.providerName(), AuthURL: e.AuthorizeURL, TokenURL: e.TokenURL,
		Scopes: e.Scopes, PKCE: e.PKCE, AuthStyle: oauth2.AuthStyleInHeader}
	if e.ClientAuth == "body" {
		p.AuthStyle = oauth2.AuthStyleInParams
	}
	p.AccessTokenLifetime, _ = parseLifetime(e.AccessTokenLifetime)
	p.RefreshTokenLifetime, _ = parseLifetime(e.RefreshTokenLifetime)
	return p
}

// parseLifetime parses a lifetime of the file ("" is 0: unknown).
func parseLifetime(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, errors.New("want a positive duration such as 30m or 168h")
	}
	return d, nil
}

// parseOAuthEntry decodes and checks a {"broker":"schwab"} or {"broker":"oauth2"} entry.
func parseOAuthEntry(entry json.RawMessage, broker string) (oauthEntry, error) {
	var o oauthEntry
	d := json.NewDecoder(bytes.NewReader(entry))
	d.DisallowUnknownFields()
	if err := d.Decode(&o); err != nil {
		return o, errors.New(secretfile.JSONProblem(err))
	}
	o.Broker = broker
	what := "OAuth2 app"
	if broker == brokerSchwab {
		what = "Schwab app"
	}
	switch {
	case strings.TrimSpace(o.AppKey) == "":
		return o, fmt.Errorf("app_key of the %s is empty", what)
	case strings.ContainsAny(o.AppKey, " \t\r\n"):
		return o, errors.New("app_key must not contain spaces")
	case o.AppSecret == "":
		return o, fmt.Errorf("app_secret of %s %q is empty", what, o.AppKey)
	}
	if o.CallbackURL != "" {
		if err := checkCallbackURL(o.CallbackURL); err != nil {
			return o, fmt.Errorf("callback_url of %s %q: %v", what, o.AppKey, err)
		}
	}
	if broker == brokerSchwab {
		if o.Provider != "" || o.AuthorizeURL != "" || o.TokenURL != "" || o.Scopes != nil || o.ClientAuth != "" || o.PKCE ||
			o.AccessTokenLifetime != "" || o.RefreshTokenLifetime != "" {
			return o, fmt.Errorf("Schwab app %q: provider, authorize_url, token_url, scopes, client_auth, pkce and the lifetimes are the preset's; use \"broker\":\"oauth2\" to give them", o.AppKey)
		}
	} else {
		for _, u := range []struct{ field, v string }{{"authorize_url", o.AuthorizeURL}, {"token_url", o.TokenURL}} {
			if u.v == "" {
				return o, fmt.Errorf("%s of %s %q is empty", u.field, what, o.AppKey)
			}
			if err := checkHTTPURL(u.v); err != nil {
				return o, fmt.Errorf("%s of %s %q: %v", u.field, what, o.AppKey, err)
			}
		}
		switch o.ClientAuth {
		case "", "basic", "body":
		default:
			return o, fmt.Errorf("client_auth of %s %q: want basic (HTTP Basic, the default) or body", what, o.AppKey)
		}
		for _, l := range []struct{ field, v string }{{"access_token_lifetime", o.AccessTokenLifetime}, {"refresh_token_lifetime", o.RefreshTokenLifetime}} {
			if _, err := parseLifetime(l.v); err != nil {
				return o, fmt.Errorf("%s of %s %q: %v", l.field, what, o.AppKey, err)
			}
		}
		if strings.ContainsAny(o.Provider, "\r\n") || len(o.Provider) > 40 {
			return o, fmt.Errorf("provider of %s %q: want a short name on one line", what, o.AppKey)
		}
	}
	if o.Name == "" {
		o.Name = o.AppKey
	}
	if err := tokencache.CheckName(o.Name); err != nil {
		return o, fmt.Errorf("name of %s %q: %v", what, o.AppKey, err)
	}
	return o, nil
}

// checkCallbackURL checks a callback URL: an absolute http(s) URL without user
// information or fragment (RFC 6749 section 3.1.2).
func checkCallbackURL(s string) error {
	if err := checkHTTPURL(s); err != nil {
		return err
	}
	u, _ := url.Parse(s)
	switch {
	case u.User != nil:
		return errors.New("want a URL without user information")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return errors.New("want a URL without a fragment")
	}
	return nil
}
