package tradovate_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

func TestOfficialLoginSendsTheDocumentedRequest(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	a := f.auth(t, f.credentials(t, func(c *tradovate.Credential) { c.Method = tradovate.MethodOfficial }),
		func(o *tradovate.Options) {
			o.AppID, o.CID, o.Sec = "My App", "1234", "API-SECRET"
		})

	tok, err := a.Login(context.Background(), user)
	require.NoError(t, err)

	reqs := f.fake.Requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	assert.Equal(t, tradovatefake.AccessTokenRequest, r.Endpoint)
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	assert.Equal(t, "application/json", r.Header.Get("Accept"))
	assert.Empty(t, r.Header.Get("Authorization"))
	assert.Equal(t, user, r.Fields["name"])
	assert.Equal(t, password(user), r.Fields["password"])
	assert.Equal(t, "My App", r.Fields["appId"])
	assert.Equal(t, "1.0", r.Fields["appVersion"], "appVersion defaults to 1.0 with an appId")
	assert.Equal(t, json.Number("1234"), r.Fields["cid"], "cid is sent as a JSON number")
	assert.Equal(t, "API-SECRET", r.Fields["sec"])
	deviceID, _ := r.Fields["deviceId"].(string)
	assert.NotEmpty(t, deviceID)
	assert.LessOrEqual(t, len(deviceID), 64)
	assert.NotContains(t, r.Fields, "p-ticket")

	assert.True(t, f.fake.Valid(tok.AccessToken))
	assert.True(t, f.fake.Valid(tok.MDAccessToken))
	exp, ok := tokencache.JWTExpiry(tok.AccessToken)
	require.True(t, ok)
	assert.True(t, exp.Equal(tok.Expiry), "expiry %s comes from expirationTime, which matches exp %s", tok.Expiry, exp)
	assert.False(t, tok.ObtainedAt.IsZero())
}

func TestTradingViewLoginSendsTheOriginalForm(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	a := f.auth(t, f.credentials(t, nil), nil) // no API key: TradingView-style by default

	tok, err := a.Login(context.Background(), user)
	require.NoError(t, err)

	reqs := f.fake.Requests()
	require.Len(t, reqs, 2, "the login, then auth/me for the userId the answer lacks")
	r := reqs[0]
	assert.Equal(t, tradovatefake.Authorize, r.Endpoint)
	assert.Equal(t, "application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
	assert.Equal(t, "en", r.Query.Get("locale"))
	assert.Equal(t, map[string]any{"locale": "en", "login": user, "password": password(user)}, r.Fields)
	assert.Equal(t, tradovatefake.AuthMe, reqs[1].Endpoint)
	assert.Equal(t, "Bearer "+tok.AccessToken, reqs[1].Header.Get("Authorization"))

	assert.True(t, f.fake.Valid(tok.AccessToken))
	assert.Empty(t, tok.MDAccessToken, "the TradingView login gives no market-data token")
	exp, ok := tokencache.JWTExpiry(tok.AccessToken)
	require.True(t, ok)
	assert.True(t, exp.Equal(tok.Expiry))
}

func TestLoginMethodIsChosenPerCredential(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 4)
	list := []tradovate.Credential{
		{Username: f.users[0], Password: password(f.users[0]), Method: tradovate.MethodOfficial},
		{Username: f.users[1], Password: password(f.users[1]), Method: tradovate.MethodTradingView},
		{Username: f.users[2], Password: password(f.users[2]), Sec: "secret", CID: "7"}, // API key: official
		{Username: f.users[3], Password: password(f.users[3])},                          // none: TradingView
	}
	creds, err := tradovate.NewCredentials(list...)
	require.NoError(t, err)
	a := f.auth(t, creds, nil)
	want := []tradovatefake.Endpoint{tradovatefake.AccessTokenRequest, tradovatefake.Authorize,
		tradovatefake.AccessTokenRequest, tradovatefake.Authorize}
	for i, u := range f.users {
		_, err := a.Login(context.Background(), u)
		require.NoError(t, err)
		assert.Equal(t, 1, f.fake.Calls(want[i], u), "user %d", i)
	}
}

func TestLoginExpirySources(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		fake   tradovatefake.Options
		method tradovate.Method
		check  func(t *testing.T, tok *tokencache.Token)
	}{
		{"expirationTime", tradovatefake.Options{OpaqueTokens: true, Lifetime: 90 * time.Minute}, tradovate.MethodOfficial,
			func(t *testing.T, tok *tokencache.Token) {
				assert.WithinDuration(t, time.Now().Add(90*time.Minute), tok.Expiry, time.Minute)
			}},
		{"JWT exp when the answer has no expiry", tradovatefake.Options{OmitExpiration: true, Lifetime: 70 * time.Minute}, tradovate.MethodOfficial,
			func(t *testing.T, tok *tokencache.Token) {
				exp, ok := tokencache.JWTExpiry(tok.AccessToken)
				require.True(t, ok)
				assert.True(t, exp.Equal(tok.Expiry))
			}},
		{"default lifetime for an opaque token without expiry", tradovatefake.Options{OmitExpiration: true, OpaqueTokens: true}, tradovate.MethodOfficial,
			func(t *testing.T, tok *tokencache.Token) {
				assert.Equal(t, 17*time.Minute, tok.Expiry.Sub(tok.ObtainedAt))
			}},
		{"TradingView expiration", tradovatefake.Options{Lifetime: 50 * time.Minute}, tradovate.MethodTradingView,
			func(t *testing.T, tok *tokencache.Token) {
				assert.WithinDuration(t, time.Now().Add(50*time.Minute), tok.Expiry, time.Minute)
			}},
		{"TradingView JWT exp", tradovatefake.Options{OmitExpiration: true, Lifetime: 50 * time.Minute}, tradovate.MethodTradingView,
			func(t *testing.T, tok *tokencache.Token) {
				exp, ok := tokencache.JWTExpiry(tok.AccessToken)
				require.True(t, ok)
				assert.True(t, exp.Equal(tok.Expiry))
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.fake, 1)
			a := f.auth(t, f.credentials(t, func(c *tradovate.Credential) { c.Method = tt.method }),
				func(o *tradovate.Options) { o.DefaultLifetime = 17 * time.Minute })
			tok, err := a.Login(context.Background(), f.users[0])
			require.NoError(t, err)
			tt.check(t, tok)
		})
	}
}

func TestLoginErrors(t *testing.T) {
	t.Parallel()
	type want struct {
		is        error
		calls     int
		temporary bool
		status    int
	}
	tests := []struct {
		name   string
		fake   tradovatefake.Options
		method tradovate.Method
		script []tradovatefake.Response
		setup  func(f *fixture)
		want   want
	}{
		{name: "errorText on 200", script: []tradovatefake.Response{tradovatefake.ErrorText(tradovatefake.BadCredentialsText)},
			want: want{is: tradovate.ErrBadCredentials, calls: 1, status: 200}},
		{name: "wrong password answered with errorText", setup: func(f *fixture) { f.fake.AddUser(f.users[0], "another") },
			want: want{is: tradovate.ErrBadCredentials, calls: 1, status: 200}},
		{name: "wrong password answered with 401", fake: tradovatefake.Options{BadCredentialsStatus: 401},
			setup: func(f *fixture) { f.fake.AddUser(f.users[0], "another") },
			want:  want{is: tradovate.ErrBadCredentials, calls: 1, status: 401}},
		{name: "TradingView s=error", method: tradovate.MethodTradingView, setup: func(f *fixture) { f.fake.AddUser(f.users[0], "another") },
			want: want{is: tradovate.ErrBadCredentials, calls: 1, status: 200}},
		{name: "captcha", script: []tradovatefake.Response{tradovatefake.Captcha()},
			want: want{is: tradovate.ErrCaptchaRequired, calls: 1, status: 200}},
		{name: "penalty turning into a captcha", script: []tradovatefake.Response{tradovatefake.Penalty(1), tradovatefake.Captcha()},
			want: want{is: tradovate.ErrCaptchaRequired, calls: 2, status: 200}},
		{name: "HTTP 429", script: []tradovatefake.Response{tradovatefake.Lockout()},
			want: want{is: tradovate.ErrLockedOut, calls: 1, status: 429}},
		{name: "HTTP 423", script: []tradovatefake.Response{tradovatefake.Status(http.StatusLocked)},
			want: want{is: tradovate.ErrLockedOut, calls: 1, status: 423}},
		{name: "TradingView HTTP 429", method: tradovate.MethodTradingView, script: []tradovatefake.Response{tradovatefake.Lockout()},
			want: want{is: tradovate.ErrLockedOut, calls: 1, status: 429}},
		{name: "5xx until attempts run out",
			script: []tradovatefake.Response{tradovatefake.Status(500), tradovatefake.Status(502), tradovatefake.Status(503)},
			want:   want{is: tradovate.ErrUnavailable, calls: 3, temporary: true, status: 503}},
		{name: "garbage until attempts run out",
			script: []tradovatefake.Response{tradovatefake.Garbage(), tradovatefake.Garbage(), tradovatefake.Garbage()},
			want:   want{is: tradovate.ErrMalformedResponse, calls: 3, temporary: true, status: 200}},
		{name: "neither token nor error until attempts run out",
			script: []tradovatefake.Response{tradovatefake.NoToken(), tradovatefake.NoToken(), tradovatefake.NoToken()},
			want:   want{is: tradovate.ErrMalformedResponse, calls: 3, temporary: true, status: 200}},
		{name: "TradingView garbage", method: tradovate.MethodTradingView,
			script: []tradovatefake.Response{tradovatefake.Garbage(), tradovatefake.NoToken(), tradovatefake.Status(500)},
			want:   want{is: tradovate.ErrUnavailable, calls: 3, temporary: true, status: 500}},
		{name: "inactive user", setup: func(f *fixture) { f.fake.SetUserStatus(f.users[0], tradovatefake.StatusTemporaryLocked) },
			want: want{is: tradovate.ErrInactiveUser, calls: 1, status: 200}},
		{name: "undocumented status", script: []tradovatefake.Response{tradovatefake.Status(http.StatusBadRequest)},
			want: want{is: tradovate.ErrUnexpectedStatus, calls: 1, status: 400}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.fake, 1)
			user := f.users[0]
			method := tt.method
			if method == "" {
				method = tradovate.MethodOfficial
			}
			ep := tradovatefake.AccessTokenRequest
			if method == tradovate.MethodTradingView {
				ep = tradovatefake.Authorize
			}
			f.fake.Script(ep, user, tt.script...)
			if tt.setup != nil {
				tt.setup(f)
			}
			a := f.auth(t, f.credentials(t, func(c *tradovate.Credential) { c.Method = method }), nil)

			tok, err := a.Login(context.Background(), user)
			require.Error(t, err)
			assert.Nil(t, tok)
			assert.ErrorIs(t, err, tt.want.is)
			var apiErr *tradovate.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, tt.want.temporary, apiErr.Temporary())
			assert.Equal(t, tt.want.status, apiErr.StatusCode)
			assert.Equal(t, user, apiErr.User)
			assert.Equal(t, string(ep), apiErr.Endpoint)
			assert.Equal(t, tt.want.calls, apiErr.Attempts)
			assert.Equal(t, tt.want.calls, f.fake.Calls(ep, user), "requests the broker saw")
			assert.Contains(t, err.Error(), user)
			assert.Contains(t, err.Error(), string(ep))
			assert.NotContains(t, err.Error(), password(user))
		})
	}
}

func TestInactiveUserErrorNamesTheStatus(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	f.fake.SetUserStatus(f.users[0], tradovatefake.StatusUnconfirmedEmail)
	a := f.auth(t, f.credentials(t, func(c *tradovate.Credential) { c.Method = tradovate.MethodOfficial }), nil)
	_, err := a.Login(context.Background(), f.users[0])
	require.ErrorIs(t, err, tradovate.ErrInactiveUser)
	assert.Contains(t, err.Error(), "UnconfirmedEmail")
	var apiErr *tradovate.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, "UnconfirmedEmail", apiErr.UserStatus)
}

func TestLoginRetriesTemporaryFailuresThenSucceeds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		method tradovate.Method
		script []tradovatefake.Response
	}{
		{"official 503 then garbage", tradovate.MethodOfficial, []tradovatefake.Response{tradovatefake.Status(503), tradovatefake.Garbage()}},
		{"official slow answer hits the client timeout", tradovate.MethodOfficial, []tradovatefake.Response{tradovatefake.Slow(5 * time.Second)}},
		{"TradingView 500 then no token", tradovate.MethodTradingView, []tradovatefake.Response{tradovatefake.Status(500), tradovatefake.NoToken()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tradovatefake.Options{}, 1)
			user := f.users[0]
			ep := tradovatefake.AccessTokenRequest
			if tt.method == tradovate.MethodTradingView {
				ep = tradovatefake.Authorize
			}
			f.fake.Script(ep, user, tt.script...)
			a := f.auth(t, f.credentials(t, func(c *tradovate.Credential) { c.Method = tt.method }), func(o *tradovate.Options) {
				o.HTTPClient = &http.Client{Timeout: 300 * time.Millisecond}
			})
			tok, err := a.Login(context.Background(), user)
			require.NoError(t, err)
			assert.True(t, f.fake.Valid(tok.AccessToken))
			assert.Equal(t, len(tt.script)+1, f.fake.Calls(ep, user))
			assert.Equal(t, 1, f.fake.Logins(user))
		})
	}
}

func TestLoginCancelledWhileRetryingReturnsPromptly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	f.fake.SetHook(func(tradovatefake.Call) (tradovatefake.Response, bool) {
		return tradovatefake.Slow(time.Minute), true
	})
	a := f.auth(t, f.credentials(t, nil), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := a.Login(ctx, f.users[0])
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var apiErr *tradovate.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.False(t, apiErr.Temporary())
}

func TestLoginUnknownUserSendsNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	a := f.auth(t, f.credentials(t, nil), nil)
	_, err := a.Login(context.Background(), "nobody")
	require.ErrorIs(t, err, tradovate.ErrUnknownUser)
	assert.Contains(t, err.Error(), "nobody")
	assert.Empty(t, f.fake.Requests())
}

func TestPenaltyIsWaitedOutAndTicketResent(t *testing.T) {
	t.Parallel()
	for _, method := range []tradovate.Method{tradovate.MethodOfficial, tradovate.MethodTradingView} {
		t.Run(string(method), func(t *testing.T) {
			f := newFixture(t, tradovatefake.Options{}, 1)
			user := f.users[0]
			ep := tradovatefake.AccessTokenRequest
			if method == tradovate.MethodTradingView {
				ep = tradovatefake.Authorize
			}
			// The fake answers a new penalty to a resend that lacks the ticket or comes
			// before p-time, so two calls in all prove both were honoured.
			f.fake.Script(ep, user, tradovatefake.Penalty(1))
			a := f.auth(t, f.credentials(t, func(c *tradovate.Credential) { c.Method = method }), nil)

			tok, err := a.Login(context.Background(), user)
			require.NoError(t, err)
			assert.True(t, f.fake.Valid(tok.AccessToken))

			reqs := requestsTo(f.fake, ep)
			require.Len(t, reqs, 2)
			assert.NotContains(t, reqs[0].Fields, "p-ticket")
			ticket, _ := reqs[1].Fields["p-ticket"].(string)
			assert.NotEmpty(t, ticket, "the resend carries the p-ticket")
			for k, v := range reqs[0].Fields {
				assert.Equal(t, v, reqs[1].Fields[k], "the resend repeats field %q", k)
			}
		})
	}
}

func TestPenaltyResendsAreBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	f.fake.Script(tradovatefake.AccessTokenRequest, user,
		tradovatefake.Penalty(1), tradovatefake.Penalty(1), tradovatefake.Penalty(1))
	a := f.auth(t, f.credentials(t, func(c *tradovate.Credential) { c.Method = tradovate.MethodOfficial }),
		func(o *tradovate.Options) { o.MaxPenaltyRetries = 1 })
	_, err := a.Login(context.Background(), user)
	require.ErrorIs(t, err, tradovate.ErrPenaltyLimit)
	assert.Equal(t, 2, f.fake.Calls(tradovatefake.AccessTokenRequest, user))
}

func TestPenaltyWaitHonoursTheContext(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		is   error
	}{
		{"cancelled while waiting", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"deadline shorter than p-time fails at once", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 5*time.Second)
		}, tradovate.ErrPenaltyLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tradovatefake.Options{}, 1)
			user := f.users[0]
			f.fake.Script(tradovatefake.AccessTokenRequest, user, tradovatefake.Penalty(60))
			a := f.auth(t, f.credentials(t, func(c *tradovate.Credential) { c.Method = tradovate.MethodOfficial }), nil)
			ctx, cancel := tt.ctx()
			defer cancel()
			_, err := a.Login(ctx, user)
			require.ErrorIs(t, err, tt.is)
			assert.Equal(t, 1, f.fake.Calls(tradovatefake.AccessTokenRequest, user))
			var apiErr *tradovate.APIError
			require.ErrorAs(t, err, &apiErr)
			assert.Equal(t, user, apiErr.User)
		})
	}
}

func TestSessionLimitRevokesTheOldestSession(t *testing.T) {
	t.Parallel()
	f := newFixture(t, tradovatefake.Options{}, 1)
	user := f.users[0]
	a := f.auth(t, f.credentials(t, func(c *tradovate.Credential) { c.Method = tradovate.MethodOfficial }), nil)
	ctx := context.Background()
	var toks []*tokencache.Token
	for range 3 {
		tok, err := a.Login(ctx, user)
		require.NoError(t, err)
		toks = append(toks, tok)
	}
	assert.False(t, f.fake.Valid(toks[0].AccessToken), "the third login closed the first session")
	assert.False(t, f.fake.Valid(toks[0].MDAccessToken))
	assert.True(t, f.fake.Valid(toks[1].AccessToken))
	assert.True(t, f.fake.Valid(toks[2].AccessToken))
	assert.Equal(t, 2, f.fake.Sessions(user))

	_, err := a.Renew(ctx, user, toks[0])
	assert.ErrorIs(t, err, tokencache.ErrTokenRejected)
	assert.False(t, errors.Is(err, tradovate.ErrBadCredentials))
}

// requestsTo returns the requests the fake received for ep, in order.
func requestsTo(f *tradovatefake.Server, ep tradovatefake.Endpoint) []tradovatefake.Request {
	var out []tradovatefake.Request
	for _, r := range f.Requests() {
		if r.Endpoint == ep {
			out = append(out, r)
		}
	}
	return out
}
