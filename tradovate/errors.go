package tradovate

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors returned by the Authenticator. They are wrapped (usually in an [*APIError] or a
// [*CooldownError]); test for them with [errors.Is].
var (
	// ErrBadCredentials means the broker refused the user name or password (errorText on
	// HTTP 200, HTTP 401, or a TradingView "s" other than "ok"). It is never retried:
	// retrying bad passwords is what earns a captcha.
	ErrBadCredentials = errors.New("tradovate: bad credentials")
	// ErrCaptchaRequired means the broker answered a penalty with p-captcha true: a human
	// must solve a captcha in the web app (or wait about an hour). The user is not tried
	// again for Options.Cooldown, by any process sharing the Redis.
	ErrCaptchaRequired = errors.New("tradovate: captcha required")
	// ErrLockedOut means the broker answered HTTP 429 or 423. The user is not tried again
	// for Options.Cooldown, and no login of any user is tried for that time either,
	// since the lockout applies to the caller's whole subnet.
	ErrLockedOut = errors.New("tradovate: locked out")
	// ErrPenaltyLimit means time penalties (p-ticket, p-time) kept coming after
	// Options.MaxPenaltyRetries resends, or one asked for a wait past the context deadline.
	ErrPenaltyLimit = errors.New("tradovate: time penalty not cleared")
	// ErrInactiveUser means the broker reported a userStatus other than "Active"; the
	// [*APIError] carries the status.
	ErrInactiveUser = errors.New("tradovate: user not active")
	// ErrLoginBudgetExhausted means the fleet-wide login budget (Options.LoginBudget per
	// Options.LoginBudgetWindow) had no room within Options.LoginBudgetWait or the
	// context's deadline.
	ErrLoginBudgetExhausted = errors.New("tradovate: login budget exhausted")
	// ErrUnavailable means the broker could not be reached or answered HTTP 5xx or 408.
	// Such failures are retried with backoff; an error wrapping it is returned once
	// Options.MaxAttempts is used up.
	ErrUnavailable = errors.New("tradovate: broker unavailable")
	// ErrMalformedResponse means the broker answered HTTP 200 with a body that is not the
	// expected JSON, or with neither a token nor an error, and nothing in it says that a
	// login was accepted. It is retried like [ErrUnavailable].
	ErrMalformedResponse = errors.New("tradovate: malformed response")
	// ErrUnknownLoginAnswer means the broker accepted a login (a TradingView-style
	// answer with "s": "ok", or an official answer carrying accessToken, mdAccessToken,
	// expirationTime or userId) but its token could not be read. The login opened a
	// session, so it is never sent again automatically: the error is not Temporary, and
	// no process sharing the Redis logs the user in again for Options.Cooldown (the
	// attempts fail at once with a [*CooldownError] whose Reason is this error) unless
	// [Authenticator.ClearCooldown] is called. The message describes the answer's
	// structure (member names and JSON types), never its values.
	ErrUnknownLoginAnswer = errors.New("tradovate: login accepted but its answer is not understood")
	// ErrUnexpectedStatus means the broker answered an HTTP status the documentation does
	// not describe for the endpoint (e.g. 400 to a login, which means a missing body). It
	// is not retried. A 400 to a renewal or a check is a rejected token instead.
	ErrUnexpectedStatus = errors.New("tradovate: unexpected HTTP status")
	// ErrUnknownUser means the credential source has no credential for the user.
	ErrUnknownUser = errors.New("tradovate: no credential for user")
	// ErrNoUserInfo is returned by [ReadUserInfo] when no login or renewal has stored
	// the user's information yet.
	ErrNoUserInfo = errors.New("tradovate: no user information stored")
	// ErrRequestRefused means the TradingView-style API answered a request other than a
	// login with "s" other than "ok" (its errmsg is in the [*APIError]'s Text). It is
	// not retried.
	ErrRequestRefused = errors.New("tradovate: request refused")
	// ErrNoDeviceID is returned by [ReadDeviceID] when no deviceId is pinned for the user
	// and none has been stored yet (no official login has been made).
	ErrNoDeviceID = errors.New("tradovate: no deviceId stored")
)

// APIError reports a failed exchange with the broker. Err is one of the package's
// sentinel errors (or [tokencache.ErrTokenRejected], or a context error), so callers
// branch with [errors.Is]. Its message names the endpoint and user and never contains a
// password or token.
type APIError struct {
	// Endpoint is "auth/accesstokenrequest", "authorize", "auth/renewaccesstoken",
	// "auth/me", "account/list" or "accounts" (the TradingView-style account list).
	Endpoint string
	// User is the login user.
	User string
	// StatusCode is the HTTP status of the last answer, 0 when none was received.
	StatusCode int
	// Text is the broker's errorText or errmsg, "" when it gave none.
	Text string
	// UserStatus is the userStatus the broker reported, when it was not "Active".
	UserStatus string
	// Attempts is how many requests were sent, counting retries and penalty resends.
	Attempts int
	// Err is the kind of failure.
	Err error

	temporary bool
}

// Error describes the failure: endpoint, user, HTTP status, kind and the broker's text.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tradovate: %s for user %q", e.Endpoint, e.User)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	}
	if e.Err != nil {
		b.WriteString(": " + strings.TrimPrefix(e.Err.Error(), "tradovate: "))
	}
	if e.UserStatus != "" {
		fmt.Fprintf(&b, ": userStatus %q", e.UserStatus)
	}
	if e.Text != "" {
		fmt.Fprintf(&b, ": broker says %q", e.Text)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

// Unwrap returns the kind of failure.
func (e *APIError) Unwrap() error { return e.Err }

// Temporary reports whether trying again later may succeed: true for [ErrUnavailable]
// and [ErrMalformedResponse], false for everything else (bad credentials, captcha,
// lockout, inactive user, rejected token, an accepted login whose answer could not be
// read, a cancelled context).
func (e *APIError) Temporary() bool { return e.temporary }

// CooldownError is returned by Login, without contacting the broker, while a user (or
// every user, after a lockout) is in a cool-down after a captcha, a lockout or a login
// answer that could not be read ([ErrUnknownLoginAnswer]). The state is shared through
// Redis, so every process sharing it sees the same cool-down.
type CooldownError struct {
	// User is the login user that was refused.
	User string
	// AllUsers is true when the cool-down applies to every login (after HTTP 429 or 423).
	AllUsers bool
	// Until is when the cool-down ends.
	Until time.Time
	// Reason is [ErrCaptchaRequired], [ErrLockedOut] or [ErrUnknownLoginAnswer].
	Reason error
	// Cause describes what started the cool-down, e.g. `HTTP 429 on authorize for user "X"`.
	Cause string
}

// Error says who is paused, until when and why.
func (e *CooldownError) Error() string {
	scope := fmt.Sprintf("logins of user %q", e.User)
	if e.AllUsers {
		scope = fmt.Sprintf("all logins (asked for user %q)", e.User)
	}
	msg := fmt.Sprintf("tradovate: %s paused until %s: %s", scope,
		e.Until.UTC().Format(time.RFC3339), strings.TrimPrefix(fmt.Sprint(e.Reason), "tradovate: "))
	if e.Cause != "" {
		msg += " (" + e.Cause + ")"
	}
	return msg
}

// Unwrap returns Reason.
func (e *CooldownError) Unwrap() error { return e.Reason }

// Temporary is false: the cool-down lasts until Until, far longer than a retry loop.
func (e *CooldownError) Temporary() bool { return false }

// scrub removes secret from broker-provided text, in case a broker ever echoes it.
func scrub(text string, secrets ...string) string {
	for _, s := range secrets {
		if len(s) >= 4 {
			text = strings.ReplaceAll(text, s, "[REDACTED]")
		}
	}
	return text
}
