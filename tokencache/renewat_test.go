package tokencache_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/tokencache"
)

// earlyRenewal logs in like broker but asks for a renewal soon after each login, as
// tradovate does when a login's market-data token could not be had.
type earlyRenewal struct {
	*broker
	after time.Duration
}

func (b earlyRenewal) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	t, err := b.broker.Login(ctx, user)
	if err == nil {
		t.RenewAt = time.Now().Add(b.after)
	}
	return t, err
}

// A token whose Authenticator set RenewAt is renewed then, long before its usual
// refresh point, once for the fleet; another process reads RenewAt from the record.
func TestRenewAtAsksForAnEarlyRenewal(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	b := &broker{} // tokens live an hour: the usual refresh point is far away
	writers := []*tokencache.Cache{e.cache(earlyRenewal{b, 300 * time.Millisecond}), e.cache(earlyRenewal{b, 300 * time.Millisecond})}
	reader := e.cache(nil)
	first, err := writers[0].Token(ctx, user)
	require.NoError(t, err)
	require.False(t, first.RenewAt.IsZero())
	_, err = writers[1].Token(ctx, user)
	require.NoError(t, err)
	st, err := reader.Status(ctx, user)
	require.NoError(t, err)
	require.NotNil(t, st.Token)
	assert.Equal(t, first.RenewAt.UnixMilli(), st.Token.RenewAt.UnixMilli(), "RenewAt travels in the record")

	// As the daemon's checks do, both writers keep asking: from RenewAt on, the token is
	// due, still served while one of them renews it.
	require.Eventually(t, func() bool {
		for _, w := range writers {
			tok, err := w.Token(ctx, user)
			require.NoError(t, err)
			require.False(t, tok.Expiry.Before(time.Now()))
		}
		return b.renews.Load() == 1
	}, 10*time.Second, 10*time.Millisecond, "the token was not renewed at its RenewAt")
	require.Eventually(t, func() bool {
		got, err := reader.Token(ctx, user)
		return err == nil && got.Version > first.Version
	}, 10*time.Second, 10*time.Millisecond)
	got, err := reader.Token(ctx, user)
	require.NoError(t, err)
	assert.True(t, got.RenewAt.IsZero(), "the renewed token asks for nothing")
	st, err = reader.Status(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, "renew", st.ObtainedBy)
	for range 20 { // no second early renewal: the new token has none
		for _, w := range writers {
			_, err := w.Token(ctx, user)
			require.NoError(t, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	assert.EqualValues(t, 1, b.renews.Load())
	assert.EqualValues(t, 1, b.logins.Load())
}
