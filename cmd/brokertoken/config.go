package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/brokertoken/brokertoken/tradovate"
)

// option is one setting: a flag, the environment variable it falls back to, and its
// default. A flag given on the command line wins over the variable, which wins over
// the default. An empty variable counts as unset.
type option struct {
	name   string // flag name, without dashes
	env    string // environment variable; "" for flags with none
	def    string // default; see defaultFor for per-command defaults
	usage  string
	isBool bool   // may be given without a value (--legacy-keys)
	secret bool   // never echoed in error messages
	kind   string // value shown in usage: URL, PATH, DURATION...
}

// The options. Commands register the ones they use (see commandOptions).
var (
	optRedis         = option{name: "redis", env: "REDIS_URL", def: "redis://127.0.0.1:6379/0", secret: true, kind: "URL", usage: "Redis: redis://[user:pass@]host:port/db, rediss:// for TLS, a comma list, redis+cluster://h1:p1,h2:p2 or ?addr=h2:p2 for Cluster, redis+sentinel://s1:26379,s2/MASTER[/db] (or ?master_name=MASTER) for Sentinel; the password may also come from REDIS_PASSWORD"}
	optRedisCA       = option{name: "redis-ca", env: "BROKERTOKEN_REDIS_CA", kind: "PATH", usage: "PEM file of the CA that signed the rediss:// server's certificate (default: the system roots)"}
	optCredentials   = option{name: "credentials", env: "BROKERTOKEN_CREDENTIALS", def: "credentials.json", kind: "PATH", usage: "credentials file: a JSON array of {\"username\",\"password\"} objects"}
	optEnv           = option{name: "env", env: "TRADOVATE_ENV", def: "demo", kind: "demo|live", usage: "Tradovate environment"}
	optTradovateURL  = option{name: "tradovate-url", env: "TRADOVATE_URL", kind: "URL", usage: "REST base URL override (default the environment's, e.g. https://demo.tradovateapi.com/v1)"}
	optTVURL         = option{name: "tv-url", env: "TRADOVATE_TV_URL", kind: "URL", usage: "TradingView-style login base URL override (default the environment's, e.g. https://tv-demo.tradovateapi.com)"}
	optPrefix        = option{name: "prefix", env: "BROKERTOKEN_PREFIX", def: "brokertoken", kind: "NAME", usage: "Redis key namespace"}
	optLegacyKeys    = option{name: "legacy-keys", env: "BROKERTOKEN_LEGACY_KEYS", isBool: true, kind: "BOOL", usage: "also write the original token:{account}, auth:{user}, {user} and token_expiry:{user} keys (default true for run, false otherwise)"}
	optAlertWebhook  = option{name: "alert-webhook", env: "BROKERTOKEN_ALERT_WEBHOOK", secret: true, kind: "URL", usage: "webhook for alerts: Discord webhook URLs get Discord's embed format, other URLs a plain JSON body (default: alerts are only logged)"}
	optAlertFormat   = option{name: "alert-format", env: "BROKERTOKEN_ALERT_FORMAT", def: "auto", kind: "auto|discord|json", usage: "alert body format; auto picks discord for discord.com and discordapp.com URLs"}
	optListen        = option{name: "listen", env: "BROKERTOKEN_LISTEN", def: "127.0.0.1:9464", kind: "ADDR", usage: "address for /healthz and /metrics; empty disables them"}
	optLogFormat     = option{name: "log-format", env: "BROKERTOKEN_LOG_FORMAT", def: "text", kind: "text|json", usage: "log format (log/slog, on stderr)"}
	optLogLevel      = option{name: "log-level", env: "BROKERTOKEN_LOG_LEVEL", kind: "LEVEL", usage: "debug, info, warn, error or off (default info for run; off for the other commands, which print one line on failure)"}
	optConcurrency   = option{name: "concurrency", env: "BROKERTOKEN_CONCURRENCY", def: "10", kind: "N", usage: "how many logins and renewals are sent to the broker at once, and how many users are waited on at once"}
	optRefreshBefore = option{name: "refresh-before", env: "BROKERTOKEN_REFRESH_BEFORE", def: "15m", kind: "DURATION", usage: "renew this long before expiry (capped at half the token's lifetime)"}
	optLeeway        = option{name: "leeway", env: "BROKERTOKEN_LEEWAY", def: "30s", kind: "DURATION", usage: "a token this close to expiry is no longer served (capped at a tenth of its lifetime)"}
	optRetryMax      = option{name: "retry-max", env: "BROKERTOKEN_RETRY_MAX", def: "1m", kind: "DURATION", usage: "longest wait between failed refresh attempts of a user"}
	optCheckInterval = option{name: "check-interval", env: "BROKERTOKEN_CHECK_INTERVAL", def: "2s", kind: "DURATION", usage: "how often run checks each user's token"}
	optLoginBudget   = option{name: "login-budget", env: "BROKERTOKEN_LOGIN_BUDGET", def: "10", kind: "N", usage: "login requests per minute for all processes sharing the Redis (Tradovate allows about 10)"}
	optTimeout       = option{name: "timeout", env: "BROKERTOKEN_TIMEOUT", def: "2m", kind: "DURATION", usage: "longest a command (or one refresh in run) may take"}
	// Accounts, the legacy layout's expiry and the market-data token (accounts.go, legacy.go).
	optDiscoverAccounts = option{name: "discover-accounts", env: "BROKERTOKEN_DISCOVER_ACCOUNTS", isBool: true, kind: "BOOL", usage: "ask the broker for each user's accounts (GET /account/list, or /accounts for TradingView-style logins) and keep the account map, the registry and the legacy keys in step (default true for run)"}
	optAccountsEvery    = option{name: "accounts-every", env: "BROKERTOKEN_ACCOUNTS_EVERY", def: "renewal", kind: "renewal|DURATION", usage: "when to ask for the accounts: renewal (after each login, and with each renewal at most every 5m) or a DURATION (after each login and every DURATION)"}
	optLegacyTimeZone   = option{name: "legacy-time-zone", env: "BROKERTOKEN_LEGACY_TIME_ZONE", def: "Local", kind: "ZONE", usage: "time zone of token_expiry:{user}, written without an offset as the original did (Local, UTC, Europe/London...)"}
	optExchangeTVToken  = option{name: "exchange-tv-token", env: "BROKERTOKEN_EXCHANGE_TV_TOKEN", def: "true", isBool: true, kind: "BOOL", usage: "after a TradingView-style login, renew at once to get a market-data token (mdAccessToken) before the token is stored"}
)

// commandOptions lists the shared options each command accepts.
var commandOptions = map[string][]option{
	"run": {optRedis, optRedisCA, optCredentials, optEnv, optTradovateURL, optTVURL, optPrefix,
		optLegacyKeys, optAlertWebhook, optAlertFormat, optListen, optLogFormat, optLogLevel,
		optConcurrency, optRefreshBefore, optLeeway, optRetryMax, optCheckInterval, optLoginBudget, optTimeout,
		optDiscoverAccounts, optAccountsEvery, optLegacyTimeZone, optExchangeTVToken,
		optLoginListen, optLoginURL, optLoginBasicAuth, optLoginSecret, optKiteReminder, optKiteReminderDays,
		optKiteAPIURL, optKiteLoginURL, optSchwabURL, optOAuthAlerts},
	"token": {optRedis, optRedisCA, optCredentials, optEnv, optTradovateURL, optTVURL, optPrefix,
		optLegacyKeys, optLogFormat, optLogLevel, optRefreshBefore, optLeeway, optRetryMax, optLoginBudget, optTimeout,
		optLegacyTimeZone, optExchangeTVToken, optKiteAPIURL, optKiteLoginURL, optSchwabURL},
	// authorize mints an authorization URL with the daemon's redirect URL (from the
	// same page options) and, with --paste, completes it: the writer role.
	"authorize": {optRedis, optRedisCA, optCredentials, optPrefix, optLogFormat, optLogLevel, optTimeout,
		optListen, optLoginListen, optLoginURL, optSchwabURL},
	// invalidate only reads and reports (the reporter role): no credentials, no broker.
	"invalidate": {optRedis, optRedisCA, optEnv, optTradovateURL, optPrefix, optLogFormat, optLogLevel, optTimeout},
	"status": {optRedis, optRedisCA, optCredentials, optEnv, optTradovateURL, optPrefix, optLogFormat, optLogLevel,
		optRefreshBefore, optLeeway, optTimeout},
	"decode": {},
	// clear-cooldown deletes the broker's cool-down keys: the writer's Redis rights,
	// no credentials.
	"clear-cooldown": {optRedis, optRedisCA, optEnv, optTradovateURL, optPrefix, optLogFormat, optLogLevel, optTimeout},
}

// defaultFor returns o's default for command cmd.
func defaultFor(o option, cmd string) string {
	switch o.name {
	case optLegacyKeys.name, optDiscoverAccounts.name:
		return strconv.FormatBool(cmd == "run")
	case optLogLevel.name:
		if cmd == "run" {
			return "info"
		}
		return "off"
	}
	return o.def
}

// optValue is the flag.Value of an option: it remembers whether the flag was given.
type optValue struct {
	opt option
	raw string
	set bool
}

func (v *optValue) String() string   { return v.raw }
func (v *optValue) IsBoolFlag() bool { return v.opt.isBool }
func (v *optValue) Set(s string) error {
	v.raw, v.set = s, true
	return nil
}

// flags is a command's flag set with its options.
type flags struct {
	cmd  string
	fs   *flag.FlagSet
	opts map[string]*optValue
	env  func(string) (string, bool)
}

// newFlags returns the flag set of command cmd, with its shared options registered.
func newFlags(cmd string, env func(string) (string, bool)) *flags {
	f := &flags{cmd: cmd, fs: flag.NewFlagSet("brokertoken "+cmd, flag.ContinueOnError), opts: map[string]*optValue{}, env: env}
	f.fs.SetOutput(io.Discard)
	f.fs.Usage = func() {}
	for _, o := range commandOptions[cmd] {
		v := &optValue{opt: o}
		f.opts[o.name] = v
		f.fs.Var(v, o.name, o.usage)
	}
	return f
}

// parse parses args, allowing flags after positional arguments
// ("token ACCOUNT --md"), and returns the positional arguments. "--" ends the flags.
func (f *flags) parse(args []string) ([]string, error) {
	var pos []string
	for {
		err := f.fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		if err != nil {
			return nil, usagef("%s: %s (see brokertoken %s -h)", f.cmd, oneLine(err.Error()), f.cmd)
		}
		rest := f.fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// lookup returns an option's value and where it came from: "--name", the environment
// variable's name, or "default".
func (f *flags) lookup(o option) (value, source string) {
	if v, ok := f.opts[o.name]; ok && v.set {
		return v.raw, "--" + o.name
	}
	if o.env != "" {
		if v, ok := f.env(o.env); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v), o.env
		}
	}
	return defaultFor(o, f.cmd), "default"
}

// where names a value's source for error messages, with the value unless it is secret.
func where(o option, value, source string) string {
	name := source
	if source == "default" {
		name = "--" + o.name + " (default)"
	}
	if o.secret {
		return name
	}
	return fmt.Sprintf("%s %q", name, value)
}

func (f *flags) str(o option) string {
	v, _ := f.lookup(o)
	return v
}

func (f *flags) duration(o option) (time.Duration, error) {
	v, src := f.lookup(o)
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, usagef("%s: want a positive duration such as 90s or 15m", where(o, v, src))
	}
	return d, nil
}

func (f *flags) positiveInt(o option) (int, error) {
	v, src := f.lookup(o)
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, usagef("%s: want a positive whole number", where(o, v, src))
	}
	return n, nil
}

func (f *flags) boolean(o option) (bool, error) {
	v, src := f.lookup(o)
	switch strings.ToLower(v) {
	case "1", "t", "true", "yes", "y", "on":
		return true, nil
	case "0", "f", "false", "no", "n", "off":
		return false, nil
	}
	return false, usagef("%s: want true or false", where(o, v, src))
}

func (f *flags) oneOf(o option, allowed ...string) (string, error) {
	v, src := f.lookup(o)
	lv := strings.ToLower(v)
	for _, a := range allowed {
		if lv == a {
			return lv, nil
		}
	}
	return "", usagef("%s: want %s", where(o, v, src), strings.Join(allowed, ", "))
}

// config is a command's resolved and checked configuration.
type config struct {
	cmd string

	redis       *redisTarget
	credentials string // path
	credsSource string // where the path came from
	environment tradovate.Environment
	restURL     string
	envGiven    bool // --env or --tradovate-url (or their variables) were given
	tvURL       string
	prefix      string
	legacyKeys  bool

	alertWebhook string
	alertFormat  string // discord or json, resolved from auto
	listen       string
	logFormat    string
	logLevel     string

	concurrency   int
	refreshBefore time.Duration
	leeway        time.Duration
	retryMax      time.Duration
	checkInterval time.Duration
	loginBudget   int
	timeout       time.Duration

	discoverAccounts bool           // keep accounts in step with the broker (run)
	accountsEvery    time.Duration  // 0: with each renewal (see optAccountsEvery)
	legacyZone       *time.Location // of token_expiry:{user}; nil when the command has no legacy keys
	exchangeTVToken  bool           // renew after a TradingView-style login for an mdAccessToken

	login loginConfig // the login page, the Kite reminder, Kite's and Schwab's addresses, OAuth2 expiry alerts
}

// load resolves and checks every option f's command uses. It touches no network and
// writes nothing: every usage or configuration error is found before Redis is used.
func (f *flags) load() (*config, error) {
	c := &config{cmd: f.cmd}
	has := func(o option) bool { _, ok := f.opts[o.name]; return ok }
	var err error
	if has(optLogFormat) {
		if c.logFormat, err = f.oneOf(optLogFormat, "text", "json"); err != nil {
			return nil, err
		}
		if c.logLevel, err = f.oneOf(optLogLevel, "debug", "info", "warn", "error", "off"); err != nil {
			return nil, err
		}
	}
	if has(optRedis) {
		v, src := f.lookup(optRedis)
		ca, caSrc := f.lookup(optRedisCA)
		password, _ := f.env("REDIS_PASSWORD")
		c.redis, err = parseRedisURL(v, password, ca)
		if err != nil {
			var caErr *caFileError
			if errors.As(err, &caErr) {
				return nil, usagef("%s: %v", where(optRedisCA, ca, caSrc), err)
			}
			return nil, usagef("%s: %v", where(optRedis, v, src), err)
		}
	}
	if has(optCredentials) {
		c.credentials, c.credsSource = f.lookup(optCredentials)
	}
	if has(optEnv) {
		env, err := f.oneOf(optEnv, string(tradovate.Demo), string(tradovate.Live))
		if err != nil {
			return nil, err
		}
		c.environment = tradovate.Environment(env)
		_, envSrc := f.lookup(optEnv)
		_, restSrc := f.lookup(optTradovateURL)
		c.envGiven = envSrc != "default" || restSrc != "default"
		for _, u := range []struct {
			o   option
			dst *string
		}{{optTradovateURL, &c.restURL}, {optTVURL, &c.tvURL}} {
			v, src := f.lookup(u.o)
			if v == "" {
				continue
			}
			if err := checkHTTPURL(v); err != nil {
				return nil, usagef("%s: %v", where(u.o, v, src), err)
			}
			*u.dst = strings.TrimRight(v, "/")
		}
	}
	if has(optPrefix) {
		v, src := f.lookup(optPrefix)
		if v == "" || strings.ContainsAny(v, "{} \t\r\n") {
			return nil, usagef("%s: want a non-empty name without braces or spaces", where(optPrefix, v, src))
		}
		c.prefix = v
	}
	if has(optLegacyKeys) {
		if c.legacyKeys, err = f.boolean(optLegacyKeys); err != nil {
			return nil, err
		}
	}
	if has(optAlertWebhook) {
		v, src := f.lookup(optAlertWebhook)
		format, err := f.oneOf(optAlertFormat, "auto", "discord", "json")
		if err != nil {
			return nil, err
		}
		if v != "" {
			if err := checkHTTPURL(v); err != nil {
				return nil, usagef("%s: %v", where(optAlertWebhook, v, src), err)
			}
			if format == "auto" {
				format = "json"
				if isDiscordWebhook(v) {
					format = "discord"
				}
			}
		}
		c.alertWebhook, c.alertFormat = v, format
	}
	if has(optListen) {
		v, src := f.lookup(optListen)
		if f.opts[optListen.name].set {
			v = f.opts[optListen.name].raw // an explicit empty --listen= disables the server
		}
		if v != "" {
			if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
				return nil, usagef("%s: want host:port, e.g. 127.0.0.1:9464 or :9464", where(optListen, v, src))
			}
		}
		c.listen = v
	}
	if err := f.loadAccounts(c); err != nil {
		return nil, err
	}
	if err := f.loadLogin(c); err != nil {
		return nil, err
	}
	durations := []struct {
		o   option
		dst *time.Duration
	}{{optRefreshBefore, &c.refreshBefore}, {optLeeway, &c.leeway}, {optRetryMax, &c.retryMax},
		{optCheckInterval, &c.checkInterval}, {optTimeout, &c.timeout}}
	for _, d := range durations {
		if has(d.o) {
			if *d.dst, err = f.duration(d.o); err != nil {
				return nil, err
			}
		}
	}
	ints := []struct {
		o   option
		dst *int
	}{{optConcurrency, &c.concurrency}, {optLoginBudget, &c.loginBudget}}
	for _, n := range ints {
		if has(n.o) {
			if *n.dst, err = f.positiveInt(n.o); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// checkHTTPURL checks that s is an absolute http(s) URL, without quoting it (webhook
// URLs carry a secret in their path).
func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return fmt.Errorf("not a valid URL: %v", ue.Err)
		}
		return errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("want an http:// or https:// URL")
	}
	if u.Host == "" {
		return errors.New("URL has no host")
	}
	return nil
}

// forUser returns the configuration to read a registered user's broker keys (its
// cool-down) with: the environment and REST URL the daemon registered for it, unless
// --env or --tradovate-url say otherwise.
func (c *config) forUser(e fleetUser) *config {
	if c.envGiven || e.Environment == "" {
		return c
	}
	out := *c
	out.environment, out.restURL = tradovate.Environment(e.Environment), e.RESTURL
	return &out
}
