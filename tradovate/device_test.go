package tradovate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tradovate"
)

// sentDeviceIDs returns the deviceId of each official login the fake received.
func sentDeviceIDs(f *tradovatefake.Server) []string {
	var out []string
	for _, r := range f.Requests() {
		if r.Endpoint == tradovatefake.AccessTokenRequest {
			id, _ := r.Fields["deviceId"].(string)
			out = append(out, id)
		}
	}
	return out
}

func TestDeviceIDIsStableAcrossAuthenticators(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 2)
	creds := f.credentials(t, official)
	ctx := context.Background()
	for range 2 { // two "processes" on the same machine
		a := f.auth(t, creds, nil)
		for _, u := range f.users {
			_, err := a.Login(ctx, u)
			require.NoError(t, err)
		}
	}
	ids := sentDeviceIDs(f.fake)
	require.Len(t, ids, 4)
	assert.Equal(t, ids[0], ids[2], "same user, same machine: same deviceId")
	assert.Equal(t, ids[1], ids[3])
	assert.NotEqual(t, ids[0], ids[1], "each user has its own deviceId")
	for _, id := range ids {
		assert.NotEmpty(t, id)
		assert.LessOrEqual(t, len(id), 64)
	}
}

func TestConfiguredDeviceIDWins(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 2)
	creds := f.credentials(t, func(c *tradovate.Credential) {
		c.Method = tradovate.MethodOfficial
		if c.Username == f.users[1] {
			c.DeviceID = "per-user-device"
		}
	})
	a := f.auth(t, creds, func(o *tradovate.Options) { o.DeviceID = "fleet-device" })
	for _, u := range f.users {
		_, err := a.Login(context.Background(), u)
		require.NoError(t, err)
	}
	assert.Equal(t, []string{"fleet-device", "per-user-device"}, sentDeviceIDs(f.fake))
}

func TestNewValidatesOptions(t *testing.T) {
	t.Parallel()
	creds, err := tradovate.NewCredentials(tradovate.Credential{Username: "u", Password: "p"})
	require.NoError(t, err)
	tests := []struct {
		name string
		opts tradovate.Options
		want string
	}{
		{"no credentials", tradovate.Options{}, "Credentials is required"},
		{"unknown environment", tradovate.Options{Credentials: creds, Environment: "staging"}, `unknown environment "staging"`},
		{"bad REST URL", tradovate.Options{Credentials: creds, RESTURL: "ftp://x"}, "RESTURL"},
		{"bad method", tradovate.Options{Credentials: creds, Method: "fax"}, `Method "fax"`},
		{"long deviceId", tradovate.Options{Credentials: creds, DeviceID: string(make([]byte, 65))}, "65 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tradovate.New(tt.opts)
			require.ErrorContains(t, err, tt.want)
			assert.Contains(t, err.Error(), "tradovate: ")
		})
	}
	_, err = tradovate.New(tradovate.Options{Credentials: creds, Environment: tradovate.Live})
	require.NoError(t, err)
}

// officialOn returns an Authenticator of its own process (its own Redis client) on
// machine.
func officialOn(machine string, f *fixture, t *testing.T, creds tradovate.CredentialSource, edit func(*tradovate.Options)) *tradovate.Authenticator {
	t.Helper()
	opts := f.options(t, creds) // a Redis client of its own: another process
	if edit != nil {
		edit(&opts)
	}
	a, err := tradovate.NewOnMachine(opts, machine)
	require.NoError(t, err)
	return a
}

func TestFleetPresentsOneDeviceIDPerUserAcrossMachinesAndRedisRestarts(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	f := newFixtureOn(t, rs, tradovatefake.Options{}, 2)
	creds := f.credentials(t, official)
	ctx := context.Background()
	login := func(a *tradovate.Authenticator, user string) string {
		t.Helper()
		before := len(sentDeviceIDs(f.fake))
		_, err := a.Login(ctx, user)
		require.NoError(t, err)
		ids := sentDeviceIDs(f.fake)
		require.Len(t, ids, before+1)
		return ids[before]
	}
	a := officialOn("machine-A", f, t, creds, nil)
	b := officialOn("machine-B", f, t, creds, nil)
	u, v := f.users[0], f.users[1]

	first := login(a, u)
	assert.Regexp(t, `^[0-9a-f]{32}$`, first, "generated once: 32 random hex characters")
	assert.Equal(t, first, login(b, u), "another machine presents the same deviceId for the user")
	assert.Equal(t, first, login(a, u))
	other := login(b, v)
	assert.NotEqual(t, first, other, "each user has its own deviceId")
	assert.Equal(t, other, login(a, v))

	reader := tradovate.Options{Redis: f.redis.Client(t), Namespace: f.redis.Prefix + ":tradovate"}
	got, err := tradovate.ReadDeviceID(ctx, reader, u)
	require.NoError(t, err)
	assert.Equal(t, first, got, "status commands read the same deviceId")
	ttl, err := f.redis.Client(t).TTL(ctx, f.redis.Prefix+":tradovate:{"+u+"}:device").Result()
	require.NoError(t, err)
	assert.Equal(t, time.Duration(-1), ttl, "the deviceId never expires")

	// Redis restarts with its data lost. The processes remember the id they presented
	// and put it back: the fleet keeps its deviceIds, whichever process logs in first.
	rs.Stop(t)
	rs.Start(t)
	_, err = tradovate.ReadDeviceID(ctx, reader, u)
	require.ErrorIs(t, err, tradovate.ErrNoDeviceID, "the restart lost the key")
	assert.Equal(t, first, retryLogin(t, f, b, u), "after the restart, machine B re-asserts the fleet's deviceId")
	assert.Equal(t, first, login(a, u))
	c := officialOn("machine-C", f, t, creds, nil) // a process started after the restart
	assert.Equal(t, first, login(c, u), "a new process adopts the stored deviceId")
	assert.Equal(t, other, login(a, v), "machine A re-asserts the other user's deviceId")
	assert.Equal(t, other, login(b, v))

	// When Redis loses its data and no process remembers (all restarted), a new
	// deviceId is generated once and shared again from then on.
	rs.Stop(t)
	rs.Start(t)
	d := officialOn("machine-D", f, t, creds, nil)
	e := officialOn("machine-E", f, t, creds, nil)
	fresh := retryLogin(t, f, d, u)
	assert.NotEqual(t, first, fresh)
	assert.Equal(t, fresh, login(e, u), "both new processes present the same new deviceId")
}

// retryLogin logs user in with a, retrying while the Redis client reconnects after a
// restart, and returns the deviceId the login presented.
func retryLogin(t *testing.T, f *fixture, a *tradovate.Authenticator, user string) string {
	t.Helper()
	before := len(sentDeviceIDs(f.fake))
	require.Eventually(t, func() bool {
		_, err := a.Login(context.Background(), user)
		return err == nil
	}, 20*time.Second, 50*time.Millisecond)
	ids := sentDeviceIDs(f.fake)
	require.Len(t, ids, before+1, "only the successful attempt reached the broker")
	return ids[before]
}

func TestDeviceIDWithoutRedisIsDerivedPerMachine(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	creds := f.credentials(t, official)
	noRedis := func(o *tradovate.Options) { o.Redis = nil }
	for _, m := range []string{"machine-A", "machine-A", "machine-B"} {
		_, err := officialOn(m, f, t, creds, noRedis).Login(context.Background(), f.users[0])
		require.NoError(t, err)
	}
	ids := sentDeviceIDs(f.fake)
	require.Len(t, ids, 3)
	assert.Equal(t, ids[0], ids[1], "same machine, same deviceId")
	assert.NotEqual(t, ids[0], ids[2], "without Redis, machines differ: give the fleet a Redis or pin a deviceId")
	got, err := tradovate.ReadDeviceID(context.Background(), tradovate.Options{}, f.users[0])
	require.NoError(t, err)
	assert.Regexp(t, `^[0-9a-f]{32}$`, got, "ReadDeviceID without Redis derives this machine's")
}

func TestPinnedDeviceIDWinsOverTheStoredOne(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 2)
	u, v := f.users[0], f.users[1]
	ctx := context.Background()
	// A first login stores a generated deviceId for u.
	_, err := f.auth(t, f.credentials(t, official), nil).Login(ctx, u)
	require.NoError(t, err)
	stored := sentDeviceIDs(f.fake)[0]

	logger, logs := bufferLogger()
	pinned := f.credentials(t, func(c *tradovate.Credential) {
		c.Method = tradovate.MethodOfficial
		c.DeviceID = "pinned-" + c.Username
	})
	a := f.auth(t, pinned, func(o *tradovate.Options) { o.Logger = logger })
	for range 3 {
		_, err := a.Login(ctx, u)
		require.NoError(t, err)
	}
	_, err = a.Login(ctx, v)
	require.NoError(t, err)
	assert.Equal(t, []string{stored, "pinned-" + u, "pinned-" + u, "pinned-" + u, "pinned-" + v}, sentDeviceIDs(f.fake))
	assert.Equal(t, 1, strings.Count(logs.String(), "differs from the fleet's stored one"), "warned once, for u only")
	assert.NotContains(t, logs.String(), stored, "deviceIds are logged redacted")

	reader := tradovate.Options{Redis: f.redis.Client(t), Namespace: f.redis.Prefix + ":tradovate"}
	got, err := tradovate.ReadDeviceID(ctx, reader, v)
	require.NoError(t, err)
	assert.Equal(t, "pinned-"+v, got, "a pinned id is stored when none was")
	got, err = tradovate.ReadDeviceID(ctx, reader, u)
	require.NoError(t, err)
	assert.Equal(t, stored, got, "the stored id never changes")
	reader.Credentials = pinned
	got, err = tradovate.ReadDeviceID(ctx, reader, u)
	require.NoError(t, err)
	assert.Equal(t, "pinned-"+u, got, "with the credentials, ReadDeviceID says what a login presents")
}

func TestUnusableStoredDeviceIDStopsTheLoginBeforeSending(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	u := f.users[0]
	key := f.redis.Prefix + ":tradovate:{" + u + "}:device"
	require.NoError(t, f.redis.Client(t).Set(context.Background(), key, strings.Repeat("x", 65), 0).Err())
	_, err := f.auth(t, f.credentials(t, official), nil).Login(context.Background(), u)
	require.ErrorContains(t, err, key)
	assert.ErrorContains(t, err, "not usable")
	assert.Empty(t, f.fake.Requests(), "nothing was sent")
}
