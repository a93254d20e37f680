package tradovate

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/tokencache"
)

func TestInterpretTokenAnswer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		status  int
		body    string
		login   bool
		access  string
		expiry  time.Time
		penalty *penalty
		is      error
		temp    bool
	}{
		{name: "success with extra fields", status: 200, login: true,
			body:   `{"accessToken":"A","mdAccessToken":"M","expirationTime":"2021-06-15T15:40:30.056Z","userStatus":"Active","userId":123,"name":"U","hasLive":false,"outdatedTaC":true,"hibpHint":{"x":1}}`,
			access: "A", expiry: time.Date(2021, 6, 15, 15, 40, 30, 56e6, time.UTC)},
		{name: "success without milliseconds", status: 200, login: true,
			body: `{"accessToken":"A","expirationTime":"2021-06-15T15:40:30Z"}`, access: "A", expiry: time.Date(2021, 6, 15, 15, 40, 30, 0, time.UTC)},
		{name: "unreadable expirationTime is ignored", status: 200, login: true,
			body: `{"accessToken":"A","expirationTime":"soon"}`, access: "A"},
		{name: "errorText", status: 200, login: true, body: `{"errorText":"Incorrect username or password."}`, is: ErrBadCredentials},
		{name: "errorText on renew", status: 200, body: `{"errorText":"Access is denied"}`, is: tokencache.ErrTokenRejected},
		{name: "401 login", status: 401, login: true, body: ``, is: ErrBadCredentials},
		{name: "401 renew", status: 401, body: ``, is: tokencache.ErrTokenRejected},
		{name: "penalty", status: 200, login: true, body: `{"p-ticket":"T","p-time":15,"p-captcha":false}`,
			penalty: &penalty{ticket: "T", wait: 15 * time.Second}},
		{name: "penalty with string time", status: 200, login: true, body: `{"p-ticket":"T","p-time":"2.5"}`,
			penalty: &penalty{ticket: "T", wait: 2500 * time.Millisecond}},
		{name: "captcha", status: 200, login: true, body: `{"p-ticket":"T","p-time":60,"p-captcha":true}`,
			penalty: &penalty{ticket: "T", wait: time.Minute, captcha: true}},
		{name: "captcha without ticket", status: 200, login: true, body: `{"p-captcha":true}`,
			penalty: &penalty{captcha: true}},
		{name: "inactive", status: 200, login: true, body: `{"accessToken":"A","userStatus":"Closed"}`, is: ErrInactiveUser},
		{name: "empty object", status: 200, login: true, body: `{}`, is: ErrMalformedResponse, temp: true},
		{name: "garbage", status: 200, login: true, body: `<html>`, is: ErrMalformedResponse, temp: true},
		{name: "array", status: 200, login: true, body: `[]`, is: ErrMalformedResponse, temp: true},
		{name: "two objects", status: 200, login: true, body: `{"accessToken":"A"}{"accessToken":"B"}`, is: ErrMalformedResponse, temp: true},
		{name: "token of the wrong type: accepted, unknown shape", status: 200, login: true, body: `{"accessToken":5}`, is: ErrUnknownLoginAnswer},
		{name: "token of the wrong type on renew", status: 200, body: `{"accessToken":5}`, is: ErrMalformedResponse, temp: true},
		{name: "userId without token: accepted, unknown shape", status: 200, login: true,
			body: `{"token":"eyJhbGciOi.x.y","userId":123,"userStatus":"Active"}`, is: ErrUnknownLoginAnswer},
		{name: "token with a space: accepted, unknown shape", status: 200, login: true, body: `{"accessToken":"a b"}`, is: ErrUnknownLoginAnswer},
		{name: "odd optional fields are ignored", status: 200, login: true,
			body:   `{"accessToken":"A","mdAccessToken":7,"userId":"x","name":[1],"hasLive":"maybe","expirationTime":5}`,
			access: "A"},
		{name: "429", status: 429, login: true, is: ErrLockedOut},
		{name: "423", status: 423, login: true, is: ErrLockedOut},
		{name: "500", status: 500, login: true, is: ErrUnavailable, temp: true},
		{name: "408", status: 408, login: true, is: ErrUnavailable, temp: true},
		{name: "400", status: 400, login: true, is: ErrUnexpectedStatus},
		{name: "400 renew", status: 400, body: ``, is: tokencache.ErrTokenRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ans, err := interpretTokenAnswer(tt.status, []byte(tt.body), tt.login)
			if tt.is != nil {
				require.NotNil(t, err)
				assert.ErrorIs(t, err, tt.is)
				assert.Equal(t, tt.temp, err.Temporary())
				assert.Equal(t, tt.status, err.StatusCode)
				return
			}
			require.Nil(t, err)
			assert.Equal(t, tt.access, ans.access)
			assert.True(t, tt.expiry.Equal(ans.expiry), "expiry %s", ans.expiry)
			assert.Equal(t, tt.penalty, ans.penalty)
		})
	}
}

func TestInterpretTVAnswer(t *testing.T) {
	t.Parallel()
	ans, err := interpretTVAnswer(200, []byte(`{"s":"ok","d":{"access_token":"A","expiration":1760789707}}`))
	require.Nil(t, err)
	assert.Equal(t, "A", ans.access)
	assert.Equal(t, time.Unix(1760789707, 0).UTC(), ans.expiry)

	ans, err = interpretTVAnswer(200, []byte(`{"s":"ok","d":{"access_token":"A"}}`))
	require.Nil(t, err)
	assert.True(t, ans.expiry.IsZero(), "expiration is optional")

	ans, err = interpretTVAnswer(200, []byte(`{"s":"ok","d":{"access_token":"A","expiration":1760789707123}}`))
	require.Nil(t, err)
	assert.Equal(t, time.UnixMilli(1760789707123).UTC(), ans.expiry, "milliseconds are recognised")

	// The other shape public material shows: camelCase, an ISO expirationTime, the user.
	ans, err = interpretTVAnswer(200, []byte(`{"s":"ok","d":{"accessToken":"B","expirationTime":"2025-01-21T20:00:00.000Z","userId":12345,"userName":"APEX_266668"}}`))
	require.Nil(t, err)
	assert.Equal(t, "B", ans.access)
	assert.Equal(t, time.Date(2025, 1, 21, 20, 0, 0, 0, time.UTC), ans.expiry)
	assert.Equal(t, int64(12345), ans.user.userID)
	assert.Equal(t, "APEX_266668", ans.user.name)

	ans, err = interpretTVAnswer(200, []byte(`{"s":"ok","d":{"accessToken":"B","expiration":"1760789707"}}`))
	require.Nil(t, err)
	assert.Equal(t, time.Unix(1760789707, 0).UTC(), ans.expiry, "numeric strings and mixed names are read")

	_, err = interpretTVAnswer(200, []byte(`{"s":"error","errmsg":"Invalid login"}`))
	require.NotNil(t, err)
	assert.ErrorIs(t, err, ErrBadCredentials)
	assert.Equal(t, "Invalid login", err.Text)

	_, err = interpretTVAnswer(200, []byte(`{"s":"denied"}`))
	require.NotNil(t, err)
	assert.ErrorIs(t, err, ErrBadCredentials)

	for _, body := range []string{`{}`, `nope`, `{"s":1}`, `{"d":{"access_token":"A"}}`} {
		_, err = interpretTVAnswer(200, []byte(body))
		require.NotNil(t, err, body)
		assert.ErrorIs(t, err, ErrMalformedResponse, body)
		assert.True(t, err.Temporary())
	}
	// "s": "ok" is an accepted login: whatever else the answer holds, it is final.
	for _, body := range []string{`{"s":"ok"}`, `{"s":"ok","d":{}}`, `{"s":"ok","d":"A"}`, `{"s":"ok","d":{"token":"A"}}`,
		`{"s":"ok","d":{"access_token":5}}`, `{"s":"ok","d":{"accessToken":""}}`} {
		_, err = interpretTVAnswer(200, []byte(body))
		require.NotNil(t, err, body)
		assert.ErrorIs(t, err, ErrUnknownLoginAnswer, body)
		assert.False(t, err.Temporary(), body)
	}

	ans, err = interpretTVAnswer(200, []byte(`{"p-ticket":"T","p-time":1}`))
	require.Nil(t, err)
	assert.Equal(t, &penalty{ticket: "T", wait: time.Second}, ans.penalty)

	_, err = interpretTVAnswer(http.StatusTooManyRequests, nil)
	assert.ErrorIs(t, err, ErrLockedOut)
}

func TestTheSpecTestVectorExpiry(t *testing.T) {
	t.Parallel()
	// The 215-character token from the original system (seeds.md): header
	// {"kid":"4","alg":"EdDSA"}, exp 1760789707.
	const vector = "eyJraWQiOiI0IiwiYWxnIjoiRWREU0EifQ.eyJzdWIiOiIzODY1NjUxIiwiZXhwIjoxNzYwNzg5NzA3LCJqdGkiOiItNDM4MjEwOTUxMjgyOTcwNTM4NC0xNjMyMDc2ODcwNDU4NzM2NDMiLCJwaHMiOjk4NTY5MzU1MH0.dh1SjFQfE2vN6aixpz3aveEb7p_ElqMfnl9V3bc16zBXmX8IM0zaduP2cS25ZtCBb5CEsMFcKQVKiRoMl2k8Dw"
	body := []byte(`{"s":"ok","d":{"access_token":"` + vector + `"}}`)
	ans, err := interpretTVAnswer(200, body)
	require.Nil(t, err)
	a := &Authenticator{opts: Options{Now: time.Now, DefaultLifetime: time.Hour}}
	tok := a.token(ans)
	assert.Equal(t, time.Unix(1760789707, 0).UTC(), tok.Expiry.UTC())
}

func TestMachineIDAndDerivedDeviceID(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	full := filepath.Join(dir, "machine-id")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))
	require.NoError(t, os.WriteFile(full, []byte("3d1219c7c4c5404aaa1f6d2a48adfda4\n"), 0o600))
	host := func() (string, error) { return "host-1", nil }
	noHost := func() (string, error) { return "", errors.New("no host") }

	id, err := machineID([]string{filepath.Join(dir, "missing"), empty, full}, host)
	require.NoError(t, err)
	assert.Equal(t, "machine-id:3d1219c7c4c5404aaa1f6d2a48adfda4", id)

	id, err = machineID([]string{empty}, host)
	require.NoError(t, err)
	assert.Equal(t, "hostname:host-1", id)

	_, err = machineID(nil, noHost)
	require.ErrorContains(t, err, "set Options.DeviceID")

	d1 := deriveDeviceID("machine-id:x", "APEX_1")
	assert.Equal(t, d1, deriveDeviceID("machine-id:x", "APEX_1"), "deterministic")
	assert.NotEqual(t, d1, deriveDeviceID("machine-id:x", "APEX_2"), "per user")
	assert.NotEqual(t, d1, deriveDeviceID("machine-id:y", "APEX_1"), "per machine")
	assert.Len(t, d1, 32)
	assert.NotContains(t, d1, "APEX")
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	t.Parallel()
	a := &Authenticator{opts: Options{RetryBackoff: 100 * time.Millisecond, MaxRetryBackoff: time.Second}}
	for n := 1; n <= 10; n++ {
		full := min(100*time.Millisecond<<(n-1), time.Second)
		for range 50 {
			d := a.backoff(n)
			assert.GreaterOrEqual(t, d, full/2, "retry %d", n)
			assert.LessOrEqual(t, d, full, "retry %d", n)
		}
	}
}

func TestOptionsDefaults(t *testing.T) {
	t.Parallel()
	var o Options
	o.init()
	assert.Equal(t, Demo, o.Environment)
	assert.Equal(t, DemoRESTURL, o.RESTURL)
	assert.Equal(t, DemoTradingViewURL, o.TradingViewURL)
	assert.Equal(t, "brokertoken:tradovate:demo.tradovateapi.com", o.Namespace, "shared by every prefix logging in to the demo environment")
	assert.Equal(t, 10, o.LoginBudget)
	assert.Equal(t, time.Minute, o.LoginBudgetWindow)
	assert.Zero(t, o.LoginBudgetWait, "as long as the context allows")
	assert.Equal(t, time.Hour, o.Cooldown)
	assert.Equal(t, 3, o.MaxPenaltyRetries)
	assert.Equal(t, 3, o.MaxAttempts)
	assert.Equal(t, 80*time.Minute, o.DefaultLifetime)
	assert.Equal(t, 30*time.Second, o.HTTPClient.Timeout)
	assert.NotNil(t, o.Logger)
	assert.NotNil(t, o.Now)

	live := Options{Environment: Live}
	live.init()
	assert.Equal(t, LiveRESTURL, live.RESTURL)
	assert.Equal(t, LiveTradingViewURL, live.TradingViewURL)

	none := Options{MaxPenaltyRetries: -1}
	none.init()
	assert.Equal(t, 0, none.MaxPenaltyRetries)
}

func TestNewDoesNotMutateTheCallersOptions(t *testing.T) {
	t.Parallel()
	creds, err := NewCredentials(Credential{Username: "u", Password: "p"})
	require.NoError(t, err)
	opts := Options{Credentials: creds}
	_, err = New(opts)
	require.NoError(t, err)
	assert.Equal(t, Options{Credentials: creds}, opts)
}
