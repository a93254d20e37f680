package tokencache

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed scripts/set.lua
	setLua    string
	setScript = redis.NewScript(setLua)
)

// graceTTL is how long a record outlives its token's expiry in Redis, so a reader can
// still tell "expired" from "never written".
const graceTTL = 30 * time.Second

// store reads and writes the versioned token records. One record per login user,
// under {prefix}:{user}:token; the braces make a Redis Cluster hash tag, so every key of
// one user lives in one slot.
type store struct {
	rdb     redis.UniversalClient
	prefix  string
	channel string // invalidation channel: "<version>:<user>" after every write
	records string // records channel: "<version>:<user>\n<record>" just before it
}

func (s *store) recordKey(user string) string { return s.prefix + ":{" + user + "}:token" }
func (s *store) leaseKey(user string) string  { return s.prefix + ":{" + user + "}:lease" }

// record is the JSON form of a stored token. The version comes first so the Lua script
// can read it without a JSON parser; obtainedBy says how the token was obtained.
type record struct {
	Version    int64  `json:"v"`
	Access     string `json:"a"`
	MD         string `json:"m,omitempty"`
	Expiry     int64  `json:"e"` // Unix milliseconds
	ObtainedAt int64  `json:"o"` // Unix milliseconds
	ObtainedBy string `json:"by,omitempty"`
}

// errCorrupt marks a record that cannot be decoded; the cache treats it as a miss.
var errCorrupt = errors.New("tokencache: corrupt token record")

// decodeRecord parses a stored record. It never panics on bad input.
func decodeRecord(raw []byte) (*Token, error) {
	var r record
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	if r.Version <= 0 || r.Access == "" || r.Expiry <= 0 {
		return nil, fmt.Errorf("%w: missing version, token or expiry", errCorrupt)
	}
	return &Token{
		AccessToken:   r.Access,
		MDAccessToken: r.MD,
		Expiry:        time.UnixMilli(r.Expiry),
		ObtainedAt:    time.UnixMilli(r.ObtainedAt),
		Version:       r.Version,
	}, nil
}

// encodeRecord returns the record without its version; set.lua adds it.
func encodeRecord(t *Token, by string) string {
	b, _ := json.Marshal(record{ // cannot fail: strings and integers only
		Access:     t.AccessToken,
		MD:         t.MDAccessToken,
		Expiry:     t.Expiry.UnixMilli(),
		ObtainedAt: t.ObtainedAt.UnixMilli(),
		ObtainedBy: by,
	})
	// json.Marshal wrote "v":0 first; drop it so the script can put the real one there.
	const zeroVersion = `{"v":0,`
	return "{" + string(b[len(zeroVersion):])
}

// leadingVersion reads the version the way set.lua does, from the start of raw.
func leadingVersion(raw []byte) int64 {
	const p = `{"v":`
	if len(raw) < len(p) || string(raw[:len(p)]) != p {
		return 0
	}
	var v int64
	for _, c := range raw[len(p):] {
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int64(c-'0')
	}
	return v
}

// get returns the user's stored token, or nil when there is none. base is the version
// a compare-and-set replacing it must name (0 when nothing is stored). A corrupt record
// is reported with errCorrupt alongside its base, so the caller can treat it as a miss
// and replace it.
func (s *store) get(ctx context.Context, user string) (t *Token, base int64, err error) {
	raw, err := s.rdb.Get(ctx, s.recordKey(user)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, redisErr("read token of "+user, err)
	}
	return parseStored(raw)
}

// parseStored is get's answer for the raw record (nil: none stored).
func parseStored(raw []byte) (t *Token, base int64, err error) {
	if raw == nil {
		return nil, 0, nil
	}
	t, err = decodeRecord(raw)
	if err != nil {
		return nil, leadingVersion(raw), err
	}
	return t, t.Version, nil
}

// acquire tries once to take the user's refresh lease and reads the record in the same
// round trip. It returns the held lease (nil when another process holds it, with how
// long that lease still runs) and the record as get does.
func (s *store) acquire(ctx context.Context, user string, ttl time.Duration) (l *lease, wait time.Duration, t *Token, base int64, err error) {
	owner := newOwner()
	res, err := acquireScript.Run(ctx, s.rdb, []string{s.leaseKey(user), s.recordKey(user)},
		owner, ttl.Milliseconds()).Slice()
	if err != nil {
		return nil, 0, nil, 0, redisErr("acquire refresh lease of "+user, err)
	}
	left, ok := int64(0), len(res) >= 1
	if ok {
		left, ok = res[0].(int64)
	}
	var raw []byte
	if ok && len(res) == 2 && res[1] != nil {
		var str string
		str, ok = res[1].(string)
		raw = []byte(str)
	}
	if !ok || len(res) > 2 {
		return nil, 0, nil, 0, fmt.Errorf("tokencache: acquire refresh lease of %s: unexpected script reply of %d values", user, len(res))
	}
	t, base, err = parseStored(raw)
	if left > 0 {
		return nil, time.Duration(left) * time.Millisecond, t, base, err
	}
	return newLease(s.rdb, s.leaseKey(user), owner, ttl), 0, t, base, err
}

// write stores t for user if the stored record's version is still base (-1: whatever
// is stored), and publishes the record and the invalidation. It returns the version written, or
// ok=false and the stored version when another write won.
func (s *store) write(ctx context.Context, user string, base int64, t *Token, by string) (ok bool, version int64, err error) {
	ok, version, _, err = s.run(ctx, user, base, t, by, false)
	return ok, version, err
}

// set stores t for user over whatever is stored, in one round trip, unless the stored
// record already holds the same token: then it writes and publishes nothing and returns
// that record as same.
func (s *store) set(ctx context.Context, user string, t *Token, by string) (version int64, same *Token, err error) {
	_, version, same, err = s.run(ctx, user, -1, t, by, true)
	return version, same, err
}

func (s *store) run(ctx context.Context, user string, base int64, t *Token, by string, dedupe bool) (ok bool, version int64, same *Token, err error) {
	ttl := time.Until(t.Expiry) + graceTTL
	args := []any{base, encodeRecord(t, by), ttl.Milliseconds(), s.channel, user, s.records}
	if dedupe {
		args = append(args, t.AccessToken, t.MDAccessToken, t.Expiry.UnixMilli())
	}
	res, err := setScript.Run(ctx, s.rdb, []string{s.recordKey(user)}, args...).Slice()
	if err != nil {
		return false, 0, nil, redisErr("write token of "+user, err)
	}
	var code int64
	if len(res) >= 2 {
		code, _ = res[0].(int64)
		version, _ = res[1].(int64)
	}
	switch {
	case (code == 0 || code == 1) && len(res) == 2:
		return code == 1, version, nil, nil
	case code == 2 && len(res) == 3:
		raw, _ := res[2].(string)
		if same, err = decodeRecord([]byte(raw)); err == nil {
			return false, version, same, nil
		}
	}
	return false, 0, nil, fmt.Errorf("tokencache: write token of %s: unexpected script reply of %d values", user, len(res))
}

// redisErr wraps a go-redis error. Errors the server replied with (wrong password,
// wrong type) keep their own meaning; everything else means Redis could not be reached.
func redisErr(op string, err error) error {
	var reply redis.Error
	if errors.As(err, &reply) && !unavailableReply(reply.Error()) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("tokencache: %s: redis: %w", op, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrRedisUnavailable, op, err)
}

// unavailableReply reports whether a Redis error reply means the server cannot serve
// now (loading, failing over, cluster down) rather than that the request was wrong.
func unavailableReply(msg string) bool {
	for _, p := range []string{"LOADING", "CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN", "READONLY", "BUSY"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
