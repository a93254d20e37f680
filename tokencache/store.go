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
	channel string
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
	t, err = decodeRecord(raw)
	if err != nil {
		return nil, leadingVersion(raw), err
	}
	return t, t.Version, nil
}

// write stores t for user if the stored record's version is still base (-1: whatever
// is stored), and publishes the invalidation. It returns the version written, or
// ok=false and the stored version when another write won.
func (s *store) write(ctx context.Context, user string, base int64, t *Token, by string) (ok bool, version int64, err error) {
	ttl := time.Until(t.Expiry) + graceTTL
	res, err := setScript.Run(ctx, s.rdb, []string{s.recordKey(user)},
		base, encodeRecord(t, by), ttl.Milliseconds(), s.channel, user).Int64Slice()
	if err != nil {
		return false, 0, redisErr("write token of "+user, err)
	}
	if len(res) != 2 {
		return false, 0, fmt.Errorf("tokencache: write token of %s: unexpected script reply %v", user, res)
	}
	return res[0] == 1, res[1], nil
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
