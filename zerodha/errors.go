package zerodha

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Errors of this package. Most are returned wrapped, in an [*APIError] or a
// [*LoginRequiredError] (itself wrapped by the cache); test for them with [errors.Is].
var (
	// ErrLoginRequired means no valid token exists and only a human can obtain one, by
	// logging in to Kite. [*LoginRequiredError] carries the URL to open.
	ErrLoginRequired = errors.New("zerodha: kite login required")
	// ErrTokenException means Kite answered with error_type TokenException: on an API
	// call, the access token is expired or was killed by a newer login; on the session
	// exchange, the request_token is used or expired, or the checksum is wrong.
	ErrTokenException = errors.New("zerodha: kite TokenException")
	// ErrUnavailable means Kite could not be reached, or answered HTTP 5xx or 429.
	ErrUnavailable = errors.New("zerodha: kite unavailable")
	// ErrMalformedResponse means Kite answered success with a body that is not the
	// expected JSON.
	ErrMalformedResponse = errors.New("zerodha: malformed kite response")
	// ErrNoSecret means an exchange or logout was attempted by an App without
	// Options.APISecret.
	ErrNoSecret = errors.New("zerodha: Options.APISecret is not set")
	// ErrRenewalNotDue is returned by [Authenticator.Renew] before the morning expiry:
	// Kite expires every token at that time of day, so renewing earlier gains nothing.
	// The cache keeps serving the current token and renews once it expires.
	ErrRenewalNotDue = errors.New("zerodha: renewal not due before the morning expiry")
)

// LoginRequiredError is what the [Authenticator] returns: a human must log in to Kite at
// URL. The cache wraps it in a [*tokencache.RefreshError]; get it back with [errors.As].
// It matches [ErrLoginRequired] with [errors.Is], and its Temporary method reports false,
// so the cache waits its RetryMax before calling the Authenticator again.
type LoginRequiredError struct {
	// User is the cache user whose token is missing or rejected.
	User string
	// URL is where a human logs in: Options.StartURL, or a Kite login URL with a
	// single-use state valid for Options.StateTTL. It is "" when no state could be
	// stored, and then Err says why.
	URL string
	// Err is why no URL could be made, or nil.
	Err error
	// RenewErr is why renewing with the stored refresh token failed (Kite refused it),
	// or nil when there was none to try. It is not in the Unwrap chain: the error is
	// about the login a human must make.
	RenewErr error
}

// Error says that a login is needed and where, and why the refresh token did not do.
func (e *LoginRequiredError) Error() string {
	msg := fmt.Sprintf("zerodha: a human must log in to Kite for %s: open %s", e.User, e.URL)
	if e.URL == "" {
		msg = fmt.Sprintf("zerodha: a human must log in to Kite for %s (no login URL: %v)", e.User, e.Err)
	}
	if e.RenewErr != nil {
		msg += fmt.Sprintf(" (renewing with the refresh token failed: %v)", e.RenewErr)
	}
	return msg
}

// Is reports whether target is [ErrLoginRequired].
func (e *LoginRequiredError) Is(target error) bool { return target == ErrLoginRequired }

// Unwrap returns why no URL could be made, or nil.
func (e *LoginRequiredError) Unwrap() error { return e.Err }

// Temporary reports false: trying again soon does not help until a human logs in.
func (e *LoginRequiredError) Temporary() bool { return false }

// Kite's error types, the values of [APIError.ErrorType] ("error_type" in Kite's
// answers). Kite may answer them with any HTTP status, 200 included; the package reads
// them whatever the status, as the official Python client does.
const (
	TokenException   = "TokenException"
	InputException   = "InputException"
	NetworkException = "NetworkException"
	DataException    = "DataException"
	GeneralException = "GeneralException"
)

// APIError reports a failed request to Kite. Its message names the endpoint, the HTTP
// status, Kite's error_type and message; it never contains a token, a checksum or the
// secret. It matches [ErrTokenException] when ErrorType is "TokenException", and
// wraps [ErrUnavailable] or [ErrMalformedResponse] when those apply.
type APIError struct {
	// Endpoint is the request's path, e.g. "/session/token".
	Endpoint string
	// StatusCode is the HTTP status, 0 when no answer was received. Kite sometimes
	// answers an error with 200.
	StatusCode int
	// ErrorType is Kite's error_type (e.g. "TokenException"), "" when it gave none.
	ErrorType string
	// Message is Kite's message, cleaned of control characters and shortened, or the
	// HTTP status text when Kite gave none.
	Message string
	// Err is the kind of failure ([ErrUnavailable], [ErrMalformedResponse]) with its
	// cause, or nil for an ordinary error answer.
	Err error
}

// Error describes the failure.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("zerodha: ")
	b.WriteString(e.Endpoint)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	}
	if e.ErrorType != "" {
		b.WriteString(" ")
		b.WriteString(e.ErrorType)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Is reports whether target is [ErrTokenException] and Kite answered a TokenException.
func (e *APIError) Is(target error) bool {
	return target == ErrTokenException && e.ErrorType == TokenException
}

// Unwrap returns Err.
func (e *APIError) Unwrap() error { return e.Err }

// Temporary reports whether trying again later may succeed: Kite was unreachable,
// overloaded (HTTP 5xx, 429) or said NetworkException or DataException.
func (e *APIError) Temporary() bool {
	switch {
	case errors.Is(e.Err, ErrUnavailable):
		return true
	case e.StatusCode >= 500, e.StatusCode == http.StatusTooManyRequests:
		return true
	case e.ErrorType == NetworkException, e.ErrorType == DataException:
		return true
	}
	return false
}
