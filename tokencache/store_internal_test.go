package tokencache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
)

func testStore(t *testing.T) (*store, *testutil.Server) {
	srv := testutil.Redis(t)
	s := newStore(srv.Client(t), srv.Prefix)
	return &s, srv
}

func tokenFor(a string) *Token {
	return &Token{AccessToken: a, Expiry: time.Now().Add(time.Hour), ObtainedAt: time.Now()}
}

func TestOlderVersionNeverReplacesNewer(t *testing.T) {
	s, srv := testStore(t)
	ctx := context.Background()
	user := srv.Name("U")

	o1, err := s.write(ctx, user, 0, tokenFor("one"), "login")
	require.NoError(t, err)
	require.True(t, o1.written)
	o2, err := s.write(ctx, user, o1.version, tokenFor("two"), "renew")
	require.NoError(t, err)
	require.True(t, o2.written)
	require.Greater(t, o2.version, o1.version)

	// A paused leader wakes up and writes what it obtained against version v1: it is
	// told what is stored instead, to adopt it.
	late, err := s.write(ctx, user, o1.version, tokenFor("late"), "login")
	require.NoError(t, err)
	assert.False(t, late.written)
	assert.Equal(t, o2.version, late.version)
	require.NotNil(t, late.stored)
	assert.Equal(t, "two", late.stored.AccessToken)
	// Or against "nothing stored".
	late, err = s.write(ctx, user, 0, tokenFor("late"), "login")
	require.NoError(t, err)
	assert.False(t, late.written)

	got, base, err := s.get(ctx, user, time.Now())
	require.NoError(t, err)
	assert.Equal(t, "two", got.AccessToken)
	assert.Equal(t, o2.version, base)

	// Versions keep increasing even when the record is gone (expired or lost).
	require.NoError(t, s.rdb.Del(ctx, s.recordKey(user)).Err())
	o3, err := s.write(ctx, user, 0, tokenFor("three"), "login")
	require.NoError(t, err)
	require.True(t, o3.written)
	assert.Greater(t, o3.version, o2.version)
}

func TestKeysShareTheUsersHashTag(t *testing.T) {
	s := newStore(nil, "brokertoken")
	assert.Equal(t, "brokertoken:{APEX_272045}:record", s.recordKey("APEX_272045"))
	assert.Equal(t, "brokertoken:{APEX_272045}:lease", s.leaseKey("APEX_272045"))
	assert.Equal(t, "brokertoken:invalidate", s.channel)
	assert.Equal(t, "brokertoken:reports", s.reports)
}

func TestCorruptRecordIsAMissAndIsReplaced(t *testing.T) {
	s, srv := testStore(t)
	ctx := context.Background()
	future := strconv.FormatInt(time.Now().Add(48*time.Hour).UnixMicro(), 10)
	for name, raw := range map[string]string{
		"not json":             "garbage",
		"header, no json":      `v1:12:{"a":`,
		"no token":             `v1:3:{"e":99999999999999}`,
		"old layout":           `{"v":5,"a":"x","e":99999999999999,"o":1}`,
		"old layout, spaced":   `{"v": 5, "a": "x", "e": 99999999999999}`,
		"version beyond 2^63":  `v1:92233720368547758070:{"a":"x","e":99999999999999}`,
		"version beyond 2^53":  `v1:9007199254740993:{"a":"x","e":99999999999999}`,
		"version from future":  `v1:` + future + `:{"a":"x","e":99999999999999}`,
		"leading zero":         `v1:0007:{"a":"x","e":99999999999999}`,
		"signed":               `v1:+7:{"a":"x","e":99999999999999}`,
		"not utf-8":            "v1:7:{\"a\":\"x\xff\",\"e\":99999999999999}",
		"expiry beyond limits": `v1:7:{"a":"x","e":9223372036854775807}`,
	} {
		t.Run(name, func(t *testing.T) {
			user := srv.Name(strings.ReplaceAll(name, " ", "-"))
			require.NoError(t, s.rdb.Set(ctx, s.recordKey(user), raw, time.Hour).Err())
			_, base, err := s.get(ctx, user, time.Now())
			require.ErrorIs(t, err, errCorrupt)
			assert.NotContains(t, err.Error(), `"x`, "the error never quotes the record")
			o, err := s.write(ctx, user, base, &Token{AccessToken: "good", Expiry: time.Now().Add(time.Hour)}, "login")
			require.NoError(t, err)
			require.True(t, o.written, "the corrupt record is replaced: Lua and Go read the same base")
			assert.LessOrEqual(t, o.version, time.Now().Add(time.Minute).UnixMicro(), "counted from the clock, not the corrupt version")
			got, _, err := s.get(ctx, user, time.Now())
			require.NoError(t, err)
			assert.Equal(t, "good", got.AccessToken)
		})
	}
}

func TestRecordOfAnotherFormatIsNeitherServedNorReplaced(t *testing.T) {
	s, srv := testStore(t)
	ctx := context.Background()
	user := srv.Name("U")
	raw := `v2:1:{"whatever":"a newer writer stores"}`
	require.NoError(t, s.rdb.Set(ctx, s.recordKey(user), raw, time.Hour).Err())
	_, _, err := s.get(ctx, user, time.Now())
	require.ErrorIs(t, err, ErrRecordFormat)
	for _, base := range []int64{0, 1} {
		_, err = s.write(ctx, user, base, tokenFor("mine"), "login")
		require.ErrorIs(t, err, ErrRecordFormat)
		assert.Contains(t, err.Error(), "format v2")
	}
	_, err = s.set(ctx, user, tokenFor("mine"), "set")
	require.ErrorIs(t, err, ErrRecordFormat)
	got, err := s.rdb.Get(ctx, s.recordKey(user)).Result()
	require.NoError(t, err)
	assert.Equal(t, raw, got, "left as it is")
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

	o, err := s.write(ctx, user, 0, tokenFor("one"), "login")
	require.NoError(t, err)
	require.True(t, o.written)
	other, wait, got, base, err := s.acquire(ctx, user, time.Minute)
	require.NoError(t, err)
	assert.Nil(t, other, "a held lease is not taken")
	assert.Greater(t, wait, 50*time.Second, "the holder's time left")
	require.NotNil(t, got)
	assert.Equal(t, "one", got.AccessToken)
	assert.Equal(t, o.version, base)
	l.release()

	require.NoError(t, s.rdb.Set(ctx, s.recordKey(user), `v1:77:{"a":`, time.Hour).Err())
	l, _, got, base, err = s.acquire(ctx, user, time.Minute)
	require.ErrorIs(t, err, errCorrupt)
	require.NotNil(t, l, "the lease is taken even when the record is corrupt")
	assert.Nil(t, got)
	assert.EqualValues(t, 77, base, "the corrupt record's version, to replace it")
	l.release()
}

func TestRecordRoundTrip(t *testing.T) {
	in := &Token{AccessToken: `a"b\c`, MDAccessToken: "md é", Expiry: time.UnixMilli(1760789707000), ObtainedAt: time.UnixMilli(1760784307000)}
	raw := "v1:42:" + encodeBody(in, "login")
	p := parseRecord(raw, in.ObtainedAt)
	require.NoError(t, p.err)
	out := p.tok
	assert.Equal(t, in.AccessToken, out.AccessToken)
	assert.Equal(t, in.MDAccessToken, out.MDAccessToken)
	assert.True(t, in.Expiry.Equal(out.Expiry))
	assert.True(t, in.ObtainedAt.Equal(out.ObtainedAt))
	assert.EqualValues(t, 42, out.Version)
	assert.EqualValues(t, 42, p.base)
	assert.Equal(t, "login", p.by)
}

// luaHeader is set.lua's pattern for a record header, '^v1:([1-9]%d*):' with at most 16
// digits, written as a Go regular expression.
var luaHeader = regexp.MustCompile(`^v1:([1-9][0-9]*):`)

// luaBase is the version set.lua compares a base with for raw: its header's digits when
// they are 1 to 16, else "0".
func luaBase(raw []byte) string {
	m := luaHeader.FindSubmatch(raw)
	if m == nil || len(m[1]) > 16 {
		return "0"
	}
	return string(m[1])
}

// quoted returns a 16-byte run of raw that msg contains although no message template
// does, or "": parse errors name the header at most, never the body.
func quoted(msg string, raw []byte) string {
	const templates = "tokencache: corrupt token record: no v1:<version>: header " +
		"tokencache: token record of an unknown format (written by a newer version?): header " +
		"is more than 24h0m0s past the clock body is not UTF-8 body is not a JSON record " +
		"missing token or expiry expiry or obtained time out of range"
	for i := 0; i+16 <= len(raw); i++ {
		w := string(raw[i : i+16])
		if strings.Contains(msg, w) && !strings.Contains(templates, w) {
			return w
		}
	}
	return ""
}

// FuzzParseRecord: whatever is stored, the parser never panics, reads the same base as
// set.lua's pattern, accepts only records it would write itself (they re-encode to the
// same token), and never quotes the record in its error.
func FuzzParseRecord(f *testing.F) {
	now := time.UnixMicro(1764419034123456)
	f.Add([]byte(`v1:1764419034123456:{"a":"x","e":1760789707000,"o":1,"by":"login"}`))
	f.Add([]byte(`v1:99999999999999999999:{"a":"x","e":1}`))
	f.Add([]byte(`v2:1:{}`))
	f.Add([]byte(`{"v":5,"a":"x","e":1}`))
	f.Add([]byte(`v1:07:{"a":"x","e":1}`))
	f.Add([]byte(`v1:7:{"a":"x\ud800","e":1}`))
	f.Add([]byte(`garbage`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p := parseRecord(string(raw), now)
		if want := luaBase(raw); strconv.FormatInt(p.base, 10) != want && !errors.Is(p.err, ErrRecordFormat) {
			t.Fatalf("Go reads base %d, set.lua %s", p.base, want)
		}
		if p.err != nil {
			if p.tok != nil {
				t.Fatal("a token with an error")
			}
			body := raw
			if _, b, ok := parseHeader(string(raw)); ok {
				body = []byte(b) // the header (format and version) may be named
			} else if otherFormat(string(raw)) && len(raw) > 8 {
				body = raw[8:] // as much of another format's header as the error shows
			}
			if w := quoted(p.err.Error(), body); w != "" {
				t.Fatalf("error quotes the record (%q): %v", w, p.err)
			}
			return
		}
		if p.tok.Version != p.base || p.tok.AccessToken == "" || !utf8.ValidString(p.tok.AccessToken) {
			t.Fatalf("accepted an invalid record: %v", p.tok)
		}
		again := parseRecord(fmt.Sprintf("v1:%d:%s", p.tok.Version, encodeBody(p.tok, p.by)), now)
		if again.err != nil || *again.tok != *p.tok {
			t.Fatalf("re-encoded record reads differently: %v", again.err)
		}
	})
}

// TestLuaAndGoAgreeOnEveryRecord runs set.lua against stored values of every shape: the
// base Go reads is the base the script compares, so a compare-and-set after a read
// always succeeds (no login storm over a record the two read differently), and a
// record Go calls unusable is never counted from.
func TestLuaAndGoAgreeOnEveryRecord(t *testing.T) {
	s, srv := testStore(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	valid := fmt.Sprintf(`v1:%d:%s`, now.UnixMicro(), encodeBody(tokenFor("stored"), "login"))
	shapes := []string{
		valid,
		`{"v":5,"a":"x","e":99999999999999}`,
		`{"v": 5, "a": "x", "e": 99999999999999}`,
		`{"a":"x","v":5,"e":99999999999999}`,
		`{"v":9223372036854775808,"a":"x","e":99999999999999}`,
		`v1:9223372036854775807:{"a":"x","e":99999999999999}`,
		`v1:9999999999999999:{"a":"x","e":99999999999999}`,
		`v1:9007199254740993:{"a":"x","e":99999999999999}`,
		`v1: 5:{"a":"x","e":99999999999999}`,
		`v1:5 :{"a":"x","e":99999999999999}`,
		`v1:5`, `v1:`, `v1::`, `v:5:x`, `V1:5:{}`, `v01:5:{}`, "",
	}
	for i := range 400 {
		raw := []byte(shapes[i%len(shapes)])
		for range rng.IntN(3) { // mutate some
			if len(raw) == 0 {
				break
			}
			switch j := rng.IntN(len(raw)); rng.IntN(4) {
			case 0:
				raw[j] = byte(rng.IntN(256))
			case 1:
				raw = raw[:j]
			case 2:
				raw = append(raw[:j:j], append([]byte{"0123456789:v{"[rng.IntN(13)]}, raw[j:]...)...)
			default:
				raw[j] = "0123456789"[rng.IntN(10)]
			}
		}
		user := srv.Name(fmt.Sprint("U", i))
		require.NoError(t, s.rdb.Set(ctx, s.recordKey(user), raw, time.Hour).Err())
		_, base, err := s.get(ctx, user, time.Now())
		if errors.Is(err, ErrRecordFormat) {
			_, werr := s.write(ctx, user, base, tokenFor("new"), "login")
			require.ErrorIs(t, werr, ErrRecordFormat, "%q: Go and Lua both see another format", raw)
			continue
		}
		o, err := s.write(ctx, user, base, tokenFor("new"), "login")
		require.NoError(t, err, "%q", raw)
		require.True(t, o.written, "%q: Go read base %d, the script compared %d", raw, base, o.version)
		require.LessOrEqual(t, o.version, time.Now().Add(24*time.Hour+time.Minute).UnixMicro(), "%q: never counted from an out-of-range version", raw)
	}
}

func TestParseAnnouncement(t *testing.T) {
	for _, tc := range []struct {
		in   string
		user string
		v    int64
	}{
		{"1760789707000001:APEX_1", "APEX_1", 1760789707000001},
		{"42:APEX_1", "APEX_1", 42},
		{"5:a:b", "a:b", 5},
	} {
		user, v, ok := parseAnnouncement(tc.in)
		require.True(t, ok, tc.in)
		assert.Equal(t, tc.user, user, tc.in)
		assert.Equal(t, tc.v, v, tc.in)
	}
	for _, in := range []string{"", ":", "5:", "!5:u", "!:u", "05:u", "x:u", "5u", "9223372036854775807:u"} {
		_, _, ok := parseAnnouncement(in)
		assert.False(t, ok, "%q", in)
	}
}

// FuzzAnnouncement: an accepted message is exactly what set.lua (or a reporting cache)
// would have sent for the result.
func FuzzAnnouncement(f *testing.F) {
	f.Add("1760789707000001:APEX_1")
	f.Add("!42:APEX_1")
	f.Add("07:u")
	f.Add(":")
	f.Fuzz(func(t *testing.T, payload string) {
		user, v, ok := parseAnnouncement(payload)
		if !ok {
			if user != "" || v != 0 {
				t.Fatal("a result for a rejected message")
			}
			return
		}
		if user == "" || v <= 0 || payload != fmt.Sprintf("%d:%s", v, user) {
			t.Fatalf("accepted %q as user %q version %d", payload, user, v)
		}
	})
}

func TestParseVersion(t *testing.T) {
	for s, want := range map[string]int64{"1": 1, "42": 42, "1760789707000001": 1760789707000001, "9999999999999999": 9999999999999999} {
		v, ok := parseVersion(s)
		assert.True(t, ok, s)
		assert.Equal(t, want, v, s)
	}
	for _, s := range []string{"", "0", "07", "+7", "-7", " 7", "7 ", "7a", "1_000", "10000000000000000", "9223372036854775807"} {
		_, ok := parseVersion(s)
		assert.False(t, ok, "%q is not a version set.lua writes", s)
	}
}

func TestCheckStorable(t *testing.T) {
	now := time.Now()
	ok := &Token{AccessToken: "eyJ.abc-_~+/=", MDAccessToken: "md", Expiry: now.Add(time.Hour)}
	require.NoError(t, checkStorable(ok, now))
	for name, tc := range map[string]struct {
		tok  Token
		want string
	}{
		"not utf-8":       {Token{AccessToken: "a\xffb", Expiry: now.Add(time.Hour)}, "not printable UTF-8"},
		"newline":         {Token{AccessToken: "a\nb", Expiry: now.Add(time.Hour)}, "not printable UTF-8"},
		"md not utf-8":    {Token{AccessToken: "a", MDAccessToken: "\xc0", Expiry: now.Add(time.Hour)}, "market-data token"},
		"huge":            {Token{AccessToken: strings.Repeat("a", maxTokenBytes+1), Expiry: now.Add(time.Hour)}, "more than 16384"},
		"expired":         {Token{AccessToken: "a", Expiry: now.Add(-time.Second)}, "expired at"},
		"millisecond exp": {Token{AccessToken: "a", Expiry: time.Unix(1760789707000, 0)}, "JWT exp in milliseconds"},
	} {
		err := checkStorable(&tc.tok, now)
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), tc.want, name)
	}
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

// FuzzDecodeBody: the miss path's parser accepts only bodies encoding/json reads the
// same way, and reads them the same way; encodeBody's output is always accepted.
func FuzzDecodeBody(f *testing.F) {
	f.Add(encodeBody(&Token{AccessToken: "eyJ.a", MDAccessToken: "md", Expiry: time.UnixMilli(1760789707000), ObtainedAt: time.UnixMilli(1)}, "login"))
	f.Add(encodeBody(&Token{AccessToken: `a"b<&>é`, Expiry: time.UnixMilli(1)}, ""))
	f.Add(`{"a":"x","e":1,"o":-62135596800000,"by":"set"}`)
	f.Add(`{"a":"x","A":"EVIL","e":1,"o":1}`)
	f.Add(`{"a":"x","e":01,"o":1}`)
	f.Add(`{"a":"x\u0041","e":1,"o":1}`)
	f.Add(encodeBody(&Token{AccessToken: "x", Expiry: time.UnixMilli(1760789707000), RenewAt: time.UnixMilli(1760789700000)}, "login"))
	f.Add(`{"a":"x","e":1,"o":1,"r":0}`)
	f.Add(`{"a":"x","e":1,"o":1,"r":-5,"by":"login"}`)
	f.Fuzz(func(t *testing.T, body string) {
		r, ok := decodeBody(body)
		if !ok {
			return
		}
		var want record
		if err := json.Unmarshal([]byte(body), &want); err != nil {
			t.Fatalf("decodeBody accepted %q, encoding/json refuses it: %v", body, err)
		}
		if r != want {
			t.Fatalf("decodeBody read %q as %+v, encoding/json as %+v", body, r, want)
		}
	})
}

func TestDecodeBodyReadsWhatEncodeBodyWrites(t *testing.T) {
	for _, tok := range []*Token{
		{AccessToken: "eyJ.a-_~+/=", MDAccessToken: "md", Expiry: time.UnixMilli(1760789707000), ObtainedAt: time.UnixMilli(1760784307000)},
		{AccessToken: "x", Expiry: time.UnixMilli(1)},
		{AccessToken: "ünïcödé", Expiry: time.UnixMilli(1), ObtainedAt: time.UnixMilli(-1)},
		{AccessToken: "tv", Expiry: time.UnixMilli(1760789707000), ObtainedAt: time.UnixMilli(1760784307000), RenewAt: time.UnixMilli(1760784337000)},
	} {
		for _, by := range []string{"", "login", "renew", "set", "reseed", "other"} {
			body := encodeBody(tok, by)
			r, ok := decodeBody(body)
			require.True(t, ok, body)
			assert.Equal(t, tok.AccessToken, r.Access)
			assert.Equal(t, tok.MDAccessToken, r.MD)
			assert.Equal(t, tok.Expiry.UnixMilli(), r.Expiry)
			assert.Equal(t, tok.ObtainedAt.UnixMilli(), r.ObtainedAt)
			assert.Equal(t, renewAtMilli(tok.RenewAt), r.RenewAt)
			assert.Equal(t, by, r.ObtainedBy)
		}
	}
	_, ok := decodeBody(encodeBody(&Token{AccessToken: `a"b`, Expiry: time.UnixMilli(1)}, ""))
	assert.False(t, ok, "a body that needs unescaping is left to encoding/json")
}

func TestHasControl(t *testing.T) {
	for _, s := range []string{"", "a", "abcdefgh", "abcdefghijklmnopq", "é\u00a0\u2028~\x7f", strings.Repeat("x", 215)} {
		assert.False(t, hasControl(s), "%q", s)
	}
	for _, s := range []string{"\x00", "\x1f", "abcdefg\n", "abcdefgh\tijkl", strings.Repeat("x", 214) + "\r", "\x01" + strings.Repeat("y", 20)} {
		assert.True(t, hasControl(s), "%q", s)
	}
}
