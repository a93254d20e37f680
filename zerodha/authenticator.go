package zerodha

import (
	"context"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Authenticator is the [tokencache.Authenticator] of a Kite Connect app, made by
// [App.Authenticator]. It never logs in: Kite requires a human to log in once a day. Its
// Login returns a [*LoginRequiredError] carrying the URL to open, and logs it once per
// call.
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
// calls Login too, which logs the URL as an early warning while the current token is
// still served. The next login stored
// by [App.RedirectHandler] reaches every process through the cache's invalidation, and
// [tokencache.Cache.Watch] channels receive it. A nil Authenticator (a read-only cache)
// works too, but its callers get [tokencache.ErrNoToken] with no URL.
//
// An Authenticator is safe for concurrent use.
type Authenticator struct {
	app *App
}

var _ tokencache.Authenticator = (*Authenticator)(nil)

// Login returns no token and a [*LoginRequiredError] for user: Options.StartURL when
// set, else a newly minted Kite login URL (valid for Options.StateTTL). It never
// contacts Kite.
func (a *Authenticator) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	link, err := a.app.loginLink(ctx)
	a.app.opts.Logger.Warn("zerodha: a human must log in to Kite", "user", user, "url", link)
	return nil, &LoginRequiredError{User: user, URL: link, Err: err}
}
