package demoenv

import (
	"context"
	"io"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// Daemon stands in for `brokertoken run` in the examples: it logs a user in at the
// (fake) broker when told to and stores the token in Redis, where every cache sharing
// the Redis finds it. Its cache can also log in by itself, as the daemon's does.
type Daemon struct {
	Auth  *tradovate.Authenticator
	Cache *tokencache.Cache
	User  string
}

// NewDaemon returns a Daemon for user, registered with broker under a demo password.
func NewDaemon(rdb redis.UniversalClient, prefix string, broker *tradovatefake.Server, user string) (*Daemon, error) {
	creds, err := tradovate.NewCredentials(tradovate.Credential{Username: user, Password: "demo-password"})
	if err != nil {
		return nil, err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	auth, err := tradovate.New(tradovate.Options{
		RESTURL:        broker.RESTURL(),
		TradingViewURL: broker.TradingViewURL(),
		Method:         tradovate.MethodOfficial,
		Credentials:    creds,
		DeviceID:       "brokertoken-demo",
		Redis:          rdb,
		Namespace:      prefix + ":tradovate",
		Logger:         quiet,
	})
	if err != nil {
		return nil, err
	}
	cache, err := tokencache.New(tokencache.Options{Redis: rdb, Prefix: prefix, Authenticator: auth, Logger: quiet})
	if err != nil {
		return nil, err
	}
	return &Daemon{Auth: auth, Cache: cache, User: user}, nil
}

// Login opens a new broker session and stores its token: a new version with a new
// market-data token.
func (d *Daemon) Login(ctx context.Context) (*tokencache.Token, error) {
	t, err := d.Auth.Login(ctx, d.User)
	if err != nil {
		return nil, err
	}
	return d.Cache.Set(ctx, d.User, t)
}

// Renew extends the session of the stored token and stores the result: a new version
// that keeps the market-data token (Tradovate's renewal omits it).
func (d *Daemon) Renew(ctx context.Context) (*tokencache.Token, error) {
	cur, err := d.Cache.Token(ctx, d.User)
	if err != nil {
		return nil, err
	}
	t, err := d.Auth.Renew(ctx, d.User, cur)
	if err != nil {
		return nil, err
	}
	return d.Cache.Set(ctx, d.User, t)
}

// Close closes the daemon's cache.
func (d *Daemon) Close() { d.Cache.Close() }
