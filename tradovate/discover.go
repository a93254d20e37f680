package tradovate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/brokertoken/brokertoken/internal/secretfile"
	"github.com/brokertoken/brokertoken/tokencache"
)

// Account is a trading account as the broker lists it.
type Account struct {
	// Name is what services know the account by, e.g. "PAAPEX2720450000001": they read
	// its token from token:{Name}.
	Name string
	// ID is the broker's id of the account: a number in the official API ("17200370"),
	// a string such as "D17200370" in the TradingView-style one; "" when the answer gave
	// none.
	ID string
}

// Accounts asks the broker which trading accounts user has, with t's access token, in
// the API that matches how user logs in (see [Options].Method): the official
// GET {REST}/account/list (Account entities, whose name is the account), or, for a
// TradingView-style login, GET {TV}/accounts?locale=en, the TradingView broker API at
// the base of /authorize ({"s":"ok","d":[{"id":"D…","name":…}]}). Accounts the broker
// marks archived or closed are left out.
//
// It sends one request (temporary failures are retried as in Login), opens no session,
// spends no login budget and never logs in: with no valid token, there is nothing to
// ask with. Errors are [*APIError] values wrapping [tokencache.ErrTokenRejected] (HTTP
// 401 or 400, or an errorText: t is not accepted), [ErrRequestRefused] (the
// TradingView API answered "s" other than "ok"), [ErrUnavailable],
// [ErrMalformedResponse] (among them an answer with an entry whose name cannot be
// read: a list read only in part would drop accounts), [ErrUnexpectedStatus], or the
// credential source's error.
func (a *Authenticator) Accounts(ctx context.Context, user string, t *tokencache.Token) ([]Account, error) {
	cred, err := a.credential(ctx, user)
	if err != nil {
		return nil, err
	}
	endpoint, url, interpret := endpointAccountList, a.opts.RESTURL+"/"+endpointAccountList, interpretAccountList
	if cred.method(&a.opts) == MethodTradingView {
		endpoint, url, interpret = endpointTVAccounts, a.opts.TradingViewURL+"/"+endpointTVAccounts+"?locale=en", interpretTVAccounts
	}
	if t == nil || !usableToken(t.AccessToken) {
		return nil, &APIError{Endpoint: endpoint, User: user, Err: errTokenRejected, Text: "no usable token"}
	}
	bearer := t.AccessToken
	ans, err := a.exchange(ctx, call{
		endpoint: endpoint,
		user:     user,
		secrets:  []string{bearer},
		build: func(string) request {
			return request{method: http.MethodGet, url: url, bearer: bearer}
		},
		interpret: interpret,
	})
	if err != nil {
		return nil, err
	}
	return ans.accounts, nil
}

// interpretAccountList reads a GET /account/list answer: a JSON array of Account
// entities, or an errorText, a penalty, or a non-200 status.
func interpretAccountList(status int, raw []byte) (*answer, *APIError) {
	if status != http.StatusOK {
		var text string
		if obj, err := decodeMembers(raw); err == nil {
			text, _ = obj.str("errorText")
		}
		return nil, statusError(status, false, text)
	}
	if obj, err := decodeMembers(raw); err == nil {
		if text, _ := obj.str("errorText"); text != "" {
			return nil, &APIError{StatusCode: status, Text: text, Err: errTokenRejected}
		}
		if p := obj.penaltyFields().penalty(); p != nil {
			return &answer{penalty: p}, nil
		}
		return nil, malformed("an object where the account list was expected")
	}
	list, err := decodeAccounts(raw)
	if err != nil {
		return nil, malformed(err.Error())
	}
	return &answer{accounts: list}, nil
}

// interpretTVAccounts reads a GET /accounts?locale=en answer of the TradingView broker
// API: {"s":"ok","d":[...]}, {"s":"error","errmsg":...}, or a non-200 status.
func interpretTVAccounts(status int, raw []byte) (*answer, *APIError) {
	obj, decodeErr := decodeMembers(raw)
	if status != http.StatusOK {
		var text string
		if decodeErr == nil {
			text, _ = obj.str("errmsg")
		}
		return nil, statusError(status, false, text)
	}
	if decodeErr != nil {
		return nil, malformed(decodeErr.Error())
	}
	if p := obj.penaltyFields().penalty(); p != nil {
		return &answer{penalty: p}, nil
	}
	s, _ := obj.str("s")
	switch s {
	case "ok":
	case "":
		return nil, malformed(`no "s" in the answer`)
	default:
		text, _ := obj.str("errmsg")
		return nil, &APIError{StatusCode: status, Text: firstSet(text, fmt.Sprintf("s=%q", s)), Err: ErrRequestRefused}
	}
	list, err := decodeAccounts(obj["d"])
	if err != nil {
		return nil, malformed(`"d": ` + err.Error())
	}
	return &answer{accounts: list}, nil
}

// maxAccounts bounds the accounts read from one answer; a prop firm's user has a few.
const maxAccounts = 10000

// decodeAccounts reads a JSON array of accounts: objects with a string "name" and an
// "id" (number or string). Entries marked "archived" or "closed" (true) are left out.
// An entry that is not an object, or whose name is absent, empty or not a string, makes
// the whole list unreadable: reading it in part would drop accounts that exist.
func decodeAccounts(raw []byte) ([]Account, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '[' {
		return nil, fmt.Errorf("not a JSON array")
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("%s", secretfile.JSONProblem(err))
	}
	if len(entries) > maxAccounts {
		return nil, fmt.Errorf("%d accounts, more than %d", len(entries), maxAccounts)
	}
	out := make([]Account, 0, len(entries))
	for i, e := range entries {
		obj, err := decodeMembers(e)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %v", i, err)
		}
		name, ok := obj.str("name")
		if !ok || name == "" {
			return nil, fmt.Errorf(`entry %d: no "name" string`, i)
		}
		if gone, _ := obj.boolean("archived"); gone {
			continue
		}
		if gone, _ := obj.boolean("closed"); gone {
			continue
		}
		out = append(out, Account{Name: name, ID: accountID(obj)})
	}
	return out, nil
}

// accountID reads an entry's "id": a whole number, or a string.
func accountID(obj members) string {
	if s, ok := obj.str("id"); ok {
		return s
	}
	if f, ok := obj.num("id"); ok && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.FormatInt(int64(f), 10)
	}
	return ""
}
