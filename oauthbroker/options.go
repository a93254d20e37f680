package oauthbroker

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Provider describes an OAuth2 authorization server: its endpoints and the facts about
// its tokens that its answers may leave out. Presets live in sub-packages (see
// [github.com/brokertoken/brokertoken/oauthbroker/schwab]).
type Provider struct {
	// Name names the provider in messages and the status, e.g. "schwab". Required.
	Name string
	// AuthURL is the authorization endpoint a human's browser opens. Required.
	AuthURL string
	// TokenURL is the token endpoint (code exchange and refresh). Required.
	TokenURL string
	// AuthStyle is how the client authenticates at TokenURL: [oauth2.AuthStyleInHeader]
	// (HTTP Basic) or [oauth2.AuthStyleInParams]. Default [oauth2.AuthStyleInHeader];
	// automatic detection is refused, since a failed guess costs a request.
	AuthStyle oauth2.AuthStyle
	// Scopes are requested in the authorization URL (default none).
	Scopes []string
	// PKCE adds an S256 code challenge (RFC 7636) to the authorization URL and the
	// verifier to the exchange (default off: send it only to providers known to
	// accept it).
	PKCE bool
	// AccessTokenLifetime is assumed when a token answer has no expires_in (default:
	// the JWT exp claim, else the cache's DefaultLifetime).
	AccessTokenLifetime time.Duration
	// RefreshTokenLifetime is how long a refresh token lives when the answer has no
	// refresh_token_expires_in (default 0: unknown, no expiry tracked and no expiry
	// alert).
	RefreshTokenLifetime time.Duration
	// RotationRenewsLifetime says that each new refresh token the provider issues on a
	// refresh lives RefreshTokenLifetime from then (a sliding window). Default false:
	// the lifetime counts from the human's authorization, and refreshes never extend
	// it (as with Schwab).
	RotationRenewsLifetime bool
	// GrantRefused reports whether an error answer of the token endpoint means the
	// grant itself is refused (expired, revoked or reused), so that only a human can
	// help. Default: code == "invalid_grant" (RFC 6749 section 5.2).
	GrantRefused func(code, description string) bool
}

// Options configures a [Broker]. Every field's zero value means the default stated
// beside it, except those marked required. [New] copies the struct; later changes to
// it have no effect. Formatting Options (any fmt verb) never shows ClientSecret.
type Options struct {
	// Provider is the authorization server. Required.
	Provider Provider
	// ClientID is the app's client ID (Schwab's "App Key"). Required.
	ClientID string
	// ClientSecret is the app's client secret (Schwab's "Secret"). Only a writer (the
	// process that answers the redirect and refreshes) needs it; without it, a Broker
	// can only read the status. Never logged nor shown.
	ClientSecret string
	// RedirectURL is the callback URL registered for the app, where the provider sends
	// the browser back with the code ([Broker.RedirectHandler] answers there).
	// Required to authorize.
	RedirectURL string

	// User is the name under which the cache stores the access token: what services
	// pass to [tokencache.Cache.Token]. Required; it follows [tokencache.CheckName].
	User string
	// Redis holds the refresh token, the login states and the status. Required; use
	// the cache's client.
	Redis redis.UniversalClient
	// Prefix namespaces the Redis keys (default "brokertoken", the cache's default;
	// set the same as tokencache.Options.Prefix). See the package documentation for
	// the keys.
	Prefix string

	// StateTTL is how long an authorization URL may be used, including the human's time
	// on the provider's pages (default 10 minutes). Each state works once.
	StateTTL time.Duration
	// StartURL is the public address of [Broker.LoginHandler], e.g.
	// "https://ops.example.com/schwab/login". When set, it is the URL that errors and
	// pages show: it never expires, and each visit mints a fresh state. Default none:
	// an authorization URL is minted for each, valid for StateTTL.
	StartURL string

	// RequestTimeout bounds one request to the token endpoint (default 30 s). A
	// refresh claims the refresh token in Redis for RequestTimeout plus a margin, so a
	// process that died while using it delays the others by about that much.
	RequestTimeout time.Duration
	// CommitGrace is how long [Broker.Close] goes on trying to store a rotated refresh
	// token that Redis has not taken yet (default 4 s, within the cache's 5-second
	// Close). Until Close, the Broker tries until Redis takes it, however long that is.
	CommitGrace time.Duration
	// CommitReplicas, when positive, makes each stored rotation wait (Redis WAIT) until
	// that many replicas confirm it, so that a failover right after a refresh does not
	// lose the new refresh token; fewer confirmations are logged, the token is still
	// served (the provider rotated it already). Default 0: no WAIT.
	CommitReplicas int

	// AlertLeads are the times before the refresh token's expiry at which
	// [Broker.Alerts] reports an expiry alert (default 24 h and 2 h).
	AlertLeads []time.Duration
	// AlertLease is how long an alert returned by [Broker.Alerts] is reserved for its
	// caller: unacknowledged ([Broker.Ack]) by then, it is returned again, to any
	// process (default 1 minute).
	AlertLease time.Duration

	// HTTPClient sends the requests to the provider (default: a client with
	// RequestTimeout as its timeout).
	HTTPClient *http.Client
	// Logger receives the package's events; tokens appear only redacted (default:
	// discard).
	Logger *slog.Logger
	// Hooks receive the package's events, for alerts and metrics (default none).
	Hooks Hooks
}

// Hooks are called on a Broker's events. Each may be nil; each must return quickly.
type Hooks struct {
	// Revoked is called when the provider refused the user's refresh token, once for
	// the whole fleet: in the process whose refusal stopped the refreshes, as the
	// status turned to revoked. err carries the URL to open. It is a notification (for
	// metrics or logs): deliver alerts to humans with [Broker.Alerts], which survives
	// a process that dies before delivering.
	Revoked func(user string, err *LoginRequiredError)
	// Rotated is called after this process stored a newly refreshed token pair.
	Rotated func(user string, generation int64)
}

// String shows the options without the client secret.
func (o Options) String() string {
	secret := "unset"
	if o.ClientSecret != "" {
		secret = "set"
	}
	return fmt.Sprintf("oauthbroker.Options{Provider:%s ClientID:%s ClientSecret:%s User:%s RedirectURL:%s Prefix:%s}",
		o.Provider.Name, o.ClientID, secret, o.User, o.RedirectURL, o.Prefix)
}

// GoString is String: %#v must not reveal the secret either.
func (o Options) GoString() string { return o.String() }

// Format makes every fmt verb print String.
func (o Options) Format(f fmt.State, verb rune) { _, _ = io.WriteString(f, o.String()) }

// init returns a copy of o with every default filled in, or an error naming the field
// that is invalid.
func (o Options) init() (Options, error) {
	p := &o.Provider
	switch {
	case p.Name == "":
		return o, errors.New("oauthbroker: Options.Provider.Name is required")
	case !absoluteURL(p.AuthURL):
		return o, fmt.Errorf("oauthbroker: Options.Provider.AuthURL %q is not an absolute http(s) URL", p.AuthURL)
	case !absoluteURL(p.TokenURL):
		return o, fmt.Errorf("oauthbroker: Options.Provider.TokenURL %q is not an absolute http(s) URL", p.TokenURL)
	case p.AuthStyle == oauth2.AuthStyleAutoDetect:
		p.AuthStyle = oauth2.AuthStyleInHeader
	case p.AuthStyle != oauth2.AuthStyleInHeader && p.AuthStyle != oauth2.AuthStyleInParams:
		return o, errors.New("oauthbroker: Options.Provider.AuthStyle must be AuthStyleInHeader or AuthStyleInParams")
	}
	if p.AccessTokenLifetime < 0 || p.RefreshTokenLifetime < 0 {
		return o, errors.New("oauthbroker: Options.Provider lifetimes must not be negative")
	}
	p.Scopes = slices.Clone(p.Scopes)
	if p.GrantRefused == nil {
		p.GrantRefused = func(code, _ string) bool { return code == "invalid_grant" }
	}
	if o.ClientID == "" {
		return o, errors.New("oauthbroker: Options.ClientID is required")
	}
	if o.RedirectURL != "" && !absoluteURL(o.RedirectURL) {
		return o, fmt.Errorf("oauthbroker: Options.RedirectURL %q is not an absolute http(s) URL", o.RedirectURL)
	}
	if err := tokencache.CheckName(o.User); err != nil {
		return o, fmt.Errorf("oauthbroker: Options.User: %w", err)
	}
	if o.Redis == nil {
		return o, errors.New("oauthbroker: Options.Redis is required")
	}
	if o.Prefix == "" {
		o.Prefix = "brokertoken"
	}
	if strings.ContainsAny(o.Prefix, "{}") {
		return o, errors.New("oauthbroker: Options.Prefix must not contain { or } (they would break the Cluster hash tag)")
	}
	if o.StateTTL < 0 || o.RequestTimeout < 0 || o.CommitGrace < 0 || o.AlertLease < 0 || o.CommitReplicas < 0 {
		return o, errors.New("oauthbroker: Options durations and CommitReplicas must not be negative")
	}
	if o.StateTTL == 0 {
		o.StateTTL = 10 * time.Minute
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.RequestTimeout < 100*time.Millisecond {
		return o, errors.New("oauthbroker: Options.RequestTimeout must be at least 100ms")
	}
	if o.CommitGrace == 0 {
		o.CommitGrace = 4 * time.Second
	}
	if o.AlertLease == 0 {
		o.AlertLease = time.Minute
	}
	if o.AlertLeads == nil {
		o.AlertLeads = []time.Duration{24 * time.Hour, 2 * time.Hour}
	}
	o.AlertLeads = slices.Clone(o.AlertLeads)
	for _, l := range o.AlertLeads {
		if l <= 0 {
			return o, errors.New("oauthbroker: Options.AlertLeads must be positive")
		}
	}
	slices.Sort(o.AlertLeads)
	o.AlertLeads = slices.Compact(o.AlertLeads)
	if o.StartURL != "" && !absoluteURL(o.StartURL) {
		return o, fmt.Errorf("oauthbroker: Options.StartURL %q is not an absolute http(s) URL", o.StartURL)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: o.RequestTimeout}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o, nil
}

// absoluteURL reports whether s is an absolute http or https URL with a host.
func absoluteURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}
