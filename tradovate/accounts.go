package tradovate

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
)

// AccountOptions chooses where [NewAccountMap] finds each user's trading sub-accounts
// before the broker is asked (see [AccountSync]). A credential's explicit Accounts and
// the naming rule's accounts are always kept; the legacy list only stands for the
// broker's answer until the first one.
type AccountOptions struct {
	// LegacyRedis, when set, is read for the original system's list: the Redis LIST named
	// after the user (LRANGE user 0 -1), whose entries look like
	// "token:PAAPEX2720450000001". Its accounts are the user's last known ones: they are
	// replaced by the broker's list at the first [AccountMap.Update]. Default nil: not
	// read.
	LegacyRedis redis.UniversalClient
	// NamingRule adds the original naming rule's accounts (see namedAccounts): user
	// "APEX_272045" owns "PAAPEX2720450000001" .. "PAAPEX272045000000<n>". Default false.
	NamingRule bool
	// NamingRuleCount is n for the naming rule (default 5).
	NamingRuleCount int
}

// AccountMap maps trading accounts to the login users whose token they share. Each
// user's accounts are the union of its fixed ones (the credential's Accounts list and,
// if enabled, the naming rule's) and the ones the broker last listed ([AccountMap.Update],
// usually called by an [AccountSync]). It is safe for concurrent use: reads take no
// lock and see either the map before an update or the map after it.
//
// Give it to a tokencache.Cache as
//
//	tokencache.Options{LookupUser: m.LookupUser, AccountsFor: m.AccountsFor, ...}
//
// LookupUser (rather than UserFor) lets the cache serve an account the map learns only
// after the cache started: the cache does not remember the answer for an account the
// map does not know yet.
type AccountMap struct {
	mu  sync.Mutex                    // serialises updates
	cur atomic.Pointer[accountLayout] // the current map; replaced whole, never modified
}

// accountLayout is one immutable state of an AccountMap.
type accountLayout struct {
	users []string                 // the login users, in credentials order
	of    map[string]*userAccounts // login user -> its accounts
	owner map[string]string        // account (and each login user) -> login user
}

// userAccounts are one login user's accounts.
type userAccounts struct {
	fixed  []string // the credential's accounts and the naming rule's, in that order
	listed []string // the broker's last answer (or the legacy list before the first one), each name once
	found  []string // the names of listed the user has: its share of the broker's answer
	all    []string // fixed, then found, each once; never the user itself
}

// NewAccountMap builds the account map of every user in creds. It fails when one
// account is given to two users by their credentials or the naming rule, or when the
// legacy Redis list cannot be read. Entries of a legacy list that belong to another user
// or that [tokencache.CheckName] refuses are left out.
func NewAccountMap(ctx context.Context, creds *Credentials, opts AccountOptions) (*AccountMap, error) {
	if opts.NamingRuleCount <= 0 {
		opts.NamingRuleCount = 5
	}
	l := &accountLayout{of: map[string]*userAccounts{}, owner: map[string]string{}}
	for _, cr := range creds.list {
		l.users = append(l.users, cr.Username)
		l.owner[cr.Username] = cr.Username
	}
	for _, cr := range creds.list {
		ua := &userAccounts{}
		fixed := cr.Accounts
		if opts.NamingRule {
			fixed = append(slices.Clip(fixed), namedAccounts(cr.Username, opts.NamingRuleCount)...)
		}
		for _, a := range fixed {
			if a == cr.Username || slices.Contains(ua.fixed, a) {
				continue // the user itself, or listed twice
			}
			if owner, taken := l.owner[a]; taken {
				return nil, fmt.Errorf("tradovate: account %q belongs to both %q and %q", a, owner, cr.Username)
			}
			l.owner[a] = cr.Username
			ua.fixed = append(ua.fixed, a)
		}
		l.of[cr.Username] = ua
	}
	for _, cr := range creds.list { // in credentials order: see claim
		ua := l.of[cr.Username]
		if opts.LegacyRedis != nil {
			legacy, err := legacyAccounts(ctx, opts.LegacyRedis, cr.Username)
			if err != nil {
				return nil, err
			}
			ua.listed = union(nil, legacy)
			ua.found, _, _ = l.claim(cr.Username, ua.listed)
		}
		ua.all = union(ua.fixed, ua.found)
	}
	m := &AccountMap{}
	m.cur.Store(l)
	return m, nil
}

// claim returns the names of accounts that user may take from names: valid names, once
// each, that are neither a login user nor another user's fixed account, nor an account
// the broker lists for a user before user in the credentials (an account listed for
// two users belongs to the one first in the credentials, whichever list was read
// first, so every process that reads the same lists agrees). An account it takes from
// a user after user in the credentials is also returned in taken from, by that user;
// the other names are described in ignored. It records the taken ones in l.owner, and
// must be given a layout of its own whose of entries for the users in from it may then
// replace.
func (l *accountLayout) claim(user string, names []string) (found, ignored []string, from map[string][]string) {
	rank := slices.Index(l.users, user)
	for _, a := range names {
		owner, has := l.owner[a]
		switch {
		case a == user || slices.Contains(found, a) || (has && owner == user):
			// the user itself, a name given twice, or one of the user's fixed accounts
		case tokencache.CheckName(a) != nil:
			ignored = append(ignored, fmt.Sprintf("%q: %v", a, tokencache.CheckName(a)))
		case has && owner == a:
			ignored = append(ignored, fmt.Sprintf("%q: a login user of its own", a))
		case has && (slices.Contains(l.of[owner].fixed, a) || slices.Index(l.users, owner) < rank):
			ignored = append(ignored, fmt.Sprintf("%q: already an account of user %q", a, owner))
		case has: // listed for a user after this one in the credentials: this one's
			if from == nil {
				from = map[string][]string{}
			}
			from[owner] = append(from[owner], a)
			l.owner[a] = user
			found = append(found, a)
		default:
			l.owner[a] = user
			found = append(found, a)
		}
	}
	return found, ignored, from
}

// union returns a then the names of b not in a, each once.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, n := range b {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// UserFor returns the login user whose token account uses. An account the map does not
// know is taken to be a login user itself and returned unchanged.
func (m *AccountMap) UserFor(account string) string {
	u, _ := m.LookupUser(account)
	return u
}

// LookupUser returns the login user whose token account uses and true when the map knows
// account (a login user, or an account of one); otherwise account itself and false. It
// is what tokencache.Options.LookupUser takes.
func (m *AccountMap) LookupUser(account string) (user string, known bool) {
	if u, ok := m.cur.Load().owner[account]; ok {
		return u, true
	}
	return account, false
}

// AccountsFor returns the trading sub-accounts of user (not including user itself):
// its fixed ones, then those the broker last listed; nil for a user with none or not in
// the map. The caller must not modify the slice.
func (m *AccountMap) AccountsFor(user string) []string {
	if ua := m.cur.Load().of[user]; ua != nil && len(ua.all) > 0 {
		return ua.all
	}
	return nil
}

// Users returns the login users of the map, in the order of the credentials.
func (m *AccountMap) Users() []string { return slices.Clone(m.cur.Load().users) }

// AccountChange says what an [AccountMap.Update] changed for one user.
type AccountChange struct {
	// User is the login user.
	User string
	// Added are the accounts the user has now and did not have before, in the broker's
	// order.
	Added []string
	// Removed are the accounts the user had and no longer has.
	Removed []string
	// Ignored describes each name of the broker's list that was not taken: a name
	// [tokencache.CheckName] refuses, a login user's name, another user's fixed account,
	// or an account the broker also lists for a user before this one in the credentials
	// (an account listed for two users belongs to the one first in the credentials, on
	// every process, whichever list was read first).
	Ignored []string
	// Others are the changes this one brought to other users: an account the broker
	// lists for two users moves to the one first in the credentials when its list
	// names it, and (through an [AccountSync]) to the next user that lists it when that
	// list no longer does. Nil when no other user's accounts changed.
	Others []AccountChange
	// Shared is true when the change follows another process's answer (see
	// AccountSyncOptions.Shared) rather than an ask of this process.
	Shared bool
}

// Changed reports whether the update added or removed an account, for the user or for
// another one (Others).
func (c AccountChange) Changed() bool {
	if len(c.Added) > 0 || len(c.Removed) > 0 {
		return true
	}
	for _, o := range c.Others {
		if o.Changed() {
			return true
		}
	}
	return false
}

// ErrUnknownAccountUser is returned by [AccountMap.Update] for a user the map does not
// have.
var ErrUnknownAccountUser = errors.New("tradovate: not a login user of the account map")

// Update makes names the accounts the broker lists for user, replacing the previous
// list (the user's fixed accounts stay), and says what changed. Names are taken as
// [AccountChange] describes: an account of the list that a user after user in the
// credentials had is taken from that user (reported in Others); an account user no
// longer lists is free until a user's list is applied again (an [AccountSync] does
// that at once for the users whose lists name it). An error wraps
// [ErrUnknownAccountUser] for a user the map does not have. Readers see the new map at
// once.
func (m *AccountMap) Update(user string, names []string) (AccountChange, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.update(user, union(nil, names))
}

// reapply applies user's last list again: after another user's list stopped naming an
// account, user may take it now. It is Update with the names the map holds, read
// under the same lock.
func (m *AccountMap) reapply(user string) (AccountChange, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ua := m.cur.Load().of[user]
	if ua == nil {
		return AccountChange{}, fmt.Errorf("%w: %q", ErrUnknownAccountUser, user)
	}
	return m.update(user, ua.listed)
}

// listed returns the names the broker last listed for user (each once), as the map
// applied them; the caller must not modify the slice.
func (m *AccountMap) listed(user string) []string {
	if ua := m.cur.Load().of[user]; ua != nil {
		return ua.listed
	}
	return nil
}

// found returns the accounts user has from the broker's last list (not its fixed
// ones); the caller must not modify the slice.
func (m *AccountMap) found(user string) []string {
	if ua := m.cur.Load().of[user]; ua != nil {
		return ua.found
	}
	return nil
}

// update is Update with m.mu held and names given once each.
func (m *AccountMap) update(user string, names []string) (AccountChange, error) {
	old := m.cur.Load()
	ua := old.of[user]
	if ua == nil {
		return AccountChange{}, fmt.Errorf("%w: %q", ErrUnknownAccountUser, user)
	}
	next := &accountLayout{users: old.users, of: make(map[string]*userAccounts, len(old.of)),
		owner: make(map[string]string, len(old.owner))}
	for u, a := range old.of {
		next.of[u] = a
	}
	for a, u := range old.owner {
		if u != user || a == user || slices.Contains(ua.fixed, a) {
			next.owner[a] = u // everything but user's found accounts
		}
	}
	nu := &userAccounts{fixed: ua.fixed, listed: names}
	next.of[user] = nu
	found, ignored, from := next.claim(user, names)
	nu.found = found
	nu.all = union(nu.fixed, nu.found)
	change := diff(user, ua.all, nu.all)
	change.Ignored = ignored
	for _, u := range next.users { // in credentials order
		lost := from[u]
		if len(lost) == 0 {
			continue
		}
		ou := next.of[u]
		left := &userAccounts{fixed: ou.fixed, listed: ou.listed}
		for _, a := range ou.found {
			if !slices.Contains(lost, a) {
				left.found = append(left.found, a)
			}
		}
		left.all = union(left.fixed, left.found)
		next.of[u] = left
		change.Others = append(change.Others, diff(u, ou.all, left.all))
	}
	m.cur.Store(next)
	return change, nil
}

// diff is what changed for user when its accounts went from before to after.
func diff(user string, before, after []string) AccountChange {
	c := AccountChange{User: user}
	for _, a := range after {
		if !slices.Contains(before, a) {
			c.Added = append(c.Added, a)
		}
	}
	for _, a := range before {
		if !slices.Contains(after, a) {
			c.Removed = append(c.Removed, a)
		}
	}
	return c
}

// namingRule matches the user names the original system derives accounts from.
var namingRule = regexp.MustCompile(`^([A-Za-z]+)_([0-9]+)$`)

// namedAccounts applies the original system's naming rule: for user "APEX_272045" it
// returns "PAAPEX2720450000001" through "PAAPEX272045000000<n>" ("PA", the user name
// without the underscore, a 7-digit sequence number). Users not shaped like
// LETTERS_DIGITS get nil. Real account names do not all follow it (the broker's list
// does: see [AccountSync]).
func namedAccounts(user string, n int) []string {
	m := namingRule.FindStringSubmatch(user)
	if m == nil || n <= 0 {
		return nil
	}
	base := "PA" + strings.ToUpper(m[1]) + m[2]
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%07d", base, i+1)
	}
	return out
}

// legacyAccounts reads the original system's Redis LIST named after user
// (LRANGE user 0 -1), whose entries are token keys such as "token:PAAPEX2720450000001",
// and returns the accounts in it other than user itself. A missing list gives nil; a
// key of another type gives nil too (it is not the original system's list), and so
// does one the client may not read (NOPERM: the writer's ACL names no pattern for it;
// the token keys are kept all the same, see tokencache's legacy layout).
func legacyAccounts(ctx context.Context, rdb redis.Cmdable, user string) ([]string, error) {
	entries, err := rdb.LRange(ctx, user, 0, -1).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		if strings.HasPrefix(err.Error(), "WRONGTYPE") || strings.HasPrefix(err.Error(), "NOPERM") {
			return nil, nil // another type, or no right to it: not a list of ours to read
		}
		return nil, fmt.Errorf("tradovate: reading legacy account list %q: %w", user, err)
	}
	var out []string
	for _, e := range entries {
		a := strings.TrimPrefix(e, "token:")
		if a != "" && a != user {
			out = append(out, a)
		}
	}
	return out, nil
}
