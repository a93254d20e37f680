package tokencache

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The scripts that write the record and hold the lease (docs/architecture.md lists
// them).
var (
	//go:embed scripts/set.lua
	setLua    string
	setScript = redis.NewScript(setLua)
	//go:embed scripts/acquire.lua
	acquireLua    string
	acquireScript = redis.NewScript(acquireLua)
	//go:embed scripts/extend.lua
	extendLua    string
	extendScript = redis.NewScript(extendLua)
	//go:embed scripts/release.lua
	releaseLua    string
	releaseScript = redis.NewScript(releaseLua)
)

// graceTTL is how long a record outlives its token's expiry in Redis, so a reader can
// still tell "expired" from "never written".
const graceTTL = 30 * time.Second

// store reads and writes the versioned token records (see record.go for their format).
// One record per login user, under {prefix}:{user}:record; the braces make a Redis
// Cluster hash tag, so every key of one user lives in one slot.
type store struct {
	rdb     redis.UniversalClient
	prefix  string
	channel string // announcements: "<version>:<user>" after every write (writers publish)
	reports string // reports: "<version>:<user>" from readers whose broker rejected it
}

func newStore(rdb redis.UniversalClient, prefix string) store {
	return store{rdb: rdb, prefix: prefix, channel: prefix + ":invalidate", reports: prefix + ":reports"}
}

func (s *store) recordKey(user string) string { return s.prefix + ":{" + user + "}:record" }
func (s *store) leaseKey(user string) string  { return s.prefix + ":{" + user + "}:lease" }

// get returns the user's stored token, or nil when there is none. base is the version a
// compare-and-set replacing it must name (0 when nothing is stored). A record that
// cannot be used is reported with errCorrupt or ErrRecordFormat alongside its base, so
// the caller can treat it as a miss and replace it (or leave it, for another format).
// The version's range is judged at now (the time of the read, give or take its round
// trip).
func (s *store) get(ctx context.Context, user string, now time.Time) (t *Token, base int64, err error) {
	raw, err := s.rdb.Get(ctx, s.recordKey(user)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, redisErr("read token of "+user, err)
	}
	return s.parse(user, &raw, now)
}

// parse is get's answer for a stored value (nil: none stored), judged at now.
func (s *store) parse(user string, raw *string, now time.Time) (t *Token, base int64, err error) {
	if raw == nil {
		return nil, 0, nil
	}
	p := parseRecord(*raw, now)
	if p.err != nil {
		return nil, p.base, fmt.Errorf("%s: %w", s.recordKey(user), p.err)
	}
	return p.tok, p.base, nil
}

// acquire tries once to take the user's refresh lease and reads the record in the same
// round trip. It returns the held lease (nil when another process holds it, with how
// long that lease still runs) and the record as get does.
func (s *store) acquire(ctx context.Context, user string, ttl time.Duration) (l *lease, wait time.Duration, t *Token, base int64, err error) {
	owner := newOwner()
	res, err := acquireScript.Run(ctx, s.rdb, []string{s.leaseKey(user), s.recordKey(user)},
		owner, ttl.Milliseconds(), s.channel).Slice()
	if isNoPerm(err) {
		return nil, 0, nil, 0, fmt.Errorf("tokencache: acquire refresh lease of %s: %w (a writer needs read and write access to %s and %s, and PUBLISH on %s)",
			user, err, s.leaseKey(user), s.recordKey(user), s.channel)
	}
	if err != nil {
		return nil, 0, nil, 0, redisErr("acquire refresh lease of "+user, err)
	}
	left, ok := int64(0), len(res) >= 1
	if ok {
		left, ok = res[0].(int64)
	}
	var raw *string
	if ok && len(res) == 2 && res[1] != nil {
		var str string
		str, ok = res[1].(string)
		raw = &str
	}
	if !ok || len(res) > 2 {
		return nil, 0, nil, 0, fmt.Errorf("tokencache: acquire refresh lease of %s: unexpected script reply of %d values", user, len(res))
	}
	t, base, err = s.parse(user, raw, time.Now())
	if left > 0 {
		return nil, time.Duration(left) * time.Millisecond, t, base, err
	}
	return newLease(s.rdb, s.leaseKey(user), owner, ttl), 0, t, base, err
}

// outcome is what a write found and did.
type outcome struct {
	written bool  // t was stored as version
	version int64 // the version written, or the one stored when not written
	// When not written: the stored record, as get would return it (stored and its
	// parse error; both nil when nothing is stored). A Set of the token already stored
	// returns it here too, with same set.
	stored    *Token
	storedErr error
	same      bool
}

// write stores t for user if the stored record's version is still base (0: nothing or
// nothing readable is stored), and announces it. When another write won it returns what
// is stored instead, so the caller can adopt it without reading it back.
func (s *store) write(ctx context.Context, user string, base int64, t *Token, by string) (outcome, error) {
	return s.run(ctx, user, strconv.FormatInt(base, 10), t, by, "")
}

// set stores t for user over whatever is stored, in one round trip, unless the stored
// record already holds the same token: then it writes and announces nothing and returns
// that record with same set. The script only spots a stored body that starts with the
// same bytes; Go's parser decides whether it holds the same token, and when it does not
// (a body crafted to look the same), the token is written over it.
func (s *store) set(ctx context.Context, user string, t *Token, by string) (outcome, error) {
	o, err := s.run(ctx, user, "-1", t, by, sameStart(t))
	if err != nil || !o.same {
		return o, err
	}
	if st := o.stored; st != nil && st.AccessToken == t.AccessToken && st.MDAccessToken == t.MDAccessToken &&
		st.Expiry.UnixMilli() == t.Expiry.UnixMilli() && renewAtMilli(st.RenewAt) == renewAtMilli(t.RenewAt) {
		return o, nil
	}
	if errors.Is(o.storedErr, ErrRecordFormat) {
		return outcome{}, o.storedErr
	}
	return s.run(ctx, user, "-1", t, by, "")
}

// sameStart is the start of t's record body up to its obtained time: what two writes of
// the same token share.
func sameStart(t *Token) string {
	b := encodeBody(t, "")
	i := strings.Index(b, `,"o":`)
	if i < 0 {
		return "" // cannot happen: encodeBody always writes "o"
	}
	return b[:i+1]
}

func (s *store) run(ctx context.Context, user, base string, t *Token, by, same string) (outcome, error) {
	// checkStorable bounds the expiry; the cap keeps a record read back from Redis (whose
	// expiry parseRecord bounds too) from ever wrapping the arithmetic.
	ttl := min(time.Until(t.Expiry), maxLifetime) + graceTTL
	args := []any{base, encodeBody(t, by), max(ttl.Milliseconds(), 1), s.channel, user}
	if same != "" {
		args = append(args, same)
	}
	res, err := setScript.Run(ctx, s.rdb, []string{s.recordKey(user)}, args...).Slice()
	if err != nil {
		var reply redis.Error
		if errors.As(err, &reply) && strings.HasPrefix(reply.Error(), "BTFORMAT ") {
			return outcome{}, fmt.Errorf("%w: %s", ErrRecordFormat, strings.TrimPrefix(reply.Error(), "BTFORMAT "))
		}
		if isNoPerm(err) {
			return outcome{}, fmt.Errorf("tokencache: write token of %s: %w (a writer needs read and write access to %s, and PUBLISH on %s)",
				user, err, s.recordKey(user), s.channel)
		}
		return outcome{}, redisErr("write token of "+user, err)
	}
	bad := fmt.Errorf("tokencache: write token of %s: unexpected script reply of %d values", user, len(res))
	if len(res) < 2 {
		return outcome{}, bad
	}
	code, _ := res[0].(int64)
	vs, _ := res[1].(string)
	v, err := strconv.ParseInt(vs, 10, 64)
	if err != nil {
		return outcome{}, bad
	}
	switch {
	case code == 1 && len(res) == 2:
		return outcome{written: true, version: v}, nil
	case code == 1 && len(res) == 3:
		msg, _ := res[2].(string)
		return outcome{written: true, version: v}, &unannouncedError{user: user, version: v, reason: msg}
	case (code == 0 || code == 2) && len(res) == 3:
		var raw *string
		if str, ok := res[2].(string); ok {
			raw = &str
		}
		o := outcome{version: v, same: code == 2}
		o.stored, _, o.storedErr = s.parse(user, raw, time.Now())
		return o, nil
	}
	return outcome{}, bad
}

// unannouncedError says a write was stored but its announcement failed (a server
// without redis.acl_check_cmd, whose ACL let the script SET but not PUBLISH). The
// token is in Redis; other processes find it within MaxStaleness.
type unannouncedError struct {
	user    string
	version int64
	reason  string
}

func (e *unannouncedError) Error() string {
	return fmt.Sprintf("tokencache: token of %s stored as version %d but not announced: %s", e.user, e.version, e.reason)
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

// lease is a held refresh lease: while it is held, no other process refreshes the user.
// It is extended in the background until released, so a slow broker does not let a
// second process in, while a crashed holder stops extending and is replaced after ttl.
type lease struct {
	rdb   redis.UniversalClient
	key   string
	owner string
	stop  chan struct{}
	wg    sync.WaitGroup
}

// newOwner returns a random lease owner value, unique per attempt.
func newOwner() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newLease starts extending a lease just taken by owner (see store.acquire).
func newLease(rdb redis.UniversalClient, key, owner string, ttl time.Duration) *lease {
	l := &lease{rdb: rdb, key: key, owner: owner, stop: make(chan struct{})}
	l.wg.Add(1)
	go l.extend(ttl)
	return l
}

// extend pushes the lease's expiry out every third of its TTL until release.
func (l *lease) extend(ttl time.Duration) {
	defer l.wg.Done()
	tick := time.NewTicker(ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), ttl/3)
			held, err := extendScript.Run(ctx, l.rdb, []string{l.key}, l.owner, ttl.Milliseconds()).Int64()
			cancel()
			if err == nil && held == 0 {
				return // lost (expired while we were paused): the version check guards our write
			}
		}
	}
}

// release stops extending and deletes the lease if this holder still owns it. It uses
// its own short context: a lease must be freed even when the refresh was cancelled.
func (l *lease) release() {
	close(l.stop)
	l.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = releaseScript.Run(ctx, l.rdb, []string{l.key}, l.owner).Err()
}
