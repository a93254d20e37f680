package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
	"github.com/brokertoken/brokertoken/zerodha"
)

// Exit codes.
const (
	exitOK      = 0 // success, or a clean stop on SIGINT/SIGTERM
	exitFailure = 1 // the command ran and failed: no token, Redis or broker error
	exitUsage   = 2 // usage or configuration error; nothing was written to Redis
)

// errTokenKept is invalidate's failure when the daemons checked the reported token with
// the broker, which still accepts it: they keep it, and nothing replaces it (exit 1).
var errTokenKept = errors.New("not replaced: the broker still accepts the token")

// usageError is a usage or configuration error: the command did not start (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// usagef returns a usageError with a formatted message.
func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// exitCode maps an error returned by a command to the process exit code.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	}
	return exitFailure
}

// oneLine flattens a message onto one line, so every error is a single line on stderr.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// failureKind classifies a refresh failure for metrics and alerts. The kinds are stable
// label values: redis, unknown_login_answer, captcha, locked_out, bad_credentials, login_budget, penalty,
// inactive_user, unavailable, malformed_response, unexpected_status, unknown_user,
// token_rejected, login_required, renewal_not_due (Kite), no_token, closed, timeout,
// canceled, other; for OAuth2 users (oauthbroker): refresh_token_revoked, grant_lost,
// not_authorized, invalid_client, rotation_pending (a rotated refresh token held until
// Redis takes it), rotation_lost, rotation_in_flight.
func failureKind(err error) string {
	switch {
	// oauthbroker's first: a held rotation or a lost grant may wrap a Redis error too,
	// and must be named as what it is.
	case errors.Is(err, oauthbroker.ErrRotationPending):
		return "rotation_pending"
	case errors.Is(err, oauthbroker.ErrRotationLost):
		return "rotation_lost"
	case errors.Is(err, oauthbroker.ErrLost):
		return "grant_lost"
	case errors.Is(err, oauthbroker.ErrRevoked), errors.Is(err, oauthbroker.ErrInvalidGrant):
		return "refresh_token_revoked"
	case errors.Is(err, oauthbroker.ErrNotAuthorized):
		return "not_authorized"
	case errors.Is(err, oauthbroker.ErrInvalidClient):
		return "invalid_client"
	case errors.Is(err, oauthbroker.ErrRotationInFlight):
		return "rotation_in_flight"
	case errors.Is(err, tokencache.ErrRedisUnavailable):
		return "redis"
	case errors.Is(err, tradovate.ErrUnknownLoginAnswer):
		return "unknown_login_answer"
	case errors.Is(err, tradovate.ErrCaptchaRequired):
		return "captcha"
	case errors.Is(err, tradovate.ErrLockedOut):
		return "locked_out"
	case errors.Is(err, tradovate.ErrBadCredentials):
		return "bad_credentials"
	case errors.Is(err, tradovate.ErrLoginBudgetExhausted):
		return "login_budget"
	case errors.Is(err, tradovate.ErrPenaltyLimit):
		return "penalty"
	case errors.Is(err, tradovate.ErrInactiveUser):
		return "inactive_user"
	case errors.Is(err, tradovate.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, tradovate.ErrMalformedResponse):
		return "malformed_response"
	case errors.Is(err, tradovate.ErrUnexpectedStatus):
		return "unexpected_status"
	case errors.Is(err, tradovate.ErrUnknownUser):
		return "unknown_user"
	case errors.Is(err, zerodha.ErrLoginRequired):
		return "login_required"
	case errors.Is(err, zerodha.ErrRenewalNotDue):
		return "renewal_not_due"
	case errors.Is(err, zerodha.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, zerodha.ErrMalformedResponse):
		return "malformed_response"
	case errors.Is(err, oauthbroker.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, oauthbroker.ErrLoginRequired):
		return "login_required"
	case errors.Is(err, tokencache.ErrTokenRejected), errors.Is(err, zerodha.ErrTokenException):
		return "token_rejected"
	case errors.Is(err, tokencache.ErrNoToken):
		return "no_token"
	case errors.Is(err, tokencache.ErrClosed):
		return "closed"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "other"
}

// blockingKind reports whether kind stops a user's logins for a long time (a captcha
// or a lockout): such failures get an alert of their own.
func blockingKind(kind string) bool { return kind == "captcha" || kind == "locked_out" }

// cooldownOf returns the end of the cool-down err reports, and whether it pauses every
// login; zero when err carries none (the first captcha or lockout is an APIError).
func cooldownOf(err error) (until time.Time, allUsers bool) {
	var ce *tradovate.CooldownError
	if errors.As(err, &ce) {
		return ce.Until, ce.AllUsers
	}
	return time.Time{}, false
}
