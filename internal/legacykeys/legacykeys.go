// Package legacykeys reaches the repair calls of a tokencache.Cache's legacy layout
// (token:{account}, auth:{user}, the {user} list, token_expiry:{user}) for the project's
// own code: the daemon, which checks and restores the keys at every check, and
// tradovate's AccountSync, which rewrites them when a user's accounts change. Users do
// not need them: a cache with Options.LegacyKeys writes the keys whenever it stores a
// token. The functions are set by package tokencache when it is initialized, so the
// calls stay off its public API; pass them a *tokencache.Cache.
package legacykeys

import (
	"context"
	"errors"
)

var (
	// Sync writes the legacy keys of user for the token stored in Redis unless they
	// are in step with it already, and reports whether it wrote. It adds the user's
	// token keys to the {user} list and never removes one, nor deletes a key: another
	// process may know accounts this one does not know yet (see Drop). It claims the
	// legacy keys for the cache's prefix first and fails with
	// tokencache.ErrLegacyKeysOwned when another prefix owns them. When the {user} key
	// is not a list, or the client may not touch it, the token keys are written and
	// the error wraps ErrList.
	Sync func(cache any, ctx context.Context, user string) (written bool, err error)

	// Drop removes accounts the user no longer has from the legacy layout: their
	// entries leave the {user} list, and their token:{account} keys are deleted,
	// except the key of an account that is the user's again, or another user's now
	// (then only the list entry goes). Only a process that saw the broker drop the
	// accounts calls it (tradovate's AccountSync, on AccountChange.Removed): a name
	// missing from one process's map is no evidence. It returns the keys it deleted.
	// Errors: tokencache.ErrLegacyKeysOwned, ErrRedisUnavailable, ErrClosed.
	Drop func(cache any, ctx context.Context, user string, accounts []string) (deleted []string, err error)

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
	// {user} list lacks one of the token keys (other entries are no reason: see Sync).
	OutOfStep bool
	// List says why the {user} list was not compared, "" when it was: the key holds
	// another type (not ours), or the client may not read it (NOPERM: the writer's ACL
	// lacks the list's name). The token keys are compared and restored all the same.
	List string
}

// ErrList is wrapped by Sync's error when it wrote the token keys but left the {user}
// list alone: the key holds another type, or the client may not touch it.
var ErrList = errors.New("legacy list left alone")

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
