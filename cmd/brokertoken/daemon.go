package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

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
	legacyAt int64             // version whose legacy keys are known to be written
}

func (s *userState) version() int64 {
	if s.tok == nil {
		return 0
	}
	return s.tok.Version
}

// runDaemon is the run command.
func runDaemon(ctx context.Context, cfg *config, log *slog.Logger, scrub *scrubber) error {
	started := time.Now()
	dm := &daemon{cfg: cfg, log: log, scrub: scrub, states: map[string]*userState{},
		slots: make(chan struct{}, cfg.concurrency)}
	dm.metrics = newMetrics()

	var ln net.Listener
	if cfg.listen != "" {
		var err error
		if ln, err = net.Listen("tcp", cfg.listen); err != nil {
			return usagef("--listen %s: %s", cfg.listen, oneLine(err.Error()))
		}
		defer ln.Close()
	}

	deps, err := setup(ctx, cfg, log, scrub, setupOptions{creds: credsRequired, hooks: dm.hooks(),
		brokerCalls: cfg.concurrency})
	if err != nil {
		return err
	}
	dm.deps = deps
	dm.users = deps.users()
	for _, u := range dm.users {
		dm.states[u] = &userState{}
	}
	dm.metrics.setUsers(dm.users)
	scrub.add(cfg.alertWebhook)
	dm.alerts = newAlerter(cfg, deps.rdb, log, scrub, dm.metrics)

	attrs := []any{"users", len(dm.users), "redis", cfg.redis.display, "prefix", cfg.prefix,
		"legacy_keys", cfg.legacyKeys, "concurrency", cfg.concurrency, "alerts", dm.alerts.describe()}
	if ln != nil {
		attrs = append(attrs, "listen", ln.Addr().String())
	}
	log.Info("brokertoken: running", attrs...)

	var bg sync.WaitGroup
	var srv *http.Server
	if ln != nil {
		srv = &http.Server{Handler: dm.handler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		bg.Add(1)
		go func() {
			defer bg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("brokertoken: http server stopped", "err", err)
			}
		}()
	}
	bg.Add(2)
	go func() { defer bg.Done(); dm.alerts.run(ctx) }()
	go func() { defer bg.Done(); dm.watchRedis(ctx) }()

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
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_ = srv.Shutdown(sctx)
		cancel()
		_ = srv.Close()
	}
	deps.close() // cancels refreshes in flight and releases their leases
	bg.Wait()
	log.Info("brokertoken: stopped", "ran", time.Since(started).Round(time.Millisecond).String(),
		"stop_took", time.Since(stopping).Round(time.Millisecond).String())
	return nil
}

// hooks returns the cache hooks that feed the metrics and the alerts. They run on the
// cache's goroutines and only record and enqueue.
func (dm *daemon) hooks() tokencache.Hooks {
	return tokencache.Hooks{
		Refreshed: func(user, op string, _ *tokencache.Token) {
			dm.metrics.refreshed(user, op)
		},
		RefreshFailed: func(user, op string, err error) {
			kind := failureKind(err)
			dm.metrics.failed(user, op, kind)
			if kind != "redis" { // Redis outages are watched by watchRedis
				dm.failed(user, err)
			}
		},
		LeaseWait: func(user string, waited time.Duration) {
			dm.metrics.leaseWait(user, waited)
		},
		Invalidated: func(user string, _ int64) {
			dm.metrics.invalidated(user)
		},
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
	select {
	case dm.slots <- struct{}{}:
	case <-ctx.Done():
		return
	}
	cctx, cancel := context.WithTimeout(ctx, dm.cfg.timeout)
	tok, err := dm.deps.cache.Token(cctx, user)
	cancel()
	<-dm.slots
	if ctx.Err() != nil {
		return // stopping: not a failure
	}
	if err != nil {
		if failureKind(err) != "redis" {
			dm.failed(user, err)
		}
		return
	}
	dm.succeeded(ctx, user, tok)
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
	st.mu.Lock()
	st.lastErr, st.lastKind = msg, kind
	first := !st.failing
	if first {
		st.failing, st.failedAt = true, st.version()
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
		dm.alerts.enqueue(ev)
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
	st.tok = tok
	first := !st.checked
	st.checked = true
	recovered := st.failing && tok.Version > st.failedAt
	if recovered {
		st.failing, st.failedAt, st.blocked, st.lastErr, st.lastKind = false, 0, "", "", ""
	}
	syncLegacy := dm.cfg.legacyKeys && tok.Version != st.legacyAt
	st.mu.Unlock()

	if recovered {
		dm.log.Info("brokertoken: token refresh recovered", "user", user, "version", tok.Version,
			"expires_in", time.Until(tok.Expiry).Round(time.Second).String())
	}
	if recovered || first {
		dm.alerts.enqueue(alertEvent{Event: eventRecovered, User: user, Accounts: dm.deps.accountsOf(user),
			Version: tok.Version, Expiry: tok.Expiry, Time: time.Now()})
	}
	if syncLegacy {
		// The cache writes the legacy keys of tokens it stores itself; this covers one
		// stored by a process that did not (a `token` command, a daemon without them).
		written, err := dm.deps.cache.SyncLegacy(ctx, user)
		if err != nil {
			if ctx.Err() == nil {
				dm.log.Warn("brokertoken: writing legacy keys failed", "user", user, "err", err)
			}
			return
		}
		if written {
			dm.log.Info("brokertoken: legacy keys written", "user", user, "version", tok.Version)
		}
		st.mu.Lock()
		if tok.Version > st.legacyAt {
			st.legacyAt = tok.Version
		}
		st.mu.Unlock()
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
}

func (dm *daemon) view(user string) userView {
	st := dm.states[user]
	st.mu.Lock()
	defer st.mu.Unlock()
	return userView{user: user, tok: st.tok, failing: st.failing, lastErr: st.lastErr, lastKind: st.lastKind}
}
