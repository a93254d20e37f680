package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/oauthbroker"
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
// else a brokerRoutes passing each user's calls to its broker (a Kite app's, or the
// Tradovate one for every other user). With brokerCalls > 0 at most that many logins
// and renewals run at once, whatever the broker. Reports of bad tokens are checked with
// the user's broker (brokerRoutes.Check); checked, when not nil, hears each answer.
func (d *deps) authenticator(brokerCalls int, log *slog.Logger, checked checkListener) tokencache.Authenticator {
	if d.auth == nil && len(d.kite) == 0 && len(d.oauth) == 0 {
		return nil
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
		return boundAuth(a, slots, log)
	}
	if d.auth != nil {
		r.fallback = routedAuth{auth: bound(d.auth), checker: d.auth}
	}
	for _, k := range d.kite {
		a := k.app.Authenticator()
		r.byUser[k.entry.Name] = routedAuth{auth: bound(a), checker: a}
	}
	for _, o := range d.oauth { // no checker: a reported token is refreshed (one cheap request)
		r.byUser[o.entry.Name] = routedAuth{auth: bound(o.b.Authenticator())}
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

// routedAuth is one broker's Authenticator (bounded by the broker slots) and the
// Checker that asks the same broker about a reported token.
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

// Check asks user's broker whether t, a token some service reported bad, still works
// (Tradovate: GET /auth/me; Kite: GET /user/profile), so a report that is wrong or
// forged costs no login, no human and no alert; and tells r.checked the answer: only a
// token the broker refused is called rejected, not one it could not be asked about.
// Checks take no broker slot: they are cheap, and the cache runs at most one per user
// per RetryMin.
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

// errNotChecked answers Check for an OAuth2 user: no provider has a standard endpoint
// to ask about an access token, so a token reported bad is replaced by a refresh (one
// request, no human), as if refused.
var errNotChecked = fmt.Errorf("%w: an OAuth2 token reported bad is replaced by a refresh without asking the provider", tokencache.ErrTokenRejected)

var _ browserUser = (*kiteUser)(nil)

func (k *kiteUser) name() string   { return k.entry.Name }
func (k *kiteUser) broker() string { return "Kite" }
func (k *kiteUser) kind() string   { return brokerKite }
func (k *kiteUser) daily() bool    { return true }

func (k *kiteUser) loginURL(ctx context.Context) (string, error) { return k.app.LoginURL(ctx) }

func (k *kiteUser) redirect(store tokenStore) http.Handler { return k.app.RedirectHandler(store) }

func (k *kiteUser) grant(context.Context) (*oauthbroker.Status, error) { return nil, nil }

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
	out := make([]browserUser, 0, len(d.kite)+len(d.oauth))
	if d.file == nil {
		return out
	}
	for _, u := range d.file.order { // file order, whatever the broker
		if k := d.kiteUser(u.name); k != nil {
			out = append(out, k)
		} else if o := d.oauthUser(u.name); o != nil {
			out = append(out, o)
		}
	}
	return out
}

// browserStatus completes a status row of a user a human logs in through a browser (a
// Kite or OAuth2 app of the credentials file or of the registry): a token its broker
// rejected before its expiry reads "rejected"; an OAuth2 user's row gets its grant
// (refresh-token expiry, revoked), read with reader rights; and while no valid token
// is stored, or the grant needs a human, the row gives the login page.
func (d *deps) browserStatus(ctx context.Context, prefix string, row *userStatus, entry fleetUser) error {
	kind := entry.Broker
	if d.kiteUser(row.User) != nil {
		kind = brokerKite
	} else if o := d.oauthUser(row.User); o != nil {
		kind = o.entry.Broker
	}
	switch kind {
	case brokerKite, brokerSchwab, brokerOAuth2:
	default:
		return nil
	}
	row.Broker = kind
	var login *loginRecord
	if row.Health != nil {
		login = row.Health.Login
	}
	if login != nil && login.Rejected != 0 && login.Rejected == row.Version {
		row.State, row.TokenState = "rejected", "rejected"
	}
	grantOK := true
	if kind != brokerKite {
		st, err := oauthbroker.ReadStatus(ctx, d.rdb, prefix, row.User)
		if err != nil {
			// One unreadable grant must not hide every other user's row.
			row.Grant = &grantView{State: "unreadable", Detail: oneLine(err.Error())}
			return nil
		}
		row.Grant = newGrantView(st, time.Now())
		grantOK = st.State == oauthbroker.StateActive && (st.RefreshExpiry.IsZero() || time.Now().Before(st.RefreshExpiry))
	}
	if grantOK && (row.State == string(tokencache.StateFresh) || row.State == string(tokencache.StateStale)) {
		return nil
	}
	switch {
	case login != nil && login.URL != "":
		row.LoginURL = login.URL
	case entry.LoginURL != "":
		row.LoginURL = entry.LoginURL
	default:
		row.LoginURL = "(the daemon's login page)"
	}
	return nil
}
