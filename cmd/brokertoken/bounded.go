package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/brokertoken/brokertoken/tokencache"
)

// boundedAuth is the Authenticator the daemon gives its cache: it runs at most
// cap(slots) broker calls (logins and renewals together) at once and queues the rest.
// The cache renews stale tokens in background goroutines that no check waits for, so
// this is where --concurrency reaches every request sent to the broker. A call holds
// its slot for all of its work, including waits for the login budget and time
// penalties. Its methods are safe for concurrent use.
type boundedAuth struct {
	auth  tokencache.Authenticator
	slots chan struct{}
	log   *slog.Logger // says when a call waits over a second for a slot
}

// boundedRenewer is a boundedAuth over an Authenticator that also renews, so the cache
// sees [tokencache.Renewer] exactly when the wrapped Authenticator implements it.
type boundedRenewer struct {
	*boundedAuth
	renewer tokencache.Renewer
}

var (
	_ tokencache.Authenticator = (*boundedAuth)(nil)
	_ tokencache.Renewer       = (*boundedRenewer)(nil)
)

// boundAuth returns auth limited to cap(slots) broker calls at once, slots shared with
// the other brokers' Authenticators; log hears of waits for a slot that last over a
// second.
func boundAuth(auth tokencache.Authenticator, slots chan struct{}, log *slog.Logger) tokencache.Authenticator {
	b := &boundedAuth{auth: auth, slots: slots, log: log}
	if r, ok := auth.(tokencache.Renewer); ok {
		return &boundedRenewer{boundedAuth: b, renewer: r}
	}
	return b
}

// Login logs user in once a slot is free.
func (b *boundedAuth) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	if err := b.acquire(ctx, user, "login"); err != nil {
		return nil, err
	}
	defer b.release()
	return b.auth.Login(ctx, user)
}

// Renew renews current once a slot is free.
func (b *boundedRenewer) Renew(ctx context.Context, user string, current *tokencache.Token) (*tokencache.Token, error) {
	if err := b.acquire(ctx, user, "renewal"); err != nil {
		return nil, err
	}
	defer b.release()
	return b.renewer.Renew(ctx, user, current)
}

// acquire takes a slot, or returns ctx's error (wrapped) if it ends first.
func (b *boundedAuth) acquire(ctx context.Context, user, what string) error {
	ok := acquire(ctx, b.slots, func() {
		b.log.Info("brokertoken: "+what+" waits for a broker slot: --concurrency logins and renewals are running",
			"user", user, waitKey, "until one of them is done", "concurrency", cap(b.slots))
	})
	if !ok {
		return fmt.Errorf("waiting for one of the %d broker slots (--concurrency): %w", cap(b.slots), ctx.Err())
	}
	return nil
}

func (b *boundedAuth) release() { <-b.slots }
