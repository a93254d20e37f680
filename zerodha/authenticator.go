package zerodha

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Authenticator is the [tokencache.Authenticator] of a Kite Connect app, made by
// [App.Authenticator]. Kite has no automated login: a human logs in once a day. When
// the app holds a refresh token (Kite gives one to some apps with each login) and this
// process has the API secret, the Authenticator renews the session with it, without a
// human; otherwise, or when Kite refuses the refresh token, its Login returns a
// [*LoginRequiredError] carrying the URL to open, and logs it.
//
// Give it to the caches of services that use the token:
//
//	cache, err := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: app.Authenticator()})
//
// When no valid token is stored (the morning expiry, or a 403 reported through
// [tokencache.Cache.Invalidate]), Token fails with a [*tokencache.RefreshError] wrapping
// the [*LoginRequiredError]; because that error is not Temporary, the cache asks again
// only after its RetryMax (default one minute) instead of looping. Inside the cache's
// RefreshBefore window (default 15 minutes before 06:00 IST) its background refresh
// calls Renew, which renews with the refresh token or, without one, logs the URL as an
// early warning while the current token is still served. The next login stored by
// [App.RedirectHandler] reaches every process through the cache's invalidation, and
// [tokencache.Cache.Watch] channels receive it. A nil Authenticator (a read-only cache)
// works too, but its callers get [tokencache.ErrNoToken] with no URL.
//
// It also implements [tokencache.Checker] with GET /user/profile. An Authenticator is
// safe for concurrent use.
type Authenticator struct {
	app *App
}

var (
	_ tokencache.Authenticator = (*Authenticator)(nil)
	_ tokencache.Renewer       = (*Authenticator)(nil)
	_ tokencache.Checker       = (*Authenticator)(nil)
)

// Login returns a new token renewed with the stored refresh token when there is one
// and this App has its API secret (one POST /session/refresh_token; a new refresh token
// in the answer is stored first). Otherwise, or when Kite refuses the refresh token
// (which is then forgotten, so it is sent once), it returns no token and a
// [*LoginRequiredError] for user: Options.StartURL when set, else a newly minted Kite
// login URL (valid for Options.StateTTL). When Kite or Redis could not be reached for
// the renewal, that error is returned instead: the cache tries again after its backoff.
func (a *Authenticator) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	tok, tried, err := a.renew(ctx, user)
	switch {
	case tried && err == nil:
		return tok, nil
	case tried && temporary(err):
		return nil, err
	}
	link, linkErr := a.app.loginLink(ctx)
	a.app.opts.Logger.Warn("zerodha: a human must log in to Kite", "user", user, "url", link)
	return nil, &LoginRequiredError{User: user, URL: link, Err: linkErr, RenewErr: err}
}

// Renew implements [tokencache.Renewer]; the cache calls it inside its RefreshBefore
// window, while current is still valid. Kite expires every token at the morning expiry
// time ([Options.ExpiryTime]), so a token renewed before it would die with current:
// when a refresh token is stored and renewing now would not give a later expiry than
// current's, Renew contacts no one and returns an error wrapping [ErrRenewalNotDue]
// (and [tokencache.ErrRenewalNotDue]); the cache keeps serving current, counts no
// failure, and once it expires calls Login, which renews after the expiry. Otherwise
// Renew is Login (without a refresh token, that is the early warning with the login
// URL).
func (a *Authenticator) Renew(ctx context.Context, user string, current *tokencache.Token) (*tokencache.Token, error) {
	rt, err := a.refreshToken(ctx, user)
	if err == nil && rt != "" && current != nil && !a.app.Expiry(time.Now()).After(current.Expiry) {
		return nil, notDueError{expiry: current.Expiry}
	}
	return a.Login(ctx, user)
}

// notDueError is ErrRenewalNotDue with the expiry it waits for. It also matches
// [tokencache.ErrRenewalNotDue], which the cache counts as no failure: it serves the
// current token and asks again once that turns unusable. Not Temporary, for caches
// that predate that error: they wait their RetryMax.
type notDueError struct{ expiry time.Time }

func (e notDueError) Error() string {
	return fmt.Sprintf("%v: the token expires at %s, and so would one renewed now", ErrRenewalNotDue,
		e.expiry.In(ist).Format("15:04:05 MST"))
}

func (e notDueError) Unwrap() []error { return []error{ErrRenewalNotDue, tokencache.ErrRenewalNotDue} }
func (e notDueError) Temporary() bool { return false }

// temporary reports whether err says that trying again soon may work.
func temporary(err error) bool {
	var t interface{ Temporary() bool }
	if errors.As(err, &t) {
		return t.Temporary()
	}
	return errors.Is(err, tokencache.ErrRedisUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// Check asks Kite whether it still accepts t, with one GET /user/profile
// ("Authorization: token api_key:access_token", X-Kite-Version: 3). It implements
// [tokencache.Checker]: nil when Kite answers with the profile, an error wrapping both
// [tokencache.ErrTokenRejected] and [ErrTokenException] when Kite answers a
// TokenException (whatever the HTTP status), and any other error when it could not tell.
// It needs no API secret, and is not retried.
func (a *Authenticator) Check(ctx context.Context, user string, t *tokencache.Token) error {
	const endpoint = "/user/profile"
	if t == nil || !usableToken(t.AccessToken) {
		return fmt.Errorf("%w: zerodha: no usable token to check for %s", tokencache.ErrTokenRejected, user)
	}
	h := http.Header{"Authorization": {AuthorizationHeader(a.app.opts.APIKey, t.AccessToken)}}
	status, body, err := a.app.do(ctx, http.MethodGet, endpoint, h, nil)
	if err != nil {
		return err
	}
	if e := kiteError(endpoint, status, body); e != nil {
		if errors.Is(e, ErrTokenException) {
			return fmt.Errorf("%w: %w", tokencache.ErrTokenRejected, e)
		}
		return e
	}
	if _, err := decodeProfile(body); err != nil {
		return &APIError{Endpoint: endpoint, StatusCode: status, Err: err}
	}
	return nil
}
