// Package oauth2adapter lets code written for golang.org/x/oauth2 use a
// [tokencache.TokenSource]: client libraries that accept an [oauth2.TokenSource], and
// [oauth2.Transport], work unchanged.
//
//	ts := oauth2adapter.TokenSource(ctx, cache.Source("PAAPEX2720450000001"))
//	client := oauth2adapter.NewClient(ctx, ts) // or &http.Client{Transport: &oauth2.Transport{Source: ts}}
//
// Asking the cache for every request costs nanoseconds and always gives the newest
// token, so the adapter keeps no copy of its own. Prefer [NewClient] to
// [oauth2.NewClient]: the latter wraps the source in [oauth2.ReuseTokenSource], which
// holds on to one token until 10 seconds before its expiry and so misses renewals and
// tokens reported bad.
//
// oauth2's transport does not react to a 401. Where requests go through an
// *http.Client you build, [tokencache.Transport] does: it reports the token with
// Cache.Invalidate and retries once.
package oauth2adapter

import (
	"context"
	"net/http"

	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/tokencache"
)

// TokenSource returns an oauth2.TokenSource whose Token calls src.Token(ctx) each time
// and converts the result: AccessToken, TokenType "Bearer" and Expiry. Errors are
// src's, unchanged, so errors.Is(err, tokencache.ErrNoToken) still works (also through
// an http.Client, which wraps them in a *url.Error).
//
// oauth2.TokenSource's Token takes no context, so ctx is passed to every call, as
// oauth2.Config.TokenSource does. It bounds the calls that have to wait (a Redis read, a
// refresh); a token in the cache's memory is returned without looking at it, so a
// cancelled ctx fails only calls that wait. The cache's RefreshTimeout bounds every
// wait anyway. The source is safe for concurrent use.
func TokenSource(ctx context.Context, src tokencache.TokenSource) oauth2.TokenSource {
	return &tokenSource{ctx: ctx, src: src}
}

// tokenSource adapts a tokencache.TokenSource. It holds ctx because oauth2's interface
// has no context parameter; see TokenSource.
type tokenSource struct {
	ctx context.Context
	src tokencache.TokenSource
}

// Token implements oauth2.TokenSource.
func (s *tokenSource) Token() (*oauth2.Token, error) {
	t, err := s.src.Token(s.ctx)
	if err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: t.AccessToken, TokenType: "Bearer", Expiry: t.Expiry}, nil
}

// NewClient returns an *http.Client that authorizes each request with a token from src,
// like oauth2.NewClient but without its reuse layer, so every request carries the
// newest token. Like oauth2.NewClient, it takes the base client from ctx's
// oauth2.HTTPClient value when set (its Transport, CheckRedirect, Jar and Timeout),
// else http.DefaultClient's settings.
func NewClient(ctx context.Context, src oauth2.TokenSource) *http.Client {
	base := http.DefaultClient
	if ctx != nil {
		if hc, ok := ctx.Value(oauth2.HTTPClient).(*http.Client); ok && hc != nil {
			base = hc
		}
	}
	return &http.Client{
		Transport:     &oauth2.Transport{Source: src, Base: base.Transport},
		CheckRedirect: base.CheckRedirect,
		Jar:           base.Jar,
		Timeout:       base.Timeout,
	}
}
