package tokencache

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token is a broker access token with the facts the cache needs about it.
//
// A Token returned by the cache is shared by every caller and must not be modified.
// Formatting a Token with fmt (any verb) or logging it with log/slog shows only a short
// prefix and the length of each secret, never the whole value.
type Token struct {
	// AccessToken is the bearer token sent to the broker's REST API.
	AccessToken string
	// MDAccessToken is the optional market-data token (Tradovate's mdAccessToken).
	MDAccessToken string
	// Expiry is when the broker stops accepting AccessToken.
	Expiry time.Time
	// ObtainedAt is when the token was obtained from the broker.
	ObtainedAt time.Time
	// RenewAt, when set and earlier than the usual refresh point (RefreshBefore before
	// Expiry), is when the writers renew the token instead: an Authenticator that got
	// an incomplete token sets it to ask for an early renewal (Tradovate's login whose
	// market-data token could not be had yet). It is stored in the record; zero means
	// the usual point.
	RenewAt time.Time
	// Version increases strictly with every write of a login user's token to Redis.
	// The cache assigns it; a token not yet stored has Version 0.
	Version int64
}

// TokenSource supplies a valid token. Implementations are safe for concurrent use.
type TokenSource interface {
	// Token returns a token that is valid now, or an error.
	Token(ctx context.Context) (*Token, error)
}

// Authenticator obtains a brand-new token for a login user from the broker.
// The Cache calls it for at most one caller at a time across every process that shares
// a Redis. Implementations must be safe for concurrent use.
type Authenticator interface {
	Login(ctx context.Context, user string) (*Token, error)
}

// Renewer is optional: when the Authenticator also implements it, a token that is still
// valid is renewed (same broker session) instead of a new login. A Renewer that finds
// current rejected by the broker returns an error wrapping [ErrTokenRejected], and the
// cache logs in instead.
type Renewer interface {
	Renew(ctx context.Context, user string, current *Token) (*Token, error)
}

// Checker is optional: an Authenticator that can ask the broker cheaply whether a token
// is still accepted (Tradovate's GET /auth/me, Kite's GET /user/profile) implements it.
// A writing cache checks a token that another process reported as rejected before it
// spends a login on the report. Check returns nil when the broker accepts t, an error
// wrapping [ErrTokenRejected] when it refuses it, and any other error when it could not
// tell (the report is then handled as if the token were rejected, within the report
// rate limit).
type Checker interface {
	Check(ctx context.Context, user string, t *Token) error
}

// Valid reports whether t is non-nil, has an access token and is not expired at now.
func (t *Token) Valid(now time.Time) bool {
	return t != nil && t.AccessToken != "" && now.Before(t.Expiry)
}

// String shows the token's prefix, length, expiry and version, never the whole secret.
func (t Token) String() string {
	s := "Token{AccessToken:" + Redact(t.AccessToken)
	if t.MDAccessToken != "" {
		s += " MDAccessToken:" + Redact(t.MDAccessToken)
	}
	return s + fmt.Sprintf(" Expiry:%s ObtainedAt:%s Version:%d}",
		t.Expiry.UTC().Format(time.RFC3339), t.ObtainedAt.UTC().Format(time.RFC3339), t.Version)
}

// GoString is String: %#v must not reveal the secret either.
func (t Token) GoString() string { return t.String() }

// Format makes every fmt verb (%v, %+v, %s, %q, %#v, %x...) print String, so no verb
// can reach the secret fields.
func (t Token) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", t.String())
	default:
		_, _ = f.Write([]byte(t.String()))
	}
}

// LogValue makes log/slog record the redacted form.
func (t Token) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("access_token", Redact(t.AccessToken))}
	if t.MDAccessToken != "" {
		attrs = append(attrs, slog.String("md_access_token", Redact(t.MDAccessToken)))
	}
	return slog.GroupValue(append(attrs,
		slog.Time("expiry", t.Expiry),
		slog.Int64("version", t.Version))...)
}

// redactPrefix is how many leading characters of a secret Redact keeps.
const redactPrefix = 6

// Redact returns a form of secret safe for logs: its first few characters and its
// length, e.g. "eyJraW…(215)". Secrets of up to 12 characters show no prefix at all.
func Redact(secret string) string {
	if secret == "" {
		return `""`
	}
	if len(secret) <= 2*redactPrefix {
		return fmt.Sprintf("…(%d)", len(secret))
	}
	return fmt.Sprintf("%s…(%d)", secret[:redactPrefix], len(secret))
}

// jwtParser reads claims without verifying signatures: the cache holds no broker key and
// only needs the expiry time. It is safe for concurrent use.
var jwtParser = jwt.NewParser()

// JWTExpiry returns the exp claim of a JWT, read without verifying its signature.
// ok is false when s is not a JWT or has no usable exp claim; that is not an error,
// since brokers also issue opaque tokens.
func JWTExpiry(s string) (exp time.Time, ok bool) {
	if s == "" {
		return time.Time{}, false
	}
	var claims jwt.RegisteredClaims
	if _, _, err := jwtParser.ParseUnverified(s, &claims); err != nil || claims.ExpiresAt == nil {
		return time.Time{}, false
	}
	return claims.ExpiresAt.Time, true
}

// resolveExpiry returns when token expires: the broker's explicit expiry when it is set,
// else the token's JWT exp claim, else obtained plus defaultLifetime.
func resolveExpiry(explicit time.Time, token string, obtained time.Time, defaultLifetime time.Duration) time.Time {
	if !explicit.IsZero() {
		return explicit
	}
	if exp, ok := JWTExpiry(token); ok {
		return exp
	}
	return obtained.Add(defaultLifetime)
}
