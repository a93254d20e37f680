package tradovate

import (
	"context"
	"fmt"
	"net/http"

	"github.com/brokertoken/brokertoken/tokencache"
)

var _ tokencache.Checker = (*Authenticator)(nil)

// Check asks the broker whether it still accepts t, with one GET {REST}/auth/me
// (Bearer t.AccessToken): a cheap call that opens no session and spends no login
// budget. It implements [tokencache.Checker], which a writing cache uses to verify a
// report that a token was rejected before it spends a login on it.
//
// It returns nil when the broker answers with the user's data, an [*APIError] wrapping
// [tokencache.ErrTokenRejected] when it answers 401 or 400 or an errorText, and any
// other error when it could not tell (unreachable, 5xx, 429, a time penalty, an answer
// it cannot read). It is not retried.
func (a *Authenticator) Check(ctx context.Context, user string, t *tokencache.Token) error {
	if t == nil || !usableToken(t.AccessToken) {
		return &APIError{Endpoint: endpointMe, User: user, Err: errTokenRejected, Text: "no usable token"}
	}
	_, err := a.me(ctx, user, t.AccessToken)
	return err
}

// me sends one GET {REST}/auth/me with bearer and returns what the broker says about
// the user. Errors are *APIError values, as for Check.
func (a *Authenticator) me(ctx context.Context, user, bearer string) (userFields, error) {
	c := call{
		endpoint: endpointMe,
		user:     user,
		secrets:  []string{bearer},
		build: func(string) request {
			return request{method: http.MethodGet, url: a.opts.RESTURL + "/" + endpointMe, bearer: bearer}
		},
		interpret: interpretMe,
	}
	ans, apiErr := a.roundTrip(ctx, c, "")
	if apiErr != nil {
		apiErr.Endpoint, apiErr.User, apiErr.Attempts = c.endpoint, user, 1
		apiErr.Text = scrub(apiErr.Text, bearer)
		return userFields{}, apiErr
	}
	return ans.user, nil
}

// interpretMe reads an auth/me answer: the user's data (userId, name, fullName, email,
// ...), an errorText, or a non-200 status.
func interpretMe(status int, raw []byte) (*answer, *APIError) {
	if status != http.StatusOK {
		var text string
		if obj, err := decodeMembers(raw); err == nil {
			text, _ = obj.str("errorText")
		}
		return nil, statusError(status, false, text)
	}
	obj, err := decodeMembers(raw)
	if err != nil {
		return nil, malformed(err.Error())
	}
	if text, _ := obj.str("errorText"); text != "" {
		return nil, &APIError{StatusCode: status, Text: text, Err: errTokenRejected}
	}
	if obj.penaltyFields().penalty() != nil {
		return nil, &APIError{StatusCode: status, Err: fmt.Errorf("%w: answered a time penalty", ErrUnavailable), temporary: true}
	}
	u := obj.userFields("name")
	if u.userID == 0 {
		return nil, malformed("no userId in the answer")
	}
	return &answer{user: u}, nil
}
