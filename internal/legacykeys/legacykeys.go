// Package legacykeys reaches the repair calls of a tokencache.Cache's legacy layout
// (token:{account}, auth:{user}, the {user} list, token_expiry:{user}) for the project's
// own code: the daemon, which checks and restores the keys at every check, and
// tradovate's AccountSync, which rewrites them when a user's accounts change. Users do
// not need them: a cache with Options.LegacyKeys writes the keys whenever it stores a
// token. The functions are set by package tokencache when it is initialized, so the
// calls stay off its public API; pass them a *tokencache.Cache.
package legacykeys

import "context"

var (
	// Sync writes the legacy keys of user for the token stored in Redis unless they
	// are in step with it already, deleting the keys of accounts the user no longer
	// has, and reports whether it wrote. It claims the legacy keys for the cache's
	// prefix first and fails with tokencache.ErrLegacyKeysOwned when another prefix
	// owns them.
	Sync func(cache any, ctx context.Context, user string) (written bool, err error)

	// CheckKeys compares the legacy keys of user with the token stored in Redis,
	// writing nothing. A key holding another token was written by a process outside
	// the fleet, or, for the moment between a new token's record and its keys, by the
	// fleet itself: the same Fingerprint on a second check tells the two apart.
	// Errors: tokencache.ErrLegacyKeysOwned, ErrInvalidName, ErrRecordFormat,
	// ErrRedisUnavailable, ErrClosed.
	CheckKeys func(cache any, ctx context.Context, user string) (Check, error)
)

// Check is what CheckKeys found in a user's legacy keys.
type Check struct {
	// User is the login user.
	User string
	// Version is the version of the stored token the keys were compared with; 0 when no
	// valid token is stored (then nothing is Foreign or OutOfStep).
	Version int64
	// Foreign lists the token keys (token:{account}, auth:{user}) holding a token other
	// than the stored one.
	Foreign []ForeignKey
	// Missing lists the token keys that do not exist (expired, deleted, not written
	// yet).
	Missing []string
	// OutOfStep is true when Sync would write: a key is Foreign or Missing, or the
	// {user} list does not name exactly the token keys.
	OutOfStep bool
}

// ForeignKey is a legacy key holding a token other than the one the fleet stored. It
// carries no secret.
type ForeignKey struct {
	// Key is the key, e.g. "token:PAAPEX2720450000001".
	Key string
	// Token is what the key holds, redacted (tokencache.Redact).
	Token string
	// Fingerprint tells tokens apart without showing them: the first 12 hexadecimal
	// digits of the SHA-256 of the value.
	Fingerprint string
}
