package tokencache_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/legacykeys"
	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
)

func TestSetReachesEveryProcessWithAVersion(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	other := e.cache(nil)
	_, err := other.Token(ctx, user)
	require.ErrorIs(t, err, tokencache.ErrNoToken)
	ch := other.Watch(ctx, user)

	rdb := e.client()
	cmds := countCommands(rdb)
	callback := newCache(t, rdb, e.srv.Prefix, nil)
	announced := e.client().Subscribe(ctx, e.srv.Prefix+":invalidate")
	t.Cleanup(func() { _ = announced.Close() })
	_, err = announced.Receive(ctx) // subscribed
	require.NoError(t, err)
	cmds.reset()
	in := &tokencache.Token{AccessToken: "from-a-login-callback", Expiry: time.Now().Add(time.Hour)}
	stored, err := callback.Set(ctx, user, in)
	require.NoError(t, err)
	assert.Positive(t, stored.Version)
	assert.Zero(t, cmds.get("get"), "Set is one script call: no read before it")
	assert.Equal(t, fmt.Sprintf("%d:%s", stored.Version, user), receiveMessage(t, announced))
	assert.Zero(t, in.Version, "the caller's token is not modified")
	assert.Equal(t, stored.Version, receive(t, ch).Version)
	tok, err := other.Token(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, "from-a-login-callback", tok.AccessToken)

	// The same token again is a no-op: nothing written, nothing announced.
	again, err := callback.Set(ctx, user, in)
	require.NoError(t, err)
	assert.Equal(t, stored.Version, again.Version)
	assert.Equal(t, "from-a-login-callback", again.AccessToken)
	next, err := callback.Set(ctx, user, &tokencache.Token{AccessToken: "next", Expiry: in.Expiry})
	require.NoError(t, err)
	assert.Greater(t, next.Version, stored.Version)
	assert.Equal(t, fmt.Sprintf("%d:%s", next.Version, user), receiveMessage(t, announced),
		"the message after the first Set is the third Set's")
}

// receiveMessage returns the next pub/sub message's payload.
func receiveMessage(t *testing.T, ps *redis.PubSub) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := ps.ReceiveMessage(ctx)
	require.NoError(t, err)
	return msg.Payload
}

func TestSetResolvesExpiryFromJWT(t *testing.T) {
	e := newEnv(t)
	c := e.cache(nil)
	future := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	jwt := hs256(t, map[string]any{"exp": future.Unix()})
	tok, err := c.Set(context.Background(), e.user("U"), &tokencache.Token{AccessToken: jwt})
	require.NoError(t, err)
	assert.True(t, future.Equal(tok.Expiry), "expiry %s", tok.Expiry)
}

func TestRecordTTLFollowsExpiry(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	c := e.cache(nil)
	set(t, c, user, "x") // expires in one hour
	key := e.srv.Prefix + ":{" + user + "}:record"
	ttl, err := e.client().PTTL(ctx, key).Result()
	require.NoError(t, err)
	assert.InDelta(t, (time.Hour + 30*time.Second).Seconds(), ttl.Seconds(), 5, "TTL is time to expiry plus a short grace")
}

func TestLegacyKeysForPythonServices(t *testing.T) {
	srv := testutil.StartRedis(t) // redis-cli needs a real server
	e := &env{t: t, srv: srv}
	user := e.user("APEX")
	accounts := []string{user + "-0000001", user + "-0000002"}
	ctx := context.Background()
	b := &broker{lifetime: 90 * time.Minute}
	c := e.cache(b, func(o *tokencache.Options) {
		o.LegacyKeys = true
		o.AccountsFor = func(u string) []string {
			if u == user {
				return accounts
			}
			return nil
		}
		o.UserFor = func(a string) string {
			if strings.HasPrefix(a, user) {
				return user
			}
			return a
		}
	})
	tok, err := c.Token(ctx, accounts[1])
	require.NoError(t, err)

	host, port, _ := strings.Cut(srv.Addr(), ":")
	cli := func(args ...string) string {
		out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...).Output()
		require.NoError(t, err)
		return strings.TrimSpace(string(out))
	}
	for _, k := range []string{"token:" + user, "token:" + accounts[0], "token:" + accounts[1], "auth:" + user} {
		assert.Equal(t, tok.AccessToken, cli("GET", k), k)
		ttl, err := e.client().TTL(ctx, k).Result()
		require.NoError(t, err)
		assert.InDelta(t, (90 * time.Minute).Seconds(), ttl.Seconds(), 5, "%s TTL is the time to expiry", k)
	}
	assert.Equal(t, "token:"+user+"\ntoken:"+accounts[0]+"\ntoken:"+accounts[1], cli("LRANGE", user, "0", "-1"))
	assert.Equal(t, "-1", cli("TTL", user), "the list has no TTL, as the original kept it")
	// A naive ISO time in the local zone, as Python's datetime.isoformat() writes it.
	exp, err := time.ParseInLocation("2006-01-02T15:04:05.000000", cli("GET", "token_expiry:"+user), time.Local)
	require.NoError(t, err)
	assert.WithinDuration(t, tok.Expiry, exp, time.Millisecond)

	// A new token replaces every legacy key.
	next, err := c.Set(ctx, user, &tokencache.Token{AccessToken: "replacement", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	assert.Equal(t, next.AccessToken, cli("GET", "token:"+accounts[0]))
}

func TestSyncLegacyWritesKeysOfATokenStoredWithoutThem(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	stored := set(t, e.cache(nil), user, "stored-without-legacy-keys")
	rdb := e.client()
	require.Zero(t, rdb.Exists(ctx, "token:"+user).Val())

	c := e.cache(nil, func(o *tokencache.Options) { o.AccountsFor = func(string) []string { return []string{user + "-1"} } })
	written, err := legacykeys.Sync(c, ctx, user)
	require.NoError(t, err)
	assert.True(t, written)
	assert.Equal(t, stored.AccessToken, rdb.Get(ctx, "token:"+user).Val())
	assert.Equal(t, stored.AccessToken, rdb.Get(ctx, "token:"+user+"-1").Val())
	assert.Equal(t, stored.AccessToken, rdb.Get(ctx, "auth:"+user).Val())
	assert.Equal(t, []string{"token:" + user, "token:" + user + "-1"}, rdb.LRange(ctx, user, 0, -1).Val())
	written, err = legacykeys.Sync(c, ctx, user)
	require.NoError(t, err)
	assert.False(t, written, "nothing to do the second time")
	written, err = legacykeys.Sync(c, ctx, e.user("nobody"))
	require.NoError(t, err)
	assert.False(t, written, "nothing stored: nothing written")
	assert.Zero(t, rdb.Exists(ctx, "token:"+e.user("nobody")).Val())
}

// A process holding an older token hears the announcement, reads the record once (a
// message is a hint, never a token to serve), and its watchers hear of it. Messages it
// cannot use, or that name a version Redis does not hold, cost a read at most.
func TestANewTokenArrivesWithItsAnnouncement(t *testing.T) {
	e := newEnv(t)
	user := e.user("U")
	ctx := context.Background()
	writer := e.cache(nil)
	first, err := writer.Set(ctx, user, &tokencache.Token{AccessToken: "first", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)

	rdb := e.client()
	cmds := countCommands(rdb)
	reader := newCache(t, rdb, e.srv.Prefix, nil)
	tok, err := reader.Token(ctx, user)
	require.NoError(t, err)
	require.Equal(t, first.Version, tok.Version)
	ch := reader.Watch(ctx, user)
	cmds.reset()

	second, err := writer.Set(ctx, user, &tokencache.Token{AccessToken: "second", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	assert.Equal(t, second.Version, receive(t, ch).Version)
	tok, err = reader.Token(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, "second", tok.AccessToken)
	assert.Equal(t, 1, cmds.get("get"), "the new token was read back once")

	// Garbage on the old records channel and on the announcement channel is ignored; an
	// announcement of a version Redis does not hold makes the reader look, and it keeps
	// serving what Redis holds.
	raw := e.client()
	require.NoError(t, raw.Publish(ctx, e.srv.Prefix+":records", "garbage").Err())
	require.NoError(t, raw.Publish(ctx, e.srv.Prefix+":invalidate", "garbage").Err())
	require.NoError(t, raw.Publish(ctx, e.srv.Prefix+":invalidate", fmt.Sprintf("%d:%s", second.Version+1, user)).Err())
	third, err := writer.Set(ctx, user, &tokencache.Token{AccessToken: "third", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	assert.Equal(t, third.Version, receive(t, ch).Version)
	tok, err = reader.Token(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, "third", tok.AccessToken)
}
