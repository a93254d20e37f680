package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/brokertoken/brokertoken/internal/legacykeys"
	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/tokencache"
)

// daemon is the run command: it keeps the token of every login in the credentials file
// fresh, serves /healthz and /metrics, and sends alerts.
//
// Each user has a goroutine that asks the cache for the user's token every
// check interval. The cache does the real work: it reads Redis first (a valid stored
// token means no login), renews in the background before expiry, logs in only when it
// must, and lets one process in the fleet at a time do either; checks of fresh tokens
// cost an atomic load.
//
// --concurrency bounds two things, with separate slots. Every login and renewal holds
// one of the broker slots (see boundedAuth) while it runs, so at most that many are
// sent to the broker at once, including the renewals the cache starts in the
// background for stale tokens that no check waits for. Every check holds one of the
// check slots, so at most that many users are waited on at once: a start-up with many
// users to log in queues its checks here, and a check's --timeout runs from when it
// gets its slot, not while it queues. A check holding a check slot waits for broker
// slots, never the other way round, so the two cannot deadlock.
type daemon struct {
	cfg     *config
	log     *slog.Logger
	scrub   *scrubber
	deps    *deps
	users   []string
	states  map[string]*userState // one per user, fixed before the first check
	metrics *metrics
	alerts  *alerter
	slots   chan struct{} // check slots (--concurrency); the broker slots are in deps
	fleet   fleet         // the registry, heartbeat and health records readers look at
	self    daemonInfo    // this daemon, as its heartbeat describes it
	leases  *leaseWaits   // waits for other processes' refreshes, for the log
	acct    *accountsRun  // accounts from the broker, the legacy keys' checks (accounts.go, legacy.go)
	desk    *loginDesk    // the users a human logs in through a browser (Kite), the login page

	redisMu   sync.Mutex // guards redisDown and redisErr
	redisDown bool
	redisErr  string // the last failed ping, scrubbed
}

// userState is what the daemon knows of one user.
type userState struct {
	mu       sync.Mutex        // guards the fields below
	tok      *tokencache.Token // newest token a check returned
	checked  bool              // a check has succeeded since start
	failing  bool              // a refresh failed since the last good token
	failedAt int64             // tok's version when the failure began (0: no token)
	blocked  string            // "captcha" or "locked_out" once alerted in this failure
	lastErr  string            // the last failure, scrubbed
	lastKind string            // its failureKind
	since    time.Time         // when the failing began
	errAt    time.Time         // when lastErr happened (kept after a recovery, with lastErr)
	waiting  *waitRecord       // the wait of over a second in progress, if any
	dirty    bool              // the health record in Redis is behind these fields
	legacyAt int64             // version whose legacy keys are known to be written
	login    *loginRecord      // a browser-login user's need of a human login (see loginDesk)
}

// health returns the user's health record as daemon id sees it at now.
func (s *userState) health(id string, now time.Time) healthRecord {
	h := healthRecord{Failing: s.failing, Daemon: id, Updated: now.UTC()}
	if s.failing {
		h.Kind, h.Error = s.lastKind, s.lastErr
		since := s.since.UTC()
		h.Since = &since
	}
	if !s.errAt.IsZero() {
		at := s.errAt.UTC()
		h.LastError, h.LastKind, h.LastErrorAt = s.lastErr, s.lastKind, &at
	}
	if w := s.waiting; w != nil && (w.Until == nil || w.Until.After(now)) {
		h.Waiting = w
	}
	h.Login = s.login
	return h
}

func (s *userState) version() int64 {
	if s.tok == nil {
		return 0
	}
	return s.tok.Version
}

// runDaemon is the run command. Everything that can be wrong with the configuration is
// found before it binds --listen or writes to Redis: the flags (load), the credentials
// and Redis (setup), then the listen address.
func runDaemon(ctx context.Context, cfg *config, log *slog.Logger, scrub *scrubber) error {
	started := time.Now()
	dm := &daemon{cfg: cfg, scrub: scrub, states: map[string]*userState{},
		slots: make(chan struct{}, cfg.concurrency)}
	host, _ := os.Hostname()
	dm.self = daemonInfo{ID: daemonID(host), Host: host, PID: os.Getpid(), Version: readBuild().Version,
		Started: started.UTC().Truncate(time.Second)}
	log = slog.New(waitTap{h: log.Handler(), on: dm.waiting})
	dm.log = log
	dm.leases = newLeaseWaits(log, cfg.timeout)
	dm.desk = newLoginDesk(cfg.login, cfg.prefix, log, scrub, time.Now)
	var err error
	dm.metrics, err = newMetrics(dm.views, func() bool { up, _ := dm.redisState(); return up })
	if err != nil {
		return err
	}

	deps, err := setup(ctx, cfg, log, scrub, setupOptions{creds: credsRequired,
		hooks: dm.metrics.cache.Wrap(dm.hooks()), brokerCalls: cfg.concurrency, checked: dm.desk.checked,
		oauth: oauthHooks{revoked: dm.desk.revoked}})
	if err != nil {
		return err
	}
	defer deps.close() // cancels refreshes in flight and releases their leases
	dm.deps = deps
	dm.users = deps.users()
	for _, u := range dm.users {
		dm.states[u] = &userState{}
	}
	dm.metrics.setUsers(dm.users)
	dm.acct = &accountsRun{unregistered: map[string]bool{}}
	if dm.acct.metrics, err = newAccountMetrics(dm.metrics.reg, deps.tradovateUsers(), deps.accountsOf); err != nil {
		return err
	}
	dm.fleet = fleet{rdb: deps.rdb, prefix: cfg.prefix}
	if cfg.discoverAccounts && deps.auth != nil { // Tradovate's account lists: none for Kite users
		if err := dm.newAccountSync(); err != nil {
			return err
		}
	}
	scrub.add(cfg.alertWebhook)

	var ln net.Listener
	if cfg.listen != "" {
		if ln, err = net.Listen("tcp", cfg.listen); err != nil {
			return usagef("--listen %s: %s", cfg.listen, oneLine(err.Error()))
		}
		defer ln.Close()
	}
	var loginLn net.Listener
	if cfg.login.listen != "" {
		if loginLn, err = net.Listen("tcp", cfg.login.listen); err != nil {
			return usagef("--login-listen %s: %s", cfg.login.listen, oneLine(err.Error()))
		}
		defer loginLn.Close()
	}

	// The first write: the legacy keys carry no prefix, so one prefix owns them; a
	// daemon that cannot claim them (another prefix's, or no right to the claim key)
	// does not start.
	if cfg.legacyKeys {
		cctx, cancel := context.WithTimeout(ctx, pingTimeout)
		err := deps.cache.ClaimLegacyKeys(cctx)
		cancel()
		if err != nil {
			return usagef("--legacy-keys: %s", oneLine(err.Error()))
		}
	}

	if err := dm.register(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("redis %s: cannot write the fleet registry (the daemon needs the writer role): %s",
			cfg.redis.display, scrub.scrub(oneLine(err.Error())))
	}
	dm.alerts = newAlerter(cfg, deps.rdb, log, scrub, dm.metrics)
	dm.attachDesk(ln != nil || loginLn != nil)

	attrs := []any{"users", len(dm.users), "redis", cfg.redis.display, "prefix", cfg.prefix,
		"legacy_keys", cfg.legacyKeys, "concurrency", cfg.concurrency, "alerts", dm.alerts.describe()}
	if ln != nil {
		attrs = append(attrs, "listen", ln.Addr().String())
	}
	log.Info("brokertoken: running", attrs...)

	var bg sync.WaitGroup
	var servers []*http.Server
	serve := func(l net.Listener, h http.Handler) {
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		servers = append(servers, srv)
		bg.Add(1)
		go func() {
			defer bg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("brokertoken: http server stopped", "addr", l.Addr().String(), "err", err)
			}
		}()
	}
	if ln != nil {
		serve(ln, dm.handler())
	}
	if loginLn != nil {
		serve(loginLn, dm.desk.handler())
	}
	if len(dm.desk.users) > 0 {
		bg.Add(1)
		go func() { defer bg.Done(); dm.desk.run(ctx, min(dm.cfg.checkInterval, time.Second)) }()
	}
	if dm.acct.sync != nil {
		bg.Add(1)
		go func() { defer bg.Done(); dm.acct.sync.Run(ctx) }()
	}
	bg.Add(3)
	go func() { defer bg.Done(); dm.alerts.run(ctx) }()
	go func() { defer bg.Done(); dm.watchRedis(ctx) }()
	go func() { defer bg.Done(); dm.publish(ctx) }()

	var users sync.WaitGroup
	for _, u := range dm.users {
		users.Add(1)
		go func() {
			defer users.Done()
			dm.keepFresh(ctx, u)
		}()
	}

	<-ctx.Done()
	stopping := time.Now()
	users.Wait()
	for _, srv := range servers {
		sctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_ = srv.Shutdown(sctx)
		cancel()
		_ = srv.Close()
	}
	deps.cache.Close() // cancels refreshes in flight and releases their leases
	bg.Wait()
	deps.closeOAuth(log) // stores a rotated refresh token Redis has not taken yet
	log.Info("brokertoken: stopped", "ran", time.Since(started).Round(time.Millisecond).String(),
		"stop_took", time.Since(stopping).Round(time.Millisecond).String())
	return nil
}

// hooks returns the cache hooks that feed the alerts, the health records and the log
// (the metrics wrap them, see runDaemon). They run on the cache's goroutines and only
// record and enqueue.
func (dm *daemon) hooks() tokencache.Hooks {
	return tokencache.Hooks{
		RefreshFailed: func(user, op string, err error) {
			if dm.desk.noteFailure(user, op, err) {
				return // a human must log in, or a renewal asked too early: the desk's
			}
			if failureKind(err) != "redis" { // Redis outages are watched by watchRedis
				dm.failed(user, err)
			}
		},
		LeaseWait: dm.leases.waited,
	}
}

// keepFresh checks user's token every check interval until ctx is done.
func (dm *daemon) keepFresh(ctx context.Context, user string) {
	tick := time.NewTicker(dm.cfg.checkInterval)
	defer tick.Stop()
	for {
		dm.check(ctx, user)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// check asks the cache for user's token once: served from memory when fresh, else
// read from Redis, else refreshed (renewed or logged in) through the fleet's single
// refresh. The cache does not hammer the broker: after a failure it answers with that
// failure until its backoff ends.
func (dm *daemon) check(ctx context.Context, user string) {
	if dm.desk.skipCheck(ctx, user) {
		return // only a human login helps, and none came
	}
	if !acquire(ctx, dm.slots, func() {
		dm.log.Info("brokertoken: waiting for a check slot: --concurrency users are being waited on", "user", user,
			waitKey, "until one of them is done", "concurrency", cap(dm.slots))
	}) {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, dm.cfg.timeout)
	tok, err := dm.deps.cache.Token(cctx, user)
	cancel()
	<-dm.slots
	dm.leases.done(user)
	if ctx.Err() != nil {
		return // stopping: not a failure
	}
	if err != nil {
		if failureKind(err) != "redis" && !browserLoginNeeded(err) && !renewalNotDue(err) {
			dm.failed(user, err)
		}
		return
	}
	dm.succeeded(ctx, user, tok)
}

// acquire takes a slot of slots, calling slow once if that takes over a second; it
// returns false when ctx ends first.
func acquire(ctx context.Context, slots chan struct{}, slow func()) bool {
	select {
	case slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(longWait)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	case <-t.C:
		slow()
	}
	select {
	case slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// failed records a failed refresh of user. The first failure since the user's last good
// token is logged and alerted; so is the first captcha or lockout. Later failures of
// the same episode (retries) are not.
func (dm *daemon) failed(user string, err error) {
	st := dm.states[user]
	if st == nil {
		return
	}
	kind := failureKind(err)
	msg := dm.scrub.scrub(oneLine(err.Error()))
	now := time.Now()
	st.mu.Lock()
	if msg != st.lastErr || kind != st.lastKind || !st.failing {
		st.dirty = true
	}
	st.lastErr, st.lastKind, st.errAt = msg, kind, now
	st.waiting = nil // whatever was waited for has ended, in this failure
	first := !st.failing
	if first {
		st.failing, st.failedAt, st.since = true, st.version(), now
	}
	block := blockingKind(kind) && st.blocked == ""
	if block {
		st.blocked = kind
	}
	ev := alertEvent{User: user, Accounts: dm.deps.accountsOf(user), Kind: kind, Error: msg, Time: time.Now()}
	if st.tok != nil {
		ev.Version, ev.Expiry = st.tok.Version, st.tok.Expiry
	}
	st.mu.Unlock()

	if first {
		dm.log.Error("brokertoken: token refresh failing", "user", user, "kind", kind, "err", msg)
	}
	switch {
	case block:
		ev.Event = kind
		ev.Until, ev.AllUsers = cooldownOf(err)
		dm.logCooldown(user, kind, ev.Until, ev.AllUsers)
		dm.alerts.enqueue(ev)
	case first && kind == "invalid_client":
		// oauthbroker raises its own alert for the fleet (Broker.Alerts, see pollGrants),
		// which says what to fix; the incident it opens makes the end a recovery.
	case first:
		ev.Event = eventFailure
		dm.alerts.enqueue(ev)
	}
}

// succeeded records a good token of user. A token newer than the one held when a
// failure began ends the failure: the recovery is logged and alerted. The first good
// token after start also closes an incident another daemon may have left open.
func (dm *daemon) succeeded(ctx context.Context, user string, tok *tokencache.Token) {
	st := dm.states[user]
	if st == nil {
		return
	}
	st.mu.Lock()
	newVersion := st.version() != tok.Version
	st.tok = tok
	first := !st.checked
	st.checked = true
	recovered := st.failing && tok.Version > st.failedAt
	if recovered {
		st.failing, st.failedAt, st.blocked = false, 0, ""
	}
	if recovered || first || st.waiting != nil {
		st.waiting, st.dirty = nil, true
	}
	syncLegacy := dm.cfg.legacyKeys && tok.Version != st.legacyAt
	st.mu.Unlock()
	if newVersion {
		dm.acct.sync.Nudge(user) // a login or renewal: the accounts may be asked for
	}
	dm.desk.succeeded(user, tok)

	if recovered {
		dm.log.Info("brokertoken: token refresh recovered", "user", user, "version", tok.Version,
			"expires_in", time.Until(tok.Expiry).Round(time.Second).String())
	}
	if recovered || first {
		dm.alerts.enqueue(alertEvent{Event: eventRecovered, User: user, Accounts: dm.deps.accountsOf(user),
			Version: tok.Version, Expiry: tok.Expiry, Time: time.Now()})
	}
	// Another daemon may have learned the user's accounts from the broker since this
	// one last asked: follow its newer answer before writing or comparing the keys.
	if _, err := dm.acct.sync.Adopt(ctx, user); err != nil && ctx.Err() == nil {
		dm.log.Debug("brokertoken: cannot read the accounts other daemons learned", "user", user,
			"err", dm.scrub.scrub(oneLine(err.Error())))
	}
	if syncLegacy {
		// The cache writes the legacy keys of tokens it stores itself; this covers one
		// stored by a process that did not (a `token` command, a daemon without them).
		written, err := legacykeys.Sync(dm.deps.cache, ctx, user)
		if err != nil && !errors.Is(err, legacykeys.ErrList) {
			if ctx.Err() == nil {
				dm.log.Warn("brokertoken: writing legacy keys failed", "user", user, "err", err)
			}
			return
		}
		dm.listLeftAlone(user, err)
		if written {
			dm.log.Info("brokertoken: legacy keys written", "user", user, "version", tok.Version)
		}
		st.mu.Lock()
		if tok.Version > st.legacyAt {
			st.legacyAt = tok.Version
		}
		st.mu.Unlock()
	}
	if dm.cfg.legacyKeys {
		dm.checkLegacy(ctx, user, tok) // keys expired, deleted or written by another writer
	}
}

// watchRedis pings Redis every check interval (at least every 5 s) and alerts when it
// stops answering (two pings in a row) and when it answers again. Daemons cannot agree
// through a Redis that is down, so each of them sends these alerts.
func (dm *daemon) watchRedis(ctx context.Context) {
	every := min(max(dm.cfg.checkInterval, 250*time.Millisecond), 5*time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	fails := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, max(every, time.Second))
		err := dm.deps.rdb.Ping(pctx).Err()
		cancel()
		if ctx.Err() != nil {
			return
		}
		dm.redisMu.Lock()
		wasDown := dm.redisDown
		if err != nil {
			dm.redisErr = dm.scrub.scrub(oneLine(err.Error()))
			fails++
			if fails >= 2 {
				dm.redisDown = true
			}
		} else {
			fails, dm.redisDown = 0, false
		}
		down := dm.redisDown
		dm.redisMu.Unlock()
		switch {
		case down && !wasDown:
			msg := dm.scrub.scrub(oneLine(err.Error()))
			dm.log.Error("brokertoken: redis unreachable", "redis", dm.cfg.redis.display, "err", msg)
			dm.alerts.enqueue(alertEvent{Event: eventRedisDown, Error: msg, Time: time.Now()})
		case !down && wasDown:
			dm.log.Info("brokertoken: redis reachable again", "redis", dm.cfg.redis.display)
			dm.alerts.enqueue(alertEvent{Event: eventRedisUp, Time: time.Now()})
		}
	}
}

// redisState reports whether the last pings reached Redis, and if not, why.
func (dm *daemon) redisState() (up bool, why string) {
	dm.redisMu.Lock()
	defer dm.redisMu.Unlock()
	return !dm.redisDown, dm.redisErr
}

// userView is a snapshot of one user's state, for /metrics and /healthz.
type userView struct {
	user     string
	tok      *tokencache.Token
	failing  bool
	lastErr  string
	lastKind string

	human       bool // a human logs the user in through a browser every day (Kite)
	loginNeeded bool // a browser-login user must be logged in by a human now (see loginDesk.loginDue)
	rejected    bool // tok is a version the broker refused before its expiry

	refreshExpiry time.Time // an OAuth2 user's active grant: when its refresh token expires (zero: unknown)
}

func (dm *daemon) view(user string) userView {
	st := dm.states[user]
	st.mu.Lock()
	v := userView{user: user, tok: st.tok, failing: st.failing}
	if st.failing {
		v.lastErr, v.lastKind = st.lastErr, st.lastKind
	}
	st.mu.Unlock()
	if dm.desk.has(user) {
		v.human = dm.deps.kiteUser(user) != nil
		v.loginNeeded, v.rejected = dm.desk.loginDue(user, v.tok), dm.desk.rejectedToken(user, v.tok)
		if g := dm.desk.grantOf(user); g != nil && g.State == oauthbroker.StateActive {
			v.refreshExpiry = g.RefreshExpiry
		}
	}
	return v
}

// views returns a snapshot of every user, for /metrics.
func (dm *daemon) views() []userView {
	out := make([]userView, len(dm.users))
	for i, u := range dm.users {
		out[i] = dm.view(u)
	}
	return out
}
