package tokencache

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options configures a [Cache]. The zero value of every field except Redis is useful;
// each field's comment gives its default.
type Options struct {
	// Redis is the shared store: a single node, Sentinel or Cluster client. Required.
	// The Cache does not close it. Its reads must go to masters (the default): a
	// lagging replica could make two processes both see no token and both log in.
	// Set ContextTimeoutEnabled on it so callers' deadlines also bound Redis commands
	// in flight (go-redis otherwise bounds them by ReadTimeout only).
	Redis redis.UniversalClient

	// Authenticator obtains new tokens from the broker. Nil makes the cache read-only:
	// it only serves tokens that other processes (such as the daemon) write, and
	// returns ErrNoToken when none is valid.
	Authenticator Authenticator

	// Prefix namespaces every key and the pub/sub channels. Default "brokertoken".
	Prefix string

	// UserFor maps a trading account to the login user whose token it shares. It must
	// be a pure function: the cache remembers its answer per account. Default: identity.
	UserFor func(account string) string

	// LookupUser, when set, is asked instead of UserFor: it returns the account's login
	// user and whether it knows the account. A known account's user is remembered, as
	// UserFor's answers are; an unknown account is served as the user returned for it
	// (usually itself) and looked up again at its next call (a Source made for it too),
	// so a map that learns accounts while the cache runs (tradovate.AccountMap, filled
	// from the broker's account list) is followed as soon as it knows the account. A
	// known account is remembered for the life of the cache. Default nil: UserFor.
	LookupUser func(account string) (user string, known bool)

	// AccountsFor lists the trading accounts of a login user, for the legacy keys
	// (token:{account}); it is asked at each write, so it may change at run time.
	// Default: none besides the user itself.
	AccountsFor func(user string) []string

	// LegacyKeys also writes the keys that pre-existing services read, as the original
	// refresher wrote them: token:{account} for the user and each of its accounts and
	// auth:{user}, each holding the bare access token; the {user} list of those token
	// keys, with no TTL; and token_expiry:{user}, the expiry as a naive ISO-8601 time
	// (see LegacyLocation). The token keys and token_expiry expire with the token (the
	// original used a fixed hour). Default off.
	LegacyKeys bool

	// LegacyLocation is the time zone of token_expiry:{user}. The value carries no
	// offset ("2026-11-29T12:31:42.769060"), as the original refresher wrote it, so
	// Python's datetime.fromisoformat(v) compares with datetime.now() of a process in
	// that zone. Default time.Local.
	LegacyLocation *time.Location

	// RefreshBefore is how long before expiry a token turns stale: it is still served,
	// and one background refresh starts. Default 15 minutes (Tradovate's advice); it is
	// capped at half the token's lifetime so short-lived tokens are not refreshed at once.
	RefreshBefore time.Duration

	// Leeway is how long before expiry a token stops being served at all: callers then
	// wait for the refresh. Default 30 seconds; capped at a tenth of the token's lifetime.
	Leeway time.Duration

	// DefaultLifetime is the lifetime assumed for a token whose expiry is known neither
	// from the broker nor from a JWT exp claim. Default 1 hour.
	DefaultLifetime time.Duration

	// LeaseTTL bounds how long a crashed refresher blocks the others: the lease it holds
	// expires after LeaseTTL unless its holder, still working, extends it. Default 10 s.
	LeaseTTL time.Duration

	// MaxStaleness is how long a token may be served from memory without reading Redis
	// again: the backstop for a lost invalidation message. Default 30 seconds.
	MaxStaleness time.Duration

	// RefreshTimeout bounds one refresh, including waiting for another process's.
	// Refreshes run detached from the callers' contexts. Default 2 minutes.
	RefreshTimeout time.Duration

	// RetryMin and RetryMax bound the jittered exponential backoff after a failed
	// refresh: while the token is still valid it keeps being served meanwhile; once it is
	// not, callers get the failure until the next attempt. An error whose Temporary()
	// method says false waits RetryMax at once. Defaults 1 s and 1 minute.
	RetryMin, RetryMax time.Duration

	// Logger receives the cache's events; tokens appear only redacted. Default: discard.
	Logger *slog.Logger

	// Hooks receive the cache's events, for metrics and alerts. Default: none.
	Hooks Hooks
}

// Hooks are called on the cache's events. Each may be nil. They run on the goroutine
// that saw the event, so they must return quickly and must not call the Cache.
type Hooks struct {
	// Refreshed is called after this cache obtained a token from the broker and stored
	// it; op is "login" or "renew".
	Refreshed func(user, op string, t *Token)
	// RefreshFailed is called when a refresh by this cache failed; op is "login",
	// "renew" or "redis".
	RefreshFailed func(user, op string, err error)
	// LeaseWait is called when this cache waited for another process's refresh.
	LeaseWait func(user string, waited time.Duration)
	// Invalidated is called when a newer version of a user's token was announced
	// that this cache held an older copy of (usually another process's write; also
	// this cache's own Set when its message arrives before the Set's reply).
	Invalidated func(user string, version int64)
	// ReportKept is called when a writer answers a report of user's token: the
	// broker still accepts that version (a [Checker] said so), so the writers keep it
	// and the caches that reported it serve it again. `brokertoken invalidate` uses it
	// to say the token was kept rather than wait for a new one.
	ReportKept func(user string, version int64)
	// BrokerCall is called as this cache sends a login or a renewal (op "login" or
	// "renew") of user to the Authenticator. The context it returns is the one the
	// Authenticator gets (a tracer starts a span in it); done, when not nil, is called
	// once with the call's error (nil on success) when it returns. It measures what
	// the other hooks cannot: how long the broker takes, and the call in its context.
	BrokerCall func(ctx context.Context, user, op string) (_ context.Context, done func(err error))
}

// brokerCall calls h.BrokerCall when it is set; the returned done is never nil.
func (h *Hooks) brokerCall(ctx context.Context, user, op string) (context.Context, func(error)) {
	if h.BrokerCall == nil {
		return ctx, func(error) {}
	}
	cctx, done := h.BrokerCall(ctx, user, op)
	if cctx == nil {
		cctx = ctx
	}
	if done == nil {
		done = func(error) {}
	}
	return cctx, done
}

// init returns a copy of o with every default filled in, or an error naming the field
// that is invalid.
func (o Options) init() (Options, error) {
	if o.Redis == nil {
		return o, errors.New("tokencache: Options.Redis is required")
	}
	if o.Prefix == "" {
		o.Prefix = "brokertoken"
	}
	if strings.ContainsAny(o.Prefix, "{}") {
		return o, errors.New("tokencache: Options.Prefix must not contain { or } (they would break the Cluster hash tag)")
	}
	if o.UserFor == nil {
		o.UserFor = func(account string) string { return account }
	}
	if o.LookupUser == nil {
		userFor := o.UserFor
		o.LookupUser = func(account string) (string, bool) { return userFor(account), true }
	}
	if o.AccountsFor == nil {
		o.AccountsFor = func(string) []string { return nil }
	}
	if o.LegacyLocation == nil {
		o.LegacyLocation = time.Local
	}
	defaults := []struct {
		d   *time.Duration
		def time.Duration
	}{
		{&o.RefreshBefore, 15 * time.Minute},
		{&o.Leeway, 30 * time.Second},
		{&o.DefaultLifetime, time.Hour},
		{&o.LeaseTTL, 10 * time.Second},
		{&o.MaxStaleness, 30 * time.Second},
		{&o.RefreshTimeout, 2 * time.Minute},
		{&o.RetryMin, time.Second},
		{&o.RetryMax, time.Minute},
	}
	for _, f := range defaults {
		if *f.d < 0 {
			return o, errors.New("tokencache: Options durations must not be negative")
		}
		if *f.d == 0 {
			*f.d = f.def
		}
	}
	if o.LeaseTTL < 10*time.Millisecond {
		return o, errors.New("tokencache: Options.LeaseTTL must be at least 10ms")
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = o.RetryMin
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o, nil
}
