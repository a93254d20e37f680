package zerodha

import (
	"context"
	_ "embed" // for refresh_drop.lua
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Kite gives some apps a refresh token with each login; POST /session/refresh_token
// trades it, with a checksum made from the API secret, for a new access token without a
// human. The refresh token is a secret that outlives the access token: it is stored
// where only the writer role may read it, "<Prefix>:secret:{<User>}:refresh" (the hash
// tag puts it in the Cluster slot of the user's token record), and only a process that
// holds the API secret ever reads it.

//go:embed refresh_drop.lua
var refreshDropLua string

// refreshDropScript forgets a refused refresh token; see refresh_drop.lua.
var refreshDropScript = redis.NewScript(refreshDropLua)

// refreshKey is where the app's refresh token is stored.
func (a *App) refreshKey() string { return a.opts.Prefix + ":secret:{" + a.opts.User + "}:refresh" }

// storeRefreshToken keeps tok for the next renewal. The key has no expiry: Kite says
// when a refresh token stops working, by refusing it.
func (a *App) storeRefreshToken(ctx context.Context, tok string) error {
	if err := a.opts.Redis.Set(ctx, a.refreshKey(), tok, 0).Err(); err != nil {
		return fmt.Errorf("%w: storing the refresh token: %v", tokencache.ErrRedisUnavailable, err)
	}
	return nil
}

// loadRefreshToken returns the stored refresh token, "" when there is none.
func (a *App) loadRefreshToken(ctx context.Context) (string, error) {
	tok, err := a.opts.Redis.Get(ctx, a.refreshKey()).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("%w: reading the refresh token: %v", tokencache.ErrRedisUnavailable, err)
	case !usableToken(tok):
		return "", nil // not something to send to Kite
	}
	return tok, nil
}

// dropRefreshToken forgets tok after Kite refused it, unless a newer one was stored.
func (a *App) dropRefreshToken(ctx context.Context, tok string) {
	if err := refreshDropScript.Run(ctx, a.opts.Redis, []string{a.refreshKey()}, tok).Err(); err != nil {
		a.opts.Logger.Warn("zerodha: could not forget the refused refresh token", "err", err)
	}
}

// renewQuiet is how long before Options.ExpiryTime a renewal waits for it instead of
// renewing: Kite expires every token at that time of day, so a token renewed just before
// it would be dead within minutes.
const renewQuiet = 10 * time.Minute

// errRenewalWaits says that a renewal waits for Kite's morning expiry, which is further
// away than the caller's deadline allows; it is temporary, so the cache tries again
// after a short backoff.
func errRenewalWaits(until time.Duration) error {
	return &APIError{Endpoint: "/session/refresh_token", Err: fmt.Errorf(
		"%w: Kite expires every token at the morning expiry time, in %s; renewing after it", ErrUnavailable, until.Round(time.Second))}
}

// refreshToken returns the stored refresh token when this process may renew user's
// session with it: it has the API secret, user is the app's, and one is stored ("" when
// not).
func (a *Authenticator) refreshToken(ctx context.Context, user string) (string, error) {
	if user != a.app.opts.User || a.app.opts.APISecret == "" {
		return "", nil
	}
	return a.app.loadRefreshToken(ctx)
}

// renew obtains a new access token with the stored refresh token. tried is false when
// there is nothing to try (see refreshToken). Within renewQuiet of the morning expiry it
// first waits for it, when ctx allows, else fails with a temporary error. A refresh
// token Kite refuses (TokenException) is forgotten, so that it is sent once only. A new
// refresh token in the answer is stored before the access token is returned.
func (a *Authenticator) renew(ctx context.Context, user string) (tok *tokencache.Token, tried bool, err error) {
	app := a.app
	rt, err := a.refreshToken(ctx, user)
	if err != nil || rt == "" {
		return nil, err != nil, err
	}
	if until := time.Until(app.Expiry(time.Now())); until <= renewQuiet {
		wait := until + time.Second
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait+30*time.Second {
			return nil, true, errRenewalWaits(until)
		}
		app.opts.Logger.Info("zerodha: waiting for Kite's morning expiry before renewing", "user", user, "wait", wait.Round(time.Second))
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, true, ctx.Err()
		}
	}
	sess, err := app.renewSession(ctx, rt)
	if err != nil {
		if errors.Is(err, ErrTokenException) {
			app.dropRefreshToken(ctx, rt)
		}
		app.opts.Logger.Warn("zerodha: renewing with the refresh token failed", "user", user, "err", err)
		return nil, true, err
	}
	if app.opts.UserID != "" && sess.UserID != "" && sess.UserID != app.opts.UserID {
		// Not the user this app serves: do not store it (the handler logs such sessions
		// out; a renewal cannot have another user unless the stored token was planted).
		app.dropRefreshToken(ctx, rt)
		return nil, true, fmt.Errorf("zerodha: the refresh token renewed a session of %s, not %s", sess.UserID, app.opts.UserID)
	}
	if sess.RefreshToken != "" && sess.RefreshToken != rt {
		if err := app.storeRefreshToken(ctx, sess.RefreshToken); err != nil {
			app.opts.Logger.Error("zerodha: Kite rotated the refresh token but the new one could not be stored; a human must log in next time",
				"user", user, "err", err)
			return nil, true, err
		}
	}
	app.saveInfo(ctx, sess)
	now := time.Now()
	app.opts.Logger.Info("zerodha: renewed the Kite session with the refresh token", "user", user,
		"user_id", sess.UserID, "token", tokencache.Redact(sess.AccessToken))
	return &tokencache.Token{AccessToken: sess.AccessToken, ObtainedAt: now, Expiry: app.Expiry(now)}, true, nil
}
