package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
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
	_, ok := boundAuth(loginOnly{}, make(chan struct{}, 1), discardLog).(tokencache.Renewer)
	assert.False(t, ok, "a login-only Authenticator became a Renewer")

	a := boundAuth(loginAndRenew{}, make(chan struct{}, 1), discardLog)
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
	a := boundAuth(loginAndRenew{}, make(chan struct{}, 1), discardLog).(*boundedRenewer)
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

var discardLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// A call that waits over a second for a slot says so at INFO, as a wait of its user.
func TestBoundAuthSaysWhenItWaitsForASlot(t *testing.T) {
	var logs testutil.Buffer
	a := boundAuth(loginAndRenew{}, make(chan struct{}, 1), slog.New(slog.NewJSONHandler(&logs, nil))).(*boundedRenewer)
	a.slots <- struct{}{} // a call in flight
	done := make(chan error, 1)
	go func() {
		_, err := a.Login(context.Background(), "u1")
		done <- err
	}()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "waits for a broker slot") },
		10*time.Second, 10*time.Millisecond)
	<-a.slots
	require.NoError(t, <-done)
	var rec map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(logs.String())), &rec))
	assert.Equal(t, "INFO", rec["level"])
	assert.Equal(t, "u1", rec["user"])
	assert.Equal(t, "until one of them is done", rec["wait"])
}
