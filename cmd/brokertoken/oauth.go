package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/oauthbroker"
)

// oauthUser is an OAuth2 app of the credentials file (Schwab, or any provider of the
// authorization-code flow): the name its access token is stored under and the
// oauthbroker.Broker that makes its authorization URLs, answers the provider's redirect
// and refreshes with the refresh token kept in Redis. A human authorizes it on the same
// login page as the Kite apps; from then on the daemon refreshes it until the refresh
// token lapses (Schwab: 7 days), warning before (--oauth-expiry-alerts).
type oauthUser struct {
	entry    oauthEntry
	b        *oauthbroker.Broker
	callback string                // the redirect URL the broker sends to the provider ("": none)
	peers    []*oauthbroker.Broker // every OAuth user's broker: the redirect finds its user by the state
}

// oauthHooks are what the daemon hears from its OAuth users' brokers.
type oauthHooks struct {
	// revoked is called, once for the fleet, when the provider refused a user's
	// refresh token (a notification: the alert comes from Broker.Alerts). It must
	// not block.
	revoked func(user string, err *oauthbroker.LoginRequiredError)
}

// newOAuthUsers makes one oauthbroker.Broker per OAuth entry. The brokers share the
// cache's Redis and prefix; their StartURL is the login page, so every "authorize"
// link a human sees (errors, alerts, the redirect's failure pages) leads to the page;
// their redirect URL is the entry's callback_url, else the page's redirect URL of the
// user.
func newOAuthUsers(entries []oauthEntry, rdb redis.UniversalClient, cfg *config, log *slog.Logger, hooks oauthHooks) ([]*oauthUser, error) {
	out := make([]*oauthUser, 0, len(entries))
	all := make([]*oauthbroker.Broker, 0, len(entries))
	for _, e := range entries {
		callback := e.CallbackURL
		if callback == "" {
			callback = cfg.login.redirectURL(e.Name) // "": this process cannot authorize, only refresh
		}
		opts := oauthbroker.Options{
			Provider:     e.provider(cfg.login.schwabURL),
			ClientID:     e.AppKey,
			ClientSecret: e.AppSecret,
			RedirectURL:  callback,
			User:         e.Name,
			Redis:        rdb,
			Prefix:       cfg.prefix,
			StartURL:     cfg.login.pageURL,
			AlertLeads:   cfg.login.oauthLeads,
			AlertLease:   oauthAlertLease,
			Logger:       log,
		}
		if hooks.revoked != nil {
			opts.Hooks.Revoked = hooks.revoked
		}
		b, err := oauthbroker.New(opts)
		if err != nil {
			return nil, fmt.Errorf("credentials file %s: entry %d: %w", cfg.credentials, e.index, err)
		}
		all = append(all, b)
		out = append(out, &oauthUser{entry: e, b: b, callback: callback})
	}
	for _, u := range out {
		u.peers = all
	}
	return out, nil
}

var _ browserUser = (*oauthUser)(nil)

func (o *oauthUser) name() string   { return o.entry.Name }
func (o *oauthUser) broker() string { return o.entry.brokerName() }
func (o *oauthUser) kind() string   { return o.entry.Broker }
func (o *oauthUser) daily() bool    { return false }

func (o *oauthUser) loginURL(ctx context.Context) (string, error) { return o.b.LoginURL(ctx) }

// bindsBrowser reports whether the page's start binds the authorization to the browser
// (oauthbroker's LoginHandler cookie): when the redirect URL is on the page's host, so
// that the browser brings the cookie back to it. A callback_url elsewhere (routed to
// the page by a proxy under another name) gets an unbound state, as LoginURL makes.
func (o *oauthUser) bindsBrowser(pageURL string) bool {
	cb, err1 := url.Parse(o.callback)
	pg, err2 := url.Parse(pageURL)
	return err1 == nil && err2 == nil && cb.Host != "" && strings.EqualFold(cb.Host, pg.Host) && cb.Scheme == pg.Scheme
}

// startBound answers the page's POST start with oauthbroker's LoginHandler: a new
// state bound to this browser by an HttpOnly SameSite=Lax cookie, and 303 to the
// provider (LoginHandler's 302 is for a GET).
func (o *oauthUser) startBound(w http.ResponseWriter, r *http.Request) {
	get := r.Clone(r.Context())
	get.Method, get.Body, get.ContentLength = http.MethodGet, http.NoBody, 0
	o.b.LoginHandler().ServeHTTP(seeOther{w}, get)
}

// seeOther turns a 302 answer into 303 See Other, the answer to a POST that sends the
// browser on with a GET.
type seeOther struct{ http.ResponseWriter }

func (s seeOther) WriteHeader(code int) {
	if code == http.StatusFound {
		code = http.StatusSeeOther
	}
	s.ResponseWriter.WriteHeader(code)
}

// redirect answers the provider's redirect for any OAuth user of the daemon: the state
// names the user (users of one app may share its callback URL).
func (o *oauthUser) redirect(store tokenStore) http.Handler {
	return oauthbroker.RedirectHandler(store, o.peers...)
}

func (o *oauthUser) who(context.Context) string { return "" }

func (o *oauthUser) grant(ctx context.Context) (*oauthbroker.Status, error) { return o.b.Status(ctx) }

// oauthEntries returns the file's OAuth2 entries (none for a nil file).
func (f *credentialsFile) oauthEntries() []oauthEntry {
	if f == nil {
		return nil
	}
	return f.oauth
}

// oauthUser returns the OAuth user named user, or nil.
func (d *deps) oauthUser(user string) *oauthUser {
	for _, o := range d.oauth {
		if o.entry.Name == user {
			return o
		}
	}
	return nil
}

// oauthPollEvery is how often the daemon asks its OAuth users' brokers for the expiry
// alerts that fell due: every minute, or every 30 checks when --check-interval is
// under 2 s (tests).
func oauthPollEvery(checkInterval time.Duration) time.Duration {
	return min(time.Minute, 30*checkInterval)
}

// grantView is an OAuth2 user's grant as status and /healthz show it: what
// oauthbroker.ReadStatus tells anyone with reader rights, never a token.
type grantView struct {
	State            string     `json:"state"` // active, revoked, lost, missing, or unreadable (Detail says why)
	Provider         string     `json:"provider,omitempty"`
	AuthorizedAt     *time.Time `json:"authorized_at,omitempty"`
	Rotations        int64      `json:"rotations"`
	RotatedAt        *time.Time `json:"rotated_at,omitempty"`
	RefreshExpiresAt *time.Time `json:"refresh_token_expires_at,omitempty"`
	RefreshExpiresIn *float64   `json:"refresh_token_expires_in_seconds,omitempty"`
	RevokedAt        *time.Time `json:"revoked_at,omitempty"`
	Detail           string     `json:"detail,omitempty"` // why it was revoked
	RefreshingBy     string     `json:"refreshing_by,omitempty"`
}

// newGrantView is st as seen at now.
func newGrantView(st *oauthbroker.Status, now time.Time) *grantView {
	at := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		u := t.UTC()
		return &u
	}
	g := &grantView{State: string(st.State), Provider: st.Provider, AuthorizedAt: at(st.AuthorizedAt), Rotations: st.Rotations,
		RotatedAt: at(st.RotatedAt), RefreshExpiresAt: at(st.RefreshExpiry), RevokedAt: at(st.RevokedAt), Detail: st.Detail}
	if !st.RefreshExpiry.IsZero() {
		secs := math.Round(st.RefreshExpiry.Sub(now).Seconds())
		g.RefreshExpiresIn = &secs
	}
	if st.Rotation != nil {
		g.RefreshingBy = st.Rotation.Owner
	}
	return g
}

// needsHuman reports whether only a human's authorization gives the user tokens
// again: never authorized, refused by the provider, or the refresh token expired.
func (g *grantView) needsHuman(now time.Time) bool {
	if g == nil {
		return false
	}
	return g.State != string(oauthbroker.StateActive) || g.RefreshExpiresAt != nil && !now.Before(*g.RefreshExpiresAt)
}

// note is the grant for the status table's NOTE cell.
func (g *grantView) note(now time.Time) string {
	switch {
	case g == nil:
		return ""
	case g.State == string(oauthbroker.StateMissing):
		return "not authorized yet"
	case g.State == string(oauthbroker.StateRevoked):
		n := "refresh token refused"
		if g.RevokedAt != nil {
			n += " at " + g.RevokedAt.Local().Format("2006-01-02 15:04:05")
		}
		if g.Detail != "" {
			n += " (" + g.Detail + ")"
		}
		return n
	case g.State == string(oauthbroker.StateLost):
		n := "refresh token lost by Redis"
		if g.RevokedAt != nil {
			n += " at " + g.RevokedAt.Local().Format("2006-01-02 15:04:05")
		}
		return n + ": authorize again"
	case g.RefreshExpiresAt == nil:
		return "refresh token expiry unknown"
	case !now.Before(*g.RefreshExpiresAt):
		return "refresh token expired " + shortDuration(now.Sub(*g.RefreshExpiresAt)) + " ago"
	}
	return "refresh token expires in " + shortDuration(g.RefreshExpiresAt.Sub(now)) + " (" + g.RefreshExpiresAt.Local().Format("2006-01-02 15:04") + ")"
}

// oauthReason says why an OAuth2 user needs a human, for logs, pages and alerts: the
// stored detail (the provider's refusal, an interrupted rotation) or the reason.
func oauthReason(err *oauthbroker.LoginRequiredError, s *scrubber) string {
	switch {
	case err.Detail != "":
		return s.scrub(oneLine(err.Detail))
	case errors.Is(err.Reason, oauthbroker.ErrRevoked):
		return "the provider refused the refresh token"
	case errors.Is(err.Reason, oauthbroker.ErrNotAuthorized):
		return "the app was never authorized (no refresh token is stored)"
	}
	return ""
}

// handleRevoked handles the provider's refusal of u's refresh token, heard in this
// process once for the fleet (oauthbroker's Revoked hook): the user is marked as
// needing a human at once, for status, /healthz and the page, without waiting for the
// next poll. The alert itself comes from Broker.Alerts (pollGrants), which survives a
// process that dies before sending it.
func (d *loginDesk) handleRevoked(u browserUser, ev loginEvent) {
	var lre *oauthbroker.LoginRequiredError
	if !errors.As(ev.err, &lre) {
		return
	}
	reason := oauthReason(lre, d.scrub)
	d.mu.Lock()
	ls := d.state[ev.user]
	if !ls.needed {
		ls.needed, ls.since = true, time.Now()
	}
	ls.renewErr, ls.revoked = reason, true
	rec := d.recordLocked(ls)
	d.mu.Unlock()
	d.changed(ev.user, rec)
	d.log.Error("brokertoken: "+u.broker()+" refused the refresh token; no process refreshes the user until a human authorizes the app again",
		"user", ev.user, "reason", reason, "login_page", d.cfg.pageURL)
}

// oauthAlertLease is how long an alert returned by Broker.Alerts stays reserved for
// this daemon (oauthbroker.Options.AlertLease): longer than the alerter takes to send
// it (three tries of at most 10 s each, and the queue), so that no other daemon sends
// it again meanwhile; a daemon that dies holding it delays it by that much.
var oauthAlertLease = 5 * time.Minute // a variable for tests only

// pollGrants reads the grant of each OAuth2 user (for the page, /metrics and
// loginDue), and every alertEvery asks each broker for its alerts (Broker.Alerts:
// claimed for the fleet by oauthbroker, at least once) and hands them to the alerter,
// which acknowledges each (Broker.Ack) once it was delivered; one that is not is
// returned again after oauthAlertLease. Redis errors are left to the next tick
// (watchRedis alerts an outage).
func (d *loginDesk) pollGrants(ctx context.Context) {
	alerts := d.alertEvery > 0 && time.Since(d.lastAlerts) >= d.alertEvery
	if alerts {
		d.lastAlerts = time.Now()
	}
	for _, u := range d.users {
		o, ok := u.(*oauthUser)
		if !ok {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		st, err := o.b.Status(rctx)
		cancel()
		if err == nil {
			d.mu.Lock()
			d.state[o.name()].grant = st
			d.mu.Unlock()
		}
		if !alerts {
			continue
		}
		rctx, cancel = context.WithTimeout(ctx, readTimeout)
		due, err := o.b.Alerts(rctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("brokertoken: cannot look for OAuth2 alerts", "user", o.name(), "err", d.scrub.scrub(oneLine(err.Error())))
			}
			continue
		}
		for _, a := range due {
			d.sendOAuthAlert(ctx, o, a)
		}
	}
}

// sendOAuthAlert logs a and hands it to the alerter as the daemon's event, with an ack
// that acknowledges it to oauthbroker once delivered.
func (d *loginDesk) sendOAuthAlert(ctx context.Context, o *oauthUser, a oauthbroker.Alert) {
	// Only the page's address: a.URL, minted by oauthbroker when no page is served,
	// carries a live login state that no browser is bound to, and an alert channel is
	// no place for it (authorizeHint then points to `brokertoken authorize --paste`).
	url := d.cfg.pageURL
	detail := d.scrub.scrub(oneLine(a.Detail))
	ev := alertEvent{User: a.User, Broker: o.broker(), URL: url, Error: detail, Since: a.At, Time: time.Now()}
	switch a.Kind {
	case oauthbroker.AlertExpiring:
		ev.Event, ev.RefreshExpiry, ev.Lead = eventRefreshExpiring, a.Expiry, a.Lead
		d.log.Warn("brokertoken: the "+o.broker()+" refresh token expires soon; a human must authorize the app again before then",
			"user", a.User, "expires_at", a.Expiry.UTC().Format(time.RFC3339), "lead", a.Lead.String(), "login_page", d.cfg.pageURL)
	case oauthbroker.AlertRevoked:
		ev.Event = eventGrantRevoked
		d.log.Error("brokertoken: alert: "+o.broker()+" refused the refresh token; a human must authorize the app again",
			"user", a.User, "reason", detail, "login_page", d.cfg.pageURL)
	case oauthbroker.AlertLost:
		ev.Event = eventGrantLost
		d.log.Error("brokertoken: alert: Redis lost the "+o.broker()+" refresh token; a human must authorize the app again (run Redis with persistence and maxmemory-policy noeviction)",
			"user", a.User, "detail", detail, "login_page", d.cfg.pageURL)
	case oauthbroker.AlertInvalidClient:
		ev.Event, ev.URL = eventInvalidClient, ""
		d.log.Error("brokertoken: alert: "+o.broker()+" refuses the app key or secret (invalid_client); fix them in the credentials file and restart the daemons",
			"user", a.User, "detail", detail)
	default:
		d.log.Warn("brokertoken: an OAuth2 alert of a kind this daemon does not know; acknowledged", "user", a.User, "kind", string(a.Kind))
		ackOAuth(ctx, d.log, o.b, a)
		return
	}
	if ev.Event != eventRefreshExpiring {
		// Only a human (or an operator) ends it: the token that follows is a recovery.
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		if cs, err := d.cache.Status(rctx, a.User); err == nil && cs.Token != nil {
			ev.Version, ev.Expiry = cs.Token.Version, cs.Token.Expiry
		}
		cancel()
		d.mu.Lock()
		if ls := d.state[a.User]; ls != nil && ev.Event != eventInvalidClient {
			ls.alerted = true
		}
		d.mu.Unlock()
	}
	key := fmt.Sprint(a.User, "|", a.Kind, "|", a.At.UnixNano(), "|", a.Lead)
	d.mu.Lock()
	at, waiting := d.queued[key]
	if waiting && time.Since(at) < oauthQueuedFor {
		d.mu.Unlock()
		d.log.Info("brokertoken: an OAuth2 alert came back while this daemon still delivers it; not queued twice",
			"user", a.User, "kind", string(a.Kind), "deliveries", a.Deliveries)
		return
	}
	d.queued[key] = time.Now()
	d.mu.Unlock()
	if a.Deliveries > 1 {
		d.log.Info("brokertoken: an OAuth2 alert is sent again: an earlier delivery was not acknowledged in time (it may have arrived)",
			"user", a.User, "kind", string(a.Kind), "deliveries", a.Deliveries)
	}
	settled := func() {
		d.mu.Lock()
		delete(d.queued, key)
		d.mu.Unlock()
	}
	ev.ack = func(ctx context.Context) { ackOAuth(ctx, d.log, o.b, a); settled() }
	ev.unsent = settled
	d.alerts.enqueue(ev)
}

// oauthQueuedFor bounds how long an OAuth2 alert this daemon queued counts as still
// being delivered (a delivery settles it either way; this is the backstop).
const oauthQueuedFor = 30 * time.Minute

// ackOAuth acknowledges a to its broker (bounded by readTimeout); a failure is logged,
// and the alert comes back after its lease (delivered twice rather than never).
func ackOAuth(ctx context.Context, log *slog.Logger, b *oauthbroker.Broker, a oauthbroker.Alert) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readTimeout)
	defer cancel()
	if _, err := b.Ack(ctx, a); err != nil {
		log.Warn("brokertoken: cannot acknowledge an OAuth2 alert; it will be sent again", "user", a.User, "kind", string(a.Kind), "err", oneLine(err.Error()))
	}
}

// grantOf returns the OAuth2 user's grant as last read, or nil.
func (d *loginDesk) grantOf(user string) *oauthbroker.Status {
	if !d.has(user) {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if ls := d.state[user]; ls != nil {
		return ls.grant
	}
	return nil
}

// grantNeedsHuman reports whether user's grant, as last read, needs a human's
// authorization: never authorized, refused, or its refresh token expired (or this
// daemon saw the refusal before reading it).
func (d *loginDesk) grantNeedsHuman(user string) bool {
	if !d.has(user) {
		return false
	}
	d.mu.Lock()
	ls := d.state[user]
	g, revoked := ls.grant, ls.revoked
	d.mu.Unlock()
	if g == nil {
		return revoked
	}
	return newGrantView(g, time.Now()).needsHuman(time.Now())
}
