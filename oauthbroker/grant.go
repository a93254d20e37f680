package oauthbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/tokencache"
)

// grant is what the token endpoint answered, checked.
type grant struct {
	access        string
	accessExpiry  time.Time // zero: unknown (the cache resolves it)
	refresh       string    // "" when the answer had none
	refreshExpiry time.Time // from refresh_token_expires_in; zero when not given
}

// maxRefreshLifetime bounds a refresh_token_expires_in that is taken seriously.
const maxRefreshLifetime = 10 * 366 * 24 * time.Hour

// grantFrom checks a token answer as x/oauth2 decoded it, at now. A missing expiry is
// filled in from the provider's lifetime; a refresh_token_expires_in that is not a
// positive number of seconds is ignored.
func (b *Broker) grantFrom(tok *oauth2.Token, now time.Time) (*grant, error) {
	if tok == nil || !usableToken(tok.AccessToken) {
		return nil, errors.New("the answer has no usable access_token")
	}
	if tt := tok.TokenType; tt != "" && !strings.EqualFold(tt, "bearer") {
		return nil, fmt.Errorf("the answer's token_type is %q, not Bearer", clean(tt, 30))
	}
	if tok.RefreshToken != "" && !usableToken(tok.RefreshToken) {
		return nil, errors.New("the answer's refresh_token is not a usable token")
	}
	g := &grant{access: tok.AccessToken, refresh: tok.RefreshToken, accessExpiry: tok.Expiry}
	switch {
	case !g.accessExpiry.IsZero() && !g.accessExpiry.After(now):
		return nil, fmt.Errorf("the answer's access token expired already (expires_in %d)", tok.ExpiresIn)
	case g.accessExpiry.IsZero() && b.opts.Provider.AccessTokenLifetime > 0:
		g.accessExpiry = now.Add(b.opts.Provider.AccessTokenLifetime)
	}
	if d, ok := parseLifetime(tok.Extra("refresh_token_expires_in")); ok {
		g.refreshExpiry = now.Add(d)
	}
	return g, nil
}

// parseLifetime reads a number of seconds as a JSON answer (a number, or a string of
// digits) or a form answer (a string) gives it: positive, at most maxRefreshLifetime.
func parseLifetime(v any) (time.Duration, bool) {
	var secs float64
	switch x := v.(type) {
	case float64:
		secs = x
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return 0, false
		}
		secs = f
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			return 0, false
		}
		secs = float64(n)
	default:
		return 0, false
	}
	if math.IsNaN(secs) || secs < 1 || secs > maxRefreshLifetime.Seconds() {
		return 0, false
	}
	return time.Duration(secs) * time.Second, true
}

// outcome is what a token request tells about the provider's state.
type outcome int

const (
	answered outcome = iota // the provider answered: its answer says what it did
	unknown                 // no usable answer: it may or may not have issued new tokens
)

// exchange trades an authorization code for tokens.
func (b *Broker) exchange(ctx context.Context, code, verifier string) (*grant, error) {
	var opts []oauth2.AuthCodeOption
	if verifier != "" {
		opts = append(opts, oauth2.VerifierOption(verifier))
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, b.opts.HTTPClient)
	now := time.Now()
	tok, err := b.conf.Exchange(ctx, code, opts...)
	if err != nil {
		te, _ := b.tokenError("authorization_code", err, code)
		return nil, te
	}
	g, err := b.grantFrom(tok, now)
	if err != nil {
		return nil, &TokenError{Provider: b.opts.Provider.Name, Grant: "authorization_code", StatusCode: 200,
			Err: fmt.Errorf("%w: %v", ErrRotationLost, err)}
	}
	if g.refresh == "" {
		return nil, &TokenError{Provider: b.opts.Provider.Name, Grant: "authorization_code", StatusCode: 200,
			Err: errors.New("the provider issued no refresh token: the fleet could not renew the access token")}
	}
	return g, nil
}

// refresh sends a refresh_token grant. The outcome says whether the provider may have
// rotated the refresh token without this process learning the new one.
func (b *Broker) refresh(ctx context.Context, refreshToken string) (*grant, outcome, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, b.opts.HTTPClient)
	now := time.Now()
	tok, err := b.conf.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		te, out := b.tokenError("refresh_token", err, refreshToken)
		return nil, out, te
	}
	g, err := b.grantFrom(tok, now)
	if err != nil {
		return nil, unknown, &TokenError{Provider: b.opts.Provider.Name, Grant: "refresh_token", StatusCode: 200,
			Err: fmt.Errorf("%w: the provider answered but %v", ErrRotationLost, err)}
	}
	if g.refresh == "" {
		g.refresh = refreshToken // x/oauth2 does this too: the provider keeps the refresh token
	}
	return g, answered, nil
}

// tokenError turns x/oauth2's error into a *TokenError that holds no secret (x/oauth2's
// own RetrieveError prints the response body), and says whether the provider answered.
func (b *Broker) tokenError(grantType string, err error, sent string) (*TokenError, outcome) {
	te := &TokenError{Provider: b.opts.Provider.Name, Grant: grantType}
	scrub := func(s string) string {
		for _, secret := range []string{sent, b.opts.ClientSecret} {
			if secret != "" {
				s = strings.ReplaceAll(s, secret, tokencache.Redact(secret))
			}
		}
		return s
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if re.Response != nil {
			te.StatusCode = re.Response.StatusCode
		}
		te.Code = clean(scrub(re.ErrorCode), 60)
		te.Description = clean(scrub(re.ErrorDescription), 200)
		te.refused = b.opts.Provider.GrantRefused(re.ErrorCode, re.ErrorDescription)
		if te.StatusCode == 0 {
			te.StatusCode = 200 // an error member in a 2xx answer
		}
		if te.StatusCode >= 500 {
			return te, unknown // a server that failed may have failed after rotating
		}
		return te, answered
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		te.Err = err // "Post <token URL>: <cause>": no secret, and the cause stays testable
	} else {
		te.Err = errors.New(clean(scrub(err.Error()), 200))
	}
	return te, unknown
}
