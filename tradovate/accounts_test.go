package tradovate_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tradovate"
)

func TestNamedAccountsFollowsTheOriginalRule(t *testing.T) {
	t.Parallel()
	assert.Equal(t, []string{
		"PAAPEX2720450000001", "PAAPEX2720450000002", "PAAPEX2720450000003",
		"PAAPEX2720450000004", "PAAPEX2720450000005",
	}, tradovate.NamedAccounts("APEX_272045", 5))
	assert.Equal(t, []string{"PAAPEX2720450000001", "PAAPEX2720450000002"}, tradovate.NamedAccounts("APEX_272045", 2))
	assert.Nil(t, tradovate.NamedAccounts("someone", 5), "names not shaped LETTERS_DIGITS have no rule")
	assert.Nil(t, tradovate.NamedAccounts("APEX_272045", 0))
}

// A user's accounts are the union of its credential's list, the naming rule's and
// (until the broker is asked) the original system's list.
func TestAccountMapSources(t *testing.T) {
	t.Parallel()
	srv := testutil.Redis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	legacyUser := srv.Name("legacy")
	require.NoError(t, rdb.RPush(ctx, legacyUser, "token:"+legacyUser, "token:LEG1", "token:LEG2", "token:X1", "token:bad name").Err())
	require.NoError(t, rdb.RPush(ctx, "APEX_111", "token:LEG3").Err())
	t.Cleanup(func() { rdb.Del(context.Background(), legacyUser, "APEX_111") })

	creds, err := tradovate.NewCredentials(
		tradovate.Credential{Username: "APEX_272045", Password: "p"},                                          // naming rule
		tradovate.Credential{Username: "APEX_111", Password: "p", Accounts: []string{"X1", "X2", "APEX_111"}}, // explicit and legacy
		tradovate.Credential{Username: legacyUser, Password: "p"},                                             // legacy list
		tradovate.Credential{Username: "plain", Password: "p"},                                                // nothing
	)
	require.NoError(t, err)
	m, err := tradovate.NewAccountMap(ctx, creds, tradovate.AccountOptions{LegacyRedis: rdb, NamingRule: true, NamingRuleCount: 3})
	require.NoError(t, err)

	assert.Equal(t, []string{"PAAPEX2720450000001", "PAAPEX2720450000002", "PAAPEX2720450000003"}, m.AccountsFor("APEX_272045"))
	assert.Equal(t, []string{"X1", "X2", "PAAPEX1110000001", "PAAPEX1110000002", "PAAPEX1110000003", "LEG3"}, m.AccountsFor("APEX_111"),
		"explicit, then the rule's, then the legacy list's; the user itself is not its own sub-account")
	assert.Equal(t, []string{"LEG1", "LEG2"}, m.AccountsFor(legacyUser), "another user's account and a bad name are left out")
	assert.Nil(t, m.AccountsFor("plain"))
	assert.Equal(t, []string{"APEX_272045", "APEX_111", legacyUser, "plain"}, m.Users())

	assert.Equal(t, "APEX_272045", m.UserFor("PAAPEX2720450000002"))
	assert.Equal(t, "APEX_111", m.UserFor("X2"))
	assert.Equal(t, legacyUser, m.UserFor("LEG1"))
	assert.Equal(t, "APEX_111", m.UserFor("APEX_111"))
	assert.Equal(t, "unknown", m.UserFor("unknown"), "unknown accounts are their own login user")
	u, known := m.LookupUser("unknown")
	assert.Equal(t, "unknown", u)
	assert.False(t, known)
	u, known = m.LookupUser("plain")
	assert.Equal(t, "plain", u)
	assert.True(t, known, "a login user is known")
}

func TestAccountMapRejectsSharedAccounts(t *testing.T) {
	t.Parallel()
	creds, err := tradovate.NewCredentials(
		tradovate.Credential{Username: "u1", Password: "p", Accounts: []string{"A"}},
		tradovate.Credential{Username: "u2", Password: "p", Accounts: []string{"A"}},
	)
	require.NoError(t, err)
	_, err = tradovate.NewAccountMap(context.Background(), creds, tradovate.AccountOptions{})
	require.ErrorContains(t, err, `account "A" belongs to both "u1" and "u2"`)
}

func TestLegacyAccountsOfAMissingList(t *testing.T) {
	t.Parallel()
	srv := testutil.Redis(t)
	got, err := tradovate.LegacyAccounts(context.Background(), srv.Client(t), srv.Name("nobody"))
	require.NoError(t, err)
	assert.Empty(t, got)
	require.NoError(t, srv.Client(t).Set(context.Background(), srv.Name("string"), "x", 0).Err())
	got, err = tradovate.LegacyAccounts(context.Background(), srv.Client(t), srv.Name("string"))
	require.NoError(t, err)
	assert.Empty(t, got, "a key of another type is not the original list")
}

// A list the client may not read (its ACL names no pattern for it) is no error: the
// map starts without it, as with a key of another type.
func TestLegacyAccountsOfAListOutsideTheACL(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	ctx := context.Background()
	list := "X" + srv.Name("outside")
	require.NoError(t, srv.Client(t).RPush(ctx, list, "token:PA1").Err())
	limited := srv.ACLClient(t, "~"+srv.Prefix+"*", "+lrange", "+ping", "+hello")
	got, err := tradovate.LegacyAccounts(ctx, limited, list)
	require.NoError(t, err)
	assert.Empty(t, got)
}

// Update replaces what the broker listed, keeps the fixed accounts, refuses names that
// are not its to take, and says what changed; readers see one map or the next.
func TestAccountMapUpdate(t *testing.T) {
	t.Parallel()
	creds, err := tradovate.NewCredentials(
		tradovate.Credential{Username: "A", Password: "p", Accounts: []string{"FIX"}},
		tradovate.Credential{Username: "B", Password: "p"},
	)
	require.NoError(t, err)
	m, err := tradovate.NewAccountMap(context.Background(), creds, tradovate.AccountOptions{})
	require.NoError(t, err)

	c, err := m.Update("A", []string{"PA1", "PA2", "FIX", "PA1"})
	require.NoError(t, err)
	assert.Equal(t, tradovate.AccountChange{User: "A", Added: []string{"PA1", "PA2"}}, c)
	assert.True(t, c.Changed())
	assert.Equal(t, []string{"FIX", "PA1", "PA2"}, m.AccountsFor("A"))

	c, err = m.Update("B", []string{"PA2", "B1", "A", "has space", "B"})
	require.NoError(t, err)
	assert.Equal(t, []string{"B1"}, c.Added)
	assert.Len(t, c.Ignored, 3)
	assert.Contains(t, c.Ignored[0], `"PA2": already an account of user "A"`)
	assert.Contains(t, c.Ignored[1], `"A": a login user of its own`)
	assert.Contains(t, c.Ignored[2], `"has space"`)

	c, err = m.Update("A", []string{"PA2", "PA3"})
	require.NoError(t, err)
	assert.Equal(t, tradovate.AccountChange{User: "A", Added: []string{"PA3"}, Removed: []string{"PA1"}}, c)
	assert.Equal(t, []string{"FIX", "PA2", "PA3"}, m.AccountsFor("A"))
	u, known := m.LookupUser("PA1")
	assert.Equal(t, "PA1", u)
	assert.False(t, known, "a removed account is unknown")
	assert.Equal(t, "A", m.UserFor("FIX"))

	c, err = m.Update("A", nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"PA2", "PA3"}, c.Removed)
	assert.Equal(t, []string{"FIX"}, m.AccountsFor("A"), "fixed accounts stay")
	c, err = m.Update("B", []string{"PA2"})
	require.NoError(t, err)
	assert.Equal(t, []string{"PA2"}, c.Added, "free again: B may take it")
	assert.Equal(t, []string{"B1"}, c.Removed)

	_, err = m.Update("nobody", []string{"X"})
	require.ErrorIs(t, err, tradovate.ErrUnknownAccountUser)
	assert.False(t, tradovate.AccountChange{User: "A"}.Changed())
}

func TestAccountMapIsSafeForConcurrentUpdates(t *testing.T) {
	t.Parallel()
	creds, err := tradovate.NewCredentials(tradovate.Credential{Username: "A", Password: "p"}, tradovate.Credential{Username: "B", Password: "p"})
	require.NoError(t, err)
	m, err := tradovate.NewAccountMap(context.Background(), creds, tradovate.AccountOptions{})
	require.NoError(t, err)
	var wg sync.WaitGroup
	lists := [][]string{{"A1", "A2"}, {"A2", "A3"}}
	for i := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := range 200 {
				_, err := m.Update([]string{"A", "B"}[i%2], lists[j%2])
				assert.NoError(t, err)
			}
		}()
		go func() {
			defer wg.Done()
			for range 200 {
				accounts := m.AccountsFor("A")
				assert.LessOrEqual(t, len(accounts), 3)
				if u, known := m.LookupUser("A2"); known {
					assert.Contains(t, []string{"A", "B"}, u)
				}
			}
		}()
	}
	wg.Wait()
	a, b := m.AccountsFor("A"), m.AccountsFor("B")
	for _, x := range a {
		assert.NotContains(t, b, x, "an account belongs to one user")
	}
}

// An account the broker lists for two users belongs to the one first in the
// credentials, whichever list is applied first, so every process agrees; the other
// user's loss is reported with the change that caused it.
func TestAccountMapSharedAccountGoesToTheFirstUser(t *testing.T) {
	t.Parallel()
	creds, err := tradovate.NewCredentials(
		tradovate.Credential{Username: "A", Password: "p"},
		tradovate.Credential{Username: "B", Password: "p", Accounts: []string{"BFIX"}},
	)
	require.NoError(t, err)
	orders := [][]string{{"A", "B"}, {"B", "A"}}
	lists := map[string][]string{"A": {"X", "A1", "BFIX"}, "B": {"X", "B1"}}
	for _, order := range orders {
		m, err := tradovate.NewAccountMap(context.Background(), creds, tradovate.AccountOptions{})
		require.NoError(t, err)
		var last tradovate.AccountChange
		for _, u := range order {
			last, err = m.Update(u, lists[u])
			require.NoError(t, err)
		}
		assert.Equal(t, "A", m.UserFor("X"), "order %v", order)
		assert.Equal(t, []string{"X", "A1"}, m.AccountsFor("A"), "order %v: another user's fixed account is not taken", order)
		assert.Equal(t, []string{"BFIX", "B1"}, m.AccountsFor("B"), "order %v", order)
		if order[0] == "B" {
			assert.Equal(t, []string{"X", "A1"}, last.Added)
			assert.Equal(t, []tradovate.AccountChange{{User: "B", Removed: []string{"X"}}}, last.Others, "B's loss is reported")
			assert.True(t, tradovate.AccountChange{User: "A", Others: last.Others}.Changed())
		} else {
			assert.Nil(t, last.Others)
			assert.Contains(t, last.Ignored[0], `"X": already an account of user "A"`)
		}
	}
}
