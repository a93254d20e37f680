package zerodha

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
)

// ErrNoUserInfo is returned by [App.UserInfo] when no login has stored the user's
// information yet.
var ErrNoUserInfo = errors.New("zerodha: no user information stored")

// UserInfo is what Kite said about the user of the app's current session at its login
// (or renewal): who logged in, when, and what the account may trade. It holds no secret.
// [App.RedirectHandler] and the [Authenticator]'s renewals store it in Redis under
// "<Prefix>:{<User>}:info", beside the token, so any process reads it with
// [App.UserInfo] without widening the shared token.
type UserInfo struct {
	// UserID is the Kite client ID, e.g. "AB1234".
	UserID string `json:"user_id"`
	// UserName and UserShortName are the user's names as Kite gives them.
	UserName      string `json:"user_name,omitempty"`
	UserShortName string `json:"user_shortname,omitempty"`
	// UserType is Kite's user_type, e.g. "individual".
	UserType string `json:"user_type,omitempty"`
	// Broker is Kite's broker field, e.g. "ZERODHA".
	Broker string `json:"broker,omitempty"`
	// Exchanges, Products and OrderTypes are what the account may use.
	Exchanges  []string `json:"exchanges,omitempty"`
	Products   []string `json:"products,omitempty"`
	OrderTypes []string `json:"order_types,omitempty"`
	// LoginTime is Kite's login_time, in IST; zero when Kite sent none (a renewal may
	// not).
	LoginTime time.Time `json:"login_time"`
	// Updated is when the record was last written.
	Updated time.Time `json:"updated"`
}

// maxInfo bounds a stored record.
const maxInfo = 8 << 10

// infoKey is where the user information of the app's token is stored.
func (a *App) infoKey() string { return a.opts.Prefix + ":{" + a.opts.User + "}:info" }

// UserInfo returns what Kite said about the user at the app's last login or renewal, by
// any process sharing the Redis. It needs only read access to "<Prefix>:{<User>}:info";
// the error wraps [ErrNoUserInfo] when nothing is stored and names the key when the
// record is unreadable.
func (a *App) UserInfo(ctx context.Context) (*UserInfo, error) {
	key := a.infoKey()
	raw, err := a.opts.Redis.Get(ctx, key).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, fmt.Errorf("%w for %s (under %s)", ErrNoUserInfo, a.opts.User, key)
	case err != nil:
		return nil, fmt.Errorf("%w: reading %s: %v", tokencache.ErrRedisUnavailable, key, err)
	}
	info, err := decodeUserInfo(raw)
	if err != nil {
		return nil, fmt.Errorf("zerodha: the user information under %s is unreadable: %w", key, err)
	}
	return info, nil
}

// decodeUserInfo parses a stored record and checks its text, which other processes show.
func decodeUserInfo(raw []byte) (*UserInfo, error) {
	if len(raw) > maxInfo {
		return nil, fmt.Errorf("%d bytes, more than %d", len(raw), maxInfo)
	}
	var info UserInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		return nil, errors.New("not the JSON of a user information record")
	}
	if info.UserID == "" {
		return nil, errors.New(`no "user_id"`)
	}
	if !info.LoginTime.IsZero() {
		info.LoginTime = info.LoginTime.In(ist)
	}
	texts := []string{info.UserID, info.UserName, info.UserShortName, info.UserType, info.Broker}
	for _, list := range [][]string{info.Exchanges, info.Products, info.OrderTypes} {
		texts = append(texts, list...)
	}
	for _, s := range texts {
		if clean(s, len(s)+1) != s {
			return nil, errors.New("a field holds control characters, invalid text or padding")
		}
	}
	return &info, nil
}

// saveInfo stores what a session says about the user, over what is stored (a renewal
// that says less keeps the rest, as long as it is the same user). A failure is logged,
// never returned: the session is good whether or not this is stored.
func (a *App) saveInfo(ctx context.Context, s *Session) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), completeTimeout)
	defer cancel()
	info := s.info
	if info.UserID == "" {
		return // nothing to say who this is
	}
	key := a.infoKey()
	if raw, err := a.opts.Redis.Get(ctx, key).Bytes(); err == nil {
		if old, err := decodeUserInfo(raw); err == nil && old.UserID == info.UserID {
			info = mergeInfo(*old, info)
		}
	}
	info.Updated = time.Now().UTC()
	raw, _ := json.Marshal(info) // strings, lists and times always marshal
	if err := a.opts.Redis.Set(ctx, key, raw, 0).Err(); err != nil {
		a.opts.Logger.Warn("zerodha: could not store the user information", "key", key, "err", err)
	}
}

// mergeInfo returns old with the fields of next that are set.
func mergeInfo(old, next UserInfo) UserInfo {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&old.UserName, next.UserName)
	set(&old.UserShortName, next.UserShortName)
	set(&old.UserType, next.UserType)
	set(&old.Broker, next.Broker)
	for _, l := range []struct{ dst, v *[]string }{{&old.Exchanges, &next.Exchanges}, {&old.Products, &next.Products}, {&old.OrderTypes, &next.OrderTypes}} {
		if len(*l.v) > 0 {
			*l.dst = *l.v
		}
	}
	if !next.LoginTime.IsZero() {
		old.LoginTime = next.LoginTime
	}
	return old
}
