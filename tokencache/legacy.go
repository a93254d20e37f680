package tokencache

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/legacykeys"
)

func init() {
	legacykeys.Sync = func(c any, ctx context.Context, user string) (bool, error) {
		return c.(*Cache).syncLegacy(ctx, user)
	}
	legacykeys.CheckKeys = func(c any, ctx context.Context, user string) (legacykeys.Check, error) {
		return c.(*Cache).checkLegacy(ctx, user)
	}
	legacykeys.Drop = func(c any, ctx context.Context, user string, accounts []string) ([]string, error) {
		return c.(*Cache).dropLegacy(ctx, user, accounts)
	}
}

// The legacy layout: the keys services predating this library read (see
// Options.LegacyKeys), written as the original refresher wrote them.
//
//	token:{account}       the bare access token, for the user and each of its accounts
//	auth:{user}           the bare access token
//	{user}                LIST of the token keys above; no TTL
//	token_expiry:{user}   the expiry, naive ISO-8601 in Options.LegacyLocation
//
// Every key but the list expires with the token. A write never shrinks the list nor
// deletes a key: processes may know different accounts for a moment (one learned an
// account from the broker before another), and the one that knows fewer must not undo
// the other's keys. The process that saw the broker drop an account removes it
// (dropLegacy, called by tradovate's AccountSync).

var (
	//go:embed scripts/legacylist.lua
	legacyListLua    string
	legacyListScript = redis.NewScript(legacyListLua)
)

// legacyTimeFormat is the original refresher's token_expiry: Python's
// datetime.isoformat() of a naive datetime, which datetime.fromisoformat reads back.
const legacyTimeFormat = "2006-01-02T15:04:05.000000"

// legacyTokenKeys are the token:{account} keys of a user: the user's own first, then
// each of its accounts once.
func (c *Cache) legacyTokenKeys(user string) []string {
	keys := []string{"token:" + user}
	seen := map[string]bool{user: true}
	for _, a := range c.opts.AccountsFor(user) {
		if !seen[a] {
			seen[a] = true
			keys = append(keys, "token:"+a)
		}
	}
	return keys
}

// writeLegacy writes the legacy keys of t when Options.LegacyKeys is on. Failures are
// logged, not returned: the versioned record is the source of truth. A {user} key that
// is not a list, or that the client may not touch, is said once per user.
func (c *Cache) writeLegacy(ctx context.Context, user string, t *Token) {
	if !c.opts.LegacyKeys {
		return
	}
	if c.legacyOwner.Load() == nil { // not claimed yet: claim before the first write
		if err := c.ClaimLegacyKeys(ctx); err != nil {
			c.log.Error("tokencache: not writing the legacy keys", "user", user, "err", err)
			return
		}
	}
	if owner := c.legacyOwnedElsewhere(); owner != "" {
		return // logged by ClaimLegacyKeys's caller
	}
	err := c.legacy(ctx, user, t)
	switch {
	case errors.Is(err, legacykeys.ErrList):
		if _, said := c.legacyListSaid.LoadOrStore(user, true); !said {
			c.log.Warn("tokencache: the legacy list is left alone; the token keys are written", "user", user, "err", err)
		}
	case err != nil:
		c.log.Warn("tokencache: writing legacy keys failed", "user", user, "err", err)
	}
}

// syncLegacy writes the keys that services predating this library read (see
// Options.LegacyKeys) for the token stored in Redis for user, unless they are in step
// with it already (every token key and auth:{user} hold it, and the {user} list names
// every token key of the user's accounts, Options.AccountsFor), and reports whether it
// wrote them. It never removes a list entry nor deletes a key (see dropLegacy). It
// claims the legacy keys for this prefix first (see [Cache.ClaimLegacyKeys]) and fails
// if another prefix owns them.
//
// The cache writes the legacy keys whenever it stores a token itself; this call covers
// a token stored by a process that did not (a daemon started with legacy keys off, a
// CLI), keys that expired or were deleted while the token stayed, a change of the
// user's accounts, and keys overwritten by another writer (see checkLegacy). It works
// whatever Options.LegacyKeys says. The daemon and tradovate's AccountSync call it
// through internal/legacykeys.
func (c *Cache) syncLegacy(ctx context.Context, user string) (written bool, err error) {
	if c.closed.Load() {
		return false, ErrClosed
	}
	if err := CheckName(user); err != nil {
		return false, err
	}
	if err := c.ClaimLegacyKeys(ctx); err != nil {
		return false, err
	}
	v, err := c.readLegacy(ctx, user)
	if err != nil {
		return false, err
	}
	stored, _, err := c.store.get(ctx, user, time.Now())
	if err != nil || stored == nil {
		return false, err
	}
	if !v.check(stored).OutOfStep {
		return false, nil
	}
	return true, c.legacy(ctx, user, stored)
}

// checkLegacy compares the legacy keys of user with the token stored in Redis, without
// writing anything (it needs only read access to them and to the record). A key holding
// another token was written by a process outside this fleet (an old refresher still
// running, a function that renews the token it read and writes token:* back), or, for
// the moment between a new token's record and its legacy keys, by this fleet itself:
// the same Fingerprint on a second check tells the two apart. It fails with
// [ErrLegacyKeysOwned] when another prefix owns the legacy keys (see
// [Cache.ClaimLegacyKeys]; call that first).
//
// Errors: ErrLegacyKeysOwned, ErrInvalidName, ErrRecordFormat, ErrRedisUnavailable,
// ErrClosed.
func (c *Cache) checkLegacy(ctx context.Context, user string) (legacykeys.Check, error) {
	if c.closed.Load() {
		return legacykeys.Check{}, ErrClosed
	}
	if err := CheckName(user); err != nil {
		return legacykeys.Check{}, err
	}
	if owner := c.legacyOwnedElsewhere(); owner != "" {
		return legacykeys.Check{}, fmt.Errorf("%w: prefix %q owns them (key %s)", ErrLegacyKeysOwned, owner, LegacyOwnerKey)
	}
	// The keys first, then the record: a writer stores the record before the keys, so
	// the record read is at least as new as the token the keys were written for.
	v, err := c.readLegacy(ctx, user)
	if err != nil {
		return legacykeys.Check{}, err
	}
	stored, _, err := c.store.get(ctx, user, time.Now())
	if err != nil {
		return legacykeys.Check{}, err
	}
	chk := v.check(stored)
	chk.User = user
	return chk, nil
}

// legacyView is what Redis holds of a user's legacy keys.
type legacyView struct {
	keys   []string // the token keys, then auth:{user}
	values []string // their values, "" for a missing key
	tokens int      // how many of keys are token:{account} keys
	list   []string // the {user} list's entries
	other  string   // why the {user} list is not compared ("" when it is): not a list, or no right to it
}

// readLegacy reads the legacy keys of user, in one round trip.
func (c *Cache) readLegacy(ctx context.Context, user string) (*legacyView, error) {
	tokenKeys := c.legacyTokenKeys(user)
	v := &legacyView{keys: append(tokenKeys, "auth:"+user), tokens: len(tokenKeys)}
	gets := make([]*redis.StringCmd, len(v.keys))
	var list *redis.StringSliceCmd
	_, err := c.opts.Redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range v.keys {
			gets[i] = p.Get(ctx, k)
		}
		list = p.LRange(ctx, user, 0, -1)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) && !isWrongType(err) && !isNoPerm(err) {
		return nil, redisErr("read legacy keys of "+user, err)
	}
	v.values = make([]string, len(gets))
	for i, g := range gets {
		if err := g.Err(); err != nil && !errors.Is(err, redis.Nil) && !isWrongType(err) {
			return nil, redisErr("read legacy key "+v.keys[i], err)
		}
		v.values[i] = g.Val()
	}
	switch err := list.Err(); {
	case isWrongType(err):
		v.other = "the key " + user + " is not a list: left alone"
	case isNoPerm(err):
		v.other = "no right to the key " + user + ": " + err.Error()
	case err != nil && !errors.Is(err, redis.Nil):
		return nil, redisErr("read legacy list "+user, err)
	}
	v.list = list.Val()
	return v, nil
}

// check compares v with the stored token (nil or expired: nothing to compare with).
func (v *legacyView) check(stored *Token) legacykeys.Check {
	chk := legacykeys.Check{List: v.other}
	if !stored.Valid(time.Now()) {
		return chk
	}
	chk.Version = stored.Version
	for i, k := range v.keys {
		switch val := v.values[i]; val {
		case stored.AccessToken:
		case "":
			chk.Missing = append(chk.Missing, k)
		default:
			sum := sha256.Sum256([]byte(val))
			chk.Foreign = append(chk.Foreign, legacykeys.ForeignKey{Key: k, Token: Redact(val), Fingerprint: hex.EncodeToString(sum[:6])})
		}
	}
	listLacks := false // a token key the list does not name (other entries are no reason to write)
	for _, k := range v.keys[:v.tokens] {
		listLacks = listLacks || v.other == "" && !slices.Contains(v.list, k)
	}
	chk.OutOfStep = len(chk.Missing) > 0 || len(chk.Foreign) > 0 || listLacks
	return chk
}

// isWrongType reports whether err is Redis's WRONGTYPE reply.
func isWrongType(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply) && strings.HasPrefix(reply.Error(), "WRONGTYPE")
}

// legacy writes the legacy keys of t: the token keys, auth:{user} and token_expiry with
// a TTL equal to the time to expiry, then adds the token keys the {user} list lacks
// (the list has no TTL; nothing is removed from it). A {user} key that is not a list,
// or that the client may not touch, is left alone: the error wraps
// legacykeys.ErrList, after the other keys were written.
//
// Two writers may finish in either order, so after writing it reads the record again
// and rewrites the keys if a newer token was stored meanwhile, and does the same if the
// user's accounts changed while it wrote: whoever writes last has seen the newest
// version and accounts.
func (c *Cache) legacy(ctx context.Context, user string, t *Token) error {
	rdb := c.opts.Redis
	var listErr error
	for range 3 {
		keys := c.legacyTokenKeys(user)
		ttl := time.Until(t.Expiry)
		if ttl < time.Millisecond {
			return nil
		}
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Set(ctx, k, t.AccessToken, ttl)
			}
			p.Set(ctx, "auth:"+user, t.AccessToken, ttl)
			p.Set(ctx, "token_expiry:"+user, t.Expiry.In(c.opts.LegacyLocation).Format(legacyTimeFormat), ttl)
			return nil
		})
		if err != nil {
			return redisErr("write legacy keys of "+user, err)
		}
		err = legacyListScript.Run(ctx, rdb, []string{user}, toAny(keys)...).Err()
		switch {
		case isWrongType(err) || isNoPerm(err):
			listErr = fmt.Errorf("tokencache: %w %q: %w", legacykeys.ErrList, user, err)
		case err != nil:
			return redisErr("write legacy list "+user, err)
		}
		stored, _, err := c.store.get(ctx, user, time.Now())
		if err != nil || stored == nil {
			return listErr
		}
		if stored.Version > t.Version {
			t = stored
			continue
		}
		if slices.Equal(keys, c.legacyTokenKeys(user)) {
			return listErr
		}
	}
	return listErr
}

// dropLegacy removes accounts user no longer has from the legacy layout (see
// legacykeys.Drop): their entries leave the {user} list, and their token keys are
// deleted unless the account is the user's again or another user's now, or the name
// is not a valid account name (never the user's own key). A {user} key that is not a
// list, or that the client may not touch, is left alone.
func (c *Cache) dropLegacy(ctx context.Context, user string, accounts []string) ([]string, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	if err := CheckName(user); err != nil {
		return nil, err
	}
	if err := c.ClaimLegacyKeys(ctx); err != nil {
		return nil, err
	}
	current := c.opts.AccountsFor(user)
	var unlist, gone []string
	for _, a := range accounts {
		if a == user || CheckName(a) != nil || slices.Contains(current, a) || slices.Contains(unlist, "token:"+a) {
			continue
		}
		unlist = append(unlist, "token:"+a)
		if owner, known := c.opts.LookupUser(a); known && owner != user {
			continue // another user's now: its key holds that user's token
		}
		gone = append(gone, "token:"+a)
	}
	if len(unlist) == 0 {
		return nil, nil
	}
	lrems, dels := make([]*redis.IntCmd, len(unlist)), make([]*redis.IntCmd, len(gone))
	_, _ = c.opts.Redis.Pipelined(ctx, func(p redis.Pipeliner) error { // each command's error is read below
		for i, k := range unlist {
			lrems[i] = p.LRem(ctx, user, 0, k)
		}
		for i, k := range gone {
			dels[i] = p.Del(ctx, k)
		}
		return nil
	})
	for _, cmd := range append(lrems, dels...) {
		err := cmd.Err()
		if err != nil && !(slices.Contains(lrems, cmd) && (isWrongType(err) || isNoPerm(err))) {
			// a list that is not ours, or not ours to touch, is left alone
			return nil, redisErr("remove legacy keys of "+user, err)
		}
	}
	if len(gone) > 0 {
		c.log.Info("tokencache: legacy keys of accounts the user no longer has deleted", "user", user, "keys", gone)
	}
	return gone, nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
