package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/zerodha"
)

// browserUser is a user whose token a human obtains in a browser: the daemon's page
// sends the browser to the broker's login with a single-use state, and the broker sends
// it back to the daemon with a one-use code that the daemon exchanges and stores with
// the cache. Kite apps (kiteUser), whose token lapses every day, and OAuth2 apps
// (oauthUser: Schwab, any authorization-code provider), which a human authorizes
// once per refresh-token lifetime, are the two kinds; each plugs into the page, the
// reminder and the health checks by implementing it.
type browserUser interface {
	// name is the user name the token is stored under.
	name() string
	// broker is the broker's name as humans know it: "Kite", "Schwab".
	broker() string
	// kind is the credentials file's broker: brokerKite, brokerSchwab or brokerOAuth2
	// (the registry's, status's and /healthz's "broker").
	kind() string
	// daily reports whether the token lapses every day by design (Kite): the daily
	// reminder applies, and a missing token is normal before its time.
	daily() bool
	// loginURL returns the broker's login page with a new single-use state.
	loginURL(ctx context.Context) (string, error)
	// redirect answers the broker's redirect: it checks the state, exchanges the code,
	// stores the token in store and shows the human a page saying what happened.
	redirect(store tokenStore) http.Handler
	// who describes the broker's user whose login is stored (or expected), for the
	// page: "AB1234 (Kite Fake)"; "" when unknown.
	who(ctx context.Context) string
	// grant reads the refresh grant's status (reader rights) of a broker whose refresh
	// token a human's authorization starts (OAuth2); nil for the others.
	grant(ctx context.Context) (*oauthbroker.Status, error)
}

// tokenStore is where a redirect stores the token: the daemon's cache (it announces
// each new version to every process). It is zerodha.Store and oauthbroker.Store.
type tokenStore interface {
	Set(ctx context.Context, user string, t *tokencache.Token) (*tokencache.Token, error)
}

var (
	_ zerodha.Store     = tokenStore(nil)
	_ oauthbroker.Store = tokenStore(nil)
)

// browserLoginNeeded reports whether err says that only a human login gives the user a
// token now (no refresh token, or the broker refused it).
func browserLoginNeeded(err error) bool {
	return errors.Is(err, zerodha.ErrLoginRequired) || errors.Is(err, oauthbroker.ErrLoginRequired)
}

// renewalNotDue reports whether err is a renewal asked for before it can help (Kite
// expires every token at 06:00 IST, so renewing earlier gains nothing): not a failure.
func renewalNotDue(err error) bool { return errors.Is(err, zerodha.ErrRenewalNotDue) }

// loginDesk is the daemon's side of the users whose token a human obtains in a browser:
// it serves the login page, reminds humans to log in, notices a token the broker
// rejected during the day, and says which of these users are healthy.
//
// What it knows of each user (loginState) changes only in handle and remind, which run
// on its own goroutine (run), and in succeeded, called by the daemon's checks; mu
// guards it. The cache's hooks and the daemon's checks only enqueue events (see
// noteFailure), and the broker's answers to the checks of reported tokens are only
// noted (checked), so they never wait for Redis.
type loginDesk struct {
	cfg     loginConfig
	prefix  string
	log     *slog.Logger
	scrub   *scrubber
	now     func() time.Time // the reminder's clock (time.Now; tests move it)
	events  chan loginEvent
	cache   *tokencache.Cache
	alerts  *alerter
	users   []browserUser
	byName  map[string]browserUser
	failure func(user string) (failing bool, kind, msg string) // the daemon's view of refresh failures
	changed func(user string, rec *loginRecord)                // publishes the user's login record
	// alertEvery is how often the OAuth2 users' expiry alerts are asked for
	// (oauthPollEvery); lastAlerts is when they last were (the desk's goroutine only).
	alertEvery time.Duration
	lastAlerts time.Time

	mu     sync.Mutex              // guards state, checks and queued
	state  map[string]*loginState  // by user name
	checks map[string]checkOutcome // by user name: the broker's answer to the last check of a reported token
	// queued holds the OAuth2 alerts this daemon handed to its alerter and has not
	// acknowledged yet, with when: one that comes back while still in the alerter's
	// queue (a slow webhook outlasting the lease) is not queued twice.
	queued map[string]time.Time
}

// checkOutcome is what the broker answered when the cache checked a token a service
// reported bad (tokencache.Checker), before it refreshed it.
type checkOutcome struct {
	version  int64  // the version checked
	rejected bool   // the broker refused it
	err      string // why the check could not tell, scrubbed; "" when it could
}

// loginState is what the desk knows of one user.
type loginState struct {
	needed      bool      // only a human login gives the user a (new) token
	neededAt    int64     // version stored when that was learnt (0: none); a newer one ends it
	since       time.Time // when it was learnt
	renewErr    string    // why the refresh token did not do, scrubbed; "" if none was tried
	rejected    int64     // a version the broker rejected before its expiry (0: none)
	rejectedAt  time.Time
	unchecked   int64     // a version reported bad that the broker could not be asked about (0: none)
	remindedDay string    // the last day (IST date) whose reminder was sent
	validUntil  time.Time // the reminder found a valid token until then (real clock): no need to look before
	alerted     bool      // a reminder or rejection was alerted: the next login is a recovery

	grant   *oauthbroker.Status // an OAuth2 user's grant as last read (each desk tick); nil: not read yet
	revoked bool                // the provider refused the refresh token, seen by this daemon's refresh
}

// loginRecord is the part of a user's health record ({prefix}:{USER}:health) that says
// a human must log in, for `status` and other daemons' readers.
type loginRecord struct {
	Needed   bool       `json:"needed"`
	URL      string     `json:"url,omitempty"`      // the login page
	Since    *time.Time `json:"since,omitempty"`    // when the need was learnt
	Rejected int64      `json:"rejected,omitempty"` // version the broker rejected before its expiry
	Reminder string     `json:"reminder,omitempty"` // "08:45 IST, Mon-Fri"
	RenewErr string     `json:"renew_error,omitempty"`
}

// loginEvent is a failed refresh of a browser-login user that needs a human.
type loginEvent struct {
	user string
	op   string // the cache's op: "login" or "renew"; opRevoked for an OAuth2 grant refused
	err  error
}

// opRevoked is the op of a loginEvent that says the provider refused an OAuth2 user's
// refresh token, heard once for the fleet (oauthbroker.Hooks.Revoked) in this process.
const opRevoked = "revoked"

// newLoginDesk returns a desk with no users; attach gives it the daemon's pieces.
func newLoginDesk(cfg loginConfig, prefix string, log *slog.Logger, s *scrubber, now func() time.Time) *loginDesk {
	return &loginDesk{cfg: cfg, prefix: prefix, log: log, scrub: s, now: now,
		events: make(chan loginEvent, 256), byName: map[string]browserUser{}, state: map[string]*loginState{},
		checks: map[string]checkOutcome{}, queued: map[string]time.Time{},
		failure: func(string) (bool, string, string) { return false, "", "" },
		changed: func(string, *loginRecord) {}}
}

// attach gives the desk its users, the cache storing their tokens and the alerter.
func (d *loginDesk) attach(users []browserUser, cache *tokencache.Cache, alerts *alerter) {
	d.users, d.cache, d.alerts = users, cache, alerts
	for _, u := range users {
		d.byName[u.name()] = u
		d.state[u.name()] = &loginState{}
	}
}

// has reports whether user logs in through the browser.
func (d *loginDesk) has(user string) bool {
	if d == nil {
		return false
	}
	_, ok := d.byName[user]
	return ok
}

// noteFailure takes a failed refresh of a browser-login user, from the cache's hook or
// a check, and reports whether the desk owns it: a renewal asked too early (dropped) or
// a login only a human can make (handled in the background: not a failure to alert as
// one). Other errors are ordinary failures, left to the daemon. It never blocks.
func (d *loginDesk) noteFailure(user, op string, err error) bool {
	if d == nil {
		return false
	}
	switch {
	case renewalNotDue(err):
		return true
	case browserLoginNeeded(err):
		select {
		case d.events <- loginEvent{user: user, op: op, err: err}:
		default:
			d.log.Warn("brokertoken: login event queue full; event dropped", "user", user)
		}
		return true
	}
	return false
}

// revoked takes the provider's refusal of user's refresh token (oauthbroker's Revoked
// hook, called once for the fleet in the process whose refresh was refused) to handle
// it in the background: the user marked as needing a human at once (the alert comes
// from Broker.Alerts, see pollGrants). It never blocks.
func (d *loginDesk) revoked(user string, err *oauthbroker.LoginRequiredError) {
	if d == nil {
		return
	}
	select {
	case d.events <- loginEvent{user: user, op: opRevoked, err: err}:
	default:
		d.log.Warn("brokertoken: login event queue full; refresh token refusal noted at the next poll", "user", user)
	}
}

// checked notes the broker's answer to the check of t, a token of user that a service
// reported bad (a checkListener, called by brokerRoutes.Check before the cache acts on
// the answer): handle calls the token rejected only when the broker refused it, not
// when it could not be asked (Kite slow or down). It never blocks on I/O.
func (d *loginDesk) checked(user string, t *tokencache.Token, err error) {
	if d == nil || t == nil {
		return
	}
	o := checkOutcome{version: t.Version, rejected: errors.Is(err, tokencache.ErrTokenRejected)}
	if err != nil && !o.rejected {
		o.err = d.scrub.scrub(oneLine(err.Error()))
	}
	d.mu.Lock()
	d.checks[user] = o
	d.mu.Unlock()
}

// run handles events and the reminder until ctx is done.
func (d *loginDesk) run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	d.pollGrants(ctx)
	d.remind(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-d.events:
			d.handle(ctx, ev)
		case <-tick.C:
			d.pollGrants(ctx)
			d.remind(ctx)
		}
	}
}

// readTimeout bounds the desk's reads of Redis.
const readTimeout = 2 * time.Second

// handle records that only a human login gives ev.user a token now. When Redis still
// holds a token that has not expired and the cache nevertheless had to log in, a
// service reported that token bad (a 403 TokenException) and the cache checked it with
// the broker first:
//   - the broker refused it (see checked): it lapsed during the day, which is alerted
//     (token_rejected) once per token version across the fleet, and shown as rejected;
//   - the broker could not be asked (slow, down, rate-limited), and the cache refreshed
//     anyway: nothing says the token is dead, so it is not called rejected; a milder
//     alert (token_unchecked) says a service met a refusal that could not be
//     confirmed. The services that still hold the report check again (once per
//     RetryMin), and a later refusal is alerted as above.
func (d *loginDesk) handle(ctx context.Context, ev loginEvent) {
	u := d.byName[ev.user]
	if u == nil {
		return
	}
	if ev.op == opRevoked {
		d.handleRevoked(u, ev)
		return
	}
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	st, err := d.cache.Status(rctx, ev.user)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("brokertoken: cannot read the token to judge a failed login", "user", ev.user, "err", d.scrub.scrub(oneLine(err.Error())))
		}
		return
	}
	var stored int64
	if st.Token != nil {
		stored = st.Token.Version
	}
	unexpired := st.State == tokencache.StateFresh || st.State == tokencache.StateStale
	now := time.Now()
	renewErr := ""
	var lr *zerodha.LoginRequiredError
	var olr *oauthbroker.LoginRequiredError
	switch {
	case errors.As(ev.err, &lr) && lr.RenewErr != nil:
		renewErr = d.scrub.scrub(oneLine(lr.RenewErr.Error()))
	case errors.As(ev.err, &olr):
		renewErr = oauthReason(olr, d.scrub)
	}

	d.mu.Lock()
	ls := d.state[ev.user]
	chk := d.checks[ev.user]
	// The cache logged in although Redis holds a token that has not expired: either a
	// report of that token was checked first (refused, or the broker could not say),
	// or the login began before the token was stored (a human logged in meanwhile),
	// which teaches nothing.
	overToken := ev.op == "login" && unexpired
	if overToken && (chk.version != stored || !chk.rejected && chk.err == "") {
		d.mu.Unlock()
		d.log.Debug("brokertoken: a failed login began before the stored token came; ignored", "user", ev.user, "version", stored)
		return
	}
	lapsed := overToken && chk.rejected && stored != ls.rejected
	unchecked := overToken && !chk.rejected && stored != ls.unchecked && stored != ls.rejected
	checkErr := chk.err
	first := !ls.needed || stored > ls.neededAt
	if first {
		ls.needed, ls.neededAt, ls.since = true, stored, now
	}
	ls.renewErr = renewErr
	if lapsed {
		ls.rejected, ls.rejectedAt, ls.alerted = stored, now, true
	}
	if unchecked {
		ls.unchecked, ls.alerted = stored, true
	}
	rec := d.recordLocked(ls)
	d.mu.Unlock()
	d.changed(ev.user, rec)

	switch {
	case lapsed:
		d.log.Error("brokertoken: "+u.broker()+" rejected the token before its expiry; a human must log in", "user", ev.user,
			"version", stored, "expires_at", st.Token.Expiry.In(ist).Format(time.RFC3339), "login_page", d.cfg.pageURL)
		d.alerts.enqueue(alertEvent{Event: eventTokenRejected, User: ev.user, Broker: u.broker(), Version: stored,
			Expiry: st.Token.Expiry, URL: d.cfg.pageURL, Error: renewErr, Time: now})
	case unchecked:
		d.log.Warn("brokertoken: a service reported the "+u.broker()+" token as refused, but "+u.broker()+
			" could not be asked (the check failed); it is not renewed without a human login", "user", ev.user,
			"version", stored, "check_error", checkErr, "valid_until", st.Token.Expiry.In(ist).Format(time.RFC3339),
			"login_page", d.cfg.pageURL)
		d.alerts.enqueue(alertEvent{Event: eventTokenUnchecked, User: ev.user, Broker: u.broker(), Version: stored,
			Expiry: st.Token.Expiry, URL: d.cfg.pageURL, Error: checkErr, Time: now})
	case first:
		attrs := []any{"user", ev.user, "login_page", d.cfg.pageURL}
		if u.daily() {
			attrs = append(attrs, "reminder", d.cfg.remind.String())
		}
		if unexpired {
			attrs = append(attrs, "valid_until", st.Token.Expiry.In(ist).Format(time.RFC3339))
		}
		if renewErr != "" {
			attrs = append(attrs, "renew_error", renewErr)
		}
		d.log.Warn("brokertoken: a human must log in to "+u.broker()+" (the token cannot be renewed without one)", attrs...)
	default:
		d.log.Debug("brokertoken: a human login is still needed", "user", ev.user, "op", ev.op, "version", stored)
	}
}

// remind sends, once a day from the reminder time on, one alert for each user without
// a valid token, with the login page's URL. Daemons sharing a Redis agree on who sends
// it (see alerter.claim). A user whose token is valid is looked at again when that
// token expires, not the next day: a reminder time before Kite's 06:00 expiry finds
// the previous day's token still valid, and must still remind once it lapses.
func (d *loginDesk) remind(ctx context.Context) {
	now := d.now()
	day, due := d.cfg.remind.due(now)
	if !due {
		return
	}
	for _, u := range d.users {
		if !u.daily() {
			continue // an OAuth2 grant has no day: its expiry alerts come from pollGrants
		}
		name := u.name()
		d.mu.Lock()
		ls := d.state[name]
		skip := ls.remindedDay == day || time.Now().Before(ls.validUntil)
		d.mu.Unlock()
		if skip {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		st, err := d.cache.Status(rctx, name)
		cancel()
		if err != nil {
			continue // Redis is down (watchRedis alerts it): try again at the next tick
		}
		d.mu.Lock()
		valid := d.validLocked(ls, st)
		if valid {
			ls.validUntil = st.Token.Expiry
		} else {
			ls.remindedDay, ls.alerted = day, true
		}
		d.mu.Unlock()
		if valid {
			continue
		}
		ev := alertEvent{Event: eventLoginNeeded, User: name, Broker: u.broker(), Day: day, URL: d.cfg.pageURL,
			Reminder: d.cfg.remind.String(), Time: now}
		if st.Token != nil {
			ev.Version, ev.Expiry = st.Token.Version, st.Token.Expiry
		}
		d.log.Warn("brokertoken: reminder: no valid "+u.broker()+" token for today; a human must log in", "user", name,
			"day", day, "login_page", d.cfg.pageURL)
		d.alerts.enqueue(ev)
	}
}

// validLocked reports whether st is a token that can be served and that the broker has
// not rejected. d.mu must be held.
func (d *loginDesk) validLocked(ls *loginState, st tokencache.Status) bool {
	if st.Token == nil || st.State != tokencache.StateFresh && st.State != tokencache.StateStale {
		return false
	}
	return ls.rejected == 0 || st.Token.Version != ls.rejected
}

// skipCheck reports whether the daemon's check of user should not ask the cache for a
// token: a human login is needed (the cache's last try said so), and Redis holds no
// token the cache could serve: none, an expired one, or one reported bad that the
// broker refused or could not check (one GET). Asking would only repeat the same "log
// in" answer and its log lines every --retry-max. A token that has not expired is
// always checked, so the daemon learns of a login however the need was learnt.
func (d *loginDesk) skipCheck(ctx context.Context, user string) bool {
	if !d.has(user) {
		return false
	}
	d.mu.Lock()
	ls := d.state[user]
	needed, rejected, unchecked := ls.needed, ls.rejected, ls.unchecked
	d.mu.Unlock()
	if !needed {
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	st, err := d.cache.Status(rctx, user)
	cancel()
	if err != nil {
		return false // let the check meet the error
	}
	if st.Token == nil || st.State != tokencache.StateFresh && st.State != tokencache.StateStale {
		return true
	}
	return st.Token.Version == rejected || st.Token.Version == unchecked
}

// succeeded records a token the daemon's check got for user: a newer one than the one
// the need was learnt with ends the need; after an alert, it is a recovery.
func (d *loginDesk) succeeded(user string, tok *tokencache.Token) {
	if !d.has(user) {
		return
	}
	d.mu.Lock()
	ls := d.state[user]
	ended := ls.needed && tok.Version > ls.neededAt
	recovered := ended && ls.alerted
	if ended {
		ls.needed, ls.neededAt, ls.since, ls.renewErr = false, 0, time.Time{}, ""
		ls.alerted, ls.revoked = false, false
	}
	cleared := ls.rejected != 0 && tok.Version > ls.rejected
	if cleared {
		ls.rejected, ls.rejectedAt = 0, time.Time{}
	}
	if ls.unchecked != 0 && tok.Version > ls.unchecked {
		ls.unchecked = 0
	}
	rec := d.recordLocked(ls)
	d.mu.Unlock()
	if ended || cleared {
		d.changed(user, rec)
	}
	if !ended {
		return
	}
	d.log.Info("brokertoken: logged in through the browser", "user", user, "version", tok.Version,
		"valid_until", tok.Expiry.In(ist).Format(time.RFC3339))
	if recovered {
		d.alerts.enqueue(alertEvent{Event: eventRecovered, User: user, Version: tok.Version, Expiry: tok.Expiry, Time: time.Now()})
	}
}

// recordLocked is ls as the health record shows it (nil when no login is needed).
// d.mu must be held.
func (d *loginDesk) recordLocked(ls *loginState) *loginRecord {
	if !ls.needed && ls.rejected == 0 {
		return nil
	}
	rec := &loginRecord{Needed: ls.needed, URL: d.cfg.pageURL, Rejected: ls.rejected, Reminder: d.cfg.remind.String(),
		RenewErr: ls.renewErr}
	if !ls.since.IsZero() {
		since := ls.since.UTC()
		rec.Since = &since
	}
	return rec
}

// judge says how /healthz shows user given its stored token: its state ("rejected" for
// a token the broker refused before its expiry) and whether it is unhealthy. A missing
// token is unhealthy only once the day's reminder time has passed.
//
// grant is an OAuth2 user's grant as just read (nil: use the one the desk last read).
func (d *loginDesk) judge(user string, st tokencache.Status, grant *oauthbroker.Status) (state string, unhealthy bool, loginURL string) {
	d.mu.Lock()
	ls := d.state[user]
	valid := d.validLocked(ls, st)
	rejected := ls.rejected != 0 && st.Token != nil && st.Token.Version == ls.rejected
	d.mu.Unlock()
	state = string(st.State)
	if rejected {
		state = "rejected"
	}
	u := d.byName[user]
	if u != nil && !u.daily() {
		// An OAuth2 user has no day: without a valid token, its services have none.
		url := ""
		needsHuman := d.grantNeedsHuman(user)
		if grant != nil {
			needsHuman = newGrantView(grant, time.Now()).needsHuman(time.Now())
		}
		if !valid || needsHuman {
			url = d.cfg.pageURL
		}
		return state, !valid, url
	}
	if valid {
		return state, false, ""
	}
	_, due := d.cfg.remind.due(d.now())
	return state, due, d.cfg.pageURL
}

// attachDesk gives the desk the daemon's browser-login users, its cache and alerter,
// and the ways to read the daemon's failures and to publish a user's login record. It
// says in the log where the page is, and warns when nothing serves it or nothing
// protects it.
func (dm *daemon) attachDesk(served bool) {
	d := dm.desk
	d.attach(dm.deps.browserUsers(), dm.deps.cache, dm.alerts)
	d.failure = func(user string) (bool, string, string) {
		v := dm.view(user)
		return v.failing, v.lastKind, v.lastErr
	}
	d.changed = func(user string, rec *loginRecord) {
		st := dm.states[user]
		st.mu.Lock()
		st.login, st.dirty = rec, true
		st.mu.Unlock()
	}
	d.alertEvery = oauthPollEvery(dm.cfg.checkInterval)
	if len(d.users) == 0 {
		return
	}
	for _, o := range dm.deps.oauth {
		if cb := o.entry.CallbackURL; cb != "" && served && !d.servesRedirect(cb) {
			dm.log.Warn("brokertoken: the OAuth2 app's callback_url is not one of this login page's redirect URLs: the provider sends the browser there, so route it to the page's redirect URL or complete the authorization with `brokertoken authorize USER --paste`",
				"user", o.name(), "callback_url", cb, "page_redirect_url", d.redirectURL(o.name()))
		}
	}
	for _, k := range dm.deps.kite {
		if k.entry.UserID == "" {
			dm.log.Warn("brokertoken: the Kite app has no user_id in the credentials file: a login of any Kite account the app allows is stored as this user's token; set user_id to the client ID whose logins to accept",
				"user", k.entry.Name, "entry", k.entry.index)
		}
	}
	if !served {
		dm.log.Warn("brokertoken: no address serves the login page (--listen and --login-listen are empty): the browser logins must go through another daemon's page",
			"users", len(d.users))
		return
	}
	addr := dm.cfg.login.listen
	if addr == "" {
		addr = dm.cfg.listen
	}
	if d.cfg.basicUser == "" && d.cfg.secret == "" && !loopbackAddr(addr) {
		dm.log.Warn("brokertoken: the login page has no authentication and listens beyond this machine: anyone who reaches it can start a broker login; set --login-basic-auth or --login-secret, or put it behind an authenticating proxy",
			"addr", addr)
	}
	dm.log.Info("brokertoken: login page", "url", d.cfg.pageURL, "users", len(d.users), "reminder", d.cfg.remind.String())
}

// servesRedirect reports whether callback is the redirect URL of one of the page's
// OAuth2 users (the page answers any of them for every OAuth2 user: the state names the
// user).
func (d *loginDesk) servesRedirect(callback string) bool {
	for _, u := range d.users {
		if !u.daily() && callback == d.redirectURL(u.name()) {
			return true
		}
	}
	return false
}

// loopbackAddr reports whether a listen address accepts connections from this machine
// only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loginDue reports whether user, a browser-login user, needs a human login now that
// the day's reminder time has passed: tok, the daemon's newest token, is missing,
// expired or rejected by the broker. It reads no Redis (for /metrics).
func (d *loginDesk) loginDue(user string, tok *tokencache.Token) bool {
	if u := d.byName[user]; u != nil && !u.daily() {
		if d.grantNeedsHuman(user) {
			return true
		}
		d.mu.Lock()
		needed := d.state[user].needed
		d.mu.Unlock()
		return needed && (tok == nil || !time.Now().Before(tok.Expiry))
	}
	if _, due := d.cfg.remind.due(d.now()); !due {
		return false
	}
	return tok == nil || !time.Now().Before(tok.Expiry) || d.rejectedToken(user, tok)
}

// rejectedToken reports whether tok is a version of user's token that the broker
// refused before its expiry (as the daemon's check of a report learnt). It reads no
// Redis (for /metrics).
func (d *loginDesk) rejectedToken(user string, tok *tokencache.Token) bool {
	if !d.has(user) || tok == nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ls := d.state[user]
	return ls != nil && ls.rejected != 0 && tok.Version == ls.rejected
}
