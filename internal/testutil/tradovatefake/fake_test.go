package tradovatefake_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testutil.LeakOptions()...)
}

// client is a plain HTTP client whose idle connections are closed after each test.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type reply struct {
	status int
	body   map[string]any
	raw    string
}

func do(t *testing.T, c *http.Client, req *http.Request) reply {
	t.Helper()
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := reply{status: resp.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

func official(t *testing.T, c *http.Client, s *tradovatefake.Server, body map[string]any) reply {
	t.Helper()
	raw, err := json.Marshal(body)
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, s.RESTURL()+"/auth/accesstokenrequest", strings.NewReader(string(raw)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	return do(t, c, req)
}

func tradingView(t *testing.T, c *http.Client, s *tradovatefake.Server, form url.Values) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.TradingViewURL()+"/authorize?locale=en", strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(t, c, req)
}

func renew(t *testing.T, c *http.Client, s *tradovatefake.Server, token string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.RESTURL()+"/auth/renewaccesstoken", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	return do(t, c, req)
}

func login(name, pw string) map[string]any { return map[string]any{"name": name, "password": pw} }

func TestFakeIssuesEdDSAJWTs(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{Lifetime: time.Hour})
	s.AddUser("APEX_1", "pw")
	r := official(t, client(t), s, login("APEX_1", "pw"))
	require.Equal(t, http.StatusOK, r.status)
	for _, field := range []string{"accessToken", "mdAccessToken", "expirationTime", "userStatus", "userId", "name", "hasLive"} {
		assert.Contains(t, r.body, field)
	}
	assert.Equal(t, "Active", r.body["userStatus"])

	tok, err := jwt.Parse(r.body["accessToken"].(string), func(*jwt.Token) (any, error) { return s.PublicKey(), nil },
		jwt.WithValidMethods([]string{"EdDSA"}))
	require.NoError(t, err, "signed with the fake's Ed25519 key")
	assert.Equal(t, "4", tok.Header["kid"])
	claims := tok.Claims.(jwt.MapClaims)
	for _, c := range []string{"sub", "exp", "jti", "phs"} {
		assert.Contains(t, claims, c)
	}
	exp, err := claims.GetExpirationTime()
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(time.Hour), exp.Time, 2*time.Second)
	expTime, err := time.Parse(time.RFC3339Nano, r.body["expirationTime"].(string))
	require.NoError(t, err)
	assert.True(t, expTime.Equal(exp.Time), "expirationTime matches exp")
}

func TestFakeTradingViewLogin(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{})
	s.AddUser("u", "pw")
	c := client(t)
	r := tradingView(t, c, s, url.Values{"locale": {"en"}, "login": {"u"}, "password": {"pw"}})
	require.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, "ok", r.body["s"])
	d := r.body["d"].(map[string]any)
	assert.True(t, s.Valid(d["access_token"].(string)))
	assert.NotZero(t, d["expiration"])

	r = tradingView(t, c, s, url.Values{"locale": {"en"}, "login": {"u"}, "password": {"wrong"}})
	assert.Equal(t, "error", r.body["s"])
	assert.NotEmpty(t, r.body["errmsg"])

	r = renew(t, c, s, d["access_token"].(string))
	require.Equal(t, http.StatusOK, r.status)
	assert.NotEmpty(t, r.body["mdAccessToken"], "exchanging a TradingView token gives a REST pair")
}

func TestFakeBadRequestsAndCredentials(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{})
	s.AddUser("u", "pw")
	c := client(t)

	req, err := http.NewRequest(http.MethodPost, s.RESTURL()+"/auth/accesstokenrequest", nil)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	assert.Equal(t, http.StatusBadRequest, do(t, c, req).status, "a missing body is a 400")

	r := official(t, c, s, login("u", "bad"))
	assert.Equal(t, http.StatusOK, r.status)
	assert.Equal(t, tradovatefake.BadCredentialsText, r.body["errorText"])

	s401 := tradovatefake.New(t, tradovatefake.Options{BadCredentialsStatus: http.StatusUnauthorized})
	assert.Equal(t, http.StatusUnauthorized, official(t, c, s401, login("nobody", "x")).status)

	assert.Equal(t, http.StatusUnauthorized, renew(t, c, s, "garbage").status)
	assert.Equal(t, 1, s.Calls(tradovatefake.AccessTokenRequest, "u"))
	assert.Equal(t, 2, s.Calls(tradovatefake.AccessTokenRequest, ""), "the bad request has no user")
}

func TestFakeSessionLimitAndRenewal(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{})
	s.AddUser("u", "pw")
	c := client(t)
	var tokens, md []string
	for range 3 {
		r := official(t, c, s, login("u", "pw"))
		tokens = append(tokens, r.body["accessToken"].(string))
		md = append(md, r.body["mdAccessToken"].(string))
	}
	assert.False(t, s.Valid(tokens[0]))
	assert.False(t, s.Valid(md[0]))
	assert.True(t, s.Valid(tokens[1]))
	assert.Equal(t, 2, s.Sessions("u"))
	assert.Equal(t, http.StatusUnauthorized, renew(t, c, s, tokens[0]).status)

	r := renew(t, c, s, tokens[2])
	require.Equal(t, http.StatusOK, r.status)
	assert.NotContains(t, r.body, "mdAccessToken", "renewals omit mdAccessToken by default")
	renewed := r.body["accessToken"].(string)
	assert.NotEqual(t, tokens[2], renewed)
	assert.True(t, s.Valid(renewed))
	assert.Equal(t, 2, s.Sessions("u"), "a renewal opens no session")
	assert.Equal(t, 1, s.Renewals("u"))
	assert.Equal(t, 3, s.Logins("u"))

	assert.Equal(t, http.StatusUnauthorized, renew(t, c, s, md[2]).status, "a market-data token cannot be renewed")
}

func TestFakeExpiredTokensAreRejected(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{OpaqueTokens: true, Lifetime: 100 * time.Millisecond})
	s.AddUser("u", "pw")
	c := client(t)
	tok := official(t, c, s, login("u", "pw")).body["accessToken"].(string)
	assert.True(t, s.Valid(tok))
	assert.NotContains(t, tok, ".", "opaque, not a JWT")
	require.Eventually(t, func() bool { return !s.Valid(tok) }, 2*time.Second, 10*time.Millisecond)
	assert.Equal(t, http.StatusUnauthorized, renew(t, c, s, tok).status)
}

func TestFakePenaltyRequiresTheTicketAndTheWait(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{})
	s.AddUser("u", "pw")
	s.Script(tradovatefake.AccessTokenRequest, "u", tradovatefake.Penalty(1))
	c := client(t)
	r := official(t, c, s, login("u", "pw"))
	ticket, _ := r.body["p-ticket"].(string)
	require.NotEmpty(t, ticket)
	assert.EqualValues(t, 1, r.body["p-time"])
	assert.Equal(t, false, r.body["p-captcha"])

	body := login("u", "pw")
	body["p-ticket"] = ticket
	r = official(t, c, s, body)
	newTicket, _ := r.body["p-ticket"].(string)
	require.NotEmpty(t, newTicket, "too early: another penalty")

	time.Sleep(1100 * time.Millisecond)
	r = official(t, c, s, login("u", "pw"))
	require.NotEmpty(t, r.body["p-ticket"], "no ticket: another penalty")
	time.Sleep(1100 * time.Millisecond)
	body["p-ticket"] = r.body["p-ticket"]
	r = official(t, c, s, body)
	assert.NotEmpty(t, r.body["accessToken"], "ticket after the wait: handled")
}

func TestFakeScriptedFailures(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{})
	s.AddUser("u", "pw")
	s.AddUser("v", "pw")
	c := client(t)
	s.Script(tradovatefake.AccessTokenRequest, "u",
		tradovatefake.Status(503), tradovatefake.Garbage(), tradovatefake.NoToken(), tradovatefake.ErrorText("nope"),
		tradovatefake.Status(423))
	assert.Equal(t, 503, official(t, c, s, login("u", "pw")).status)
	assert.Equal(t, `{"accessToken": <html>oops`, official(t, c, s, login("u", "pw")).raw)
	assert.Equal(t, "{}", official(t, c, s, login("u", "pw")).raw)
	assert.Equal(t, "nope", official(t, c, s, login("u", "pw")).body["errorText"])
	assert.Equal(t, 423, official(t, c, s, login("u", "pw")).status)
	assert.NotEmpty(t, official(t, c, s, login("u", "pw")).body["accessToken"], "script used up: normal again")

	s.Script(tradovatefake.AccessTokenRequest, "u", tradovatefake.Captcha())
	for range 2 {
		r := official(t, c, s, login("u", "pw"))
		assert.Equal(t, true, r.body["p-captcha"], "the captcha sticks")
	}
	assert.NotEmpty(t, official(t, c, s, login("v", "pw")).body["accessToken"], "another user is not affected")
	s.ClearCaptcha("u")
	assert.NotEmpty(t, official(t, c, s, login("u", "pw")).body["accessToken"])

	s.Script(tradovatefake.AccessTokenRequest, "u", tradovatefake.Lockout())
	assert.Equal(t, 429, official(t, c, s, login("u", "pw")).status)
	assert.Equal(t, 429, official(t, c, s, login("v", "pw")).status, "a 429 lockout covers every user")
	s.ClearLockout()
	assert.Equal(t, 200, official(t, c, s, login("v", "pw")).status)

	s.SetHook(func(call tradovatefake.Call) (tradovatefake.Response, bool) {
		return tradovatefake.Status(502), call.User == "v"
	})
	assert.Equal(t, 502, official(t, c, s, login("v", "pw")).status)
	assert.Equal(t, 200, official(t, c, s, login("u", "pw")).status)

	reqs := s.Requests()
	assert.Equal(t, 502, reqs[len(reqs)-2].Status, "the request log records the status answered")
}

func TestFakeSlowAnswerGivesUpWithTheClient(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{})
	s.AddUser("u", "pw")
	s.Script(tradovatefake.AccessTokenRequest, "u", tradovatefake.Slow(time.Minute))
	c := client(t)
	c.Timeout = 100 * time.Millisecond
	raw, _ := json.Marshal(login("u", "pw"))
	req, _ := http.NewRequest(http.MethodPost, s.RESTURL()+"/auth/accesstokenrequest", strings.NewReader(string(raw)))
	req.Header.Set("Content-Type", "application/json")
	_, err := c.Do(req)
	require.Error(t, err)
}

func TestFakeIsSafeForConcurrentUse(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{SessionLimit: 100})
	s.AddUser("u", "pw")
	c := client(t)
	post := func() (string, error) { // no require in goroutines
		req, err := http.NewRequest(http.MethodPost, s.RESTURL()+"/auth/accesstokenrequest",
			strings.NewReader(`{"name":"u","password":"pw"}`))
		if err != nil {
			return "", err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var body struct{ AccessToken string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		return body.AccessToken, err
	}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := post()
			if !assert.NoError(t, err) {
				return
			}
			req, _ := http.NewRequest(http.MethodGet, s.RESTURL()+"/auth/renewaccesstoken", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			if resp, err := c.Do(req); assert.NoError(t, err) {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				assert.Equal(t, http.StatusOK, resp.StatusCode)
			}
			assert.True(t, s.Valid(tok))
		}()
	}
	wg.Wait()
	assert.Equal(t, 20, s.Logins("u"))
	assert.Equal(t, 20, s.Renewals("u"))
	assert.Equal(t, 20, s.Calls(tradovatefake.RenewAccessToken, ""))
}

func me(t *testing.T, c *http.Client, s *tradovatefake.Server, method, token string) reply {
	t.Helper()
	req, err := http.NewRequest(method, s.RESTURL()+"/auth/me", nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, c, req)
}

func TestFakeAuthMeChecksTheBearerToken(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{})
	s.AddUser("u", "pw")
	c := client(t)
	r := official(t, c, s, login("u", "pw"))
	access, md := r.body["accessToken"].(string), r.body["mdAccessToken"].(string)
	userID := r.body["userId"]

	got := me(t, c, s, http.MethodGet, access)
	require.Equal(t, http.StatusOK, got.status)
	assert.Equal(t, userID, got.body["userId"])
	assert.Equal(t, "u", got.body["name"])
	for _, field := range []string{"fullName", "email", "emailVerified", "isTrial"} {
		assert.Contains(t, got.body, field)
	}

	assert.Equal(t, http.StatusUnauthorized, me(t, c, s, http.MethodGet, md).status, "a market-data token is not a REST token")
	assert.Equal(t, http.StatusUnauthorized, me(t, c, s, http.MethodGet, "garbage").status)
	assert.Equal(t, http.StatusUnauthorized, me(t, c, s, http.MethodGet, "").status)
	assert.Equal(t, http.StatusMethodNotAllowed, me(t, c, s, http.MethodPost, access).status)
	s.Revoke(access)
	assert.Equal(t, http.StatusUnauthorized, me(t, c, s, http.MethodGet, access).status, "revoked")

	tv := tradingView(t, c, s, url.Values{"locale": {"en"}, "login": {"u"}, "password": {"pw"}})
	tvTok := tv.body["d"].(map[string]any)["access_token"].(string)
	assert.Equal(t, http.StatusOK, me(t, c, s, http.MethodGet, tvTok).status, "a TradingView token works on REST calls")

	assert.Equal(t, 5, s.Calls(tradovatefake.AuthMe, "u"), "counted per token owner, whatever the answer")
	assert.Equal(t, 7, s.Calls(tradovatefake.AuthMe, ""))
	assert.Equal(t, 2, s.Logins("u"), "a check opens no session")

	s.Script(tradovatefake.AuthMe, "u", tradovatefake.Status(http.StatusServiceUnavailable))
	assert.Equal(t, http.StatusServiceUnavailable, me(t, c, s, http.MethodGet, tvTok).status, "scriptable")
}

func TestFakeAuthMeRejectsExpiredTokens(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{OpaqueTokens: true, Lifetime: 100 * time.Millisecond})
	s.AddUser("u", "pw")
	c := client(t)
	tok := official(t, c, s, login("u", "pw")).body["accessToken"].(string)
	require.Eventually(t, func() bool { return !s.Valid(tok) }, 2*time.Second, 10*time.Millisecond)
	assert.Equal(t, http.StatusUnauthorized, me(t, c, s, http.MethodGet, tok).status)
}

func TestFakeTradingViewCamelCaseShape(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{TVCamelCase: true})
	s.AddUser("u", "pw")
	c := client(t)
	r := tradingView(t, c, s, url.Values{"locale": {"en"}, "login": {"u"}, "password": {"pw"}})
	require.Equal(t, http.StatusOK, r.status)
	d := r.body["d"].(map[string]any)
	assert.NotContains(t, d, "access_token")
	assert.True(t, s.Valid(d["accessToken"].(string)))
	exp, err := time.Parse(time.RFC3339Nano, d["expirationTime"].(string))
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(80*time.Minute), exp, 5*time.Second)
	assert.Equal(t, "u", d["userName"])
	assert.NotZero(t, d["userId"])
}

func TestFakeCutAnswerStillLogsIn(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{})
	s.AddUser("u", "pw")
	s.Script(tradovatefake.Authorize, "u", tradovatefake.Cut())
	c := client(t)
	req, err := http.NewRequest(http.MethodPost, s.TradingViewURL()+"/authorize?locale=en",
		strings.NewReader(url.Values{"locale": {"en"}, "login": {"u"}, "password": {"pw"}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	_, err = io.ReadAll(resp.Body)
	require.Error(t, err, "the body is cut short")
	assert.Equal(t, 1, s.Logins("u"), "the login was handled")
	assert.Equal(t, 1, s.Sessions("u"))
}
