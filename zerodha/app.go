package zerodha

import (
	"net/http"
	"time"

	"github.com/brokertoken/brokertoken/tokencache"
)

// App is one Kite Connect app (an api_key) as seen by brokertoken: it makes login URLs,
// answers Kite's redirect, exchanges request tokens and builds the Authenticator and
// Transport that services use. Create it with [New]; its methods are safe for
// concurrent use.
type App struct {
	opts Options
}

// New returns an App for opts. It does not contact Kite or Redis.
//
// A service that only uses tokens needs APIKey and Redis; the process that answers
// Kite's redirect also needs APISecret.
func New(opts Options) (*App, error) {
	o, err := opts.init()
	if err != nil {
		return nil, err
	}
	return &App{opts: o}, nil
}

// APIKey returns the app's api_key.
func (a *App) APIKey() string { return a.opts.APIKey }

// User returns the name under which the cache stores the app's token ([Options.User]):
// the account services pass to [tokencache.Cache.Token], [tokencache.Cache.Watch] and
// [tokencache.Cache.Invalidate].
func (a *App) User() string { return a.opts.User }

// Expiry returns when a token obtained at obtainedAt is taken to expire: the next
// [Options.ExpiryTime] (06:00 IST by default) after it.
func (a *App) Expiry(obtainedAt time.Time) time.Time {
	return ExpiryAfter(obtainedAt, a.opts.ExpiryTime)
}

// Authenticator returns the app's [tokencache.Authenticator] for services' caches. See
// [Authenticator].
func (a *App) Authenticator() *Authenticator { return &Authenticator{app: a} }

// Transport returns a [Transport] that authorizes requests with the app's token from
// cache and sends them with base (nil: [http.DefaultTransport]).
func (a *App) Transport(cache *tokencache.Cache, base http.RoundTripper) *Transport {
	return &Transport{Cache: cache, User: a.opts.User, APIKey: a.opts.APIKey, Base: base}
}
