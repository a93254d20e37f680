package zerodha_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/kitefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/zerodha"
)

func TestKiteErrorsInsideHTTP200AreTyped(t *testing.T) {
	tests := []struct {
		errorType string
		isToken   bool
		temporary bool
	}{
		{zerodha.TokenException, true, false},
		{zerodha.InputException, false, false},
		{zerodha.GeneralException, false, false},
		{zerodha.NetworkException, false, true},
		{zerodha.DataException, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.errorType, func(t *testing.T) {
			f := newFixture(t, kitefake.Options{}, nil)
			f.kite.Script(kitefake.SessionToken, kitefake.ErrorAnswer(http.StatusOK, tt.errorType, "Something went wrong"))
			_, err := f.app.Exchange(context.Background(), f.kite.IssueRequestToken(apiKey))
			require.Error(t, err)
			var ae *zerodha.APIError
			require.ErrorAs(t, err, &ae)
			assert.Equal(t, http.StatusOK, ae.StatusCode)
			assert.Equal(t, tt.errorType, ae.ErrorType)
			assert.Equal(t, "Something went wrong", ae.Message)
			assert.Equal(t, tt.isToken, isTokenException(err))
			assert.Equal(t, tt.isToken, errors.Is(err, zerodha.ErrTokenException))
			assert.Equal(t, tt.temporary, ae.Temporary())
			assert.NotErrorIs(t, err, zerodha.ErrMalformedResponse, "an error, not a malformed answer")
		})
	}
}

func isTokenException(err error) bool {
	var ae *zerodha.APIError
	return errors.As(err, &ae) && ae.Is(zerodha.ErrTokenException)
}

func TestErrorEnvelopeWithoutATypeIsStillAnError(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	f.kite.Script(kitefake.SessionToken, kitefake.Answer{Status: http.StatusOK, Body: `{"status":"error","message":"No."}`})
	_, err := f.app.Exchange(context.Background(), f.kite.IssueRequestToken(apiKey))
	var ae *zerodha.APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "No.", ae.Message)
	assert.NotErrorIs(t, err, zerodha.ErrMalformedResponse)

	// A success envelope without a token is what stays malformed.
	f.kite.Script(kitefake.SessionToken, kitefake.Answer{Status: http.StatusOK, Body: `{"status":"success","data":{}}`})
	_, err = f.app.Exchange(context.Background(), f.kite.IssueRequestToken(apiKey))
	assert.ErrorIs(t, err, zerodha.ErrMalformedResponse)
}

func TestRedirectWithATokenExceptionInside200ShowsKitesRefusal(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	f.kite.Script(kitefake.SessionToken, kitefake.ErrorAnswer(http.StatusOK, zerodha.TokenException, kitefake.MsgInvalidToken))
	status, page := f.login(t)
	assert.Equal(t, http.StatusBadGateway, status)
	assert.Contains(t, page, "Kite refused the login")
	assert.Contains(t, page, "no longer accepts this request token")
	_, err := f.cache.Token(context.Background(), f.app.User())
	assert.ErrorIs(t, err, tokencache.ErrNoToken, "nothing was stored")
}

func TestLogoutAnsweredWithAnErrorInside200(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	f.kite.Script(kitefake.SessionToken, kitefake.ErrorAnswer(http.StatusOK, zerodha.TokenException, kitefake.MsgIncorrectAccessToken))
	err := f.app.Logout(context.Background(), f.kite.AccessTokens()[0])
	assert.ErrorIs(t, err, zerodha.ErrTokenException)
}

func TestCheckResponseReadsErrorsInside200(t *testing.T) {
	big := `{"status":"success","data":"` + strings.Repeat("x", 100<<10) + `"}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/error":
			_, _ = io.WriteString(w, `{"status":"error","message":"Incorrect `+"`api_key` or `access_token`"+`.","error_type":"TokenException"}`)
		case "/ok":
			_, _ = io.WriteString(w, `{"status":"success","data":{"user_id":"AB1234"}}`)
		case "/big":
			_, _ = io.WriteString(w, big)
		case "/csv":
			w.Header().Set("Content-Type", "text/csv")
			_, _ = io.WriteString(w, `"status","error"`)
		}
	}))
	t.Cleanup(srv.Close)
	c := browser(t)
	check := func(path string) (error, string) {
		resp, err := c.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		checkErr := zerodha.CheckResponse(resp)
		body, _ := io.ReadAll(resp.Body)
		return checkErr, string(body)
	}
	err, _ := check("/error")
	assert.ErrorIs(t, err, zerodha.ErrTokenException)
	var ae *zerodha.APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, http.StatusOK, ae.StatusCode)
	for path, want := range map[string]string{"/ok": `{"status":"success","data":{"user_id":"AB1234"}}`, "/big": big, "/csv": `"status","error"`} {
		err, body := check(path)
		assert.NoError(t, err, path)
		assert.Equal(t, want, body, "%s: the body is left whole for the caller", path)
	}
}

func TestCheckAsksUserProfile(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	tok, err := f.cache.Token(context.Background(), f.app.User())
	require.NoError(t, err)
	// A service's App: no secret is needed to check.
	opts := f.opts
	opts.APISecret = ""
	service, err := zerodha.New(opts)
	require.NoError(t, err)
	var checker tokencache.Checker = service.Authenticator()
	ctx := context.Background()

	require.NoError(t, checker.Check(ctx, service.User(), tok))
	last := f.kite.Requests()[len(f.kite.Requests())-1]
	assert.Equal(t, kitefake.UserProfile, last.Endpoint)
	assert.Equal(t, http.MethodGet, last.Method)
	assert.Equal(t, "token "+apiKey+":"+tok.AccessToken, last.Header.Get("Authorization"))
	assert.Equal(t, "3", last.Header.Get("X-Kite-Version"))

	f.kite.Script(kitefake.UserProfile, kitefake.ErrorAnswer(http.StatusOK, zerodha.TokenException, "Session expired"))
	err = checker.Check(ctx, service.User(), tok)
	assert.ErrorIs(t, err, tokencache.ErrTokenRejected, "a TokenException inside 200 is a rejection")
	assert.ErrorIs(t, err, zerodha.ErrTokenException)

	for _, answer := range []kitefake.Answer{
		{Status: http.StatusServiceUnavailable, Body: `<html>down</html>`},
		kitefake.ErrorAnswer(http.StatusOK, zerodha.NetworkException, "Upstream timeout"),
		{Status: http.StatusOK, Body: `{"status":"success","data":{}}`},
		{Status: http.StatusOK, Body: `garbage`},
	} {
		f.kite.Script(kitefake.UserProfile, answer)
		err := checker.Check(ctx, service.User(), tok)
		require.Error(t, err, answer.Body)
		assert.NotErrorIs(t, err, tokencache.ErrTokenRejected, "cannot tell: %s", answer.Body)
	}

	f.kite.ExpireAccessTokens()
	err = checker.Check(ctx, service.User(), tok)
	assert.ErrorIs(t, err, tokencache.ErrTokenRejected, "the morning flush")
	assert.NotContains(t, err.Error(), tok.AccessToken)
	assert.ErrorIs(t, checker.Check(ctx, service.User(), nil), tokencache.ErrTokenRejected)
	assert.Equal(t, 7, f.kite.Calls(kitefake.UserProfile, "", 0), "one request per check, no retries")
	assert.Zero(t, f.kite.Calls(kitefake.SessionRefresh, "", 0))
}

func TestUserInfoIsKeptBesideTheToken(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	opts := f.opts
	opts.APISecret = ""
	opts.Redis = f.redis.Client(t)
	reader, err := zerodha.New(opts)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = reader.UserInfo(ctx)
	require.ErrorIs(t, err, zerodha.ErrNoUserInfo)

	status, _ := f.login(t)
	require.Equal(t, http.StatusOK, status)
	info, err := reader.UserInfo(ctx)
	require.NoError(t, err)
	assert.Equal(t, "AB1234", info.UserID)
	assert.Equal(t, "Kite Fake", info.UserName)
	assert.Equal(t, "ZERODHA", info.Broker)
	assert.Equal(t, "individual", info.UserType)
	assert.Equal(t, []string{"NSE", "BSE", "NFO"}, info.Exchanges)
	assert.Equal(t, "IST", info.LoginTime.Location().String())
	assert.False(t, info.LoginTime.IsZero())
	assert.False(t, info.Updated.IsZero())

	key := f.redis.Prefix + ":{" + apiKey + "}:info"
	raw, err := f.redis.Client(t).Get(ctx, key).Result()
	require.NoError(t, err)
	f.assertNoSecrets(t, "the user information", raw)
	assert.NotContains(t, raw, "@example.com", "no e-mail address is kept")

	require.NoError(t, f.redis.Client(t).Set(ctx, key, `{"user_id":"AB\u0001"}`, 0).Err())
	_, err = reader.UserInfo(ctx)
	require.ErrorContains(t, err, key)
	assert.NotErrorIs(t, err, zerodha.ErrNoUserInfo)
}

func TestOptionsRejectBraces(t *testing.T) {
	f := newFixture(t, kitefake.Options{}, nil)
	for _, tc := range []struct {
		edit func(*zerodha.Options)
		want string
		name bool // a user name: tokencache's rules
	}{
		{func(o *zerodha.Options) { o.Prefix = "a{b" }, "must not contain { or }", false},
		{func(o *zerodha.Options) { o.User = "u}" }, "contains { or }", true},
		{func(o *zerodha.Options) { o.User = "token:u" }, "contains ':'", true},
	} {
		opts := f.opts
		tc.edit(&opts)
		_, err := zerodha.New(opts)
		assert.ErrorContains(t, err, tc.want)
		if tc.name {
			assert.ErrorIs(t, err, tokencache.ErrInvalidName)
		}
	}
}
