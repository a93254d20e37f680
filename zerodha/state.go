package zerodha

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"

	"github.com/brokertoken/brokertoken/tokencache"
)

// stateBytes is the entropy of a login state: 128 bits, hex-encoded.
const stateBytes = 16

// stateKey is the Redis key of a login state.
func (a *App) stateKey(state string) string {
	return a.opts.Prefix + ":zerodha:" + a.opts.APIKey + ":state:" + state
}

// validState reports whether s has the shape of a state this package mints, so that
// nothing else is ever used in a Redis key.
func validState(s string) bool {
	if len(s) != 2*stateBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// mintState stores a new single-use state for StateTTL and returns it.
func (a *App) mintState(ctx context.Context) (string, error) {
	b := make([]byte, stateBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("zerodha: making a login state: %w", err)
	}
	state := hex.EncodeToString(b)
	ok, err := a.opts.Redis.SetNX(ctx, a.stateKey(state), "1", a.opts.StateTTL).Result()
	if err != nil {
		return "", fmt.Errorf("%w: storing a login state: %v", tokencache.ErrRedisUnavailable, err)
	}
	if !ok {
		return "", errors.New("zerodha: login state collision") // 2^-128: never in practice
	}
	return state, nil
}

// consumeState reports whether state was minted, has not expired and was not used
// before; it can succeed once per state, across every process sharing the Redis.
func (a *App) consumeState(ctx context.Context, state string) (bool, error) {
	if !validState(state) {
		return false, nil
	}
	n, err := a.opts.Redis.Del(ctx, a.stateKey(state)).Result()
	if err != nil {
		return false, fmt.Errorf("%w: checking a login state: %v", tokencache.ErrRedisUnavailable, err)
	}
	return n == 1, nil
}

// LoginURL returns Kite's login URL for the app with a new single-use state, valid for
// [Options.StateTTL]:
//
//	https://kite.zerodha.com/connect/login?v=3&api_key=KEY&redirect_params=state%3D...
//
// Kite hands redirect_params back to the redirect URL, where [App.RedirectHandler]
// checks the state. Errors wrap [tokencache.ErrRedisUnavailable] when the state could not
// be stored.
func (a *App) LoginURL(ctx context.Context) (string, error) {
	state, err := a.mintState(ctx)
	if err != nil {
		return "", err
	}
	return a.kiteLoginURL(state), nil
}

func (a *App) kiteLoginURL(state string) string {
	q := url.Values{}
	q.Set("v", "3")
	q.Set("api_key", a.opts.APIKey)
	q.Set("redirect_params", url.Values{"state": {state}}.Encode())
	return a.opts.LoginURL + "?" + q.Encode()
}

// loginLink is the URL to show a human who must log in: StartURL when configured, else
// a freshly minted Kite login URL ("" if Redis refused it, with the error).
func (a *App) loginLink(ctx context.Context) (string, error) {
	if a.opts.StartURL != "" {
		return a.opts.StartURL, nil
	}
	return a.LoginURL(ctx)
}
