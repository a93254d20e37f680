package tradovate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/secretfile"
)

// UserInfo is what Tradovate said about a login user when it was last logged in or
// renewed: its numeric id (which the websocket's user/syncrequest needs), name and
// status. It holds no secret. The Authenticator stores it in Redis under
// "<Namespace>:{<user>}:info" after each login and renewal, and any process that can
// read the Namespace's keys gets it with [ReadUserInfo], so consumers need neither
// credentials nor a field in the shared token for it.
type UserInfo struct {
	// User is the login name, as in the credentials.
	User string `json:"user"`
	// UserID is Tradovate's numeric user id (userId); 0 when no answer gave it.
	UserID int64 `json:"userId,omitempty"`
	// Name is the user name Tradovate reports (name, or userName in a TradingView-style
	// answer); "" when no answer gave it.
	Name string `json:"name,omitempty"`
	// HasLive is the hasLive flag of the official login and renewal answers; false also
	// when no answer gave it.
	HasLive bool `json:"hasLive,omitempty"`
	// UserStatus is the userStatus of the last answer that gave one, e.g. "Active".
	UserStatus string `json:"userStatus,omitempty"`
	// Method is the login method of the user's last login.
	Method Method `json:"method,omitempty"`
	// Updated is when the record was last written.
	Updated time.Time `json:"updated"`
}

// infoTTL is how long a user's information is kept after its last write, so users
// removed from the credentials do not leave records forever. Every login and renewal
// (about hourly) writes it again.
const infoTTL = 30 * 24 * time.Hour

// maxInfo bounds a stored record; real ones are under 300 bytes.
const maxInfo = 4 << 10

// infoKey is where user's information is stored.
func infoKey(namespace, user string) string { return namespace + ":{" + user + "}:info" }

// ReadUserInfo returns what Tradovate said about user at its last login or renewal by
// any process sharing opts.Redis and Namespace (set as in [Options]; no credentials are
// needed). The error wraps [ErrNoUserInfo] when nothing is stored, and names the key
// when the record is unreadable.
func ReadUserInfo(ctx context.Context, opts Options, user string) (*UserInfo, error) {
	opts.init()
	if opts.Redis == nil {
		return nil, errors.New("tradovate: ReadUserInfo needs Options.Redis")
	}
	if err := validNamespace(opts.Namespace); err != nil {
		return nil, err
	}
	key := infoKey(opts.Namespace, user)
	raw, err := opts.Redis.Get(ctx, key).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, fmt.Errorf("%w for user %q (under %s)", ErrNoUserInfo, user, key)
	case err != nil:
		return nil, redisError(ctx, "reading the information of user "+user, err)
	}
	info, err := decodeUserInfo(raw)
	if err != nil {
		return nil, fmt.Errorf("tradovate: the user information under %s is unreadable: %w", key, err)
	}
	return info, nil
}

// decodeUserInfo parses a stored record. Its text fields are checked, since other
// processes print them.
func decodeUserInfo(raw []byte) (*UserInfo, error) {
	if len(raw) > maxInfo {
		return nil, fmt.Errorf("%d bytes, more than %d", len(raw), maxInfo)
	}
	var info UserInfo
	if err := decodeObject(raw, &info); err != nil {
		return nil, errors.New(secretfile.JSONProblem(err))
	}
	switch {
	case info.User == "":
		return nil, errors.New(`no "user"`)
	case info.UserID < 0:
		return nil, errors.New(`negative "userId"`)
	}
	for _, f := range []struct{ name, value string }{{"user", info.User}, {"name", info.Name}, {"userStatus", info.UserStatus}} {
		if !printable(f.value) {
			return nil, fmt.Errorf("%q holds control characters or invalid text", f.name)
		}
	}
	return &info, nil
}

// printable reports whether s is valid text without control characters.
func printable(s string) bool {
	for _, r := range s {
		if r == unicode.ReplacementChar || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// saveInfo stores what an answer said about user, merged over what is stored (an answer
// that omits a field keeps the stored value). When the result has no userId and bearer
// is set, one GET /auth/me asks for it. A failure is logged, never returned: the broker
// has already answered, and failing the call would only bring another login. Without
// Redis nothing is stored.
func (a *Authenticator) saveInfo(ctx context.Context, user string, method Method, u userFields, bearer string) {
	if a.opts.Redis == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), redisTimeout)
	defer cancel()
	key := infoKey(a.opts.Namespace, user)
	info := &UserInfo{User: user}
	if raw, err := a.opts.Redis.Get(ctx, key).Bytes(); err == nil {
		if old, err := decodeUserInfo(raw); err == nil && old.User == user {
			info = old
		}
	}
	if u.userID == 0 && info.UserID == 0 && bearer != "" {
		if me, err := a.me(ctx, user, bearer); err == nil {
			u = mergeUser(u, me)
		} else {
			a.opts.Logger.Warn("tradovate: could not ask auth/me for the userId", "user", user, "err", err.Error())
		}
	}
	if u.userID > 0 {
		info.UserID = u.userID
	}
	if u.name != "" && printable(u.name) {
		info.Name = clip(u.name, 128)
	}
	if u.hasLive != nil {
		info.HasLive = *u.hasLive
	}
	if u.status != "" && printable(u.status) {
		info.UserStatus = clip(u.status, 64)
	}
	if method != "" {
		info.Method = method
	}
	info.Updated = a.opts.Now().UTC()
	raw, _ := json.Marshal(info) // strings, numbers, a bool and a time always marshal
	if err := a.opts.Redis.Set(ctx, key, raw, infoTTL).Err(); err != nil {
		a.opts.Logger.Warn("tradovate: could not store the user information in Redis", "user", user, "key", key, "err", err.Error())
	}
}

// clip cuts s to at most n bytes, dropping a rune cut in two.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
