package tradovate

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/redis/go-redis/v9"
)

// AccountOptions chooses where [NewAccountMap] finds each user's trading sub-accounts.
// A credential's explicit Accounts list always wins; otherwise the first source below
// that yields accounts is used.
type AccountOptions struct {
	// LegacyRedis, when set, is read for the original system's list: the Redis LIST named
	// after the user (LRANGE user 0 -1), whose entries look like
	// "token:PAAPEX2720450000001". Default nil: not read.
	LegacyRedis redis.UniversalClient
	// NamingRule enables the original naming rule (see [NamedAccounts]): user
	// "APEX_272045" owns "PAAPEX2720450000001" .. "PAAPEX272045000000<n>". Default false.
	NamingRule bool
	// NamingRuleCount is n for the naming rule (default 5).
	NamingRuleCount int
}

// AccountMap maps trading accounts to the login users whose token they share. It is
// immutable and safe for concurrent use; its UserFor and AccountsFor methods are meant
// for tokencache.Options.
type AccountMap struct {
	userOf     map[string]string   // account -> login user
	accountsOf map[string][]string // login user -> its sub-accounts
}

// NewAccountMap builds the account map of every user in creds. It fails when one
// account is claimed by two users, or when the legacy Redis list cannot be read.
func NewAccountMap(ctx context.Context, creds *Credentials, opts AccountOptions) (*AccountMap, error) {
	if opts.NamingRuleCount <= 0 {
		opts.NamingRuleCount = 5
	}
	m := &AccountMap{userOf: map[string]string{}, accountsOf: map[string][]string{}}
	for _, cr := range creds.list {
		accounts := cr.Accounts
		if len(accounts) == 0 && opts.LegacyRedis != nil {
			var err error
			if accounts, err = LegacyAccounts(ctx, opts.LegacyRedis, cr.Username); err != nil {
				return nil, err
			}
		}
		if len(accounts) == 0 && opts.NamingRule {
			accounts = NamedAccounts(cr.Username, opts.NamingRuleCount)
		}
		m.userOf[cr.Username] = cr.Username
		for _, a := range accounts {
			if a == cr.Username {
				continue
			}
			if owner, taken := m.userOf[a]; taken && owner != cr.Username {
				return nil, fmt.Errorf("tradovate: account %q belongs to both %q and %q", a, owner, cr.Username)
			} else if taken {
				continue // listed twice for the same user
			}
			m.userOf[a] = cr.Username
			m.accountsOf[cr.Username] = append(m.accountsOf[cr.Username], a)
		}
	}
	return m, nil
}

// UserFor returns the login user whose token account uses. An account the map does not
// know is taken to be a login user itself and returned unchanged.
func (m *AccountMap) UserFor(account string) string {
	if u, ok := m.userOf[account]; ok {
		return u
	}
	return account
}

// AccountsFor returns the trading sub-accounts of user (not including user itself), or
// nil. The caller must not modify the slice.
func (m *AccountMap) AccountsFor(user string) []string { return m.accountsOf[user] }

// namingRule matches the user names the original system derives accounts from.
var namingRule = regexp.MustCompile(`^([A-Za-z]+)_([0-9]+)$`)

// NamedAccounts applies the original system's naming rule: for user "APEX_272045" it
// returns "PAAPEX2720450000001" through "PAAPEX272045000000<n>" ("PA", the user name
// without the underscore, a 7-digit sequence number). Users not shaped like
// LETTERS_DIGITS get nil.
func NamedAccounts(user string, n int) []string {
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

// LegacyAccounts reads the original system's Redis LIST named after user
// (LRANGE user 0 -1), whose entries are token keys such as "token:PAAPEX2720450000001",
// and returns the accounts in it other than user itself. A missing list gives nil.
func LegacyAccounts(ctx context.Context, rdb redis.Cmdable, user string) ([]string, error) {
	entries, err := rdb.LRange(ctx, user, 0, -1).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
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
