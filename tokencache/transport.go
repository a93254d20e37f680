package tokencache

import (
	"io"
	"net/http"
)

// Transport is an http.RoundTripper that authorizes each request with the account's
// token ("Authorization: Bearer <token>"). When the broker answers 401 it reports the
// token it sent to Cache.Invalidate and, if the request body can be sent again (no body,
// or Request.GetBody set, as http.NewRequest does for in-memory bodies), retries once
// with the next token.
type Transport struct {
	Cache   *Cache
	Account string
	// Base sends the requests. Default: http.DefaultTransport.
	Base http.RoundTripper
}

// RoundTrip implements http.RoundTripper. It does not modify req.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	tok, err := t.Cache.Token(ctx, t.Account)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	resp, err := t.send(req, tok.AccessToken)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	if err := t.Cache.Invalidate(ctx, t.Account, tok.AccessToken); err != nil {
		return resp, nil // the 401 stands; the error will show on the next call
	}
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return resp, nil
	}
	next, err := t.Cache.Token(ctx, t.Account)
	if err != nil || next.AccessToken == tok.AccessToken {
		return resp, nil
	}
	retry := req.Clone(ctx)
	if req.GetBody != nil {
		if retry.Body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	return t.send(retry, next.AccessToken)
}

func (t *Transport) send(req *http.Request, access string) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+access)
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
