package tradovatefake_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
)

// get sends GET url with bearer (none when empty) and returns the answer.
func get(t *testing.T, c *http.Client, url, bearer string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return do(t, c, req)
}

// names reads the account names of an /account/list answer (a JSON array).
func names(t *testing.T, raw string) []string {
	t.Helper()
	var list []map[string]any
	require.NoError(t, json.Unmarshal([]byte(raw), &list), raw)
	out := []string{}
	for _, a := range list {
		out = append(out, a["name"].(string))
	}
	return out
}

// Both account lists answer the token owner's accounts as they are at the moment of
// the request, in the shape each API documents, and refuse what the broker refuses.
func TestFakeAccountListsFollowTheAccounts(t *testing.T) {
	s := tradovatefake.New(t, tradovatefake.Options{})
	s.AddUser("u", "pw")
	s.AddUser("other", "pw")
	s.SetAccounts("u", "PA1", "PA2")
	s.SetAccounts("other", "OTHER1")
	c := client(t)
	r := official(t, c, s, login("u", "pw"))
	access, md := r.body["accessToken"].(string), r.body["mdAccessToken"].(string)
	tv := tradingView(t, c, s, url.Values{"locale": {"en"}, "login": {"u"}, "password": {"pw"}})
	tvTok := tv.body["d"].(map[string]any)["access_token"].(string)

	list := get(t, c, s.RESTURL()+"/account/list", access)
	require.Equal(t, http.StatusOK, list.status)
	assert.Equal(t, []string{"PA1", "PA2"}, names(t, list.raw))
	var entities []map[string]any
	require.NoError(t, json.Unmarshal([]byte(list.raw), &entities))
	for _, field := range []string{"id", "name", "userId", "accountType", "active", "clearingHouseId", "riskCategoryId", "autoLiqProfileId", "marginAccountType", "legalStatus", "timestamp"} {
		assert.Contains(t, entities[0], field, "the Account entity of the partner docs")
	}
	assert.Equal(t, float64(s.UserID("u")), entities[0]["userId"])

	tvList := get(t, c, s.TradingViewURL()+"/accounts?locale=en", tvTok)
	require.Equal(t, http.StatusOK, tvList.status)
	assert.Equal(t, "ok", tvList.body["s"])
	d := tvList.body["d"].([]any)
	require.Len(t, d, 2)
	first := d[0].(map[string]any)
	assert.Equal(t, "PA1", first["name"])
	assert.Regexp(t, `^D\d+$`, first["id"])
	assert.Equal(t, "demo", first["type"])
	assert.Equal(t, http.StatusOK, get(t, c, s.TradingViewURL()+"/accounts?locale=en", access).status, "a REST token works too")

	// Accounts change at run time: the next request sees it; ids stay with their account.
	s.AddAccount("u", "APEX3")
	s.RemoveAccount("u", "PA1")
	s.AddAccount("u", "PA2") // already there
	assert.Equal(t, []string{"PA2", "APEX3"}, s.Accounts("u"))
	assert.Equal(t, []string{"PA2", "APEX3"}, names(t, get(t, c, s.RESTURL()+"/account/list", tvTok).raw))
	var again []map[string]any
	require.NoError(t, json.Unmarshal([]byte(get(t, c, s.RESTURL()+"/account/list", access).raw), &again))
	assert.Equal(t, entities[1]["id"], again[0]["id"], "PA2 keeps its id")

	// Strict: no token, a garbage, market-data, revoked token: 401; a POST: 405.
	for _, bad := range []string{"", "garbage", md} {
		assert.Equal(t, http.StatusUnauthorized, get(t, c, s.RESTURL()+"/account/list", bad).status)
		assert.Equal(t, http.StatusUnauthorized, get(t, c, s.TradingViewURL()+"/accounts?locale=en", bad).status)
	}
	req, err := http.NewRequest(http.MethodPost, s.RESTURL()+"/account/list", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+access)
	assert.Equal(t, http.StatusMethodNotAllowed, do(t, c, req).status)
	s.Revoke(access)
	assert.Equal(t, http.StatusUnauthorized, get(t, c, s.RESTURL()+"/account/list", access).status)

	// Counted per token owner; scriptable like every endpoint.
	assert.Equal(t, 6, s.Calls(tradovatefake.AccountList, "u"))
	assert.Equal(t, 8, s.Calls(tradovatefake.AccountList, ""), "every user's, unknown tokens' too")
	assert.Equal(t, 3, s.Calls(tradovatefake.TVAccounts, "u"))
	s.Script(tradovatefake.TVAccounts, "u", tradovatefake.ErrorText("Access denied"))
	refused := get(t, c, s.TradingViewURL()+"/accounts?locale=en", tvTok)
	assert.Equal(t, "error", refused.body["s"])
	assert.Equal(t, "Access denied", refused.body["errmsg"])
	s.Script(tradovatefake.AccountList, "u", tradovatefake.Status(http.StatusInternalServerError))
	assert.Equal(t, http.StatusInternalServerError, get(t, c, s.RESTURL()+"/account/list", tvTok).status)
	assert.Equal(t, 2, s.Logins("u"), "listing accounts opens no session")
}
