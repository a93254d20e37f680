package oauthbroker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// State is where a user's grant stands.
type State string

// The states of a grant, as [Status] reports them.
const (
	// StateActive: a refresh token is stored and the fleet refreshes with it.
	StateActive State = "active"
	// StateRevoked: the provider refused the refresh token; nothing refreshes the user
	// until a human authorizes the app again.
	StateRevoked State = "revoked"
	// StateLost: Redis no longer holds the refresh token although a grant was stored
	// (Redis lost its data or evicted the key): nothing refreshes the user until a
	// human authorizes the app again, or until the process holding a rotation of that
	// grant stores it.
	StateLost State = "lost"
	// StateMissing: nothing says the app was ever authorized for the user (never
	// authorized, or Redis lost every key of the user and no process remembered the
	// grant).
	StateMissing State = "missing"
)

// Status is what anyone with read access to Redis may know about a user's grant: no
// token, only facts. See [ReadStatus].
type Status struct {
	// User is the cache user.
	User string
	// State is the grant's state; the fields below are zero for [StateMissing].
	State State
	// Provider is the provider's name.
	Provider string
	// Generation counts every refresh and authorization of the user; it grows by one
	// with each (and starts again at 1 after Redis lost its data).
	Generation int64
	// Grant is the id of the human's authorization the tokens descend from: random,
	// new with each authorization.
	Grant string
	// AuthorizedAt is when a human last authorized the app.
	AuthorizedAt time.Time
	// Rotations is how many refreshes the grant had since.
	Rotations int64
	// RotatedAt is when the last refresh was stored (zero: none yet).
	RotatedAt time.Time
	// RefreshExpiry is when the refresh token is known or assumed to expire (zero:
	// unknown). Past it, only a human can help. A refresh whose answer puts it within a
	// minute of the stored value keeps the stored value (providers report the time left
	// in whole seconds), so the expiry, and its alerts, do not move at every refresh.
	RefreshExpiry time.Time
	// RevokedAt is when the provider refused the refresh token (StateRevoked), or when
	// the loss was noticed (StateLost).
	RevokedAt time.Time
	// Detail says why it was refused or lost (StateRevoked, StateLost); it holds no
	// secret.
	Detail string
	// Rotation is the refresh in progress, or an interrupted one whose outcome is not
	// known; nil when none.
	Rotation *Rotation
}

// Rotation describes a rotation marker: a process using the refresh token now, or one
// that did and never said how it ended.
type Rotation struct {
	// Generation is the generation of the refresh token being used.
	Generation int64
	// Owner names the process: host/pid/random.
	Owner string
	// Deadline is until when the owner may use it (Redis time); after it, and a short
	// takeover delay, another process sends the refresh token again.
	Deadline time.Time
}

// ReadStatus reads the status of user's grant under prefix (the cache's Prefix,
// default "brokertoken" when ""). It needs only the reader role's rights (GET on
// "<prefix>:{<user>}:oauth" and its rotation marker), no client secret, and makes no
// request to the provider. A record it cannot read is an error.
func ReadStatus(ctx context.Context, rdb redis.UniversalClient, prefix, user string) (*Status, error) {
	if prefix == "" {
		prefix = "brokertoken"
	}
	st := &Status{User: user, State: StateMissing}
	vals := make([]*redis.StringCmd, 2)
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		vals[0] = p.Get(ctx, statusKey(prefix, user))
		vals[1] = p.Get(ctx, rotationKey(prefix, user))
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, redisErr("read the status of "+user, err)
	}
	raw, err := vals[0].Result()
	if errors.Is(err, redis.Nil) {
		return st, nil
	}
	h, body, err := decodeStatus(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", statusKey(prefix, user), err)
	}
	gen := h.gen
	st.State, st.Provider, st.Generation, st.Grant = body.State, body.Provider, gen, h.grant
	st.AuthorizedAt, st.Rotations, st.RotatedAt = msTime(body.AuthorizedMS), body.Rotations, msTime(body.RotatedMS)
	st.RefreshExpiry, st.RevokedAt, st.Detail = msTime(body.RefreshExpiryMS), msTime(body.SinceMS), body.Detail
	if m, err := vals[1].Result(); err == nil {
		if c, err := parseClaim(m); err == nil && c.gen == gen && c.grant == h.grant && body.State == StateActive {
			st.Rotation = &Rotation{Generation: c.gen, Owner: c.owner, Deadline: c.deadline}
		}
	}
	return st, nil
}

// Status reads the status of the Broker's user: [ReadStatus] with its Redis and prefix.
func (b *Broker) Status(ctx context.Context) (*Status, error) {
	return ReadStatus(ctx, b.opts.Redis, b.opts.Prefix, b.opts.User)
}
