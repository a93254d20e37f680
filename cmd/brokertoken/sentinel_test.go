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

// The daemon on a Sentinel-managed Redis (redis+sentinel://) keeps a short-lived token
// fresh while the master is killed: once the sentinels have promoted the replica it
// renews on the new master, with no new login, and /healthz is 200 again. The CLI
// reads through the same URL.
func TestRunSurvivesAMasterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two Redis servers and three sentinels")
	}
	s := testutil.Sentinel(t)
	fake := tradovatefake.New(t, tradovatefake.Options{Lifetime: 12 * time.Second})
	user := s.Name("u")
	fake.AddUser(user, password(user))
	env := map[string]string{
		"REDIS_URL":               "redis+sentinel://" + strings.Join(s.SentinelAddrs(), ",") + "/" + s.MasterName,
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
	require.Eventually(t, func() bool { return fake.Renewals(user) >= 1 }, 30*time.Second, 50*time.Millisecond, "no renewal")

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

	ro := map[string]string{"REDIS_URL": env["REDIS_URL"], "BROKERTOKEN_PREFIX": s.Prefix}
	code, stdout, stderr := inProcess(t, ctx, ro, "", "status", "--json")
	require.Equal(t, 0, code, stderr)
	var st struct{ Users []userStatus }
	require.NoError(t, json.Unmarshal([]byte(stdout), &st))
	require.Len(t, st.Users, 1)
	assert.Contains(t, []string{"fresh", "stale"}, st.Users[0].State)

	r := stop()
	assert.Equal(t, 0, r.code, r.stderr)
	assert.NotContains(t, r.stderr, password(user))
}
