package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"time"
)

// daemonID names this daemon in {prefix}:daemons: the host, the process id and a random
// suffix, so a restarted process with the same id is a new daemon.
func daemonID(host string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return host + "/" + strconv.Itoa(os.Getpid()) + "/" + hex.EncodeToString(b[:])
}

// register writes the daemon's users and their accounts into the fleet registry, so
// readers can list users and map accounts without the credentials file.
func (dm *daemon) register(ctx context.Context) error {
	entries := make(map[string]fleetUser, len(dm.users))
	for _, u := range dm.users {
		entries[u] = dm.fleetEntry(u)
	}
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := dm.fleet.register(ctx, entries); err != nil {
		return err
	}
	dm.self.Users = len(dm.users)
	return dm.fleet.heartbeat(ctx, dm.self)
}

// fleetEntry is user's entry in the registry, with the accounts the daemon knows now.
func (dm *daemon) fleetEntry(user string) fleetUser {
	accounts := dm.deps.accountsOf(user)
	if accounts == nil {
		accounts = []string{}
	}
	now := time.Now().UTC().Truncate(time.Second)
	if dm.deps.kiteUser(user) != nil {
		return fleetUser{Accounts: accounts, Broker: brokerKite, LoginURL: dm.cfg.login.pageURL, Daemon: dm.self.ID, Updated: now}
	}
	if o := dm.deps.oauthUser(user); o != nil {
		return fleetUser{Accounts: accounts, Broker: o.entry.Broker, Provider: o.entry.providerName(), LoginURL: dm.cfg.login.pageURL,
			Daemon: dm.self.ID, Updated: now}
	}
	return fleetUser{Accounts: accounts, Broker: "tradovate", Environment: string(dm.cfg.environment),
		RESTURL: dm.cfg.restURL, Daemon: dm.self.ID, Updated: now}
}

// publish records the daemon's heartbeat every second, and each user's health record
// when it changed, until ctx is done; then it removes the daemon from the heartbeat
// hash, so readers know at once that it stopped. Failed writes are retried at the next
// beat (watchRedis reports a Redis that is down).
func (dm *daemon) publish(ctx context.Context) {
	tick := time.NewTicker(heartbeatEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			lctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = dm.fleet.leave(lctx, dm.self.ID)
			cancel()
			return
		case <-tick.C:
		}
		bctx, cancel := context.WithTimeout(ctx, heartbeatEvery)
		if err := dm.fleet.heartbeat(bctx, dm.self); err != nil && ctx.Err() == nil {
			dm.log.Debug("brokertoken: heartbeat not recorded", "err", dm.scrub.scrub(oneLine(err.Error())))
		}
		now := time.Now()
		for _, u := range dm.users {
			st := dm.states[u]
			st.mu.Lock()
			dirty := st.dirty
			h := st.health(dm.self.ID, now)
			st.dirty = false
			st.mu.Unlock()
			if !dirty {
				continue
			}
			if err := dm.fleet.writeHealth(bctx, u, h); err != nil {
				st.mu.Lock()
				st.dirty = true
				st.mu.Unlock()
				if ctx.Err() == nil {
					dm.log.Debug("brokertoken: health record not written", "user", u, "err", dm.scrub.scrub(oneLine(err.Error())))
				}
			}
		}
		cancel()
	}
}

// waiting records a wait of over a second announced in the log (see waitTap) in the
// user's health record, where status and invalidate show it.
func (dm *daemon) waiting(user, msg string, d time.Duration) {
	st := dm.states[user]
	if st == nil {
		return
	}
	now := time.Now().UTC()
	w := &waitRecord{What: dm.scrub.scrub(msg), Since: now}
	if d > 0 {
		until := now.Add(d)
		w.Until = &until
	}
	st.mu.Lock()
	st.waiting, st.dirty = w, true
	st.mu.Unlock()
}

// logCooldown says, at INFO, that user is not logged in until a captcha or lockout
// cool-down ends, and why.
func (dm *daemon) logCooldown(user, kind string, until time.Time, allUsers bool) {
	why := "the broker asks for a captcha: a human must log in once in Tradovate's web app"
	if kind == "locked_out" {
		why = "the broker locked logins out (HTTP 429/423)"
	}
	who := "this user"
	if allUsers || kind == "locked_out" {
		who = "every user"
	}
	if until.IsZero() {
		dm.log.Info("brokertoken: not logging "+who+" in until the cool-down ends: "+why, "user", user, waitKey, "the cool-down")
		return
	}
	dm.log.Info("brokertoken: not logging "+who+" in until the cool-down ends: "+why, "user", user,
		waitKey, time.Until(until).Round(time.Second), "until", until.UTC().Format(time.RFC3339))
}
