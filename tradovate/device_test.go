package tradovate_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
