package tradovate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Login obtains a new token for user, opening a new broker session. The method (official
// or TradingView-style) comes from the user's credential (see [Options].Method).
//
// Before each request Login checks the user's cool-down and takes a slot of the
// fleet-wide login budget, waiting for one as long as ctx (and Options.LoginBudgetWait,
// when set) allows. Time penalties are waited out and the request resent with its
// p-ticket; temporary failures are retried with backoff. An official login presents the
// fleet's deviceId for the user (see [Options].DeviceID). Errors wrap
// [ErrBadCredentials], [ErrCaptchaRequired], [ErrLockedOut], [ErrPenaltyLimit],
// [ErrInactiveUser], [ErrLoginBudgetExhausted], [ErrUnavailable],
// [ErrMalformedResponse], [ErrUnknownLoginAnswer], [ErrUnexpectedStatus] or
// [ErrUnknownUser]. After a captcha, a lockout or an accepted login whose answer could
// not be read, the user (after a lockout, every user) is not tried again for
// Options.Cooldown by any process sharing the Redis.
//
// What the broker says about the user (userId, name, hasLive) is stored for
// [ReadUserInfo]; when neither the answer nor the stored record gives the userId (a
// TradingView-style login answers none), one GET /auth/me with the new token asks for
// it, so this happens once per user.
func (a *Authenticator) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	cred, err := a.credential(ctx, user)
	if err != nil {
		return nil, err
	}
	if err := a.holds.check(ctx, user); err != nil {
		return nil, err
	}
	method := cred.method(&a.opts)
	var c call
	if method == MethodOfficial {
		device, err := a.devices.resolve(ctx, cred)
		if err != nil {
			return nil, err
		}
		c = a.officialCall(cred, device)
	} else {
		c = a.tradingViewCall(cred)
	}
	ans, err := a.exchange(ctx, c)
	if err != nil {
		a.afterLoginFailure(ctx, user, err)
		return nil, err
	}
	tok, info := a.token(ans), ans.user
	if method == MethodTradingView && a.opts.ExchangeTVToken {
		pair, pairInfo, err := a.renew(ctx, user, tok)
		switch {
		case errors.Is(err, tokencache.ErrTokenRejected):
			return nil, err
		case err != nil:
			tok.RenewAt = time.Now().Add(a.opts.ExchangeRetryAfter)
			a.opts.Logger.Warn("tradovate: could not exchange the TradingView token for a REST pair; using it as is, renewed early for its market-data token",
				"user", user, "renew_at", tok.RenewAt, "err", err.Error())
		default:
			tok, info = pair, mergeUser(info, pairInfo)
		}
	}
	a.saveInfo(ctx, user, method, info, tok.AccessToken)
	a.opts.Logger.Info("tradovate: logged in", "user", user, "method", string(method),
		"access_token", tokencache.Redact(tok.AccessToken), "expiry", tok.Expiry)
	return tok, nil
}

// mergeUser returns a with the fields b has set.
func mergeUser(a, b userFields) userFields {
	if b.userID != 0 {
		a.userID = b.userID
	}
	if b.name != "" {
		a.name = b.name
	}
	if b.hasLive != nil {
		a.hasLive = b.hasLive
	}
	if b.status != "" {
		a.status = b.status
	}
	return a
}

// officialCall is POST {REST}/auth/accesstokenrequest with the JSON body of the spec,
// presenting device as the deviceId.
func (a *Authenticator) officialCall(cred Credential, device string) call {
	body := officialRequest{
		Name:       cred.Username,
		Password:   cred.Password,
		AppID:      firstSet(cred.AppID, a.opts.AppID),
		AppVersion: firstSet(cred.AppVersion, a.opts.AppVersion),
		CID:        CID(firstSet(string(cred.CID), string(a.opts.CID))),
		Sec:        firstSet(cred.Sec, a.opts.Sec),
		DeviceID:   device,
	}
	if body.AppID != "" && body.AppVersion == "" {
		body.AppVersion = defaultAppVersion
	}
	return call{
		endpoint: endpointLogin,
		user:     cred.Username,
		login:    true,
		secrets:  []string{cred.Password, body.Sec},
		build: func(ticket string) request {
			b := body
			b.PTicket = ticket
			raw, _ := json.Marshal(b) // a struct of strings always marshals
			return request{method: http.MethodPost, url: a.opts.RESTURL + "/" + endpointLogin,
				contentType: "application/json", body: raw}
		},
		interpret: func(status int, raw []byte) (*answer, *APIError) {
			return interpretTokenAnswer(status, raw, true)
		},
	}
}

// tradingViewCall is POST {TV}/authorize?locale=en with the form
// locale=en&login=USER&password=PASS.
func (a *Authenticator) tradingViewCall(cred Credential) call {
	return call{
		endpoint: endpointTV,
		user:     cred.Username,
		login:    true,
		secrets:  []string{cred.Password},
		build: func(ticket string) request {
			form := url.Values{"locale": {"en"}, "login": {cred.Username}, "password": {cred.Password}}
			if ticket != "" {
				form.Set("p-ticket", ticket)
			}
			return request{method: http.MethodPost, url: a.opts.TradingViewURL + "/" + endpointTV + "?locale=en",
				contentType: "application/x-www-form-urlencoded", body: []byte(form.Encode())}
		},
		interpret: interpretTVAnswer,
	}
}

// interpretTokenAnswer reads an accesstokenrequest (login true) or renewaccesstoken
// answer.
func interpretTokenAnswer(status int, raw []byte, login bool) (*answer, *APIError) {
	if status != http.StatusOK {
		r, _ := decodeTokenResponse(raw) // 401 may carry an errorText
		return nil, statusError(status, login, r.ErrorText)
	}
	r, err := decodeTokenResponse(raw)
	if err != nil {
		return nil, malformed(err.Error())
	}
	if p := r.penalty(); p != nil && r.AccessToken == "" {
		return &answer{penalty: p}, nil
	}
	if r.ErrorText != "" {
		e := &APIError{StatusCode: status, Text: r.ErrorText, Err: ErrBadCredentials}
		if !login {
			e.Err = errTokenRejected
		}
		return nil, e
	}
	if !usableToken(r.AccessToken) {
		if login && r.accepted {
			return nil, unknownAnswer(raw)
		}
		return nil, malformed("neither a token nor an error")
	}
	if r.UserStatus != "" && r.UserStatus != "Active" {
		return nil, &APIError{StatusCode: status, UserStatus: r.UserStatus, Err: ErrInactiveUser}
	}
	md := r.MDAccessToken
	if !usableToken(md) {
		md = ""
	}
	exp, _ := parseExpirationTime(r.ExpirationTime)
	return &answer{access: r.AccessToken, md: md, expiry: exp, user: r.user}, nil
}

// interpretTVAnswer reads a TradingView-style login answer. An answer with "s": "ok"
// is an accepted login: when its token cannot be read, the error is final
// ([ErrUnknownLoginAnswer]), never a reason to log in again.
func interpretTVAnswer(status int, raw []byte) (*answer, *APIError) {
	if status != http.StatusOK {
		r, _ := decodeTVResponse(raw)
		return nil, statusError(status, true, r.ErrMsg)
	}
	r, err := decodeTVResponse(raw)
	if err != nil {
		return nil, malformed(err.Error())
	}
	// Penalties are documented for the official login; honour them here too.
	if p := r.penalty(); p != nil && r.Token == "" {
		return &answer{penalty: p}, nil
	}
	switch {
	case r.S == "ok" && usableToken(r.Token):
		return &answer{access: r.Token, expiry: r.Expiry, user: r.user}, nil
	case r.S == "ok":
		return nil, unknownAnswer(raw)
	case r.S == "":
		return nil, malformed("neither a token nor an error")
	}
	return nil, &APIError{StatusCode: status, Text: firstSet(r.ErrMsg, fmt.Sprintf("s=%q", r.S)), Err: ErrBadCredentials}
}

// maxTokenLen bounds a usable token; real ones are a few hundred characters.
const maxTokenLen = 16 << 10

// usableToken reports whether tok can be sent as a bearer token: non-empty, bounded,
// and without spaces or control characters.
func usableToken(tok string) bool {
	if tok == "" || len(tok) > maxTokenLen {
		return false
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// token builds the cache's Token from an answer.
func (a *Authenticator) token(ans *answer) *tokencache.Token {
	now := a.opts.Now()
	return &tokencache.Token{
		AccessToken:   ans.access,
		MDAccessToken: ans.md,
		ObtainedAt:    now,
		Expiry:        a.expiry(ans, now),
	}
}

// expiry is when an answer's token expires: the answer's expiry when it gives one, else
// the token's JWT exp claim, else Options.DefaultLifetime from now.
func (a *Authenticator) expiry(ans *answer, now time.Time) time.Time {
	if !ans.expiry.IsZero() {
		return ans.expiry
	}
	if exp, ok := tokencache.JWTExpiry(ans.access); ok {
		return exp
	}
	return now.Add(a.opts.DefaultLifetime)
}

// afterLoginFailure starts the cool-down a captcha or lockout calls for, or the hold an
// accepted login with an unreadable answer calls for, and says so loudly.
func (a *Authenticator) afterLoginFailure(ctx context.Context, user string, err error) {
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		return
	}
	if errors.Is(err, ErrUnknownLoginAnswer) {
		cause := fmt.Sprintf("accepted login on %s for user %q with an answer not understood: %s",
			apiErr.Endpoint, user, strings.TrimPrefix(apiErr.Err.Error(), ErrUnknownLoginAnswer.Error()+": "))
		until, holdErr := a.holds.start(ctx, user, cause)
		a.opts.Logger.Error("tradovate: the broker accepted a login but its answer is not understood; "+
			"the login is not sent again until the hold ends or ClearCooldown is called (the library may need an update)",
			"user", user, "endpoint", apiErr.Endpoint, "answer", cause, "until", until)
		if holdErr != nil {
			a.opts.Logger.Error("tradovate: could not record the login hold in Redis; other processes may still try",
				"user", user, "err", holdErr.Error())
		}
		return
	}
	var reason error
	switch {
	case errors.Is(err, ErrCaptchaRequired):
		reason = ErrCaptchaRequired
	case errors.Is(err, ErrLockedOut):
		reason = ErrLockedOut
	default:
		return
	}
	cause := fmt.Sprintf("HTTP %d on %s for user %q", apiErr.StatusCode, apiErr.Endpoint, user)
	if reason == ErrCaptchaRequired {
		cause = fmt.Sprintf("p-captcha on %s for user %q", apiErr.Endpoint, user)
	}
	until, cdErr := a.cooldown.start(ctx, user, reason, cause)
	a.opts.Logger.Error("tradovate: logins stopped; a human must act or wait for the cool-down",
		"user", user, "reason", reason.Error(), "cause", cause, "until", until, "all_users", reason == ErrLockedOut)
	if cdErr != nil {
		a.opts.Logger.Error("tradovate: could not record the cool-down in Redis; other processes may still try",
			"user", user, "err", cdErr.Error())
	}
}

func firstSet(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
