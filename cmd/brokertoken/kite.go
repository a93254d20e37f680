package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/zerodha"
)

// kiteUser is a Kite Connect app of the credentials file: the name its token is stored
// under and the zerodha.App that makes its login URLs, answers Kite's redirect and
// renews with the refresh token.
type kiteUser struct {
	entry kiteEntry
	app   *zerodha.App
}

// kiteEntries returns the file's Kite entries (none for a nil file).
func (f *credentialsFile) kiteEntries() []kiteEntry {
	if f == nil {
		return nil
	}
	return f.kite
}

// newKiteUsers makes one zerodha.App per Kite entry. The apps share the cache's Redis
// and prefix; their StartURL is the login page, so every "log in" link a human sees
// (errors, the redirect's failure pages) leads to the page, never to a login state
// minted for whoever asked.
func newKiteUsers(entries []kiteEntry, rdb redis.UniversalClient, cfg *config, log *slog.Logger) ([]*kiteUser, error) {
	out := make([]*kiteUser, 0, len(entries))
	for _, e := range entries {
		app, err := zerodha.New(zerodha.Options{
			APIKey:    e.APIKey,
			APISecret: e.APISecret,
			Redis:     rdb,
			Prefix:    cfg.prefix,
			User:      e.Name,
			UserID:    e.UserID,
			StartURL:  cfg.login.pageURL,
			LoginURL:  cfg.login.kiteLoginURL,
			APIURL:    cfg.login.kiteAPIURL,
			Logger:    log,
		})
		if err != nil {
			return nil, fmt.Errorf("credentials file %s: entry %d: %w", cfg.credentials, e.index, err)
		}
		out = append(out, &kiteUser{entry: e, app: app})
	}
	return out, nil
}

// kiteUser returns the Kite user named user, or nil.
func (d *deps) kiteUser(user string) *kiteUser {
	for _, k := range d.kite {
		if k.entry.Name == user {
			return k
		}
	}
	return nil
}

// authenticator returns the cache's Authenticator: nil without credentials (read-only),
// the Tradovate one alone when the file has no Kite app (as before Kite users existed),
// else a brokerRoutes passing each user's calls to its broker. With brokerCalls > 0 at
// most that many logins and renewals run at once, whatever the broker. checked, when
// not nil, hears the broker's answer to each check of a reported token (see
// brokerRoutes.Check).
func (d *deps) authenticator(brokerCalls int, log *slog.Logger, checked checkListener) tokencache.Authenticator {
	if len(d.kite) == 0 {
		if d.auth == nil {
			return nil
		}
		if brokerCalls > 0 {
			return boundAuth(d.auth, brokerCalls, log)
		}
		return d.auth
	}
	r := &brokerRoutes{byUser: map[string]routedAuth{}, checked: checked}
	var slots chan struct{}
	if brokerCalls > 0 {
		slots = make(chan struct{}, brokerCalls)
	}
	bound := func(a tokencache.Authenticator) tokencache.Authenticator {
		if slots == nil {
			return a
		}
		b := &boundedAuth{auth: a, slots: slots, log: log}
		if rn, ok := a.(tokencache.Renewer); ok {
			return &boundedRenewer{boundedAuth: b, renewer: rn}
		}
		return b
	}
	if d.auth != nil {
		r.fallback = routedAuth{auth: bound(d.auth)} // no checker: see brokerRoutes.Check
	}
	for _, k := range d.kite {
		a := k.app.Authenticator()
		r.byUser[k.entry.Name] = routedAuth{auth: bound(a), checker: a}
	}
	return r
}

// brokerRoutes is the daemon's Authenticator when the credentials file names users of
// more than one broker: each call goes to the user's own broker (a Kite app's
// Authenticator), else to the fallback (the Tradovate Authenticator). It is built once
// and never changed, so it is safe for concurrent use.
type brokerRoutes struct {
	byUser   map[string]routedAuth
	fallback routedAuth
	checked  checkListener // nil: nobody listens
}

// checkListener hears what a broker answered when a token reported bad was checked
// with it (t is the checked token; err is Check's answer: nil, wrapping
// tokencache.ErrTokenRejected, or a failure that cannot tell). It must not block.
type checkListener func(user string, t *tokencache.Token, err error)

// routedAuth is one broker's Authenticator, and its Checker when reports of its users'
// tokens are to be checked with the broker.
type routedAuth struct {
	auth    tokencache.Authenticator
	checker tokencache.Checker
}

var (
	_ tokencache.Authenticator = (*brokerRoutes)(nil)
	_ tokencache.Renewer       = (*brokerRoutes)(nil)
	_ tokencache.Checker       = (*brokerRoutes)(nil)
)

func (r *brokerRoutes) route(user string) (routedAuth, error) {
	if a, ok := r.byUser[user]; ok {
		return a, nil
	}
	if r.fallback.auth == nil {
		return routedAuth{}, fmt.Errorf("brokertoken: %q is no user of the credentials file", user)
	}
	return r.fallback, nil
}

// Login passes the login to user's broker.
func (r *brokerRoutes) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	a, err := r.route(user)
	if err != nil {
		return nil, err
	}
	return a.auth.Login(ctx, user)
}

// Renew passes the renewal to user's broker; a broker that cannot renew logs in.
func (r *brokerRoutes) Renew(ctx context.Context, user string, current *tokencache.Token) (*tokencache.Token, error) {
	a, err := r.route(user)
	if err != nil {
		return nil, err
	}
	if rn, ok := a.auth.(tokencache.Renewer); ok {
		return rn.Renew(ctx, user, current)
	}
	return a.auth.Login(ctx, user)
}

// errNotChecked answers Check for a broker whose reported tokens the daemon replaces
// without asking the broker. The Tradovate users keep the daemon's behaviour from
// before Kite users: a reported token is refreshed at once (what `brokertoken
// invalidate` relies on).
var errNotChecked = fmt.Errorf("%w: the daemon replaces reported tokens of this broker without checking them", tokencache.ErrTokenRejected)

// Check asks user's broker whether t still works, for the brokers whose reports are
// checked (Kite: GET /user/profile, so a report that is wrong costs no human login and
// no alert), and tells r.checked the answer: only a token the broker refused is called
// rejected, not one it could not be asked about.
func (r *brokerRoutes) Check(ctx context.Context, user string, t *tokencache.Token) error {
	a, err := r.route(user)
	if err != nil {
		return err
	}
	if a.checker == nil {
		return errNotChecked
	}
	err = a.checker.Check(ctx, user, t)
	if r.checked != nil {
		r.checked(user, t, err)
	}
	return err
}

var _ browserUser = (*kiteUser)(nil)

func (k *kiteUser) name() string   { return k.entry.Name }
func (k *kiteUser) broker() string { return "Kite" }

func (k *kiteUser) loginURL(ctx context.Context) (string, error) { return k.app.LoginURL(ctx) }

func (k *kiteUser) redirect(store zerodha.Store) http.Handler { return k.app.RedirectHandler(store) }

// who is the Kite user of the last login ("AB1234 (Name)"), else the configured
// user_id.
func (k *kiteUser) who(ctx context.Context) string {
	if info, err := k.app.UserInfo(ctx); err == nil {
		if info.UserName != "" {
			return info.UserID + " (" + info.UserName + ")"
		}
		return info.UserID
	}
	return k.entry.UserID
}

// browserUsers returns the users of d that log in through a browser.
func (d *deps) browserUsers() []browserUser {
	out := make([]browserUser, 0, len(d.kite))
	for _, k := range d.kite {
		out = append(out, k)
	}
	return out
}

// browserStatus completes a status row of a user a human logs in through a browser (a
// Kite app of the credentials file or of the registry): a token its broker rejected
// before its expiry reads "rejected", and while no valid token is stored the row gives
// the login page.
func (d *deps) browserStatus(row *userStatus, entry fleetUser) {
	if entry.Broker != brokerKite && d.kiteUser(row.User) == nil {
		return
	}
	row.Broker = brokerKite
	var login *loginRecord
	if row.Health != nil {
		login = row.Health.Login
	}
	if login != nil && login.Rejected != 0 && login.Rejected == row.Version {
		row.State, row.TokenState = "rejected", "rejected"
	}
	if row.State == string(tokencache.StateFresh) || row.State == string(tokencache.StateStale) {
		return
	}
	switch {
	case login != nil && login.URL != "":
		row.LoginURL = login.URL
	case entry.LoginURL != "":
		row.LoginURL = entry.LoginURL
	default:
		row.LoginURL = "(the daemon's login page)"
	}
}
