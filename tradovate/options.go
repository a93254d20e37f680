package tradovate

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options configures an [Authenticator]. Every field's zero value means the default
// stated beside it, except Credentials, which is required. [New] copies the struct;
// later changes to it have no effect.
type Options struct {
	// Environment selects the default base URLs: Demo (the default) or Live.
	Environment Environment
	// RESTURL overrides the REST base URL (default DemoRESTURL or LiveRESTURL).
	RESTURL string
	// TradingViewURL overrides the TradingView-style login base URL (default
	// DemoTradingViewURL or LiveTradingViewURL); the login posts to
	// TradingViewURL + "/authorize?locale=en".
	TradingViewURL string

	// AppID is the API key's appId sent by the official login, unless the credential
	// sets its own (default none: the field is omitted).
	AppID string
	// AppVersion is the appVersion sent with AppID (default "1.0" when an appId is sent).
	AppVersion string
	// CID is the API key's client id (default none). It is sent as a JSON number when it
	// parses as one.
	CID CID
	// Sec is the API key's secret (default none).
	Sec string
	// DeviceID pins the deviceId sent by the official login for every user whose
	// credential does not pin its own (at most 64 characters). Default: with Redis, the
	// fleet's deviceId for the user, stored under "<Namespace>:{<user>}:device" by the
	// first official login (32 random hex characters) and never changed, so every
	// process and machine presents the same one, as Tradovate requires of a device
	// (see [ReadDeviceID]); without Redis, derived from /etc/machine-id (else the host
	// name) hashed with the user name, which differs from machine to machine.
	DeviceID string
	// Method is the login method for credentials that do not name one. Default:
	// MethodOfficial when the credential or Options has an API secret (Sec), else
	// MethodTradingView, the method the original system uses.
	Method Method
	// ExchangeTVToken makes a TradingView-style login exchange its token for a REST pair
	// (accessToken and mdAccessToken) by calling renewaccesstoken with it (default false:
	// the TradingView token is returned as is, as the original system stores it). If the
	// exchange fails for a reason other than a rejected token, the TradingView token is
	// returned with a warning logged and its RenewAt ExchangeRetryAfter later, so the
	// cache renews it early and the market-data token comes with that renewal.
	ExchangeTVToken bool
	// ExchangeRetryAfter is how soon a TradingView token whose exchange failed asks to
	// be renewed (default 1 minute). A failed renewal is then retried with the cache's
	// backoff.
	ExchangeRetryAfter time.Duration

	// Credentials finds each user's password and per-user settings. Required; usually a
	// [*Credentials] from [LoadCredentials] or [CredentialsFromEnv].
	Credentials CredentialSource

	// Redis holds what every process that uses the same Redis and Namespace shares: the
	// fleet-wide login budget, the captcha/lockout cool-downs, each user's deviceId and
	// what the broker said about the user at login ([ReadUserInfo]). Single-node,
	// Sentinel and Cluster clients all work (every script touches one key). Default nil:
	// budget and cool-downs are kept in this process only, which does not protect a
	// fleet, deviceIds are derived per machine, and user information is not kept.
	Redis redis.UniversalClient
	// Namespace starts the Redis keys this package shares with every process that logs
	// in to the same Tradovate environment, whatever tokencache prefix those processes
	// use: the broker counts logins per IP subnet and keeps captchas per user, not per
	// fleet. The budget is "<Namespace>:login-budget", the fleet-wide pause
	// "<Namespace>:login-pause"; per user there are "<Namespace>:{<user>}:cooldown",
	// ":login-hold" (after an accepted login whose answer was not understood),
	// ":device" (the deviceId) and ":info" (see [UserInfo]). None holds a secret.
	// Default "brokertoken:tradovate:<host of RESTURL>", e.g.
	// "brokertoken:tradovate:demo.tradovateapi.com". It must not contain { or }.
	Namespace string
	// LoginBudget is how many login requests all processes together may send per
	// LoginBudgetWindow (default 10, Tradovate's documented authentication limit). Every
	// request to a login endpoint counts, including retries and penalty resends;
	// renewals do not.
	LoginBudget int
	// LoginBudgetWindow is the budget's sliding window (default one minute).
	LoginBudgetWindow time.Duration
	// LoginBudgetWait is the longest a Login waits in all for room in the budget before
	// failing with [ErrLoginBudgetExhausted] (default 0: as long as the context allows;
	// negative: never wait). A wait that would outlast the context's deadline fails at
	// once.
	LoginBudgetWait time.Duration
	// Cooldown is how long a user is not tried again after a captcha, a lockout or an
	// accepted login whose answer was not understood ([ErrUnknownLoginAnswer]), and how
	// long every login pauses after HTTP 429 or 423 (default one hour).
	Cooldown time.Duration
	// MaxPenaltyRetries is how many times a request is resent with a p-ticket after a
	// time penalty (default 3; negative: none).
	MaxPenaltyRetries int
	// MaxAttempts is how many requests a call makes when failures are retryable (HTTP
	// 5xx, timeouts, malformed answers), including the first (default 3; 1 disables
	// retries).
	MaxAttempts int
	// RetryBackoff is the wait before the first retry (default 500ms); each further retry
	// doubles it up to MaxRetryBackoff, and every wait is jittered down to half its value.
	RetryBackoff time.Duration
	// MaxRetryBackoff caps the wait between retries (default 10s).
	MaxRetryBackoff time.Duration
	// DefaultLifetime is the lifetime assumed for a token whose expiry the answer does not
	// give and which is not a JWT with exp (default 80 minutes, the shorter of the
	// documented lifetimes).
	DefaultLifetime time.Duration

	// HTTPClient sends the requests (default a client with a 30s timeout).
	HTTPClient *http.Client
	// Logger receives logins, penalties, captchas, lockouts and unreadable login answers
	// (default slog.Default()). Tokens and passwords are never logged, only redacted
	// forms; deviceIds only redacted too.
	Logger *slog.Logger
	// Now returns the current time (default time.Now). Tests may replace it.
	Now func() time.Time
}

// Defaults applied by init.
const (
	namespaceRoot          = "brokertoken:tradovate:"
	defaultLoginBudget     = 10
	defaultBudgetWindow    = time.Minute
	defaultCooldown        = time.Hour
	defaultPenaltyRetries  = 3
	defaultMaxAttempts     = 3
	defaultRetryBackoff    = 500 * time.Millisecond
	defaultMaxRetryBackoff = 10 * time.Second
	defaultLifetime        = 80 * time.Minute
	defaultHTTPTimeout     = 30 * time.Second
	defaultAppVersion      = "1.0"
	maxDeviceIDLen         = 64
)

// init fills in defaults. It is called on New's private copy.
func (o *Options) init() {
	if o.Environment == "" {
		o.Environment = Demo
	}
	if rest, tv, err := o.Environment.urls(); err == nil {
		if o.RESTURL == "" {
			o.RESTURL = rest
		}
		if o.TradingViewURL == "" {
			o.TradingViewURL = tv
		}
	}
	if o.Namespace == "" {
		if u, err := url.Parse(o.RESTURL); err == nil && u.Host != "" {
			o.Namespace = namespaceRoot + u.Host
		}
	}
	if o.LoginBudget <= 0 {
		o.LoginBudget = defaultLoginBudget
	}
	if o.LoginBudgetWindow <= 0 {
		o.LoginBudgetWindow = defaultBudgetWindow
	}
	if o.Cooldown <= 0 {
		o.Cooldown = defaultCooldown
	}
	if o.ExchangeRetryAfter <= 0 {
		o.ExchangeRetryAfter = time.Minute
	}
	switch {
	case o.MaxPenaltyRetries == 0:
		o.MaxPenaltyRetries = defaultPenaltyRetries
	case o.MaxPenaltyRetries < 0:
		o.MaxPenaltyRetries = 0
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = defaultMaxAttempts
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = defaultRetryBackoff
	}
	if o.MaxRetryBackoff <= 0 {
		o.MaxRetryBackoff = defaultMaxRetryBackoff
	}
	if o.MaxRetryBackoff < o.RetryBackoff {
		o.MaxRetryBackoff = o.RetryBackoff
	}
	if o.DefaultLifetime <= 0 {
		o.DefaultLifetime = defaultLifetime
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: defaultHTTPTimeout}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// validate checks an initialised Options.
func (o *Options) validate() error {
	if _, _, err := o.Environment.urls(); err != nil {
		return err
	}
	for _, u := range []struct{ name, value string }{{"RESTURL", o.RESTURL}, {"TradingViewURL", o.TradingViewURL}} {
		p, err := url.Parse(u.value)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("tradovate: Options.%s %q is not an http(s) URL", u.name, u.value)
		}
	}
	if err := validNamespace(o.Namespace); err != nil {
		return err
	}
	if o.Credentials == nil {
		return errors.New("tradovate: Options.Credentials is required")
	}
	if !o.Method.valid() {
		return fmt.Errorf("tradovate: Options.Method %q is not %q or %q", string(o.Method), MethodOfficial, MethodTradingView)
	}
	if len(o.DeviceID) > maxDeviceIDLen {
		return fmt.Errorf("tradovate: Options.DeviceID is %d characters, more than %d", len(o.DeviceID), maxDeviceIDLen)
	}
	return nil
}

// validNamespace checks Options.Namespace: the keys it starts hold a user's name in a
// Cluster hash tag, so it must not contain braces itself.
func validNamespace(ns string) error {
	if ns == "" || strings.ContainsAny(ns, "{}") {
		return fmt.Errorf("tradovate: Options.Namespace %q must be non-empty and must not contain { or }", ns)
	}
	return nil
}
