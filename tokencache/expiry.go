package tokencache

import (
	"time"

	"github.com/golang-jwt/jwt/v5"
)

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
