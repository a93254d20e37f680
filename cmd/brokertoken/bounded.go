package main

import (
	"context"
	"fmt"

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

// boundAuth returns auth limited to n broker calls at once (n > 0).
func boundAuth(auth tokencache.Authenticator, n int) tokencache.Authenticator {
	b := &boundedAuth{auth: auth, slots: make(chan struct{}, n)}
	if r, ok := auth.(tokencache.Renewer); ok {
		return &boundedRenewer{boundedAuth: b, renewer: r}
	}
	return b
}

// Login logs user in once a slot is free.
func (b *boundedAuth) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	if err := b.acquire(ctx); err != nil {
		return nil, err
	}
	defer b.release()
	return b.auth.Login(ctx, user)
}

// Renew renews current once a slot is free.
func (b *boundedRenewer) Renew(ctx context.Context, user string, current *tokencache.Token) (*tokencache.Token, error) {
	if err := b.acquire(ctx); err != nil {
		return nil, err
	}
	defer b.release()
	return b.renewer.Renew(ctx, user, current)
}

// acquire takes a slot, or returns ctx's error (wrapped) if it ends first.
func (b *boundedAuth) acquire(ctx context.Context) error {
	select {
	case b.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for one of the %d broker slots (--concurrency): %w", cap(b.slots), ctx.Err())
	}
}

func (b *boundedAuth) release() { <-b.slots }
