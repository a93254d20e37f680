package tradovate_test

import (
	"context"
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

func TestAccountMapSources(t *testing.T) {
	t.Parallel()
	srv := testutil.Redis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	legacyUser := srv.Name("legacy")
	legacyKey := legacyUser // the original system's list is named after the user
	require.NoError(t, rdb.Del(ctx, legacyKey).Err())
	require.NoError(t, rdb.RPush(ctx, legacyKey, "token:"+legacyUser, "token:LEG1", "token:LEG2").Err())
	t.Cleanup(func() { rdb.Del(context.Background(), legacyKey) })

	creds, err := tradovate.NewCredentials(
		tradovate.Credential{Username: "APEX_272045", Password: "p"},                                          // naming rule
		tradovate.Credential{Username: "APEX_111", Password: "p", Accounts: []string{"X1", "X2", "APEX_111"}}, // explicit wins
		tradovate.Credential{Username: legacyUser, Password: "p"},                                             // legacy list wins over the rule
		tradovate.Credential{Username: "plain", Password: "p"},                                                // nothing
	)
	require.NoError(t, err)
	m, err := tradovate.NewAccountMap(ctx, creds, tradovate.AccountOptions{LegacyRedis: rdb, NamingRule: true, NamingRuleCount: 3})
	require.NoError(t, err)

	assert.Equal(t, []string{"PAAPEX2720450000001", "PAAPEX2720450000002", "PAAPEX2720450000003"}, m.AccountsFor("APEX_272045"))
	assert.Equal(t, []string{"X1", "X2"}, m.AccountsFor("APEX_111"), "the user itself is not its own sub-account")
	assert.Equal(t, []string{"LEG1", "LEG2"}, m.AccountsFor(legacyUser))
	assert.Nil(t, m.AccountsFor("plain"))

	assert.Equal(t, "APEX_272045", m.UserFor("PAAPEX2720450000002"))
	assert.Equal(t, "APEX_111", m.UserFor("X2"))
	assert.Equal(t, legacyUser, m.UserFor("LEG1"))
	assert.Equal(t, "APEX_111", m.UserFor("APEX_111"))
	assert.Equal(t, "unknown", m.UserFor("unknown"), "unknown accounts are their own login user")
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
}
