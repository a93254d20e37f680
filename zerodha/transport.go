package zerodha

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/brokertoken/brokertoken/tokencache"
)

// maxErrorBody bounds how much of an error answer is read to find its error_type.
const maxErrorBody = 64 << 10

// AuthorizationHeader returns the value of the Authorization header of a Kite Connect
// API call: "token api_key:access_token".
func AuthorizationHeader(apiKey, accessToken string) string {
	return "token " + apiKey + ":" + accessToken
}

// CheckResponse returns nil for a successful answer. Otherwise it reads and closes
// resp.Body and returns an [*APIError] with Kite's error_type and message, which
// matches [ErrTokenException] when the token was rejected. An answer is an error when
// its status is not 2xx, or when it is a JSON envelope with "status": "error" or an
// error_type, whatever its status, as the official Python client reads them; a 2xx
// body is looked at only when it is small enough to be one (64 KiB), and is left
// readable when it is not an error. Use it for calls not made through [Transport], and
// for a market-data feed's handshake.
func CheckResponse(resp *http.Response) error {
	endpoint := ""
	if resp.Request != nil && resp.Request.URL != nil {
		endpoint = resp.Request.URL.Path // never the query: it may hold a token
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		return decodeError(endpoint, resp.StatusCode, body)
	}
	if !strings.Contains(resp.Header.Get("Content-Type"), "json") {
		return nil
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody+1))
	if err == nil && len(head) <= maxErrorBody {
		if e := kiteError(endpoint, resp.StatusCode, head); e != nil {
			resp.Body.Close()
			return e
		}
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	return nil
}

// Transport is an http.RoundTripper for Kite Connect API calls. It sets
// "Authorization: token api_key:access_token" with the token the cache holds for User,
// and X-Kite-Version: 3 unless the request sets a version.
//
// When Kite answers 403 with a TokenException, the token is reported to
// [tokencache.Cache.Invalidate], so no process uses it again. If Redis already holds a
// newer token (a login this process had not heard of yet) and the request can be sent
// again (no body, or Request.GetBody set), it is retried once with that token;
// otherwise the 403 is returned as it is, and later requests fail at once with the
// cache's error, a [*tokencache.RefreshError] wrapping [*LoginRequiredError], until a
// human logs in. Kite is not called again meanwhile.
//
// Make one with [App.Transport]. Its fields must not change while it is in use.
type Transport struct {
	// Cache supplies the tokens. Required.
	Cache *tokencache.Cache
	// User is the cache user holding the app's token ([App.User]). Required.
	User string
	// APIKey is the app's api_key. Required.
	APIKey string
	// Base sends the requests. Default: [http.DefaultTransport].
	Base http.RoundTripper
}

// RoundTrip implements http.RoundTripper. It does not modify req.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	tok, err := t.Cache.Token(ctx, t.User)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	resp, err := t.send(req, tok.AccessToken)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		return resp, err
	}
	if !errors.Is(peekError(resp), ErrTokenException) {
		return resp, nil
	}
	if err := t.Cache.Invalidate(ctx, t.User, tok.AccessToken); err != nil {
		return resp, nil // the 403 stands; the cache's error shows on the next call
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return resp, nil
	}
	next, err := t.Cache.Token(ctx, t.User)
	if err != nil || next.AccessToken == tok.AccessToken {
		return resp, nil
	}
	retry := req.Clone(ctx)
	if req.GetBody != nil {
		if retry.Body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	resp.Body.Close()
	return t.send(retry, next.AccessToken)
}

func (t *Transport) send(req *http.Request, accessToken string) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", AuthorizationHeader(t.APIKey, accessToken))
	if r.Header.Get(VersionHeader) == "" {
		r.Header.Set(VersionHeader, Version)
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}

// peekError decodes resp's error answer and puts the body back, so the caller can still
// read it.
func peekError(resp *http.Response) *APIError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.TransferEncoding = nil
	if resp.Header != nil {
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	path := ""
	if resp.Request != nil && resp.Request.URL != nil {
		path = resp.Request.URL.Path
	}
	return decodeError(path, resp.StatusCode, body)
}
