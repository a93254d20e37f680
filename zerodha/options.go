package zerodha

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Kite Connect's public addresses, the defaults of [Options.LoginURL] and
// [Options.APIURL].
const (
	DefaultLoginURL = "https://kite.zerodha.com/connect/login"
	DefaultAPIURL   = "https://api.kite.trade"
)

// Options configures an [App]. Every field's zero value means the default stated beside
// it, except APIKey and Redis, which are required. [New] copies the struct; later
// changes to it have no effect.
type Options struct {
	// APIKey is the Kite Connect app's api_key. Required. It is not a secret: it is part
	// of every login URL.
	APIKey string
	// APISecret is the app's api_secret. Only the process that exchanges request tokens
	// ([App.RedirectHandler], [App.Exchange], [App.Logout]) or renews them with a
	// refresh token (the daemon's [Authenticator]) needs it; services that only use
	// tokens leave it empty, and then never read the refresh token. It is never logged
	// nor shown.
	APISecret string

	// Redis holds the login states (the CSRF values carried through Kite's login), so
	// that the process answering Kite's redirect can check a state minted by any other,
	// and what a login leaves for later: the refresh token, when Kite gives the app
	// one, and what Kite said about the user ([App.UserInfo]). Required; use the cache's
	// client.
	Redis redis.UniversalClient
	// Prefix namespaces the Redis keys (default "brokertoken", the cache's default; set
	// the same as tokencache.Options.Prefix). A state is stored under
	// "<Prefix>:zerodha:<APIKey>:state:<state>", the user information under
	// "<Prefix>:{<User>}:info" (readable by every role) and the refresh token under
	// "<Prefix>:secret:{<User>}:refresh" (readable by the writer role only). It must not
	// contain { or }.
	Prefix string
	// StateTTL is how long a login URL may be used, including the time the human spends
	// on Kite's login page (default 10 minutes). Each state works once.
	StateTTL time.Duration

	// User is the name under which the cache stores the app's token: what services pass
	// to [tokencache.Cache.Token] (default: APIKey, since an app holds one token at a
	// time). See [App.User]. It must not contain { or }.
	User string
	// UserID, when set, is the only Kite user (client ID, e.g. "AB1234") whose login is
	// stored. Another user's session is logged out and the human is told (default: any
	// user the app lets log in).
	UserID string

	// ExpiryTime is the time of day in India (IST) at which stored tokens are taken to
	// expire, as an offset from midnight in (0, 24h) (default 6 h: 06:00 IST). Kite
	// expires tokens between about 06:00 and 07:30; the cache stops serving a token at
	// this time, and a 403 TokenException before it remains the real signal.
	ExpiryTime time.Duration

	// LoginURL is Kite's login page (default [DefaultLoginURL]).
	LoginURL string
	// APIURL is Kite Connect's API root (default [DefaultAPIURL]); the session is
	// exchanged at APIURL + "/session/token".
	APIURL string
	// StartURL is the public address of [App.LoginHandler], e.g.
	// "https://ops.example.com/kite/login". When set, it is the URL that
	// [*LoginRequiredError] and error pages show: it never expires, and each visit mints
	// a fresh state. Default none: a Kite login URL is minted for each, valid for
	// StateTTL.
	StartURL string

	// HTTPClient sends the requests to Kite (default: a client with a 30-second
	// timeout).
	HTTPClient *http.Client
	// Logger receives the package's events; tokens appear only redacted (default:
	// discard).
	Logger *slog.Logger
}

// init returns a copy of o with every default filled in, or an error naming the field
// that is invalid.
func (o Options) init() (Options, error) {
	if o.APIKey == "" {
		return o, errors.New("zerodha: Options.APIKey is required")
	}
	if strings.ContainsAny(o.APIKey, " \t\r\n:") {
		return o, errors.New("zerodha: Options.APIKey must not contain spaces or colons")
	}
	if o.Redis == nil {
		return o, errors.New("zerodha: Options.Redis is required")
	}
	if o.Prefix == "" {
		o.Prefix = "brokertoken"
	}
	if o.User == "" {
		o.User = o.APIKey
	}
	if err := tokencache.CheckName(o.User); err != nil {
		return o, fmt.Errorf("zerodha: Options.User: %w", err)
	}
	if strings.ContainsAny(o.Prefix, "{}") {
		return o, errors.New("zerodha: Options.Prefix must not contain { or } (they would break the Cluster hash tag)")
	}
	if o.StateTTL < 0 || o.ExpiryTime < 0 || o.ExpiryTime >= day {
		return o, errors.New("zerodha: Options.StateTTL must not be negative and ExpiryTime must be in [0, 24h)")
	}
	if o.StateTTL == 0 {
		o.StateTTL = 10 * time.Minute
	}
	if o.ExpiryTime == 0 {
		o.ExpiryTime = 6 * time.Hour
	}
	if o.LoginURL == "" {
		o.LoginURL = DefaultLoginURL
	}
	if o.APIURL == "" {
		o.APIURL = DefaultAPIURL
	}
	o.APIURL = strings.TrimRight(o.APIURL, "/")
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o, nil
}
