package tokencache_test

import (
	"context"
	"fmt"
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

// A Set that changes only RenewAt is written (the fleet must hear of it); a stored "r"
// out of range is ignored as a hint, never a reason to call the record corrupt.
func TestRenewAtIsSetAndReadAsAHint(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	w, reader := e.cache(nil), e.cache(nil)
	tok := &tokencache.Token{AccessToken: "same", Expiry: time.Now().Add(time.Hour).Truncate(time.Millisecond)}
	_, err := w.Set(ctx, user, tok)
	require.NoError(t, err)
	again := *tok
	again.RenewAt = time.Now().Add(time.Minute).Truncate(time.Millisecond)
	_, err = w.Set(ctx, user, &again)
	require.NoError(t, err)
	st, err := reader.Status(ctx, user)
	require.NoError(t, err)
	require.NotNil(t, st.Token)
	assert.Equal(t, again.RenewAt.UnixMilli(), st.Token.RenewAt.UnixMilli(), "a Set of RenewAt alone is written")

	for _, r := range []int64{-5, 1 << 60, tok.Expiry.Add(time.Hour).UnixMilli()} {
		other := e.user(fmt.Sprint("R", r))
		raw := fmt.Sprintf(`v1:%d:{"a":"x","e":%d,"o":1,"r":%d}`, time.Now().UnixMicro(), tok.Expiry.UnixMilli(), r)
		require.NoError(t, e.client().Set(ctx, recordKey(e, other), raw, time.Hour).Err())
		got, err := e.cache(nil).Token(ctx, other)
		require.NoError(t, err, "r=%d", r)
		assert.Equal(t, "x", got.AccessToken)
		assert.True(t, got.RenewAt.IsZero(), "r=%d is ignored", r)
	}
}
