package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
)

// pythonWithRedis returns a Python interpreter that can import the redis module (CI
// installs python3-redis with apt; the python3 first on PATH may be another one, such
// as pyenv's, without it). With none, the test is skipped, or fails when
// BROKERTOKEN_REQUIRE_REAL_REDIS=1.
func pythonWithRedis(t *testing.T) string {
	t.Helper()
	var candidates []string
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	candidates = append(candidates, "/usr/bin/python3", "/usr/local/bin/python3")
	for _, p := range candidates {
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if exec.Command(p, "-c", "import redis").Run() == nil {
			return p
		}
	}
	if os.Getenv(testutil.EnvRequireReal) == "1" {
		t.Fatalf("no python3 that can import redis among %v (install python3-redis)", candidates)
	}
	t.Skipf("no python3 that can import redis among %v (install python3-redis)", candidates)
	return ""
}

// pythonZone returns a time zone far from UTC that Python resolves as Go does, so a
// token_expiry written in UTC instead of the local zone would show; "" when Python
// cannot resolve it (no tzdata): the machine's zone is used then.
func pythonZone(t *testing.T, py string) string {
	const zone = "Asia/Kolkata"
	cmd := exec.Command(py, "-c", "import time; print(time.strftime('%z'))")
	cmd.Env = append(os.Environ(), "TZ="+zone)
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != "+0530" {
		t.Logf("python does not resolve %s (%q, %v): using the machine's zone", zone, out, err)
		return ""
	}
	return zone
}

// legacySpec is what the Python script is told to expect.
type legacySpec struct {
	Users     map[string][]string `json:"users"`
	Absent    []string            `json:"absent,omitempty"`
	Lifetime  float64             `json:"lifetime"`
	RESTURL   string              `json:"rest_url"`
	MDAccount string              `json:"md_account,omitempty"`
}

// pyResult is what the Python script printed.
type pyResult struct {
	Read map[string]string `json:"read"`
	MD   string            `json:"md"`
}

// The existing Python services, as they really read tokens (redis-py, connected as the
// README's legacy-reader role), against the real daemon binary started with the
// user's plain credentials file (no "accounts" field), a real redis-server and the
// fake Tradovate whose account lists change while it runs: GET by sub-account and by
// user, the first account of a list that has a token, KEYS token:* then GET each,
// token_expiry compared with datetime.now(), the list's TTL, each token checked at the
// broker; accounts added and removed at the broker; the daemon stopped until every key
// expired, then restarted (with the broker's account lists failing) and every key back
// at its first check; the market-data token there from the first login.
func TestPythonServicesReadTheLegacyKeys(t *testing.T) {
	py := pythonWithRedis(t)
	srv := testutil.StartRedis(t)
	const lifetime = 8 * time.Second
	f := newFixtureOn(t, srv, tradovatefake.Options{Lifetime: lifetime}, userSpec{"APEX_272045", nil}, userSpec{"APEX_136189", nil})
	a, b := f.users[0], f.users[1]
	f.fake.SetAccounts(a, "PAAPEX2720450000001", "PAAPEX2720450000002")
	f.fake.SetAccounts(b, "PAAPEX1361890000010", "PAAPEX1361890000011", "APEX13618900000118")
	service := f.redis.ACLUser(t, testutil.ACLRoles(t, f.prefix)["legacy-reader"]...)
	zone := pythonZone(t, py)
	ctx := context.Background()

	env := f.env()
	if zone != "" {
		env["TZ"] = zone
	}
	runArgs := []string{"run", "--listen", "", "--check-interval", "100ms", "--accounts-every", "300ms", "--log-format", "json"}
	daemon := start(t, "run#1", env, runArgs...)

	host, port, _ := strings.Cut(srv.Addr(), ":")
	python := func(phase string, spec legacySpec) pyResult {
		t.Helper()
		spec.Lifetime, spec.RESTURL = lifetime.Seconds(), f.fake.RESTURL()
		raw, err := json.Marshal(spec)
		require.NoError(t, err)
		cmd := exec.Command(py, filepath.Join("testdata", "python", "legacy_services.py"), phase, string(raw))
		cmd.Env = append(cleanEnv(), "REDIS_HOST="+host, "REDIS_PORT="+port, "SERVICE_USERNAME="+service.Name,
			"SERVICE_PASSWORD="+service.Password, "BROKERTOKEN="+binary(t),
			"REDIS_URL="+f.aclUser("reader", false), "BROKERTOKEN_PREFIX="+f.prefix, "TZ="+env["TZ"])
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Run(), "python %s: %s", phase, stderr.String())
		var r pyResult
		require.NoError(t, json.Unmarshal(stdout.Bytes(), &r), stdout.String())
		for key, tok := range r.Read {
			assert.True(t, f.fake.Valid(tok), "%s read by python is not a token the broker accepts", key)
		}
		return r
	}
	keyHolds := func(account string) string { v, _ := f.rdb.Get(ctx, "token:"+account).Result(); return v }
	allKeys := func(accounts ...string) func() bool {
		return func() bool {
			for _, x := range accounts {
				if keyHolds(x) == "" {
					return false
				}
			}
			return true
		}
	}

	// The first login: every sub-account the broker lists has its key, and the
	// market-data token is there already.
	require.Eventually(t, allKeys(a, b, "PAAPEX2720450000001", "PAAPEX2720450000002", "PAAPEX1361890000010",
		"PAAPEX1361890000011", "APEX13618900000118"), 30*time.Second, 20*time.Millisecond, "the legacy keys were never all written")
	r := python("read", legacySpec{
		Users: map[string][]string{
			a: {"PAAPEX2720450000001", "PAAPEX2720450000002"},
			b: {"PAAPEX1361890000010", "PAAPEX1361890000011", "APEX13618900000118"},
		},
		MDAccount: "PAAPEX2720450000002",
	})
	require.NotEmpty(t, r.MD)
	assert.True(t, f.fake.Valid(r.MD), "the market-data token works")
	assert.NotContains(t, r.Read, r.MD, "a market-data token, not the access token")
	assert.Equal(t, 1, f.fake.Logins(a))

	// The prop firm opens an account and closes another.
	f.fake.AddAccount(a, "APEX27204500000118")
	f.fake.RemoveAccount(a, "PAAPEX2720450000001")
	require.Eventually(t, func() bool {
		return keyHolds("APEX27204500000118") != "" && keyHolds("PAAPEX2720450000001") == ""
	}, 30*time.Second, 20*time.Millisecond, "the legacy keys did not follow the broker's accounts")
	python("read", legacySpec{
		Users: map[string][]string{
			a: {"PAAPEX2720450000002", "APEX27204500000118"},
			b: {"PAAPEX1361890000010", "PAAPEX1361890000011", "APEX13618900000118"},
		},
		Absent: []string{"PAAPEX2720450000001"},
	})

	// The daemon stops until every key has expired: the lists stay.
	code, _ := daemon.stop(10 * time.Second)
	require.Equal(t, 0, code, daemon.stderr.String())
	require.Eventually(t, func() bool { return len(f.keys("token:*")) == 0 }, lifetime+30*time.Second, 100*time.Millisecond)
	python("expired", legacySpec{Users: map[string][]string{
		a: {"PAAPEX2720450000002", "APEX27204500000118"},
		b: {"PAAPEX1361890000010", "PAAPEX1361890000011", "APEX13618900000118"},
	}})

	// Restarted while the broker's account lists fail: every key is back at the first
	// check, the accounts coming from the lists the original layout keeps.
	for _, u := range []string{a, b} {
		f.fake.Script(tradovatefake.TVAccounts, u, slices.Repeat([]tradovatefake.Response{tradovatefake.Status(http.StatusServiceUnavailable)}, 1000)...)
	}
	daemon = start(t, "run#2", env, runArgs...)
	require.Eventually(t, allKeys(a, b), 30*time.Second, 20*time.Millisecond)
	python("read", legacySpec{
		Users: map[string][]string{
			a: {"PAAPEX2720450000002", "APEX27204500000118"},
			b: {"PAAPEX1361890000010", "PAAPEX1361890000011", "APEX13618900000118"},
		},
		MDAccount: "APEX27204500000118",
	})
	require.Eventually(t, func() bool {
		return strings.Contains(daemon.stderr.String(), "cannot list the user's accounts; the last known ones are kept")
	}, 30*time.Second, 50*time.Millisecond)
	assert.True(t, allKeys("PAAPEX2720450000002", "APEX27204500000118")(), "the failing lists changed nothing")
	code, _ = daemon.stop(10 * time.Second)
	require.Equal(t, 0, code, daemon.stderr.String())
	assert.Equal(t, 2, f.fake.Logins(a), "one login per start")
	f.assertNoSecrets("daemon output", daemon.stderr.String())
}
