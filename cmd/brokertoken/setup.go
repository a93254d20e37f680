package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/oauthbroker"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// deps are the connected pieces a command works with. close releases them.
type deps struct {
	rdb      redis.UniversalClient
	file     *credentialsFile       // nil: no credentials file (read-only)
	creds    *tradovate.Credentials // the file's Tradovate logins; nil without any
	kite     []*kiteUser            // the file's Kite apps, in file order
	oauth    []*oauthUser           // the file's OAuth2 apps (Schwab...), in file order
	accounts *tradovate.AccountMap  // nil without credentials
	auth     *tradovate.Authenticator
	cache    *tokencache.Cache
	broker   *http.Transport   // the Authenticator's, when setup made one
	fleet    fleet             // the registry the daemons write for readers
	registry map[string]string // account -> user from the registry, without credentials
}

func (d *deps) close() {
	if d.cache != nil {
		_ = d.cache.Close()
	}
	d.closeOAuth(nil) // the daemon closed them already, and logged; again does nothing
	if d.broker != nil {
		d.broker.CloseIdleConnections()
	}
	if d.rdb != nil {
		_ = d.rdb.Close()
	}
}

// oauthCloseWait bounds closeOAuth: each Broker.Close gives a held rotation its
// CommitGrace (4 s) and waits for a refresh in flight, which the closed cache canceled.
const oauthCloseWait = 10 * time.Second

// closeOAuth closes the OAuth2 users' brokers, all at once, after the cache (which
// cancels the refreshes in flight): a rotated refresh token Redis has not taken yet is
// stored first (oauthbroker.Broker.Close). One that could not be is lost, which log
// (when not nil) says: the next refresh of that user is likely refused, and a human
// must authorize the app again. It returns after oauthCloseWait at most.
func (d *deps) closeOAuth(log *slog.Logger) {
	if len(d.oauth) == 0 {
		return
	}
	errs := make(chan error, len(d.oauth))
	for _, o := range d.oauth {
		go func() {
			err := o.b.Close()
			if err != nil {
				err = fmt.Errorf("%s: %w", o.name(), err)
			}
			errs <- err
		}()
	}
	timeout := time.NewTimer(oauthCloseWait)
	defer timeout.Stop()
	for range d.oauth {
		select {
		case err := <-errs:
			if err != nil && log != nil {
				msg := "brokertoken: an OAuth2 broker did not close cleanly"
				if errors.Is(err, oauthbroker.ErrRotationLost) {
					msg = "brokertoken: a rotated refresh token could not be stored before stopping and is lost; the next refresh is likely refused and a human must authorize the app again"
				}
				log.Error(msg, "err", oneLine(err.Error()))
			}
		case <-timeout.C:
			if log != nil {
				log.Error("brokertoken: OAuth2 brokers still closing; stopping without waiting (a rotated refresh token still being written is lost: the next refresh is likely refused and a human must authorize again)",
					"waited", oauthCloseWait.String())
			}
			return
		}
	}
}

// users returns the login users of the credentials file, in file order.
func (d *deps) users() []string {
	if d.file == nil {
		return nil
	}
	return d.file.users()
}

// tradovateUsers returns the Tradovate logins of the credentials file, in file order
// (the users whose accounts the broker lists).
func (d *deps) tradovateUsers() []string {
	if d.creds == nil {
		return nil
	}
	return d.creds.Users()
}

// accountsOf returns user's trading sub-accounts.
func (d *deps) accountsOf(user string) []string {
	if d.accounts == nil {
		return nil
	}
	return d.accounts.AccountsFor(user)
}

// userOf returns the login user whose token account uses: from the credentials file
// when there is one, else from the registry the daemons write ({prefix}:accounts).
func (d *deps) userOf(account string) string {
	if d.accounts != nil {
		return d.accounts.UserFor(account)
	}
	if u, ok := d.registry[account]; ok {
		return u
	}
	return account
}

// credsNeed says whether a command needs the credentials file.
type credsNeed int

const (
	credsRequired credsNeed = iota // a missing file is a configuration error
	credsOptional                  // a missing default file means read-only
	credsNone                      // not read
)

// setupOptions are the per-command choices of setup.
type setupOptions struct {
	creds   credsNeed
	hooks   tokencache.Hooks
	noCache bool // connect Redis and read credentials only
	// brokerCalls bounds the logins and renewals the cache runs at once (see
	// boundedAuth); 0: no bound.
	brokerCalls int
	// checked hears the broker's answers to the checks of reported tokens (the
	// daemon's login desk); nil: nobody.
	checked checkListener
	// oauth is what the daemon hears from the OAuth2 users' brokers.
	oauth oauthHooks
}

// pingTimeout bounds the start-up check that Redis answers.
const pingTimeout = 10 * time.Second

// brokerTimeout bounds one request to the broker when setup makes the HTTP client
// (tradovate's default client has the same).
const brokerTimeout = 30 * time.Second

// setup loads the credentials, checks every remaining setting, connects to Redis (one
// PING, no write) and builds the Authenticator and Cache. Everything that can be wrong
// with the configuration is found here, before anything is written to Redis; such
// errors are usage errors (exit 2).
func setup(ctx context.Context, cfg *config, log *slog.Logger, s *scrubber, so setupOptions) (_ *deps, err error) {
	d := &deps{}
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	if so.creds != credsNone {
		file, err := loadCredentials(cfg.credentials)
		switch {
		case err == nil:
			d.file, d.creds = file, file.tradovate
			for _, w := range file.warnings {
				log.Warn("brokertoken: " + w)
			}
			for _, k := range file.kite {
				s.add(k.APISecret)
			}
			for _, o := range file.oauth {
				s.add(o.AppSecret)
			}
		case so.creds == credsOptional && cfg.credsSource == "default" && errors.Is(err, fs.ErrNotExist):
			log.Debug("no credentials file: read-only, tokens are only read from Redis", "path", cfg.credentials)
		default:
			return nil, usagef("%s (set with --credentials or BROKERTOKEN_CREDENTIALS)", oneLine(err.Error()))
		}
	}
	if d.creds != nil {
		for _, u := range d.creds.Users() {
			cr, _ := d.creds.Credential(ctx, u)
			s.add(cr.Password, cr.Sec)
		}
	}

	d.rdb = cfg.redis.client()
	if d.creds != nil {
		var client *http.Client // nil: tradovate's default
		if so.brokerCalls > 0 {
			// Keep one idle connection per broker call that may run at once: the default
			// transport keeps two per host, so every wave of renewals would dial (and
			// against Tradovate, shake hands over TLS) again.
			d.broker = http.DefaultTransport.(*http.Transport).Clone()
			d.broker.MaxIdleConnsPerHost = so.brokerCalls
			d.broker.MaxIdleConns = max(d.broker.MaxIdleConns, so.brokerCalls)
			client = &http.Client{Transport: d.broker, Timeout: brokerTimeout}
		}
		d.auth, err = tradovate.New(tradovate.Options{
			Environment:    cfg.environment,
			RESTURL:        cfg.restURL,
			TradingViewURL: cfg.tvURL,
			Credentials:    d.creds,
			Redis:          d.rdb,
			LoginBudget:    cfg.loginBudget,
			HTTPClient:     client,
			Logger:         log,
			// A TradingView-style login has no market-data token: get one before the
			// record is written, so readers never see a token without it.
			ExchangeTVToken: cfg.exchangeTVToken,
		})
		if err != nil {
			return nil, usagef("%s", oneLine(err.Error()))
		}
	}

	wait := pingTimeout
	if cfg.timeout > 0 {
		wait = min(wait, cfg.timeout)
	}
	pctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := d.rdb.Ping(pctx).Err(); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		hint := ""
		if cfg.redis.tlsConfig() == nil {
			hint = plainToTLSHint(err)
		}
		return nil, usagef("redis %s: cannot connect: %s%s", cfg.redis.display, oneLine(err.Error()), hint)
	}

	if d.creds != nil {
		// Sub-accounts: the credential's own list, plus the original system's Redis list
		// named after the user (read only) until the broker is asked.
		d.accounts, err = tradovate.NewAccountMap(ctx, d.creds, tradovate.AccountOptions{LegacyRedis: d.rdb})
		if err != nil {
			return nil, usagef("%s", oneLine(err.Error()))
		}
	}
	d.fleet = fleet{rdb: d.rdb, prefix: cfg.prefix}
	if d.accounts != nil && (cfg.cmd != "run" || cfg.discoverAccounts) {
		// The accounts a daemon learned from the broker stand for its answer until it is
		// asked again (run), and let `token ACCOUNT` find them.
		if err := d.seedAccounts(ctx, log); err != nil {
			return nil, fmt.Errorf("redis %s: %s", cfg.redis.display, oneLine(err.Error()))
		}
	}
	if len(d.file.kiteEntries()) > 0 {
		if d.kite, err = newKiteUsers(d.file.kiteEntries(), d.rdb, cfg, log); err != nil {
			return nil, usagef("%s", oneLine(err.Error()))
		}
	}
	if len(d.file.oauthEntries()) > 0 {
		if d.oauth, err = newOAuthUsers(d.file.oauthEntries(), d.rdb, cfg, log, so.oauth); err != nil {
			return nil, usagef("%s", oneLine(err.Error()))
		}
	}
	if d.file == nil && !so.noCache {
		// Without credentials, accounts are mapped to users as the daemons registered them.
		if d.registry, err = d.fleet.accounts(ctx); err != nil {
			return nil, fmt.Errorf("redis %s: %s", cfg.redis.display, oneLine(err.Error()))
		}
	}
	if so.noCache {
		return d, nil
	}

	opts := tokencache.Options{
		Redis:         d.rdb,
		Prefix:        cfg.prefix,
		LegacyKeys:    cfg.legacyKeys,
		RefreshBefore: cfg.refreshBefore,
		Leeway:        cfg.leeway,
		RetryMax:      cfg.retryMax,
		Logger:        log,
		Hooks:         so.hooks,
		// Python reads token_expiry with datetime.fromisoformat and compares it with
		// datetime.now(): a naive time in the zone of the readers.
		LegacyLocation: cfg.legacyZone,
	}
	if cfg.retryMax > 0 && cfg.retryMax < time.Second {
		opts.RetryMin = cfg.retryMax
	}
	opts.Authenticator = d.authenticator(so.brokerCalls, log, so.checked)
	if d.accounts != nil {
		opts.LookupUser = d.accounts.LookupUser // accounts learned later are followed
		opts.AccountsFor = d.accounts.AccountsFor
	} else if d.registry != nil {
		opts.UserFor = d.userOf
	}
	d.cache, err = tokencache.New(opts)
	if err != nil {
		return nil, usagef("%s", oneLine(err.Error()))
	}
	return d, nil
}
