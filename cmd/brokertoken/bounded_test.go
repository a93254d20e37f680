package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/brokertoken/brokertoken/tokencache"
)

type loginOnly struct{}

func (loginOnly) Login(context.Context, string) (*tokencache.Token, error) {
	return &tokencache.Token{AccessToken: "login"}, nil
}

type loginAndRenew struct{ loginOnly }

func (loginAndRenew) Renew(context.Context, string, *tokencache.Token) (*tokencache.Token, error) {
	return &tokencache.Token{AccessToken: "renew"}, nil
}

// The cache renews only through an Authenticator that is a Renewer: the bound must
// neither hide that nor claim it for one that cannot renew.
func TestBoundAuthIsARenewerExactlyWhenTheWrappedOneIs(t *testing.T) {
	_, ok := boundAuth(loginOnly{}, 1).(tokencache.Renewer)
	assert.False(t, ok, "a login-only Authenticator became a Renewer")

	a := boundAuth(loginAndRenew{}, 1)
	r, ok := a.(tokencache.Renewer)
	if assert.True(t, ok, "the Renewer was hidden") {
		tok, err := r.Renew(context.Background(), "u", &tokencache.Token{})
		assert.NoError(t, err)
		assert.Equal(t, "renew", tok.AccessToken)
	}
	tok, err := a.Login(context.Background(), "u")
	assert.NoError(t, err)
	assert.Equal(t, "login", tok.AccessToken)
}

// A call that cannot get a slot before its context ends fails with the context's
// error, and a slot is freed when a call returns.
func TestBoundAuthWaitsForASlotWithinTheContext(t *testing.T) {
	a := boundAuth(loginAndRenew{}, 1).(*boundedRenewer)
	a.slots <- struct{}{} // a call in flight
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := a.Login(ctx, "u")
	assert.ErrorIs(t, err, context.Canceled)
	_, err = a.Renew(ctx, "u", &tokencache.Token{})
	assert.ErrorIs(t, err, context.Canceled)

	<-a.slots
	for range 3 { // each call gives its slot back
		_, err = a.Login(context.Background(), "u")
		assert.NoError(t, err)
	}
	assert.Empty(t, a.slots)
}
