package tokencache

import (
	"errors"
	"fmt"
)

// Errors returned by the cache. Test for them with [errors.Is].
var (
	// ErrNoToken means no valid token exists for the user and this cache may not obtain
	// one: it is read-only (no Authenticator) and nothing valid is stored in Redis.
	ErrNoToken = errors.New("tokencache: no token")
	// ErrRedisUnavailable wraps failures to reach Redis (network errors, timeouts).
	ErrRedisUnavailable = errors.New("tokencache: redis unavailable")
	// ErrClosed is returned by calls on a closed Cache.
	ErrClosed = errors.New("tokencache: cache closed")
	// ErrInvalidToken is returned by Set for a token that is empty or already expired.
	ErrInvalidToken = errors.New("tokencache: invalid token")
	// ErrInvalidName is returned by Token, Set, Invalidate and Status for an account or
	// user name that could not be stored safely (see [CheckName]); the error says which
	// rule the name breaks.
	ErrInvalidName = errors.New("tokencache: invalid account or user name")
	// ErrEmptyName is the ErrInvalidName of an empty name: no broker login has one.
	ErrEmptyName = fmt.Errorf("%w: empty", ErrInvalidName)
	// ErrTokenRejected is what a Renewer wraps when the broker no longer accepts the
	// current token; the cache then logs in instead of renewing.
	ErrTokenRejected = errors.New("tokencache: token rejected by broker")
	// ErrRenewalNotDue is what a Renewer wraps when renewing now would gain nothing (Kite
	// expires every token at the same morning time, however recently renewed). It is
	// no failure: the cache keeps serving the current token, logs it at debug level
	// only, calls no RefreshFailed hook, and asks again once the token turns unusable
	// (then with Login) or after RetryMax, whichever comes first.
	ErrRenewalNotDue = errors.New("tokencache: renewal not due")
)

// RefreshError reports that obtaining a new token from the broker failed. Err is the
// Authenticator's or Renewer's error, available to [errors.Is] and [errors.As] (for
// example a broker package's captcha or lockout error).
type RefreshError struct {
	User string // login user
	Op   string // "login" or "renew"
	Err  error
}

func (e *RefreshError) Error() string {
	return fmt.Sprintf("tokencache: %s %s: %v", e.Op, e.User, e.Err)
}

// Unwrap returns the broker error.
func (e *RefreshError) Unwrap() error { return e.Err }
