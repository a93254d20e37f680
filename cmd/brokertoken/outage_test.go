package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
)

// The broker starts refusing every request while two daemons keep a short-lived token
// fresh: once the token expires /healthz answers 503 naming the user; when the broker
// is back a new token is stored and /healthz answers 200 again. The webhook receives
// exactly one failure alert and one recovery alert for the whole fleet.
func TestOutageFlipsHealthAndAlertsOnceForTheFleet(t *testing.T) {
	f := newFixture(t, tradovatefake.Options{Lifetime: 3 * time.Second}, userSpec{"u", []string{"u1"}})
	user := f.users[0]
	hook := newWebhook(t)
	env := f.env()
	env["BROKERTOKEN_ALERT_WEBHOOK"] = hook.srv.URL + "/alerts/s3cr3t-path"
	binary(t)

	ports := []int{testutil.FreePort(t), testutil.FreePort(t)}
	var daemons []*proc
	for i, port := range ports {
		daemons = append(daemons, start(t, fmt.Sprintf("run#%d", i), env, "run",
			"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--check-interval", "100ms",
			"--refresh-before", "1500ms", "--leeway", "300ms", "--retry-max", "500ms", "--login-budget", "1000"))
	}
	health := fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[0])
	var bodies []string
	bodies = append(bodies, waitHTTP(t, health, 200, 20*time.Second))

	var refusing sync.Mutex
	refused := 0
	f.fake.SetHook(func(tradovatefake.Call) (tradovatefake.Response, bool) {
		refusing.Lock()
		refused++
		refusing.Unlock()
		return tradovatefake.Status(503), true
	})
	down := waitHTTP(t, health, 503, 20*time.Second)
	bodies = append(bodies, down)
	var ans healthAnswer
	require.NoError(t, json.Unmarshal([]byte(down), &ans))
	assert.Equal(t, "unhealthy", ans.Status)
	assert.Equal(t, []string{user}, ans.Unhealthy)
	// The other daemon reads the same Redis and agrees.
	bodies = append(bodies, waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[1]), 503, 5*time.Second))
	// A refresh that was still retrying when the token expired may not have failed
	// yet: keep refusing until one has.
	require.Eventually(t, func() bool { return hook.events()[eventFailure] >= 1 }, 20*time.Second, 20*time.Millisecond,
		"no failure alert; got %v", hook.events())

	f.fake.SetHook(nil)
	bodies = append(bodies, waitHTTP(t, health, 200, 20*time.Second))
	require.Eventually(t, func() bool { return hook.events()[eventRecovered] >= 1 }, 10*time.Second, 20*time.Millisecond,
		"no recovery alert; got %v", hook.events())
	time.Sleep(time.Second) // room for a duplicate to arrive
	assert.Equal(t, map[string]int{eventFailure: 1, eventRecovered: 1}, hook.events(), "alerts: %s", hook.all())
	refusing.Lock()
	assert.Positive(t, refused)
	refusing.Unlock()

	var failure map[string]any
	hook.mu.Lock()
	for _, b := range hook.bodies {
		if b["event"] == eventFailure {
			failure = b
		}
	}
	hook.mu.Unlock()
	assert.Equal(t, user, failure["user"])
	assert.Equal(t, "unavailable", failure["kind"])
	assert.Equal(t, []any{f.redis.Name("u1")}, failure["accounts"])
	assert.Contains(t, failure["message"], "HTTP 503")

	var metrics []string
	for _, port := range ports {
		_, m := get(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		metrics = append(metrics, m)
	}
	all := strings.Join(metrics, "\n")
	assert.Regexp(t, fmt.Sprintf(`brokertoken_refresh_failures_total\{kind="unavailable",op="(renew|login)",user=%q\} [1-9]`, user), all)
	assert.Regexp(t, fmt.Sprintf(`brokertoken_alerts_total\{event="failure"\} 1`), all)

	for _, d := range daemons {
		code, _ := d.stop(10 * time.Second)
		assert.Equal(t, 0, code)
	}
	assert.Empty(t, f.keys(f.prefix+":*:lease"), "leases left behind")

	// Secrets scan of everything the scenario printed or sent.
	everything := hook.all() + "\n" + strings.Join(bodies, "\n") + "\n" + all
	for _, d := range daemons {
		everything += "\n" + d.stdout.String() + "\n" + d.stderr.String()
	}
	f.assertNoSecrets("outage scenario output", everything, "s3cr3t-path")
}
