package main

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // --legacy-time-zone names work on hosts without a zoneinfo database

	"github.com/prometheus/client_golang/prometheus"

	"github.com/brokertoken/brokertoken/tradovate"
)

// The users' trading accounts follow the broker: the daemon asks for each user's
// accounts after each login and renewal (tradovate.AccountSync: the official
// /account/list or the TradingView-style /accounts, never a login), and keeps the
// account map the cache reads, the registry ({prefix}:users, {prefix}:accounts) and the
// legacy keys (token:{account}, the {user} list) in step with the answer. The
// credential's "accounts" field stays: those accounts are always kept.

// loadAccounts reads the options of accounts, the legacy expiry's zone and the
// market-data token.
func (f *flags) loadAccounts(c *config) error {
	has := func(o option) bool { _, ok := f.opts[o.name]; return ok }
	var err error
	if has(optDiscoverAccounts) {
		if c.discoverAccounts, err = f.boolean(optDiscoverAccounts); err != nil {
			return err
		}
	}
	if has(optAccountsEvery) {
		v, src := f.lookup(optAccountsEvery)
		if !strings.EqualFold(v, "renewal") {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return usagef("%s: want renewal or a positive duration such as 10m", where(optAccountsEvery, v, src))
			}
			c.accountsEvery = d
		}
	}
	if has(optLegacyTimeZone) {
		v, src := f.lookup(optLegacyTimeZone)
		loc, err := time.LoadLocation(v)
		if err != nil || v == "" {
			return usagef("%s: unknown time zone (want Local, UTC or a name such as Europe/London)", where(optLegacyTimeZone, v, src))
		}
		c.legacyZone = loc
	}
	if has(optExchangeTVToken) {
		if c.exchangeTVToken, err = f.boolean(optExchangeTVToken); err != nil {
			return err
		}
	}
	return nil
}

// seedAccounts adds to the account map the accounts the registry ({prefix}:accounts)
// gives the users of the credentials file: what a daemon last learned from the broker.
// They stand for the broker's answer until it is asked again.
func (d *deps) seedAccounts(ctx context.Context, log *slog.Logger) error {
	registered, err := d.fleet.accounts(ctx)
	if err != nil {
		return err
	}
	byUser := map[string][]string{}
	for a, u := range registered {
		if a != u {
			byUser[u] = append(byUser[u], a)
		}
	}
	for _, u := range d.creds.Users() {
		if len(byUser[u]) == 0 {
			continue
		}
		sort.Strings(byUser[u])
		known := append(slices.Clone(d.accounts.AccountsFor(u)), byUser[u]...)
		c, err := d.accounts.Update(u, known)
		if err != nil {
			return err
		}
		if len(c.Ignored) > 0 {
			log.Debug("brokertoken: registered accounts not taken", "user", u, "ignored", strings.Join(c.Ignored, "; "))
		}
	}
	return nil
}

// accountMetrics are the series of the account lists and of the legacy keys.
type accountMetrics struct {
	syncs      *prometheus.CounterVec // asks for the accounts, by result
	accounts   *prometheus.GaugeVec   // accounts per user
	foreign    *prometheus.CounterVec // foreign tokens found in the legacy keys
	foreignNow *prometheus.GaugeVec   // a legacy key holds a foreign token now
}

func newAccountMetrics(reg prometheus.Registerer, users []string, accountsOf func(string) []string) (*accountMetrics, error) {
	m := &accountMetrics{
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "brokertoken_account_syncs_total",
			Help: "Asks for a user's accounts at the broker, by result (ok, error)."}, []string{"user", "result"}),
		accounts: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "brokertoken_accounts",
			Help: "Trading accounts of the user, besides the user itself, as the daemon knows them."}, []string{"user"}),
		foreign: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "brokertoken_legacy_foreign_tokens_total",
			Help: "Tokens found in the user's legacy keys that this fleet did not write (another writer is running)."}, []string{"user"}),
		foreignNow: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "brokertoken_legacy_foreign_writer",
			Help: "1 while a legacy key of the user holds a token this fleet did not write."}, []string{"user"}),
	}
	for _, c := range []prometheus.Collector{m.syncs, m.accounts, m.foreign, m.foreignNow} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, u := range users {
		m.syncs.WithLabelValues(u, "ok")
		m.syncs.WithLabelValues(u, "error")
		m.accounts.WithLabelValues(u).Set(float64(len(accountsOf(u))))
		m.foreign.WithLabelValues(u)
		m.foreignNow.WithLabelValues(u).Set(0)
	}
	return m, nil
}

// accountsRun is the daemon's part that keeps accounts and legacy keys in step.
type accountsRun struct {
	sync    *tradovate.AccountSync // nil with --discover-accounts=false
	metrics *accountMetrics
	legacy  legacyWatch // foreign writers of the legacy keys (legacy.go)

	mu           sync.Mutex      // guards unregistered
	unregistered map[string]bool // users whose registry entry is behind their accounts
}

// newAccountSync makes what keeps the users' accounts in step with the broker; runDaemon
// runs it.
func (dm *daemon) newAccountSync() error {
	s, err := tradovate.NewAccountSync(tradovate.AccountSyncOptions{
		Authenticator: dm.deps.auth,
		Cache:         dm.deps.cache,
		Map:           dm.deps.accounts,
		Users:         dm.deps.tradovateUsers(),
		Every:         dm.cfg.accountsEvery,
		LegacyKeys:    dm.cfg.legacyKeys,
		Shared:        accountStore{fleet: dm.fleet, daemon: dm.self.ID},
		OnSync:        dm.accountsSynced,
		Logger:        dm.log,
	})
	if err != nil {
		return err
	}
	dm.acct.sync = s
	return nil
}

// accountsSynced records an ask for a user's accounts (or the adoption of another
// daemon's answer, which is no ask), and puts a change into the registry, where readers
// (status, token, invalidate) map accounts to users.
func (dm *daemon) accountsSynced(ctx context.Context, c tradovate.AccountChange, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	a := dm.acct
	if !c.Shared {
		a.metrics.syncs.WithLabelValues(c.User, result).Inc()
	}
	a.metrics.accounts.WithLabelValues(c.User).Set(float64(len(dm.deps.accountsOf(c.User))))
	for _, o := range c.Others { // users whose accounts this change moved
		a.metrics.accounts.WithLabelValues(o.User).Set(float64(len(dm.deps.accountsOf(o.User))))
	}
	a.mu.Lock()
	behind := a.unregistered[c.User]
	a.mu.Unlock()
	if err != nil || !c.Changed() && !behind {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	entries := map[string]fleetUser{c.User: dm.fleetEntry(c.User)}
	for _, o := range c.Others {
		entries[o.User] = dm.fleetEntry(o.User)
	}
	err = dm.fleet.register(rctx, entries)
	a.mu.Lock()
	a.unregistered[c.User] = err != nil // written again after the next ask
	a.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		dm.log.Warn("brokertoken: the registry does not show the user's accounts yet; written again after the next ask",
			"user", c.User, "err", dm.scrub.scrub(oneLine(err.Error())))
	}
}
