package tokencache_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
)

// readmeRoles returns the README's role ACLs for prefix (see testutil.ACLRoles).
func readmeRoles(t *testing.T, prefix string) map[string][]string {
	return testutil.ACLRoles(t, prefix)
}

// without returns rules minus the ones listed.
func without(rules []string, drop ...string) []string {
	var out []string
next:
	for _, r := range rules {
		for _, d := range drop {
			if r == d {
				continue next
			}
		}
		out = append(out, r)
	}
	return out
}

// aclSite is a Redis (single node or cluster) where ACL users can be made.
type aclSite struct {
	prefix string
	admin  redis.UniversalClient
	user   func(rules ...string) redis.UniversalClient
	name   func(string) string
}

func TestACLRolesSingleNode(t *testing.T) {
	srv := testutil.Redis(t)
	testACLRoles(t, aclSite{
		prefix: srv.Prefix,
		admin:  srv.Client(t),
		user:   func(rules ...string) redis.UniversalClient { return srv.ACLClient(t, rules...) },
		name:   srv.Name,
	})
}

func TestACLRolesCluster(t *testing.T) {
	cl := testutil.Cluster(t)
	testACLRoles(t, aclSite{
		prefix: cl.Prefix,
		admin:  cl.Client(t),
		user:   func(rules ...string) redis.UniversalClient { return cl.ACLClient(t, rules...) },
		name:   cl.Name,
	})
}

func testACLRoles(t *testing.T, site aclSite) {
	ctx := context.Background()
	roles := readmeRoles(t, site.prefix)
	user := site.name("U")
	account := site.name("U") + "-acct"
	const retryMin = 300 * time.Millisecond
	b := &checkingBroker{broker: &broker{}}
	mk := func(rdb redis.UniversalClient, auth tokencache.Authenticator, tweak ...func(*tokencache.Options)) *tokencache.Cache {
		return newCache(t, rdb, site.prefix, auth, append(tweak, func(o *tokencache.Options) {
			o.RetryMin = retryMin
			o.UserFor = func(a string) string { return strings.TrimSuffix(a, "-acct") }
		})...)
	}
	writer := mk(site.user(roles["writer"]...), b, func(o *tokencache.Options) {
		o.LegacyKeys = true
		o.AccountsFor = func(string) []string { return []string{account} }
	})
	readerRDB := site.user(roles["reader"]...)
	reader := mk(readerRDB, nil)
	reporterRDB := site.user(roles["reporter"]...)
	reporter := mk(reporterRDB, nil)

	// The writer does its whole job with its rights: lease, login, record, legacy keys.
	tok, err := writer.Token(ctx, user)
	require.NoError(t, err)
	assert.EqualValues(t, 1, b.logins.Load())
	assert.Equal(t, tok.AccessToken, site.admin.Get(ctx, "token:"+account).Val(), "legacy keys written")
	for name, c := range map[string]*tokencache.Cache{"reader": reader, "reporter": reporter} {
		got, err := c.Token(ctx, account)
		require.NoError(t, err, name)
		assert.Equal(t, tok.AccessToken, got.AccessToken, name)
	}
	watch := reader.Watch(ctx, user)

	// Neither reader nor reporter can write a record, read a writer-only key, or
	// announce a version.
	recordKey := site.prefix + ":{" + user + "}:record"
	secretKey := site.prefix + ":secret:{" + user + "}:refresh"
	require.NoError(t, site.admin.Set(ctx, secretKey, "refresh-token", time.Hour).Err())
	for name, rdb := range map[string]redis.UniversalClient{"reader": readerRDB, "reporter": reporterRDB} {
		err := rdb.Set(ctx, recordKey, "v1:9:{}", time.Hour).Err()
		assert.ErrorContains(t, err, "NOPERM", "%s writes a record", name)
		err = rdb.Get(ctx, secretKey).Err()
		assert.ErrorContains(t, err, "NOPERM", "%s reads a secret", name)
		err = rdb.Publish(ctx, site.prefix+":invalidate", fmt.Sprintf("%d:%s", tok.Version+1, user)).Err()
		assert.ErrorContains(t, err, "NOPERM", "%s announces", name)
		err = rdb.Set(ctx, "token:"+account, "forged", time.Hour).Err()
		assert.ErrorContains(t, err, "NOPERM", "%s writes a legacy key", name)
	}
	err = readerRDB.Publish(ctx, site.prefix+":reports", fmt.Sprintf("%d:%s", tok.Version, user)).Err()
	assert.ErrorContains(t, err, "NOPERM", "a reader may not report")

	// A reader's Invalidate fails naming the permission, and costs nothing.
	err = reader.Invalidate(ctx, account, tok.AccessToken)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "NOPERM")
	assert.Contains(t, err.Error(), site.prefix+":reports")

	// A reporter's reports cost a check each RetryMin at most: the broker says the token
	// is good, so nothing is refreshed.
	for range 20 {
		require.NoError(t, reporter.Invalidate(ctx, account, tok.AccessToken))
	}
	require.Eventually(t, func() bool { return b.checks.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
	time.Sleep(2 * retryMin)
	assert.EqualValues(t, 1, b.checks.Load(), "20 reports within RetryMin: one check")
	assert.EqualValues(t, 1, b.logins.Load(), "a token the broker accepts is kept")
	// Forged reports of versions Redis does not hold cost nothing at all.
	for _, v := range []int64{tok.Version - 1, tok.Version + 1, 9999999999999999} {
		require.NoError(t, reporterRDB.Publish(ctx, site.prefix+":reports", fmt.Sprintf("%d:%s", v, user)).Err())
	}
	time.Sleep(2 * retryMin)
	assert.EqualValues(t, 1, b.checks.Load(), "reports of versions Redis does not hold are not checked")

	// Once the broker really revokes it, the next report refreshes it: one login.
	b.revoke(tok.AccessToken)
	require.NoError(t, reporter.Invalidate(ctx, account, tok.AccessToken))
	next := receive(t, watch)
	assert.Greater(t, next.Version, tok.Version)
	assert.EqualValues(t, 2, b.logins.Load())
	for name, c := range map[string]*tokencache.Cache{"writer": writer, "reader": reader, "reporter": reporter} {
		require.Eventually(t, func() bool {
			got, err := c.Token(ctx, account)
			return err == nil && got.AccessToken == next.AccessToken
		}, 5*time.Second, 5*time.Millisecond, name)
	}

	// A writer missing a right learns it before it spends a login, from an error naming it.
	noPublish := mk(site.user(without(roles["writer"], "&"+site.prefix+":invalidate")...), b)
	_, err = noPublish.Token(ctx, site.name("other"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "PUBLISH")
	assert.Contains(t, err.Error(), site.prefix+":invalidate")
	readOnlyRecords := append(without(roles["writer"], "~"+site.prefix+":*"),
		"~"+site.prefix+":{*}:lease", "%R~"+site.prefix+":{*}:record")
	noRecord := mk(site.user(readOnlyRecords...), b)
	_, err = noRecord.Token(ctx, site.name("third"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "NOPERM")
	assert.Contains(t, err.Error(), "write access to "+site.prefix+":{"+site.name("third")+"}:lease and "+
		site.prefix+":{"+site.name("third")+"}:record")
	assert.EqualValues(t, 2, b.logins.Load(), "no login spent by writers missing a right")

	// A reader without the channel's right says so within seconds.
	var logs testutil.Buffer
	deaf := mk(site.user(without(roles["reader"], "&"+site.prefix+":invalidate")...), nil,
		func(o *tokencache.Options) { o.Logger = debugLogger(&logs) })
	_, err = deaf.Token(ctx, account)
	require.NoError(t, err, "it can still read")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "cannot receive invalidations") },
		5*time.Second, 10*time.Millisecond)
}
