package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/brokertoken/brokertoken/internal/legacykeys"
	"github.com/brokertoken/brokertoken/tokencache"
)

// The legacy keys (token:{account}, auth:{user}, the {user} list, token_expiry:{user})
// are what the existing Python services read. At each check of a user with a good
// token, the daemon compares them with the fleet's token (legacykeys.CheckKeys):
//
//   - keys missing or out of step (expired, deleted, an account added or removed) are
//     written again;
//   - a key holding a token this fleet did not write means another writer is still
//     running (the old refresher's cron, a function that renews the token it read and
//     SETEXes token:*). Each such token, seen at two checks in a row (a write of this
//     fleet in progress looks the same for a moment), is counted
//     (brokertoken_legacy_foreign_tokens_total), alerted once per user (naming the keys),
//     and logged, at WARN the first time for the user. The daemon then asks the broker
//     whether it still accepts the fleet's token (GET /auth/me: no session, no budget):
//     if it does, the fleet's token is put back once, by one daemon of the fleet (the
//     first to claim it); if the other writer's login
//     closed the fleet's session, the other writer's keys are left as they are. Either
//     way the daemon logs nobody in because of it and does not write the same foreign
//     token over twice: fighting over the keys or the session helps nobody while both
//     run.

// legacyWatch is what the checks of each user's legacy keys found. Its methods are safe
// for concurrent use.
type legacyWatch struct {
	mu       sync.Mutex               // guards users and listSaid
	users    map[string]*foreignState // by user
	listSaid map[string]bool          // users whose {user} list was left alone, said once
}

// foreignState is what was seen of one user's foreign tokens.
type foreignState struct {
	seen    string // the foreign keys and tokens at the last check ("" when none)
	handled string // the foreign keys and tokens last reported and acted on
	warned  bool   // the user's WARN line was logged
}

func (w *legacyWatch) state(user string) *foreignState {
	if w.users == nil {
		w.users = map[string]*foreignState{}
	}
	fs := w.users[user]
	if fs == nil {
		fs = &foreignState{}
		w.users[user] = fs
	}
	return fs
}

// Verdicts on the fleet's token when a foreign one is found.
const (
	ownAccepted = "accepted"
	ownRejected = "rejected"
	ownUnknown  = "unknown"
)

// checkLegacy compares user's legacy keys with tok, the fleet's token, and acts on what
// it finds (see above).
func (dm *daemon) checkLegacy(ctx context.Context, user string, tok *tokencache.Token) {
	cctx, cancel := context.WithTimeout(ctx, dm.cfg.timeout)
	defer cancel()
	chk, err := legacykeys.CheckKeys(dm.deps.cache, cctx, user)
	if err != nil {
		if ctx.Err() == nil {
			dm.log.Debug("brokertoken: cannot check the legacy keys", "user", user, "err", dm.scrub.scrub(oneLine(err.Error())))
		}
		return
	}
	a := dm.acct
	if len(chk.Foreign) == 0 {
		a.legacy.mu.Lock()
		a.legacy.state(user).seen = ""
		a.legacy.mu.Unlock()
		a.metrics.foreignNow.WithLabelValues(user).Set(0)
		if chk.OutOfStep {
			dm.restoreLegacy(cctx, user, "missing or out of step")
		}
		return
	}
	seen := foreignSignature(chk.Foreign)
	a.legacy.mu.Lock()
	fs := a.legacy.state(user)
	confirmed, handled, warned := fs.seen == seen, fs.handled == seen, fs.warned
	fs.seen = seen
	if confirmed && !handled {
		fs.handled, fs.warned = seen, true
	}
	a.legacy.mu.Unlock()
	if !confirmed {
		return // look again at the next check
	}
	a.metrics.foreignNow.WithLabelValues(user).Set(1)
	if handled {
		return // reported and acted on already: no fighting
	}
	a.metrics.foreign.WithLabelValues(user).Inc()

	verdict := ownUnknown
	if tok != nil && dm.deps.auth != nil {
		switch err := dm.deps.auth.Check(cctx, user, tok); {
		case err == nil:
			verdict = ownAccepted
		case errors.Is(err, tokencache.ErrTokenRejected):
			verdict = ownRejected
		}
	}
	keys := make([]string, len(chk.Foreign))
	for i, k := range chk.Foreign {
		keys[i] = k.Key
	}
	what := foreignText(user, chk, verdict)
	attrs := []any{"user", user, "keys", strings.Join(keys, " "), "token", chk.Foreign[0].Token,
		"fleet_version", chk.Version, "fleet_token", verdict, "what", what}
	if warned { // once per user at WARN: the alert and the metric say the rest
		dm.log.Info("brokertoken: another writer wrote the legacy keys again", attrs...)
	} else {
		dm.log.Warn("brokertoken: a legacy key holds a token this fleet did not write: another writer is running beside the daemon", attrs...)
	}
	ev := alertEvent{Event: eventForeignWriter, User: user, Accounts: dm.deps.accountsOf(user), Keys: keys,
		Kind: "foreign_writer", Error: what, Version: chk.Version, Time: time.Now()}
	if tok != nil {
		ev.Expiry = tok.Expiry
	}
	dm.alerts.enqueue(ev)
	if verdict != ownRejected && dm.firstToPutBack(cctx, user, seen) {
		dm.restoreLegacy(cctx, user, "another writer's token replaced")
	}
}

// putBackFor is how long a daemon's claim to put the fleet's token back over one
// foreign token lasts: the same foreign token written again within it is left alone.
const putBackFor = 24 * time.Hour

// firstToPutBack reports whether this daemon is the first of the fleet to put the
// fleet's token back over the foreign tokens seen (their signature): one daemon does,
// once, rather than each of them (SET NX of {prefix}:{USER}:legacy-putback:<hash>). A
// claim that cannot be made (Redis away) puts nothing back.
func (dm *daemon) firstToPutBack(ctx context.Context, user, seen string) bool {
	sum := sha256.Sum256([]byte(seen))
	key := dm.cfg.prefix + ":{" + user + "}:legacy-putback:" + hex.EncodeToString(sum[:6])
	first, err := dm.deps.rdb.SetNX(ctx, key, dm.self.ID, putBackFor).Result()
	switch {
	case err != nil:
		if ctx.Err() == nil {
			dm.log.Warn("brokertoken: cannot claim the put-back of the fleet's token; left as it is", "user", user,
				"err", dm.scrub.scrub(oneLine(err.Error())))
		}
		return false
	case !first:
		dm.log.Debug("brokertoken: another daemon puts the fleet's token back", "user", user)
	}
	return first
}

// listLeftAlone says, once per user, that the {user} list was left alone (err wraps
// legacykeys.ErrList): the key holds another type, or the daemon's Redis user may not
// touch it. The token keys are written all the same.
func (dm *daemon) listLeftAlone(user string, err error) {
	if !errors.Is(err, legacykeys.ErrList) {
		return
	}
	w := &dm.acct.legacy
	w.mu.Lock()
	said := w.listSaid[user]
	if w.listSaid == nil {
		w.listSaid = map[string]bool{}
	}
	w.listSaid[user] = true
	w.mu.Unlock()
	if !said {
		dm.log.Warn("brokertoken: the legacy list of the user is left alone; its token keys are written "+
			"(a key of another type, or the daemon's Redis user lacks a pattern for it: see README, Roles and Redis ACLs)",
			"user", user, "err", dm.scrub.scrub(oneLine(err.Error())))
	}
}

// foreignSignature identifies a set of foreign keys and the tokens they hold.
func foreignSignature(keys []legacykeys.ForeignKey) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k.Key + "=" + k.Fingerprint
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// foreignText says what was found and what the daemon does, for the log and the alert.
// It holds no whole token.
func foreignText(user string, chk legacykeys.Check, verdict string) string {
	var b strings.Builder
	b.WriteString(chk.Foreign[0].Key)
	if n := len(chk.Foreign); n > 1 {
		fmt.Fprintf(&b, " and %d more key(s) hold", n-1)
	} else {
		b.WriteString(" holds")
	}
	fmt.Fprintf(&b, " a token (%s) this fleet did not write (its token is version %d). Another process writes "+
		"the legacy keys of %s: the old refresher, or a function that renews the token it reads and writes token:* back. "+
		"Its logins open sessions of %s beside the daemon's, and a third session closes the oldest. ",
		chk.Foreign[0].Token, chk.Version, user, user)
	switch verdict {
	case ownAccepted:
		b.WriteString("The broker still accepts the fleet's token: the daemon put it back in the keys once. ")
	case ownRejected:
		b.WriteString("The broker no longer accepts the fleet's token (the other writer's login closed its session): the other writer's keys are left as they are, and the fleet logs in again only when its token is needed. ")
	default:
		b.WriteString("Whether the broker still accepts the fleet's token could not be checked: the daemon put it back in the keys once. ")
	}
	b.WriteString("The daemon does not fight over the keys or the session: switch the other writer off (see README, Migrating from the Python refresher).")
	return b.String()
}

// restoreLegacy writes user's legacy keys again from the stored token (the check that
// calls it adopted the fleet's newest answer about the user's accounts first).
func (dm *daemon) restoreLegacy(ctx context.Context, user, why string) {
	written, err := legacykeys.Sync(dm.deps.cache, ctx, user)
	dm.listLeftAlone(user, err)
	switch {
	case err != nil && !errors.Is(err, legacykeys.ErrList) && ctx.Err() == nil:
		dm.log.Warn("brokertoken: writing legacy keys failed", "user", user, "err", dm.scrub.scrub(oneLine(err.Error())))
	case written:
		dm.log.Info("brokertoken: legacy keys written again", "user", user, "why", why)
	}
}
