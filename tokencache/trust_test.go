package tokencache_test

// Regression tests for the trust issue: each numbered defect it reproduced against real
// Redis, tried the way an attacker or an unlucky operator would.

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/legacykeys"
	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
)

// recordKey is where a user's record lives.
func recordKey(e *env, user string) string { return e.srv.Prefix + ":{" + user + "}:record" }

// body is a valid record body for access, expiring in an hour.
func body(access string) string {
	return fmt.Sprintf(`{"a":%q,"e":%d,"o":%d}`, access, time.Now().Add(time.Hour).UnixMilli(), time.Now().UnixMilli())
}

// 1. A record that is valid JSON in another layout (a space, keys in another order, a
// version beyond int64) used to make set.lua and Go read different versions: every
// compare-and-set failed and was read as "someone else wrote first", and the refresher
// logged in again with no backoff. Now both read the same base, the corrupt record is
// replaced with one login, and a lost write adopts what Redis holds.
func TestRecordInAnotherLayoutCostsOneLogin(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	far := time.Now().Add(time.Hour).UnixMilli()
	past := time.Now().Add(-time.Hour).UnixMilli()
	for i, layout := range []string{
		`{"v": 5, "a": "x", "e": ` + fmt.Sprint(past) + `}%.0d`, // expired: its token must be replaced
		`{"a":"x","v":5,"e":` + fmt.Sprint(past) + `}%.0d`,
		`{"v": 5, "a": "x", "e": %d}`,
		`{"a":"x","v":5,"e":%d}`,
		`{"v":9223372036854775808,"a":"x","e":%d}`,
		`{"v":5,"a":"x","e":%d}`,
		`v1:99999999999999999:{"a":"x","e":%d}`,
		`v1:9999999999999999:{"a":"x","e":%d}`,
	} {
		b := &broker{}
		var logs testutil.Buffer
		c := e.cache(b, func(o *tokencache.Options) { o.Logger = debugLogger(&logs) })
		user := e.user(fmt.Sprint("U", i))
		require.NoError(t, e.client().Set(ctx, recordKey(e, user), fmt.Sprintf(layout, far), time.Hour).Err())
		tok, err := c.Token(ctx, user)
		require.NoError(t, err, layout)
		assert.NotEqual(t, "x", tok.AccessToken, "%s: a corrupt record is never served", layout)
		assert.EqualValues(t, 1, b.logins.Load(), "%s: one login replaces it", layout)
		assert.NotContains(t, logs.String(), "stored a token while this one refreshed", layout)
		st, err := c.Status(ctx, user)
		require.NoError(t, err)
		assert.Equal(t, tok.Version, st.Token.Version, "%s: ours is in Redis", layout)
	}
}

// 1b. Whatever a hostile writer keeps putting in the record, logins stay bounded: the
// caches serve what they hold and restore it instead of logging in again.
func TestHostileRecordRewritesDoNotCauseALoginStorm(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	b := &broker{}
	var caches []*tokencache.Cache
	for range 3 {
		caches = append(caches, e.cache(b, func(o *tokencache.Options) {
			o.MaxStaleness = 50 * time.Millisecond // re-read often: meet the garbage often
			o.RetryMin, o.RetryMax = 50*time.Millisecond, 200*time.Millisecond
		}))
	}
	_, err := caches[0].Token(ctx, user)
	require.NoError(t, err)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hostile := e.client()
	wg.Add(1)
	go func() {
		defer wg.Done()
		layouts := []string{`{"v": 5, "a": "x", "e": 99999999999999}`, `v1:9999999999999999:` + body("evil"), "garbage", `v2:1:{}`}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = hostile.Set(ctx, recordKey(e, user), layouts[i%len(layouts)], time.Hour).Err()
			time.Sleep(time.Millisecond)
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range caches {
			if tok, err := c.Token(ctx, user); err == nil {
				require.NotEqual(t, "evil", tok.AccessToken)
				require.NotEqual(t, "x", tok.AccessToken)
			}
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	assert.LessOrEqual(t, b.logins.Load(), int64(3), "2 s of hostile rewrites: the caches restore their token instead of logging in")
}

// 2. A forged record message on the old records channel used to be served at once,
// block a later legitimate Set, and reach Redis through the writer's restore path.
// Messages are hints now: nothing a message says is served or written.
func TestForgedRecordMessageIsNeverServedNorStored(t *testing.T) {
	srv := testutil.StartRedis(t)
	e := &env{t: t, srv: srv}
	ctx := context.Background()
	user := e.user("U")
	b := &broker{}
	writer := e.cache(b)
	reader := e.cache(nil)
	tok, err := writer.Token(ctx, user)
	require.NoError(t, err)
	_, err = reader.Token(ctx, user)
	require.NoError(t, err)

	forger := e.client()
	big := int64(9_000_000_000_000_000)
	evil := fmt.Sprintf(`{"v":%d,"a":"EVIL-token","e":%d}`, big, time.Now().Add(24*time.Hour).UnixMilli())
	for _, ch := range []string{":records", ":invalidate", ":reports"} {
		require.NoError(t, forger.Publish(ctx, srv.Prefix+ch, fmt.Sprintf("%d:%s\n%s", big, user, evil)).Err())
		require.NoError(t, forger.Publish(ctx, srv.Prefix+ch, fmt.Sprintf("%d:%s\nv1:%d:%s", big, user, big, body("EVIL-token"))).Err())
	}
	time.Sleep(100 * time.Millisecond)
	for _, c := range []*tokencache.Cache{writer, reader} {
		got, err := c.Token(ctx, user)
		require.NoError(t, err)
		assert.Equal(t, tok.AccessToken, got.AccessToken)
	}
	// A legitimate Set is served by everyone.
	set, err := writer.Set(ctx, user, &tokencache.Token{AccessToken: "legit", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		got, err := reader.Token(ctx, user)
		return err == nil && got.AccessToken == "legit"
	}, 5*time.Second, 5*time.Millisecond)
	// Redis loses its data: the writer restores what it holds, which came from Redis.
	srv.Stop(t)
	srv.Start(t)
	require.Eventually(t, func() bool {
		got, err := writer.Token(ctx, user) // as a daemon's check does
		require.True(t, err != nil || got.AccessToken == "legit")
		st, err := reader.Status(ctx, user)
		return err == nil && st.Token != nil
	}, 10*time.Second, 20*time.Millisecond, "the writer restores the record once it notices the restart")
	st, err := reader.Status(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, "legit", st.Token.AccessToken, "restored: what Redis held, never the forged token")
	assert.Greater(t, st.Token.Version, set.Version)
}

// 3. A forged announcement of the largest version used to block a user until restart:
// every cache answered ErrNoToken even after a successful Set.
func TestForgedAnnouncementNeverBlocksAUser(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	writer := e.cache(&broker{})
	reader := e.cache(nil)
	_, err := writer.Token(ctx, user)
	require.NoError(t, err)
	forger := e.client()
	for _, v := range []string{"9223372036854775807", "9999999999999999", "1999999999999999"} {
		require.NoError(t, forger.Publish(ctx, e.srv.Prefix+":invalidate", v+":"+user).Err())
	}
	set, err := writer.Set(ctx, user, &tokencache.Token{AccessToken: "after-the-forgery", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	for name, c := range map[string]*tokencache.Cache{"writer": writer, "reader": reader} {
		require.Eventually(t, func() bool {
			got, err := c.Token(ctx, user)
			return err == nil && got.Version == set.Version
		}, 5*time.Second, 5*time.Millisecond, name)
	}
	// Even a flood of forged announcements while callers ask: always an answer.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := int64(0); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = forger.Publish(ctx, e.srv.Prefix+":invalidate", fmt.Sprintf("%d:%s", set.Version+1+i, user)).Err()
		}
	}()
	for range 200 {
		got, err := reader.Token(ctx, user)
		require.NoError(t, err)
		require.Equal(t, set.Version, got.Version)
	}
	close(stop)
	wg.Wait()
}

// 4. Forged bad-token reports used to cost a login each (20 messages, 21 logins). Now a
// report costs a check at most, once per user per RetryMin, and a login only when the
// broker refuses the token (or cannot say).
func TestForgedReportsCostAtMostOneCheck(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	for _, check := range []bool{true, false} {
		t.Run(fmt.Sprint("checker=", check), func(t *testing.T) {
			user := user + fmt.Sprint(check)
			b := &checkingBroker{broker: &broker{}}
			var auth tokencache.Authenticator = b.broker
			if check {
				auth = b
			}
			c := e.cache(auth, func(o *tokencache.Options) { o.RetryMin = time.Minute })
			_, err := c.Token(ctx, user)
			require.NoError(t, err)
			forger := e.client()
			for range 20 { // in the old form and the new, each naming the stored version
				st, err := c.Status(ctx, user)
				require.NoError(t, err)
				require.NoError(t, forger.Publish(ctx, e.srv.Prefix+":invalidate", fmt.Sprintf("!%d:%s", st.Token.Version, user)).Err())
				require.NoError(t, forger.Publish(ctx, e.srv.Prefix+":reports", fmt.Sprintf("%d:%s", st.Token.Version, user)).Err())
				time.Sleep(30 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond)
			if check {
				assert.EqualValues(t, 1, b.checks.Load(), "one check")
				assert.EqualValues(t, 1, b.logins.Load(), "the broker accepts the token: no login")
			} else {
				assert.LessOrEqual(t, b.logins.Load(), int64(2), "at most one forced refresh per RetryMin")
			}
		})
	}
}

// 5. set.lua used to publish before a write that could still fail (an expiry ~292
// years out overflowed the TTL): other caches served a token never stored. Now the
// expiry is refused by name before anything is written, and a refused write announces
// nothing.
func TestAbsurdExpiryIsRefusedAndNothingIsAnnounced(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	writer := e.cache(nil)
	reader := e.cache(nil)
	ps := e.client().Subscribe(ctx, e.srv.Prefix+":invalidate")
	defer ps.Close()
	_, err := ps.Receive(ctx)
	require.NoError(t, err)

	msJWT := jwtWithExp(t, time.Now().Add(time.Hour).UnixMilli()) // exp in milliseconds
	for _, tok := range []*tokencache.Token{
		{AccessToken: "far", Expiry: time.Now().Add(292 * 365 * 24 * time.Hour)},
		{AccessToken: msJWT},
		{AccessToken: "year", Expiry: time.Now().Add(400 * 24 * time.Hour)},
	} {
		_, err := writer.Set(ctx, user, tok)
		require.ErrorIs(t, err, tokencache.ErrInvalidToken)
		assert.Contains(t, err.Error(), "more than 366 days away")
	}
	_, err = reader.Token(ctx, user)
	require.ErrorIs(t, err, tokencache.ErrNoToken, "nothing was stored")
	msg, err := ps.ReceiveTimeout(ctx, 200*time.Millisecond)
	assert.Error(t, err, "nothing was announced: %v", msg)

	// From a broker: a refresh error, not a wrapped TTL.
	absurd := tokencache.Authenticator(authFunc(func(ctx context.Context, u string) (*tokencache.Token, error) {
		return &tokencache.Token{AccessToken: msJWT}, nil
	}))
	_, err = e.cache(absurd).Token(ctx, e.user("V"))
	var re *tokencache.RefreshError
	require.ErrorAs(t, err, &re)
	assert.Contains(t, err.Error(), "JWT exp in milliseconds")
}

// authFunc is an Authenticator made of a function.
type authFunc func(ctx context.Context, user string) (*tokencache.Token, error)

func (f authFunc) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	return f(ctx, user)
}

// jwtWithExp returns an unsigned-looking JWT whose exp claim is exp.
func jwtWithExp(t *testing.T, exp int64) string {
	t.Helper()
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	return enc(`{"alg":"EdDSA"}`) + "." + enc(fmt.Sprintf(`{"sub":"1","exp":%d}`, exp)) + ".c2ln"
}

// 6. Versions above 2^53 used to go backwards in Lua's doubles: a Set over a stored
// v=9007199254740993 was ignored by other caches. Such a version is now out of range:
// corrupt for both sides, never served, and replaced by a version counted from the
// clock, which every cache takes.
func TestVersionBeyondRangeIsCorruptAndReplaced(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	writer := e.cache(nil)
	reader := e.cache(nil)
	require.NoError(t, e.client().Set(ctx, recordKey(e, user), "v1:9007199254740993:"+body("huge-version"), time.Hour).Err())
	_, err := reader.Token(ctx, user)
	require.ErrorIs(t, err, tokencache.ErrNoToken, "an out-of-range version is not served")
	set, err := writer.Set(ctx, user, &tokencache.Token{AccessToken: "next", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	assert.Less(t, set.Version, int64(9007199254740993))
	require.Eventually(t, func() bool {
		got, err := reader.Token(ctx, user)
		return err == nil && got.AccessToken == "next"
	}, 5*time.Second, 5*time.Millisecond)
}

// 7. A token that is not UTF-8 used to reach other processes altered (JSON replaced
// its bytes). It is refused at Set and at login now; valid tokens arrive byte for byte.
func TestTokensAreStoredByteForByteOrRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	writer := e.cache(nil)
	for _, bad := range []string{"abc\xffdef", "abc\ndef", "a\x00b"} {
		_, err := writer.Set(ctx, user, &tokencache.Token{AccessToken: bad, Expiry: time.Now().Add(time.Hour)})
		require.ErrorIs(t, err, tokencache.ErrInvalidToken, "%q", bad)
		assert.NotContains(t, err.Error(), bad)
		_, err = writer.Set(ctx, user, &tokencache.Token{AccessToken: "ok", MDAccessToken: bad, Expiry: time.Now().Add(time.Hour)})
		require.ErrorIs(t, err, tokencache.ErrInvalidToken, "md %q", bad)
	}
	exact := `eyJ.é"\/+=~` + "ünïcödé"
	_, err := writer.Set(ctx, user, &tokencache.Token{AccessToken: exact, Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	got, err := e.cache(nil).Token(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, exact, got.AccessToken)

	_, err = e.cache(authFunc(func(context.Context, string) (*tokencache.Token, error) {
		return &tokencache.Token{AccessToken: "bin\xfe", Expiry: time.Now().Add(time.Hour)}, nil
	})).Token(ctx, e.user("V"))
	var re *tokencache.RefreshError
	require.ErrorAs(t, err, &re)
	assert.Contains(t, err.Error(), "not printable UTF-8")
}

// 8. A reader whose Redis user lacks the channel's rights used to stay silent. It says
// so within seconds, and still serves what it reads.
func TestReaderWithoutChannelRightsSaysSo(t *testing.T) {
	srv := testutil.Redis(t)
	e := &env{t: t, srv: srv}
	ctx := context.Background()
	user := e.user("U")
	_, err := e.cache(nil).Set(ctx, user, &tokencache.Token{AccessToken: "stored", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	rdb := srv.ACLClient(t, "%R~"+srv.Prefix+":*", "+get", "+subscribe", "+ping", "+hello")
	var logs testutil.Buffer
	c := newCache(t, rdb, srv.Prefix, nil, func(o *tokencache.Options) { o.Logger = debugLogger(&logs) })
	got, err := c.Token(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, "stored", got.AccessToken)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "cannot receive invalidations") },
		5*time.Second, 10*time.Millisecond)
	assert.Contains(t, logs.String(), "NOPERM")
}

// 9. A user name with a brace broke the Cluster hash tag (CROSSSLOT); a user named like
// a legacy key turned a service's string key into a list. Such names are refused by
// name, before anything is written.
func TestNamesThatBreakKeysAreRefused(t *testing.T) {
	cl := testutil.Cluster(t)
	ctx := context.Background()
	rdb := cl.Client(t)
	c := newCache(t, rdb, cl.Prefix, &broker{}, func(o *tokencache.Options) { o.LegacyKeys = true })
	for _, name := range []string{"}" + cl.Name("U"), "{x}", cl.Name("a}b"), "token:PA2", "auth:X", "token_expiry:X", "brokertoken:legacy-owner", cl.Prefix + ":x", "a b", "a\nb", "\xff", ""} {
		_, err := c.Token(ctx, name)
		require.ErrorIs(t, err, tokencache.ErrInvalidName, "%q", name)
		_, err = c.Set(ctx, name, &tokencache.Token{AccessToken: "x", Expiry: time.Now().Add(time.Hour)})
		require.ErrorIs(t, err, tokencache.ErrInvalidName, "%q", name)
		require.ErrorIs(t, c.Invalidate(ctx, name, "x"), tokencache.ErrInvalidName, "%q", name)
		_, err = c.Source(name).Token(ctx)
		require.ErrorIs(t, err, tokencache.ErrInvalidName, "%q", name)
		_, open := <-c.Watch(ctx, name)
		assert.False(t, open, "%q: Watch closes at once", name)
	}
	require.ErrorIs(t, tokencache.CheckName(""), tokencache.ErrEmptyName)
	assert.ErrorContains(t, tokencache.CheckName("token:PA2"), "contains ':'")
	assert.ErrorContains(t, tokencache.CheckName("brokertoken:legacy-owner"), "contains ':'")
	assert.ErrorContains(t, tokencache.CheckName("}x"), "hash tag")
	// An account whose UserFor maps it to a bad user name is refused too.
	mapped := newCache(t, rdb, cl.Prefix, &broker{}, func(o *tokencache.Options) {
		o.UserFor = func(string) string { return "token:" + cl.Name("U") }
	})
	_, err := mapped.Token(ctx, cl.Name("acct"))
	require.ErrorIs(t, err, tokencache.ErrInvalidName)
	keys, err := rdb.Keys(ctx, "token:*").Result()
	require.NoError(t, err)
	assert.Empty(t, keys, "nothing was written")
}

// Close is bounded even when an Authenticator ignores its context.
func TestCloseIsBoundedWhenTheBrokerIgnoresItsContext(t *testing.T) {
	e := newEnv(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	stuck := authFunc(func(context.Context, string) (*tokencache.Token, error) {
		once.Do(func() { close(entered) })
		<-release // ignores ctx
		return &tokencache.Token{AccessToken: "late", Expiry: time.Now().Add(time.Hour)}, nil
	})
	c, err := tokencache.New(tokencache.Options{Redis: e.client(), Prefix: e.srv.Prefix, Authenticator: stuck})
	require.NoError(t, err)
	user := e.user("U")
	var got atomic.Value
	go func() {
		_, err := c.Token(context.Background(), user)
		got.Store(fmt.Sprint(err))
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-closed:
		require.Error(t, err)
		assert.Contains(t, err.Error(), "abandoned")
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
	close(release)
	require.Eventually(t, func() bool { return got.Load() != nil }, 10*time.Second, 5*time.Millisecond)
	st, err := e.cache(nil).Status(context.Background(), user)
	require.NoError(t, err)
	assert.Nil(t, st.Token, "the abandoned login's result is not written after Close")
	assert.Contains(t, got.Load(), "closed", "the waiting caller is told")
}

// 10. Two fleets with different prefixes used to fight over the unprefixed legacy keys.
// One prefix owns them; the other writes none and says which prefix owns them.
func TestLegacyKeysHaveOneOwningPrefix(t *testing.T) {
	srv := testutil.Redis(t)
	ctx := context.Background()
	user := srv.Name("U")
	legacy := func(o *tokencache.Options) { o.LegacyKeys = true }
	first := newCache(t, srv.Client(t), srv.Prefix+"-one", nil, legacy)
	second := newCache(t, srv.Client(t), srv.Prefix+"-two", nil, legacy)
	require.NoError(t, first.ClaimLegacyKeys(ctx))
	err := second.ClaimLegacyKeys(ctx)
	require.ErrorIs(t, err, tokencache.ErrLegacyKeysOwned)
	assert.Contains(t, err.Error(), srv.Prefix+"-one")

	_, err = first.Set(ctx, user, &tokencache.Token{AccessToken: "first-fleet", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	_, err = second.Set(ctx, user, &tokencache.Token{AccessToken: "second-fleet", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err, "the second fleet keeps its own record")
	rdb := srv.Client(t)
	assert.Equal(t, "first-fleet", rdb.Get(ctx, "token:"+user).Val(), "only the owner writes the legacy keys")
	_, err = legacykeys.Sync(second, ctx, user)
	require.ErrorIs(t, err, tokencache.ErrLegacyKeysOwned)
	assert.Equal(t, "first-fleet", rdb.Get(ctx, "token:"+user).Val())

	// The owner stops; its claim lapses (here: removed by hand), and the other prefix
	// may take over.
	require.NoError(t, first.Close())
	require.NoError(t, rdb.Del(ctx, tokencache.LegacyOwnerKey).Err())
	require.NoError(t, second.ClaimLegacyKeys(ctx))
	written, err := legacykeys.Sync(second, ctx, user)
	require.NoError(t, err)
	assert.True(t, written)
	assert.Equal(t, "second-fleet", rdb.Get(ctx, "token:"+user).Val())
	ttl := rdb.PTTL(ctx, tokencache.LegacyOwnerKey).Val()
	assert.Greater(t, ttl, time.Minute, "the claim lasts while its owner renews it")
}

// A read-only cache's report of a rejected market-data token (a websocket refused it)
// reaches the writer, which cannot check that token cheaply: it refreshes, once per
// RetryMin at most, without asking the broker about the (still valid) access token.
func TestReportOfTheMarketDataTokenRefreshesWithoutACheck(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	b := &checkingBroker{broker: &broker{}}
	writer := e.cache(b, func(o *tokencache.Options) { o.RetryMin = time.Minute })
	reader := e.cache(nil)
	tok, err := writer.Token(ctx, user)
	require.NoError(t, err)
	require.NotEmpty(t, tok.MDAccessToken)
	got, err := reader.Token(ctx, user)
	require.NoError(t, err)
	changes := reader.Watch(ctx, user)
	require.NoError(t, reader.Invalidate(ctx, user, got.MDAccessToken))
	if after, err := reader.Token(ctx, user); err == nil { // the new one may be there already
		assert.NotEqual(t, got.MDAccessToken, after.MDAccessToken, "a token holding a reported market-data token is not served")
	} else {
		require.ErrorIs(t, err, tokencache.ErrNoToken)
	}
	next := receive(t, changes)
	assert.Greater(t, next.Version, tok.Version)
	assert.NotEqual(t, tok.MDAccessToken, next.MDAccessToken)
	assert.Zero(t, b.checks.Load(), "the access token was not checked: it is not the one reported")
	assert.EqualValues(t, 2, b.logins.Load())
	// The same report again within RetryMin (forged, or late) costs nothing.
	require.NoError(t, e.client().Publish(ctx, e.srv.Prefix+":reports", fmt.Sprintf("md:%d:%s", next.Version, user)).Err())
	time.Sleep(200 * time.Millisecond)
	assert.EqualValues(t, 2, b.logins.Load())
}

// A reporter flooding reports of versions Redis does not hold never crowds out a genuine
// report: they cost a read each, one at a time, and never the RetryMin slot.
func TestBogusReportsNeverCrowdOutAGenuineOne(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	b := &checkingBroker{broker: &broker{}}
	writer := e.cache(b, func(o *tokencache.Options) { o.RetryMin = 500 * time.Millisecond })
	reporter := e.cache(nil, func(o *tokencache.Options) { o.RetryMin = 500 * time.Millisecond })
	tok, err := writer.Token(ctx, user)
	require.NoError(t, err)
	_, err = reporter.Token(ctx, user)
	require.NoError(t, err)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		forger := e.client()
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			for _, v := range []int64{1, tok.Version + i} { // older and newer than stored
				_ = forger.Publish(ctx, e.srv.Prefix+":reports", fmt.Sprintf("%d:%s", v, user)).Err()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(50 * time.Millisecond)
	b.revoke(tok.AccessToken)
	require.NoError(t, reporter.Invalidate(ctx, user, tok.AccessToken))
	require.Eventually(t, func() bool {
		got, err := reporter.Token(ctx, user)
		return err == nil && got.Version > tok.Version
	}, 6*time.Second, 20*time.Millisecond, "the revoked token is replaced after the genuine report")
	assert.EqualValues(t, 2, b.logins.Load())
}

// A reader that reported a token the broker still accepts (a spurious 401) serves it
// again once the writer has checked it: it is not left with ErrNoToken while Redis
// holds a good token.
func TestAReporterServesAgainWhatTheBrokerAccepts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	b := &checkingBroker{broker: &broker{}}
	writer := e.cache(b, func(o *tokencache.Options) { o.RetryMin = 200 * time.Millisecond })
	kept := make(chan int64, 1)
	reader := e.cache(nil, func(o *tokencache.Options) {
		o.RetryMin = 200 * time.Millisecond
		o.Hooks.ReportKept = func(u string, v int64) {
			if u == user {
				kept <- v
			}
		}
	})
	tok, err := writer.Token(ctx, user)
	require.NoError(t, err)
	_, err = reader.Token(ctx, user)
	require.NoError(t, err)
	require.NoError(t, reader.Invalidate(ctx, user, tok.AccessToken))
	select {
	case v := <-kept:
		assert.Equal(t, tok.Version, v, "Hooks.ReportKept names the version kept")
	case <-time.After(10 * time.Second):
		t.Fatal("Hooks.ReportKept was never called")
	}
	require.Eventually(t, func() bool {
		got, err := reader.Token(ctx, user)
		return err == nil && got.Version == tok.Version
	}, 5*time.Second, 20*time.Millisecond)
	assert.EqualValues(t, 1, b.checks.Load())
	assert.EqualValues(t, 1, b.logins.Load(), "kept, not refreshed")
}

// Set decides "the same token is stored already" with the one parser (Go's), so a record
// that other readers would read differently can neither be returned as the token set
// nor block the Set.
func TestSetDecidesSameTokenWithTheOneParser(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	for i, b := range []string{
		fmt.Sprintf(`{"a":"X","A":"EVIL","e":%d,"o":1}`, exp.UnixMilli()),
		fmt.Sprintf(`{"a":"X","e":%d,"o":"not-a-number"}`, exp.UnixMilli()),
	} {
		user := e.user(fmt.Sprint("U", i))
		require.NoError(t, e.client().Set(ctx, recordKey(e, user), fmt.Sprintf("v1:%d:%s", time.Now().UnixMicro(), b), time.Hour).Err())
		c := e.cache(nil)
		for range 2 {
			got, err := c.Set(ctx, user, &tokencache.Token{AccessToken: "X", Expiry: exp})
			require.NoError(t, err, b)
			assert.Equal(t, "X", got.AccessToken, b)
		}
		tok, err := e.cache(nil).Token(ctx, user)
		require.NoError(t, err)
		assert.Equal(t, "X", tok.AccessToken, b)
	}
}

// A writer that cannot claim the legacy keys (its ACL lacks the claim key) writes none:
// the claim fails closed, and the owning prefix's keys stay.
func TestLegacyClaimFailsClosed(t *testing.T) {
	srv := testutil.Redis(t)
	ctx := context.Background()
	user := srv.Name("U")
	p1, p2 := srv.Prefix+"-one", srv.Prefix+"-two"
	owner := newCache(t, srv.Client(t), p1, nil, func(o *tokencache.Options) { o.LegacyKeys = true })
	_, err := owner.Set(ctx, user, &tokencache.Token{AccessToken: "owner-fleet", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	roles := readmeRoles(t, p2)
	var logs testutil.Buffer
	other := newCache(t, srv.ACLClient(t, append(without(roles["writer"], "~"+tokencache.LegacyOwnerKey), "~"+user)...), p2, nil,
		func(o *tokencache.Options) { o.LegacyKeys = true; o.Logger = debugLogger(&logs) })
	err = other.ClaimLegacyKeys(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "NOPERM")
	assert.Contains(t, err.Error(), tokencache.LegacyOwnerKey)
	_, err = other.Set(ctx, user, &tokencache.Token{AccessToken: "other-fleet", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	rdb := srv.Client(t)
	assert.Equal(t, "owner-fleet", rdb.Get(ctx, "token:"+user).Val(), "only the owner writes the legacy keys")
	assert.Contains(t, logs.String(), "not writing the legacy keys")
}

// Forged announcements never reach the broker: while a user's refreshes fail and back
// off, they cost reads only, never a login.
func TestForgedAnnouncementsNeverReachTheBroker(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	user := e.user("U")
	b := &broker{}
	b.failLogins(func(context.Context, int64) error { return errors.New("broker down") })
	writer := e.cache(b, func(o *tokencache.Options) { o.RetryMin, o.RetryMax = time.Minute, time.Hour })
	_, err := writer.Token(ctx, user)
	require.Error(t, err)
	before := b.logins.Load()
	forger := e.client()
	base := time.Now().UnixMicro()
	for i := range 50 {
		require.NoError(t, forger.Publish(ctx, e.srv.Prefix+":invalidate", fmt.Sprintf("%d:%s", base+int64(i), user)).Err())
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	assert.Equal(t, before, b.logins.Load(), "50 forged announcements: no login")
}

// An expiry too far away to store is corrupt when read back too: never served, never
// restored with a wrapped TTL.
func TestAFarExpiryReadBackIsCorrupt(t *testing.T) {
	srv := testutil.StartRedis(t)
	e := &env{t: t, srv: srv}
	ctx := context.Background()
	user := e.user("U")
	raw := fmt.Sprintf(`v1:%d:{"a":"far-token","e":%d,"o":%d}`, time.Now().UnixMicro(), int64(1)<<49, time.Now().UnixMilli())
	require.NoError(t, e.client().Set(ctx, recordKey(e, user), raw, time.Hour).Err())
	writer := e.cache(&broker{})
	tok, err := writer.Token(ctx, user)
	require.NoError(t, err)
	assert.NotEqual(t, "far-token", tok.AccessToken)
	srv.Stop(t)
	srv.Start(t)
	require.Eventually(t, func() bool {
		_, _ = writer.Token(ctx, user)
		ttl := e.client().PTTL(ctx, recordKey(e, user)).Val()
		return ttl > 30*time.Minute
	}, 10*time.Second, 20*time.Millisecond, "restored with the token's own TTL")
}
