package schwab_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/oauthbroker/schwab"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

func TestProvider(t *testing.T) {
	p := schwab.Provider()
	assert.Equal(t, "https://api.schwabapi.com/v1/oauth/authorize", p.AuthURL)
	assert.Equal(t, "https://api.schwabapi.com/v1/oauth/token", p.TokenURL)
	assert.Equal(t, oauth2.AuthStyleInHeader, p.AuthStyle)
	assert.Equal(t, "30m0s", p.AccessTokenLifetime.String())
	assert.Equal(t, "168h0m0s", p.RefreshTokenLifetime.String())
	assert.False(t, p.RotationRenewsLifetime)
	assert.False(t, p.PKCE)
	assert.Equal(t, "http://127.0.0.1:9/v1/oauth/token", schwab.ProviderAt("http://127.0.0.1:9/").TokenURL)
}

func TestGrantRefused(t *testing.T) {
	// As Schwab answers an expired refresh token (docs/schwab.md).
	desc := `400 Bad Request: "{\"error_description\":\"Exception while authenticating refresh token [tokenDigest=R8QK], Exception=Failed refresh token authentication [tokenDigest=R8QK]]\",\"error\":\"refresh_token_authentication_error\"}"`
	assert.True(t, schwab.GrantRefused("unsupported_token_type", desc))
	assert.True(t, schwab.GrantRefused("invalid_grant", ""))
	assert.True(t, schwab.GrantRefused("refresh_token_authentication_error", ""))
	assert.False(t, schwab.GrantRefused("invalid_client", "bad credentials"))
	assert.False(t, schwab.GrantRefused("unsupported_token_type", "something else"))
	assert.False(t, schwab.GrantRefused("server_error", desc))
}
