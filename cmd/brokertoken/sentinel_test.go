package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
)

// The daemon on a Sentinel-managed Redis (rediss+sentinel://: master and sentinels with
// passwords, TLS everywhere) keeps a short-lived token fresh while the master is killed: once the
// sentinels have promoted the replica it renews on the new master, with no new login,
// and /healthz is 200 again. The CLI reads through the same URL, and through go-redis's
// failover form.
func TestRunSurvivesAMasterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two Redis servers and three sentinels")
	}
	s := testutil.Sentinel(t, testutil.SentinelOptions{Password: "mpw-Sentinel-9x", SentinelPassword: "spw-Sentinel-7y", TLS: true})
	fake := tradovatefake.New(t, tradovatefake.Options{Lifetime: 12 * time.Second})
	user := s.Name("u")
	fake.AddUser(user, password(user))
	env := map[string]string{
		"BROKERTOKEN_REDIS_CA": s.CAFile(),
		"REDIS_URL": "rediss+sentinel://:" + s.Password + "@" + strings.Join(s.SentinelAddrs(), ",") + "/" + s.MasterName +
			"?sentinel_password=" + s.SentinelPassword,
		"BROKERTOKEN_CREDENTIALS": writeCreds(t, user),
		"TRADOVATE_URL":           fake.RESTURL(),
		"TRADOVATE_TV_URL":        fake.TradingViewURL(),
		"BROKERTOKEN_PREFIX":      s.Prefix,
	}
	port := testutil.FreePort(t)
	health := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	stop := runInProcess(t, env, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--check-interval", "100ms",
		"--refresh-before", "6s", "--leeway", "500ms", "--retry-max", "500ms")
	waitHTTP(t, health, 200, 30*time.Second)
	// The first renewal is the login's exchange for a market-data token; wait for a real one.
	require.Eventually(t, func() bool { return fake.Renewals(user) >= 2 }, 30*time.Second, 50*time.Millisecond, "no renewal")

	rdb := s.Client(t)
	reader, err := tokencache.New(tokencache.Options{Redis: rdb, Prefix: s.Prefix})
	require.NoError(t, err)
	defer reader.Close()
	ctx := context.Background()
	before, err := reader.Status(ctx, user)
	require.NoError(t, err)
	require.NotNil(t, before.Token)

	old := s.KillMaster(t)
	master := s.WaitFailover(t, old, 60*time.Second)
	renewed := fake.Renewals(user)
	require.Eventually(t, func() bool {
		st, err := reader.Status(ctx, user)
		return err == nil && st.Token != nil && st.Token.Version > before.Token.Version && fake.Renewals(user) > renewed
	}, 60*time.Second, 100*time.Millisecond, "no renewal stored on the new master %s", master)
	waitHTTP(t, health, 200, 30*time.Second)
	assert.Equal(t, 1, fake.Logins(user), "the failover cost no login")

	addrs := s.SentinelAddrs()
	var printed strings.Builder
	for _, u := range []string{env["REDIS_URL"],
		"rediss://:" + s.SentinelPassword + "@" + addrs[0] + "?master_name=" + s.MasterName + "&addr=" + addrs[1] +
			"&addr=" + addrs[2] + "&password=" + s.Password,
	} {
		ro := map[string]string{"REDIS_URL": u, "BROKERTOKEN_PREFIX": s.Prefix, "BROKERTOKEN_REDIS_CA": s.CAFile()}
		code, stdout, stderr := inProcess(t, ctx, ro, "", "status", "--json")
		require.Equal(t, 0, code, stderr)
		var st struct{ Users []userStatus }
		require.NoError(t, json.Unmarshal([]byte(stdout), &st))
		require.Len(t, st.Users, 1)
		assert.Contains(t, []string{"fresh", "stale"}, st.Users[0].State)
		printed.WriteString(stdout + stderr)
	}
	// A wrong sentinel password is a clear start-up error that shows no password.
	ro := map[string]string{"REDIS_URL": strings.Replace(env["REDIS_URL"], s.SentinelPassword, "wrong-pw-1", 1),
		"BROKERTOKEN_PREFIX": s.Prefix, "BROKERTOKEN_REDIS_CA": s.CAFile()}
	code, _, stderr := inProcess(t, ctx, ro, "", "status")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "cannot connect")
	assert.Contains(t, stderr, "WRONGPASS")
	printed.WriteString(stderr)
	// Without the CA, the handshake says why it failed.
	delete(ro, "BROKERTOKEN_REDIS_CA")
	ro["REDIS_URL"] = env["REDIS_URL"]
	code, _, stderr = inProcess(t, ctx, ro, "", "status")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "certificate is signed by an unknown authority (give the CA with --redis-ca)")
	printed.WriteString(stderr)

	r := stop()
	assert.Equal(t, 0, r.code, r.stderr)
	for _, secret := range []string{password(user), s.Password, s.SentinelPassword, "wrong-pw-1"} {
		assert.NotContains(t, r.stderr+printed.String(), secret)
	}
}
