package tradovate

import (
	"context"
	"net/http"

	"github.com/brokertoken/brokertoken/tokencache"
)

// errTokenRejected is the core's sentinel for a token the broker no longer accepts.
var errTokenRejected = tokencache.ErrTokenRejected

// Renew extends current's session with GET {REST}/auth/renewaccesstoken (Bearer
// current.AccessToken) and returns the new token. When the answer omits mdAccessToken,
// current's is kept. Renewals neither spend the login budget nor check cool-downs.
//
// When the broker no longer accepts current (HTTP 401 or 400, which the documentation
// gives for an expired token, or an errorText), the error wraps
// [tokencache.ErrTokenRejected], and the cache logs in instead. Temporary failures are
// retried as in Login; other errors are as for Login. What the answer says about the
// user is stored for [ReadUserInfo].
//
// Renewing a TradingView-style token exchanges it for a REST pair with an mdAccessToken.
func (a *Authenticator) Renew(ctx context.Context, user string, current *tokencache.Token) (*tokencache.Token, error) {
	tok, u, err := a.renew(ctx, user, current)
	if err != nil {
		return nil, err
	}
	a.saveInfo(ctx, user, "", u, "")
	return tok, nil
}

// renew is Renew without storing the user information.
func (a *Authenticator) renew(ctx context.Context, user string, current *tokencache.Token) (*tokencache.Token, userFields, error) {
	if current == nil || current.AccessToken == "" {
		return nil, userFields{}, &APIError{Endpoint: endpointRenew, User: user, Err: errTokenRejected, Text: "no current token"}
	}
	bearer := current.AccessToken
	ans, err := a.exchange(ctx, call{
		endpoint: endpointRenew,
		user:     user,
		secrets:  []string{bearer},
		build: func(string) request {
			return request{method: http.MethodGet, url: a.opts.RESTURL + "/" + endpointRenew, bearer: bearer}
		},
		interpret: func(status int, raw []byte) (*answer, *APIError) {
			return interpretTokenAnswer(status, raw, false)
		},
	})
	if err != nil {
		return nil, userFields{}, err
	}
	tok := a.token(ans)
	if tok.MDAccessToken == "" {
		tok.MDAccessToken = current.MDAccessToken
	}
	a.opts.Logger.Debug("tradovate: renewed", "user", user,
		"access_token", tokencache.Redact(tok.AccessToken), "expiry", tok.Expiry)
	return tok, ans.user, nil
}
