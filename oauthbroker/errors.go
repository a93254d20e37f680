package oauthbroker

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Errors of this package. Most come wrapped in a [*LoginRequiredError] or a
// [*TokenError] (and, from a cache, in a [*tokencache.RefreshError]); test for them
// with [errors.Is].
var (
	// ErrLoginRequired means no token can be obtained without a human: nobody
	// authorized the app for the user yet, or the provider refused the refresh token.
	// [*LoginRequiredError] carries the URL to open.
	ErrLoginRequired = errors.New("oauthbroker: a human must authorize the app")
	// ErrNotAuthorized is the reason of a [*LoginRequiredError] when no refresh token
	// is stored: the app was never authorized for the user (or Redis lost its data).
	ErrNotAuthorized = errors.New("oauthbroker: no refresh token stored")
	// ErrRecordFormat means the user's stored grant was written in a format this
	// version does not know (by a newer oauthbroker): it is neither used nor replaced,
	// so an older process never destroys what a newer one wrote. Not temporary.
	ErrRecordFormat = errors.New("oauthbroker: the stored grant was written by a newer version of oauthbroker")
	// ErrRevoked is the reason of a [*LoginRequiredError] once the provider refused the
	// refresh token (invalid_grant: expired, revoked, or reused after a rotation).
	// Every process then stops refreshing the user until a human authorizes again.
	ErrRevoked = errors.New("oauthbroker: refresh token refused by the provider")
	// ErrInvalidGrant matches a [*TokenError] whose error code says the grant (the
	// refresh token or authorization code) is invalid, expired, revoked or was reused:
	// "invalid_grant", or what [Provider.GrantRefused] recognizes.
	ErrInvalidGrant = errors.New("oauthbroker: invalid_grant")
	// ErrUnavailable matches a [*TokenError] for a provider that could not be reached,
	// or answered HTTP 5xx or 429: trying again later may work.
	ErrUnavailable = errors.New("oauthbroker: provider unavailable")
	// ErrLost is the reason of a [*LoginRequiredError] when Redis no longer holds the
	// refresh token of a grant it held (it lost its data, or evicted the key; see the
	// README on persistence and maxmemory-policy). Only a human can help, unless the
	// process holding a rotation of that grant stores it.
	ErrLost = errors.New("oauthbroker: refresh token lost by Redis")
	// ErrInvalidClient matches a [*TokenError] whose error code is "invalid_client": the
	// provider refused the app's credentials (a wrong or rotated ClientID or
	// ClientSecret). It is not Temporary, nothing was rotated, and only an operator
	// fixing the app's configuration helps; the refresh token stays usable.
	ErrInvalidClient = errors.New("oauthbroker: invalid_client")
	// ErrRotationLost means the provider answered a refresh but the answer could not be
	// used (an unreadable body) or stored (Redis still away when [Broker.Close] gave
	// up after [Options.CommitGrace]). The refresh token it held is then lost; the next
	// refresh uses the previous one, which a strict provider refuses.
	ErrRotationLost = errors.New("oauthbroker: rotated tokens lost")
	// ErrRotationPending means the provider rotated the refresh token and Redis has not
	// taken the new one yet: the Broker holds it and stores it in the background until
	// Redis takes it (or a newer grant supersedes it), and refreshes nothing meanwhile.
	// It is temporary.
	ErrRotationPending = errors.New("oauthbroker: rotated refresh token not stored yet")
	// ErrClosed is returned by the [Authenticator] of a closed [Broker].
	ErrClosed = errors.New("oauthbroker: broker closed")
	// ErrRotationInFlight means another process is using the refresh token right now
	// (or was, and died): this one waits rather than reuse it. It is temporary.
	ErrRotationInFlight = errors.New("oauthbroker: another process is rotating the refresh token")
	// ErrInvalidState answers a redirect whose state is unknown, expired or used.
	ErrInvalidState = errors.New("oauthbroker: unknown, expired or used login state")
)

// TokenError reports a failed request to the provider's token endpoint. Its message
// names the provider, the grant, the HTTP status and the provider's error code and
// description (cleaned and shortened); it never contains a token, a code or the client
// secret.
type TokenError struct {
	// Provider is [Provider.Name].
	Provider string
	// Grant is "authorization_code" or "refresh_token".
	Grant string
	// StatusCode is the HTTP status, 0 when no answer was received.
	StatusCode int
	// Code is the provider's "error" member, e.g. "invalid_grant" ("" if none).
	Code string
	// Description is the provider's "error_description", cleaned and shortened.
	Description string
	// refused is whether Code (and Description) say the grant itself was refused.
	refused bool
	// Err is the cause when no usable answer was received, or nil.
	Err error
}

// Error describes the failure without any secret.
func (e *TokenError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "oauthbroker: %s token request (%s)", e.Provider, e.Grant)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, ": %s", e.Description)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Is reports whether target is [ErrInvalidGrant] and the provider refused the grant,
// [ErrInvalidClient] and it refused the app's credentials, or [ErrUnavailable] and the
// failure is the provider's or the network's.
func (e *TokenError) Is(target error) bool {
	switch target {
	case ErrInvalidGrant:
		return e.refused
	case ErrInvalidClient:
		return e.Code == "invalid_client"
	case ErrUnavailable:
		return e.unavailable()
	}
	return false
}

// Unwrap returns the cause, or nil.
func (e *TokenError) Unwrap() error { return e.Err }

// Temporary reports whether trying again later may work: the provider could not be
// reached, or answered 5xx or 429. A refused grant or client is not temporary.
func (e *TokenError) Temporary() bool { return e.unavailable() }

func (e *TokenError) unavailable() bool {
	return e.StatusCode == 0 || e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests
}

// LoginRequiredError is what the [Authenticator] returns when only a human can help:
// open URL and authorize the app again. The cache wraps it in a
// [*tokencache.RefreshError]; get it back with [errors.As]. It matches
// [ErrLoginRequired] and its Reason ([ErrNotAuthorized] or [ErrRevoked]) with
// [errors.Is], and also what Cause matches (such as [ErrInvalidGrant]). It is not
// Temporary: the cache waits its RetryMax before asking again, and each later attempt
// costs one Redis round trip and no request to the provider.
type LoginRequiredError struct {
	// User is the cache user without a usable refresh token.
	User string
	// Reason is [ErrNotAuthorized], [ErrRevoked] or [ErrLost].
	Reason error
	// URL is where a human authorizes the app: [Options.StartURL], or a newly minted
	// authorization URL valid for [Options.StateTTL]; "" when none could be made. A
	// minted URL carries a login state, so Error shows it only when it is StartURL.
	URL string
	// Since is when the provider refused the refresh token, or when the loss was
	// noticed (zero otherwise).
	Since time.Time
	// Detail says why, as stored for every process (for example the provider's error,
	// or that a rotation was interrupted before its answer was stored).
	Detail string
	// Cause is the provider's refusal when this process received it, or nil.
	Cause error

	urlHasState bool // URL is a minted authorization URL: kept out of Error and logs
}

// Error says that a human must authorize the app, why, and where.
func (e *LoginRequiredError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "oauthbroker: a human must authorize the app for %s", e.User)
	switch {
	case errors.Is(e.Reason, ErrLost):
		b.WriteString(": Redis lost the refresh token")
		if !e.Since.IsZero() {
			fmt.Fprintf(&b, " (noticed at %s)", e.Since.UTC().Format(time.RFC3339))
		}
	case errors.Is(e.Reason, ErrRevoked):
		b.WriteString(": the provider refused the refresh token")
		if !e.Since.IsZero() {
			fmt.Fprintf(&b, " at %s", e.Since.UTC().Format(time.RFC3339))
		}
	case e.Reason != nil:
		b.WriteString(": no refresh token is stored")
	}
	if e.Detail != "" {
		fmt.Fprintf(&b, " (%s)", e.Detail)
	}
	if e.URL != "" && !e.urlHasState {
		fmt.Fprintf(&b, "; open %s", e.URL)
	}
	return b.String()
}

// Is reports whether target is [ErrLoginRequired].
func (e *LoginRequiredError) Is(target error) bool { return target == ErrLoginRequired }

// Unwrap returns Reason and Cause.
func (e *LoginRequiredError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.Reason, e.Cause} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// Temporary reports false: nothing but a human's authorization helps.
func (e *LoginRequiredError) Temporary() bool { return false }

// temporaryError marks a failure that trying again soon may fix.
type temporaryError struct{ error }

func (temporaryError) Temporary() bool { return true }
func (e temporaryError) Unwrap() error { return e.error }

// redisErr wraps a Redis failure in [tokencache.ErrRedisUnavailable] with what was
// being done.
func redisErr(doing string, err error) error {
	return fmt.Errorf("%w: oauthbroker: %s: %v", tokencache.ErrRedisUnavailable, doing, err)
}

// clean makes text from the provider safe and short for a message: printable ASCII,
// at most n bytes.
func clean(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= n {
			b.WriteString("…")
			break
		}
		if r < 0x20 || r > 0x7e {
			r = ' '
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}
