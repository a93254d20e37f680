package tokencache

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
)

func testStore(t *testing.T) (*store, *testutil.Server) {
	srv := testutil.Redis(t)
	return &store{rdb: srv.Client(t), prefix: srv.Prefix, channel: srv.Prefix + ":invalidate"}, srv
}

func TestOlderVersionNeverReplacesNewer(t *testing.T) {
	s, srv := testStore(t)
	ctx := context.Background()
	user := srv.Name("U")
	tok := func(a string) *Token {
		return &Token{AccessToken: a, Expiry: time.Now().Add(time.Hour), ObtainedAt: time.Now()}
	}

	ok, v1, err := s.write(ctx, user, 0, tok("one"), "login")
	require.NoError(t, err)
	require.True(t, ok)
	ok, v2, err := s.write(ctx, user, v1, tok("two"), "renew")
	require.NoError(t, err)
	require.True(t, ok)
	require.Greater(t, v2, v1)

	// A paused leader wakes up and writes what it obtained against version v1.
	ok, cur, err := s.write(ctx, user, v1, tok("late"), "login")
	require.NoError(t, err)
	assert.False(t, ok)
	assert.Equal(t, v2, cur)
	// Or against "nothing stored".
	ok, _, err = s.write(ctx, user, 0, tok("late"), "login")
	require.NoError(t, err)
	assert.False(t, ok)

	got, base, err := s.get(ctx, user)
	require.NoError(t, err)
	assert.Equal(t, "two", got.AccessToken)
	assert.Equal(t, v2, base)

	// Versions keep increasing even when the record is gone (expired or lost).
	require.NoError(t, s.rdb.Del(ctx, s.recordKey(user)).Err())
	ok, v3, err := s.write(ctx, user, 0, tok("three"), "login")
	require.NoError(t, err)
	require.True(t, ok)
	assert.Greater(t, v3, v2)
}

func TestKeysShareTheUsersHashTag(t *testing.T) {
	s := &store{prefix: "brokertoken"}
	assert.Equal(t, "brokertoken:{APEX_272045}:token", s.recordKey("APEX_272045"))
	assert.Equal(t, "brokertoken:{APEX_272045}:lease", s.leaseKey("APEX_272045"))
}

func TestCorruptRecordIsAMissAndIsReplaced(t *testing.T) {
	s, srv := testStore(t)
	ctx := context.Background()
	for name, raw := range map[string]string{
		"not json":         "garbage",
		"version, no json": `{"v":12,"a":`,
		"no token":         `{"v":3,"e":99999999999999}`,
	} {
		t.Run(name, func(t *testing.T) {
			user := srv.Name(name)
			require.NoError(t, s.rdb.Set(ctx, s.recordKey(user), raw, time.Hour).Err())
			_, base, err := s.get(ctx, user)
			require.ErrorIs(t, err, errCorrupt)
			ok, _, err := s.write(ctx, user, base, &Token{AccessToken: "good", Expiry: time.Now().Add(time.Hour)}, "login")
			require.NoError(t, err)
			require.True(t, ok, "the corrupt record is replaced")
			got, _, err := s.get(ctx, user)
			require.NoError(t, err)
			assert.Equal(t, "good", got.AccessToken)
		})
	}
}

func TestAcquireReadsTheRecordWithTheLease(t *testing.T) {
	s, srv := testStore(t)
	ctx := context.Background()
	user := srv.Name("U")

	l, wait, got, base, err := s.acquire(ctx, user, time.Minute)
	require.NoError(t, err)
	require.NotNil(t, l, "a free lease is taken")
	assert.Zero(t, wait)
	assert.Nil(t, got)
	assert.Zero(t, base)

	ok, v, err := s.write(ctx, user, 0, &Token{AccessToken: "one", Expiry: time.Now().Add(time.Hour)}, "login")
	require.NoError(t, err)
	require.True(t, ok)
	other, wait, got, base, err := s.acquire(ctx, user, time.Minute)
	require.NoError(t, err)
	assert.Nil(t, other, "a held lease is not taken")
	assert.Greater(t, wait, 50*time.Second, "the holder's time left")
	require.NotNil(t, got)
	assert.Equal(t, "one", got.AccessToken)
	assert.Equal(t, v, base)
	l.release()

	require.NoError(t, s.rdb.Set(ctx, s.recordKey(user), `{"v":77,"a":`, time.Hour).Err())
	l, _, got, base, err = s.acquire(ctx, user, time.Minute)
	require.ErrorIs(t, err, errCorrupt)
	require.NotNil(t, l, "the lease is taken even when the record is corrupt")
	assert.Nil(t, got)
	assert.EqualValues(t, 77, base, "the corrupt record's version, to replace it")
	l.release()
}

func TestRecordRoundTrip(t *testing.T) {
	in := &Token{AccessToken: `a"b\c`, MDAccessToken: "md", Expiry: time.UnixMilli(1760789707000), ObtainedAt: time.UnixMilli(1760784307000)}
	raw := []byte(`{"v":42,` + encodeRecord(in, "login")[1:])
	assert.EqualValues(t, 42, leadingVersion(raw))
	out, err := decodeRecord(raw)
	require.NoError(t, err)
	assert.Equal(t, in.AccessToken, out.AccessToken)
	assert.Equal(t, in.MDAccessToken, out.MDAccessToken)
	assert.True(t, in.Expiry.Equal(out.Expiry))
	assert.True(t, in.ObtainedAt.Equal(out.ObtainedAt))
	assert.EqualValues(t, 42, out.Version)
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"v":1,"a":"x","e":1760789707000,"o":1}`))
	f.Add([]byte(`{"v":99999999999999999999,"a":"x","e":1}`))
	f.Add([]byte(`garbage`))
	f.Add([]byte(`{"v":`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		tok, err := decodeRecord(raw)
		if err != nil {
			if tok != nil {
				t.Fatal("token with error")
			}
			return
		}
		if tok.Version <= 0 || tok.AccessToken == "" {
			t.Fatalf("accepted an invalid record: %v", tok)
		}
		// What the Lua script reads must agree with the decoder for records we accept
		// that start the way we write them.
		if bytes.HasPrefix(raw, []byte(`{"v":`)) && leadingVersion(raw) != tok.Version {
			t.Logf("version %d decoded, %d read by prefix", tok.Version, leadingVersion(raw))
		}
	})
}

// The records channel's message is what set.lua publishes: "<version>:<user>\n" and the
// stored record. Whatever it receives, the parser never panics, never accepts a record
// whose version disagrees with the message, and never puts the payload in its error.
func FuzzRecordMessage(f *testing.F) {
	f.Add(`1760789707000001:APEX_1` + "\n" + `{"v":1760789707000001,"a":"tok","e":1760789707000,"o":1}`)
	f.Add(`5:u` + "\n" + `{"v":6,"a":"tok","e":1}`)
	f.Add("5:u")
	f.Add(":\n{}")
	f.Add("x:y\nz")
	f.Fuzz(func(t *testing.T, payload string) {
		user, tok, err := parseRecordMessage(payload)
		if err != nil {
			if tok != nil || user != "" {
				t.Fatal("a result with an error")
			}
			if len(payload) > 8 && strings.Contains(err.Error(), payload) {
				t.Fatalf("error quotes the payload: %v", err)
			}
			return
		}
		head, _, _ := strings.Cut(payload, "\n")
		if user == "" || tok.AccessToken == "" || head != fmt.Sprintf("%d:%s", tok.Version, user) {
			t.Fatalf("accepted %q as user %q version %d", head, user, tok.Version)
		}
	})
}

// The invalidation channel's message is "<version>:<user>", or "!<version>:<user>" for a
// rejected token. Whatever arrives, an accepted message is exactly what set.lua or
// Invalidate would have written for the result.
func FuzzAnnouncement(f *testing.F) {
	f.Add("1760789707000001:APEX_1")
	f.Add("!42:APEX_1")
	f.Add("07:u")
	f.Add(":")
	f.Fuzz(func(t *testing.T, payload string) {
		user, v, bad, ok := parseAnnouncement(payload)
		if !ok {
			if user != "" || v != 0 || bad {
				t.Fatal("a result for a rejected message")
			}
			return
		}
		want := fmt.Sprintf("%d:%s", v, user)
		if bad {
			want = badPrefix + want
		}
		if user == "" || v <= 0 || payload != want {
			t.Fatalf("accepted %q as user %q version %d bad %v", payload, user, v, bad)
		}
	})
}

func TestParseAnnouncement(t *testing.T) {
	for _, tc := range []struct {
		in   string
		user string
		v    int64
		bad  bool
	}{
		{"1760789707000001:APEX_1", "APEX_1", 1760789707000001, false},
		{"!42:APEX_1", "APEX_1", 42, true},
		{"5:a:b", "a:b", 5, false},
	} {
		user, v, bad, ok := parseAnnouncement(tc.in)
		require.True(t, ok, tc.in)
		assert.Equal(t, tc.user, user, tc.in)
		assert.Equal(t, tc.v, v, tc.in)
		assert.Equal(t, tc.bad, bad, tc.in)
	}
	for _, in := range []string{"", ":", "5:", "!5:", "!:u", "05:u", "!05:u", "x:u", "5u"} {
		_, _, _, ok := parseAnnouncement(in)
		assert.False(t, ok, "%q", in)
	}
}

func TestParseVersion(t *testing.T) {
	for s, want := range map[string]int64{"1": 1, "42": 42, "1760789707000001": 1760789707000001, "9223372036854775807": 1<<63 - 1} {
		v, ok := parseVersion(s)
		assert.True(t, ok, s)
		assert.Equal(t, want, v, s)
	}
	for _, s := range []string{"", "0", "07", "+7", "-7", " 7", "7 ", "7a", "1_000", "9223372036854775808"} {
		_, ok := parseVersion(s)
		assert.False(t, ok, "%q is not a version set.lua writes", s)
	}
}

func TestRecordMessageRoundTrip(t *testing.T) {
	in := &Token{AccessToken: "a\nb", MDAccessToken: "md", Expiry: time.UnixMilli(1760789707000), ObtainedAt: time.UnixMilli(1760784307000)}
	rec := `{"v":42,` + encodeRecord(in, "login")[1:]
	user, out, err := parseRecordMessage("42:APEX_272045\n" + rec)
	require.NoError(t, err)
	assert.Equal(t, "APEX_272045", user)
	assert.Equal(t, in.AccessToken, out.AccessToken, "a newline inside the token is JSON-escaped")
	assert.EqualValues(t, 42, out.Version)
	_, _, err = parseRecordMessage("43:APEX_272045\n" + rec)
	require.ErrorContains(t, err, "version 42, message 43")
}

func TestRefreshPointAndLeeway(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer rdb.Close()
	opts, err := Options{Redis: rdb}.init()
	require.NoError(t, err)
	c := &Cache{opts: opts}
	now := time.Now()
	long := &Token{Version: 1, ObtainedAt: now, Expiry: now.Add(90 * time.Minute)}
	rp := c.refreshPoint(long)
	assert.True(t, !rp.After(long.Expiry.Add(-15*time.Minute)) && rp.After(long.Expiry.Add(-15*time.Minute-90*time.Second-time.Millisecond)),
		"stale 15 min before expiry, minus up to 1.5 min of jitter: %s", long.Expiry.Sub(rp))
	assert.Equal(t, long.Expiry.Add(-30*time.Second), c.unusableAt(long))

	short := &Token{Version: 1, ObtainedAt: now, Expiry: now.Add(2 * time.Second)}
	assert.Equal(t, short.Expiry.Add(-200*time.Millisecond), c.unusableAt(short), "leeway capped at a tenth of the lifetime")
	assert.False(t, c.refreshPoint(short).Before(now.Add(900*time.Millisecond)), "window capped at half the lifetime")

	// The jitter differs between processes, not between calls.
	c2 := &Cache{opts: c.opts, seed: 12345}
	c.seed = 1
	assert.Equal(t, c.refreshPoint(long), c.refreshPoint(long))
	assert.NotEqual(t, c.refreshPoint(long), c2.refreshPoint(long))
}
