package zerodha

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/brokertoken/brokertoken/tokencache"
)

// maxBody bounds what is read of a Kite answer.
const maxBody = 1 << 20

// Kite's HTTP conventions.
const (
	// VersionHeader is the header naming the Kite Connect API version; every request
	// sends it with [Version].
	VersionHeader = "X-Kite-Version"
	// Version is the API version this package speaks.
	Version = "3"
)

// Session is the outcome of a successful login: Kite's answer to the request token
// exchange. Formatting it with fmt (any verb) or log/slog shows the tokens only
// redacted.
type Session struct {
	// UserID is the Kite client ID of the human who logged in, e.g. "AB1234".
	UserID string
	// UserName is the user's name as Kite gives it.
	UserName string
	// Broker is Kite's broker field, e.g. "ZERODHA".
	Broker string
	// AccessToken authorizes API calls until Kite expires it (about 06:00 IST).
	AccessToken string
	// PublicToken is Kite's public session token.
	PublicToken string
	// RefreshToken renews the session without a human ([Authenticator] does it), for
	// apps Kite gives one; "" otherwise. It is a secret: [App.RedirectHandler] stores it
	// where only the writer role may read it.
	RefreshToken string
	// LoginTime is Kite's login_time, in IST; zero when Kite sent none.
	LoginTime time.Time

	info UserInfo // what Kite said about the user, for App.UserInfo
}

// String shows the user and a redacted access token (never the refresh token).
func (s Session) String() string {
	return fmt.Sprintf("zerodha.Session{user %s, access token %s}", s.UserID, tokencache.Redact(s.AccessToken))
}

// Format makes every fmt verb print String, so no verb reaches the tokens.
func (s Session) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

// GoString is String: %#v must not reveal the tokens either.
func (s Session) GoString() string { return s.String() }

// LogValue makes log/slog record the redacted form.
func (s Session) LogValue() slog.Value { return slog.StringValue(s.String()) }

// checksum is what Kite requires with a request token or a refresh token: the hex
// SHA-256 of api_key + token + api_secret.
func checksum(apiKey, token, apiSecret string) string {
	sum := sha256.Sum256([]byte(apiKey + token + apiSecret))
	return hex.EncodeToString(sum[:])
}

// Exchange trades a request token (from Kite's redirect) for a session, once: Kite
// accepts each request token a single time, for a few minutes. It POSTs api_key,
// request_token and the checksum to /session/token with X-Kite-Version: 3.
//
// Most callers use [App.RedirectHandler], which also checks the login state and stores
// the token. Errors: [ErrNoSecret]; an [*APIError] for Kite's refusals, whatever the
// HTTP status they came with (matching [ErrTokenException] for a used or expired
// request token or a wrong checksum), for an unreachable Kite ([ErrUnavailable]) or a
// malformed answer ([ErrMalformedResponse]).
func (a *App) Exchange(ctx context.Context, requestToken string) (*Session, error) {
	const endpoint = "/session/token"
	if a.opts.APISecret == "" {
		return nil, ErrNoSecret
	}
	if requestToken == "" {
		return nil, &APIError{Endpoint: endpoint, Message: "no request_token"}
	}
	form := url.Values{
		"api_key":       {a.opts.APIKey},
		"request_token": {requestToken},
		"checksum":      {checksum(a.opts.APIKey, requestToken, a.opts.APISecret)},
	}
	return a.postSession(ctx, endpoint, form)
}

// postSession POSTs form to endpoint and decodes the session in the answer.
func (a *App) postSession(ctx context.Context, endpoint string, form url.Values) (*Session, error) {
	status, body, err := a.do(ctx, http.MethodPost, endpoint, nil, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	if e := kiteError(endpoint, status, body); e != nil {
		return nil, e
	}
	s, err := decodeSession(body)
	if err != nil {
		return nil, &APIError{Endpoint: endpoint, StatusCode: status, Err: err}
	}
	return s, nil
}

// renewSession trades a refresh token for a new session: POST /session/refresh_token
// with api_key, refresh_token and the checksum SHA-256(api_key + refresh_token +
// api_secret), as the official clients do. Kite answers like the request token
// exchange; its answer may carry a new refresh token.
func (a *App) renewSession(ctx context.Context, refreshToken string) (*Session, error) {
	const endpoint = "/session/refresh_token"
	if a.opts.APISecret == "" {
		return nil, ErrNoSecret
	}
	form := url.Values{
		"api_key":       {a.opts.APIKey},
		"refresh_token": {refreshToken},
		"checksum":      {checksum(a.opts.APIKey, refreshToken, a.opts.APISecret)},
	}
	return a.postSession(ctx, endpoint, form)
}

// Logout ends the session of accessToken at Kite (DELETE /session/token), which makes
// Kite reject the token from then on. It does not touch the cache: report the token to
// [tokencache.Cache.Invalidate] if services still hold it.
//
// Errors: [ErrNoSecret] (only the process holding the secret logs out), or an
// [*APIError].
func (a *App) Logout(ctx context.Context, accessToken string) error {
	const endpoint = "/session/token"
	if a.opts.APISecret == "" {
		return ErrNoSecret
	}
	q := url.Values{"api_key": {a.opts.APIKey}, "access_token": {accessToken}}
	h := http.Header{"Authorization": {AuthorizationHeader(a.opts.APIKey, accessToken)}}
	status, body, err := a.do(ctx, http.MethodDelete, endpoint+"?"+q.Encode(), h, nil)
	if err != nil {
		return err
	}
	if e := kiteError(endpoint, status, body); e != nil {
		return e
	}
	return nil
}

// do sends one request to Kite's API and reads the answer. Its errors name only the
// path, never the query or the body, which hold tokens.
func (a *App) do(ctx context.Context, method, pathAndQuery string, h http.Header, body io.Reader) (int, []byte, error) {
	path, _, _ := strings.Cut(pathAndQuery, "?")
	req, err := http.NewRequestWithContext(ctx, method, a.opts.APIURL+pathAndQuery, body)
	if err != nil {
		return 0, nil, &APIError{Endpoint: path, Err: fmt.Errorf("%w: bad APIURL", ErrUnavailable)}
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set(VersionHeader, Version)
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := a.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, &APIError{Endpoint: path, Err: fmt.Errorf("%w: %w", ErrUnavailable, transportCause(err))}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, nil, &APIError{Endpoint: path, StatusCode: resp.StatusCode,
			Err: fmt.Errorf("%w: reading the answer: %w", ErrUnavailable, transportCause(err))}
	}
	return resp.StatusCode, raw, nil
}

// transportCause strips the *url.Error around a client error: its message repeats the
// request URL, whose query may hold a token.
func transportCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return errors.New("timeout")
		}
		return ue.Err
	}
	return err
}
