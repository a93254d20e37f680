package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// cmdToken prints the bare access token (or with md the market-data token) of account.
// It reads the cache like any consumer: from Redis, refreshing through the fleet's
// single refresh when needed (when a credentials file is available; without one it
// only reads what the daemon stored, mapping accounts to users with the registry).
func cmdToken(ctx context.Context, cfg *config, log *slog.Logger, s *scrubber, args []string, md bool, stdout io.Writer) error {
	if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
		return usagef("token: want one ACCOUNT: brokertoken token ACCOUNT [--md]")
	}
	account := args[0]
	leases := newLeaseWaits(log, cfg.timeout)
	d, err := setup(ctx, cfg, log, s, setupOptions{creds: credsOptional, hooks: tokencache.Hooks{LeaseWait: leases.waited}})
	if err != nil {
		return err
	}
	defer d.close()
	if err := d.checkAccount(cfg, account); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	tok, err := d.cache.Token(ctx, account)
	leases.done(d.userOf(account))
	if err != nil {
		if errors.Is(err, tokencache.ErrNoToken) && d.file == nil {
			return fmt.Errorf("token for %s: no valid token in redis %s (read-only: no credentials file %s; is `brokertoken run` running?)",
				account, cfg.redis.display, cfg.credentials)
		}
		return fmt.Errorf("token for %s: %w", account, err)
	}
	out := tok.AccessToken
	if md {
		if tok.MDAccessToken == "" {
			return fmt.Errorf("token for %s: the stored token has no market-data token (a TradingView-style login gets one at its first renewal, or at once unless --exchange-tv-token=false)", account)
		}
		out = tok.MDAccessToken
	}
	_, err = fmt.Fprintln(stdout, out)
	return err
}

// checkAccount refuses an account that is neither a login user of the credentials file
// nor one of their sub-accounts (without a credentials file every name is allowed).
func (d *deps) checkAccount(cfg *config, account string) error {
	if d.file == nil {
		return nil
	}
	user := d.userOf(account)
	for _, u := range d.users() {
		if u == user {
			return nil
		}
	}
	return usagef("account %q is neither a user in %s nor a sub-account of one", account, cfg.credentials)
}

// cmdInvalidate reports the token stored for account's login user as bad, as any
// consumer that met a 401 would (a read-only cache's Invalidate: the reporter role), and
// waits until a daemon has stored a newer one, saying on stderr what it waits for. It
// needs no credentials and logs nobody in itself: the daemons do, within the fleet's
// login budget. With no daemon running it reports nothing and says so.
func cmdInvalidate(ctx context.Context, cfg *config, log *slog.Logger, s *scrubber, args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
		return usagef("invalidate: want one ACCOUNT: brokertoken invalidate ACCOUNT")
	}
	account := args[0]
	type keptVersion struct {
		user    string
		version int64
	}
	kept := make(chan keptVersion, 16) // the daemons' "the broker still accepts it" answers
	hooks := tokencache.Hooks{ReportKept: func(user string, v int64) {
		select {
		case kept <- keptVersion{user, v}:
		default:
		}
	}}
	d, err := setup(ctx, cfg, log, s, setupOptions{creds: credsNone, hooks: hooks})
	if err != nil {
		return err
	}
	defer d.close()
	user := d.userOf(account)
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	fail := func(err error) error { return fmt.Errorf("invalidate %s: %w", account, err) }
	say := func(format string, a ...any) {
		fmt.Fprintln(stderr, s.scrub(oneLine("brokertoken: "+fmt.Sprintf(format, a...))))
	}

	registered, err := d.fleet.users(ctx)
	if err != nil {
		return fail(err)
	}
	entry, ok := registered[user]
	if !ok {
		return usagef("account %q is in no daemon's registry (%s, %s): no daemon keeps it fresh", account,
			d.fleet.usersKey(), d.fleet.accountsKey())
	}
	alive, err := aliveDaemons(ctx, d.fleet)
	if err != nil {
		return fail(err)
	}
	if len(alive) == 0 {
		return fail(fmt.Errorf("no daemon is running (none has a heartbeat in %s from the last %s): nothing would replace the token, so it was not reported; start `brokertoken run`",
			d.fleet.daemonsKey(), daemonSilentAfter))
	}
	before, err := d.cache.Status(ctx, user)
	if err != nil {
		return fail(err)
	}

	changes := d.cache.Watch(ctx, account) // before the report, so no new version is missed
	var old int64
	bad := ""
	if before.Token != nil {
		old, bad = before.Token.Version, before.Token.AccessToken
		if err := d.cache.Invalidate(ctx, account, bad); err != nil {
			return fail(err)
		}
		say("%s: reported version %d (token %s) as bad; waiting for a daemon to store a newer one (running: %s)",
			user, old, tokencache.Redact(bad), describeDaemons(alive))
	} else {
		say("%s: no token is stored; waiting for a daemon to store one (running: %s)", user, describeDaemons(alive))
	}

	newer := func(t *tokencache.Token) bool { return t != nil && t.Version > old && t.AccessToken != bad }
	started := time.Now()
	w := waitWatcher{f: d.fleet, cfg: cfg, user: user, entry: entry, say: say}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var tok *tokencache.Token
	for tok == nil {
		select {
		case t, open := <-changes:
			if !open {
				return fail(fmt.Errorf("no newer token within %s%s", cfg.timeout, w.lastSeen()))
			}
			if newer(t) {
				tok = t
			}
		case k := <-kept:
			if k.user == user && k.version == old && before.Token != nil {
				return fail(fmt.Errorf("%w: %s still accepts version %d (token %s); the daemons checked it and kept it",
					errTokenKept, user, old, tokencache.Redact(bad)))
			}
		case <-tick.C:
			// The announcement may have come before the subscription: look in Redis too.
			st, err := d.cache.Status(ctx, user)
			if err == nil && newer(st.Token) {
				tok = st.Token
				break
			}
			if err := w.look(ctx); err != nil {
				return fail(err)
			}
		}
	}
	was := "none"
	if before.Token != nil {
		was = fmt.Sprintf("version %d", old)
	}
	_, err = fmt.Fprintf(stdout, "%s: %s replaced by version %d (token %s, expires in %s, after %s)\n", user, was, tok.Version,
		tokencache.Redact(tok.AccessToken), time.Until(tok.Expiry).Round(time.Second), time.Since(started).Round(time.Millisecond))
	return err
}

// cmdClearCooldown ends a user's cool-down (and the fleet-wide pause the user started,
// and a hold after an unread login answer) in Redis, for every daemon at once, and says
// what it ended. The broker's keys are found as the daemon that registered the user
// finds them (its environment), unless --env or --tradovate-url is given.
func cmdClearCooldown(ctx context.Context, cfg *config, log *slog.Logger, s *scrubber, args []string, stdout io.Writer) error {
	if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
		return usagef("clear-cooldown: want one USER: brokertoken clear-cooldown USER")
	}
	user := args[0]
	d, err := setup(ctx, cfg, log, s, setupOptions{creds: credsNone, noCache: true})
	if err != nil {
		return err
	}
	defer d.close()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	fail := func(err error) error { return fmt.Errorf("clear-cooldown %s: %w", user, err) }
	f := fleet{rdb: d.rdb, prefix: cfg.prefix}
	registered, err := f.users(ctx)
	if err != nil {
		return fail(err)
	}
	ucfg := cfg.forUser(registered[user])
	cd, err := readCooldown(ctx, d.rdb, ucfg, user)
	if err != nil {
		return fail(err)
	}
	opts := tradovate.Options{Redis: d.rdb, Environment: ucfg.environment, RESTURL: ucfg.restURL}
	if err := tradovate.ClearCooldown(ctx, opts, user); err != nil {
		return fail(err)
	}
	was := "no cool-down was set"
	if cd != nil {
		was = fmt.Sprintf("ended the %s cool-down that lasted until %s", cd.Reason, cd.Until.Local().Format("15:04:05"))
		if cd.AllUsers {
			was += " (every user's logins were paused)"
		}
	}
	_, err = fmt.Fprintf(stdout, "%s: %s; the daemons may log it in again\n", user, was)
	return err
}

// waitWatcher looks, once a second, at what the daemons are doing for a user while
// invalidate waits, and says what changed: a lease taken, a wait, a failure, a
// cool-down, the daemons gone.
type waitWatcher struct {
	f     fleet
	cfg   *config
	user  string
	entry fleetUser
	say   func(format string, a ...any)

	last     string    // the last note said
	noDaemon time.Time // when the last daemon was seen gone, zero while one runs
}

// lastSeen is the last note, for the final error.
func (w *waitWatcher) lastSeen() string {
	if w.last == "" {
		return ""
	}
	return " (last: " + w.last + ")"
}

// look reads the user's lease, health and cool-down and the daemons' heartbeats. It
// returns an error when waiting longer is pointless: no daemon is left, or a cool-down
// keeps every daemon from logging the user in.
func (w *waitWatcher) look(ctx context.Context) error {
	alive, err := aliveDaemons(ctx, w.f)
	if err != nil {
		return nil // Redis hiccup: look again at the next tick
	}
	if len(alive) == 0 {
		return fmt.Errorf("every daemon stopped (no heartbeat in %s for %s) before a newer token was stored", w.f.daemonsKey(), daemonSilentAfter)
	}
	cd, err := readCooldown(ctx, w.f.rdb, w.cfg.forUser(w.entry), w.user)
	if err == nil && cd != nil {
		what := "a captcha"
		if cd.Reason == "locked-out" {
			what = "a lockout (HTTP 429/423)"
		}
		return fmt.Errorf("logins of %s are paused by %s until %s: no daemon logs it in before then (the token stays reported bad)",
			w.user, what, cd.Until.Local().Format("15:04:05"))
	}
	var note string
	h, _ := w.f.health(ctx, w.user)
	lease, _ := w.f.lease(ctx, w.user)
	now := time.Now()
	switch {
	case h != nil && h.Waiting != nil && (h.Waiting.Until == nil || h.Waiting.Until.After(now)):
		note = "daemon " + daemonHost(h.Daemon) + ": " + strings.TrimPrefix(h.Waiting.What, "brokertoken: ")
		if h.Waiting.Until != nil {
			note += fmt.Sprintf(" (%s left)", h.Waiting.Until.Sub(now).Round(time.Second))
		}
	case lease > 0:
		note = "a daemon is refreshing " + w.user + " (it holds the refresh lease)"
	case h != nil && h.Failing:
		note = fmt.Sprintf("the daemons' refreshes of %s fail (%s): %s; they retry with backoff", w.user, h.Kind, h.Error)
	}
	if note != "" && note != w.last {
		w.say("%s", note)
		w.last = note
	}
	return nil
}

// daemonHost is the host part of a daemon id ("host/pid/random").
func daemonHost(id string) string {
	host, _, _ := strings.Cut(id, "/")
	return host
}

// aliveDaemons returns the daemons with a recent heartbeat.
func aliveDaemons(ctx context.Context, f fleet) ([]daemonView, error) {
	all, err := f.daemons(ctx)
	if err != nil {
		return nil, err
	}
	var alive []daemonView
	for _, d := range all {
		if d.Alive {
			alive = append(alive, d)
		}
	}
	return alive, nil
}

// describeDaemons lists daemons for a human.
func describeDaemons(ds []daemonView) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, d.describe())
	}
	return strings.Join(parts, ", ")
}

// cooldown is a captcha or lockout pause recorded by the tradovate package.
type cooldown struct {
	Reason   string    `json:"reason"` // "captcha" or "locked-out"
	Until    time.Time `json:"until"`
	AllUsers bool      `json:"all_users"`
	Cause    string    `json:"cause,omitempty"`
}

// readCooldown reads user's cool-down, or the fleet-wide login pause, through the
// tradovate package, from the keys it shares with every process logging in to the
// configured environment.
func readCooldown(ctx context.Context, rdb redis.UniversalClient, cfg *config, user string) (*cooldown, error) {
	cd, err := tradovate.ReadCooldown(ctx, tradovate.Options{Redis: rdb, Environment: cfg.environment,
		RESTURL: cfg.restURL}, user)
	if err != nil || cd == nil {
		return nil, err
	}
	reason := "locked-out"
	if errors.Is(cd.Reason, tradovate.ErrCaptchaRequired) {
		reason = "captcha"
	}
	return &cooldown{Reason: reason, Until: cd.Until.UTC(), AllUsers: cd.AllUsers, Cause: cd.Cause}, nil
}

// userStatus is one row of the status command.
type userStatus struct {
	User         string        `json:"user"`
	Accounts     []string      `json:"accounts"`
	State        string        `json:"state"`       // token state, or "locked out" during a cool-down
	TokenState   string        `json:"token_state"` // fresh, stale, expired or missing
	ExpiresAt    *time.Time    `json:"expires_at,omitempty"`
	ExpiresIn    *float64      `json:"expires_in_seconds,omitempty"`
	Version      int64         `json:"version,omitempty"`
	ObtainedAt   *time.Time    `json:"obtained_at,omitempty"`
	ObtainedBy   string        `json:"obtained_by,omitempty"` // login, renew, set or reseed
	Token        string        `json:"token,omitempty"`       // redacted: prefix and length
	Cooldown     *cooldown     `json:"cooldown,omitempty"`
	LeaseSeconds *float64      `json:"lease_seconds,omitempty"` // a refresh runs: its lease's time left
	Health       *healthRecord `json:"health,omitempty"`        // as the daemon that last wrote it sees it
	Registered   bool          `json:"registered"`              // a daemon keeps it fresh ({prefix}:users)
	// DeviceID is the deviceId every process presents in the user's Tradovate logins
	// (pinned by the credentials file, else the fleet's, stored once in Redis); "" for
	// other brokers and before the first login.
	DeviceID string `json:"device_id,omitempty"`

	// Broker is "kite" for a user a human logs in through a browser; LoginURL is the
	// page where that human logs in, while no valid token is stored.
	Broker   string `json:"broker,omitempty"`
	LoginURL string `json:"login_url,omitempty"`
	// Grant is an OAuth2 user's grant: refresh-token expiry, refreshes, revoked.
	Grant *grantView `json:"grant,omitempty"`
}

// statusDaemon is a daemon in the status command's JSON.
type statusDaemon struct {
	daemonInfo
	Alive      bool    `json:"alive"`
	SecondsAgo float64 `json:"seen_seconds_ago"`
}

// cmdStatus prints a table (or JSON) of every user the daemons registered in Redis and
// every user of the credentials file when there is one, or of the users (or accounts)
// named in args: token, lease, cool-down and the daemons' last error and wait per user,
// then the daemons. It reads only, and needs no credentials.
func cmdStatus(ctx context.Context, cfg *config, log *slog.Logger, s *scrubber, args []string, asJSON bool, stdout io.Writer) error {
	d, err := setup(ctx, cfg, log, s, setupOptions{creds: credsOptional})
	if err != nil {
		return err
	}
	defer d.close()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	registered, err := d.fleet.users(ctx)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	var users []string
	seen := map[string]bool{}
	addUser := func(u string) {
		if !seen[u] {
			seen[u] = true
			users = append(users, u)
		}
	}
	if len(args) > 0 {
		for _, a := range args {
			addUser(d.userOf(a))
		}
	} else {
		for _, u := range d.users() {
			addUser(u)
		}
		var more []string
		for u := range registered {
			if !seen[u] {
				more = append(more, u)
			}
		}
		sort.Strings(more)
		for _, u := range more {
			addUser(u)
		}
	}
	daemons, err := d.fleet.daemons(ctx)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}

	now := time.Now()
	rows := make([]userStatus, 0, len(users))
	for _, u := range users {
		entry, isRegistered := registered[u]
		st, err := d.cache.Status(ctx, u)
		if err != nil {
			return fmt.Errorf("status of %s: %w", u, err)
		}
		cd, err := readCooldown(ctx, d.rdb, cfg.forUser(entry), u)
		if err != nil {
			return fmt.Errorf("status of %s: reading cool-down: %w", u, err)
		}
		h, err := d.fleet.health(ctx, u)
		if err != nil {
			return fmt.Errorf("status of %s: %w", u, err)
		}
		lease, err := d.fleet.lease(ctx, u)
		if err != nil {
			return fmt.Errorf("status of %s: %w", u, err)
		}
		row := userStatus{User: u, Accounts: d.accountsOf(u), TokenState: string(st.State), State: string(st.State),
			ObtainedBy: st.ObtainedBy, Cooldown: cd, Health: h, Registered: isRegistered}
		if row.Accounts == nil {
			row.Accounts = entry.Accounts
		}
		if row.Accounts == nil {
			row.Accounts = []string{}
		}
		if cd != nil {
			row.State = "locked out"
		}
		if lease > 0 {
			secs := lease.Seconds()
			row.LeaseSeconds = &secs
		}
		if h != nil && h.Waiting != nil && h.Waiting.Until != nil && !h.Waiting.Until.After(now) {
			h.Waiting = nil // over
		}
		if t := st.Token; t != nil {
			exp, got := t.Expiry.UTC(), t.ObtainedAt.UTC()
			secs := float64(t.Expiry.Sub(now).Round(time.Second) / time.Second)
			row.ExpiresAt, row.ExpiresIn, row.Version, row.Token = &exp, &secs, t.Version, tokencache.Redact(t.AccessToken)
			if !t.ObtainedAt.IsZero() {
				row.ObtainedAt = &got
			}
		}
		if err := d.browserStatus(ctx, cfg.prefix, &row, entry); err != nil {
			return fmt.Errorf("status of %s: %w", u, err)
		}
		if row.Grant != nil {
			row.Grant.Detail = s.scrub(oneLine(row.Grant.Detail)) // the provider's words
		}
		if row.Broker == "" {
			ucfg := cfg.forUser(entry)
			opts := tradovate.Options{Redis: d.rdb, Environment: ucfg.environment, RESTURL: ucfg.restURL}
			if d.creds != nil {
				opts.Credentials = d.creds
			}
			id, err := tradovate.ReadDeviceID(ctx, opts, u)
			switch {
			case err == nil:
				row.DeviceID = id
			case !errors.Is(err, tradovate.ErrNoDeviceID):
				return fmt.Errorf("status of %s: reading the deviceId: %w", u, err)
			}
		}
		rows = append(rows, row)
	}
	if asJSON {
		out := make([]statusDaemon, len(daemons))
		for i, dv := range daemons {
			out[i] = statusDaemon{daemonInfo: dv.daemonInfo, Alive: dv.Alive, SecondsAgo: math.Round(dv.Ago.Seconds()*10) / 10}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"users": rows, "daemons": out})
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tACCOUNTS\tSTATE\tEXPIRES IN\tVERSION\tLAST REFRESH\tBY\tTOKEN\tDEVICE\tNOTE")
	for _, r := range rows {
		expires, version, last, by, token, device := "-", "-", "-", "-", "-", "-"
		if r.DeviceID != "" {
			device = r.DeviceID
		}
		if r.ExpiresAt != nil {
			d := r.ExpiresAt.Sub(now)
			expires = shortDuration(d)
			if d <= 0 {
				expires = "expired " + shortDuration(-d) + " ago"
			}
			version = fmt.Sprint(r.Version)
			token = r.Token
		}
		if r.ObtainedAt != nil {
			last = r.ObtainedAt.Local().Format("2006-01-02 15:04:05") + " (" + shortDuration(now.Sub(*r.ObtainedAt)) + " ago)"
		}
		if r.ObtainedBy != "" {
			by = r.ObtainedBy
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.User, accountsCell(r.Accounts), r.State, expires,
			version, last, by, token, device, statusNote(r, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, daemonsLine(daemons))
	return err
}

// statusNote is the NOTE cell of a status row: a cool-down, a refresh in progress, a
// wait, a failure or the last error, most pressing first.
func statusNote(r userStatus, now time.Time) string {
	var notes []string
	if c := r.Cooldown; c != nil {
		note := strings.ReplaceAll(c.Reason, "-", " ")
		if c.AllUsers {
			note = "all logins paused (" + note + ")"
		}
		if !c.Until.IsZero() {
			note += " until " + c.Until.Local().Format("15:04:05")
		}
		notes = append(notes, note+"; token "+r.TokenState)
	}
	if r.LeaseSeconds != nil {
		notes = append(notes, "refreshing now (lease held)")
	}
	if n := r.Grant.note(now); n != "" {
		notes = append(notes, n)
	}
	if r.LoginURL != "" {
		notes = append(notes, "a human must log in: "+r.LoginURL)
	}
	h := r.Health
	if h != nil && h.Waiting != nil {
		w := strings.TrimPrefix(h.Waiting.What, "brokertoken: ")
		if h.Waiting.Until != nil {
			w += fmt.Sprintf(" (%s left)", shortDuration(h.Waiting.Until.Sub(now)))
		}
		notes = append(notes, "waiting: "+w)
	}
	switch {
	case h != nil && h.Failing:
		notes = append(notes, fmt.Sprintf("failing since %s (%s): %s", h.Since.Local().Format("15:04:05"), h.Kind, h.Error))
	case h != nil && h.LastErrorAt != nil && r.Cooldown == nil:
		notes = append(notes, fmt.Sprintf("last error %s ago (%s), since recovered", shortDuration(now.Sub(*h.LastErrorAt)), h.LastKind))
	}
	if !r.Registered && len(notes) == 0 {
		notes = append(notes, "no daemon registered this user")
	}
	return strings.Join(notes, "; ")
}

// daemonsLine is the status table's last line: the daemons and when they were last seen.
func daemonsLine(ds []daemonView) string {
	var alive, gone []string
	for _, d := range ds {
		if d.Alive {
			alive = append(alive, d.describe())
		} else {
			gone = append(gone, d.describe()+" "+shortDuration(d.Ago)+" ago")
		}
	}
	line := "daemons: none running"
	if len(alive) > 0 {
		line = fmt.Sprintf("daemons: %d running: %s", len(alive), strings.Join(alive, ", "))
	}
	if len(gone) > 0 {
		line += "; last seen: " + strings.Join(gone, ", ")
	}
	return line
}

// accountsCell shows the first account and how many more there are.
func accountsCell(accounts []string) string {
	switch len(accounts) {
	case 0:
		return "-"
	case 1:
		return accounts[0]
	}
	return fmt.Sprintf("%s (+%d)", accounts[0], len(accounts)-1)
}

// shortDuration rounds d for a human: 45s, 12m30s, 1h20m, 3d4h.
func shortDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", d/time.Minute, d%time.Minute/time.Second)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
}
