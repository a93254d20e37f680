package main

import (
	"context"
	_ "embed" // for heartbeat.lua
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// fleet reads and writes the keys that let anyone with read access to Redis see the
// fleet without its secrets: which users the daemons keep fresh and their accounts,
// which daemons are alive, and how each user's refreshes are going. The daemon writes
// them; status, token and invalidate read them.
//
//	{prefix}:users           hash  user -> fleetUser (JSON)
//	{prefix}:accounts        hash  account -> user
//	{prefix}:daemons         hash  daemon id -> daemonInfo (JSON), heartbeat every second
//	{prefix}:{USER}:health   string healthRecord (JSON), expires after healthTTL
//
// None of them holds a token or a password: errors are scrubbed before they are written.
type fleet struct {
	rdb    redis.UniversalClient
	prefix string
}

func (f fleet) usersKey() string             { return f.prefix + ":users" }
func (f fleet) accountsKey() string          { return f.prefix + ":accounts" }
func (f fleet) daemonsKey() string           { return f.prefix + ":daemons" }
func (f fleet) healthKey(user string) string { return f.prefix + ":{" + user + "}:health" }
func (f fleet) leaseKey(user string) string  { return f.prefix + ":{" + user + "}:lease" }

const (
	// heartbeatEvery is how often a daemon records that it is alive.
	heartbeatEvery = time.Second
	// daemonSilentAfter is how long without a heartbeat makes a daemon count as gone.
	daemonSilentAfter = 5 * time.Second
	// daemonForgetAfter is how long a silent daemon stays listed (as gone).
	daemonForgetAfter = time.Hour
	// healthTTL is how long a user's health record outlives its last write.
	healthTTL = 7 * 24 * time.Hour
)

// fleetUser is a user's entry in {prefix}:users.
type fleetUser struct {
	Accounts    []string  `json:"accounts"`
	Broker      string    `json:"broker"`             // "tradovate" or "kite"
	Environment string    `json:"environment"`        // demo or live
	RESTURL     string    `json:"rest_url,omitempty"` // when not the environment's
	Daemon      string    `json:"daemon"`             // id of the daemon that wrote the entry
	Updated     time.Time `json:"updated"`

	// LoginURL is the login page of a user a human logs in through a browser ("kite").
	LoginURL string `json:"login_url,omitempty"`
}

// daemonInfo is a daemon's entry in {prefix}:daemons.
type daemonInfo struct {
	ID      string    `json:"id"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	Users   int       `json:"users"`
	SeenMS  int64     `json:"seen_ms"` // the Redis server's clock at the last heartbeat
}

// healthRecord is {prefix}:{USER}:health: how the user's refreshes are going, as the
// daemon that last wrote it sees them.
type healthRecord struct {
	Failing     bool        `json:"failing"`
	Kind        string      `json:"kind,omitempty"`  // failureKind of the last failure, while failing
	Error       string      `json:"error,omitempty"` // the last failure, scrubbed, while failing
	Since       *time.Time  `json:"since,omitempty"` // when the failing began
	LastError   string      `json:"last_error,omitempty"`
	LastKind    string      `json:"last_kind,omitempty"`
	LastErrorAt *time.Time  `json:"last_error_at,omitempty"`
	Waiting     *waitRecord `json:"waiting,omitempty"`
	Daemon      string      `json:"daemon"`
	Updated     time.Time   `json:"updated"`

	// Login says that a browser-login user (Kite) needs a human login, and where.
	Login *loginRecord `json:"login,omitempty"`
}

// waitRecord is a wait of a daemon for a user that lasts over a second.
type waitRecord struct {
	What  string     `json:"what"`            // the log message that announced it
	Until *time.Time `json:"until,omitempty"` // when it ends, when known
	Since time.Time  `json:"since"`
}

//go:embed heartbeat.lua
var heartbeatLua string

var heartbeatScript = redis.NewScript(heartbeatLua)

// register writes users and their accounts into the registry, and removes accounts
// that belonged to these users but no longer do.
func (f fleet) register(ctx context.Context, users map[string]fleetUser) error {
	old, err := f.rdb.HGetAll(ctx, f.accountsKey()).Result()
	if err != nil {
		return err
	}
	want := map[string]string{}
	userFields := make([]any, 0, 2*len(users))
	for u, e := range users {
		raw, err := json.Marshal(e)
		if err != nil {
			return err
		}
		userFields = append(userFields, u, string(raw))
		want[u] = u // a login user is an account of its own
		for _, a := range e.Accounts {
			want[a] = u
		}
	}
	var gone []string
	for a, u := range old {
		if _, ours := users[u]; ours && want[a] != u {
			gone = append(gone, a)
		}
	}
	accountFields := make([]any, 0, 2*len(want))
	for a, u := range want {
		if old[a] != u {
			accountFields = append(accountFields, a, u)
		}
	}
	_, err = f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if len(userFields) > 0 {
			p.HSet(ctx, f.usersKey(), userFields...)
		}
		if len(gone) > 0 {
			p.HDel(ctx, f.accountsKey(), gone...)
		}
		if len(accountFields) > 0 {
			p.HSet(ctx, f.accountsKey(), accountFields...)
		}
		return nil
	})
	return err
}

// heartbeat records that the daemon d is alive.
func (f fleet) heartbeat(ctx context.Context, d daemonInfo) error {
	raw, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return heartbeatScript.Run(ctx, f.rdb, []string{f.daemonsKey()}, d.ID, string(raw),
		daemonForgetAfter.Milliseconds()).Err()
}

// leave removes daemon id from the daemons hash (a clean stop).
func (f fleet) leave(ctx context.Context, id string) error {
	return f.rdb.HDel(ctx, f.daemonsKey(), id).Err()
}

// writeHealth stores user's health record.
func (f fleet) writeHealth(ctx context.Context, user string, h healthRecord) error {
	raw, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return f.rdb.Set(ctx, f.healthKey(user), raw, healthTTL).Err()
}

// users reads the registry of users.
func (f fleet) users(ctx context.Context) (map[string]fleetUser, error) {
	raw, err := f.rdb.HGetAll(ctx, f.usersKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.usersKey(), err)
	}
	out := make(map[string]fleetUser, len(raw))
	for u, v := range raw {
		var e fleetUser
		_ = json.Unmarshal([]byte(v), &e) // a damaged entry still names its user
		out[u] = e
	}
	return out, nil
}

// accounts reads the account -> user map.
func (f fleet) accounts(ctx context.Context) (map[string]string, error) {
	m, err := f.rdb.HGetAll(ctx, f.accountsKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.accountsKey(), err)
	}
	return m, nil
}

// daemonView is a daemon as a reader sees it.
type daemonView struct {
	daemonInfo
	Alive bool          `json:"alive"`
	Ago   time.Duration `json:"-"` // since its last heartbeat, by the Redis server's clock
}

// daemons reads the daemons that recorded a heartbeat, alive ones first, each group
// sorted by host.
func (f fleet) daemons(ctx context.Context) ([]daemonView, error) {
	var all *redis.MapStringStringCmd
	var now *redis.TimeCmd
	_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		all = p.HGetAll(ctx, f.daemonsKey())
		now = p.Time(ctx)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.daemonsKey(), err)
	}
	nowMS := now.Val().UnixMilli()
	var out []daemonView
	for id, raw := range all.Val() {
		var d daemonInfo
		if json.Unmarshal([]byte(raw), &d) != nil {
			continue
		}
		d.ID = id
		ago := time.Duration(nowMS-d.SeenMS) * time.Millisecond
		out = append(out, daemonView{daemonInfo: d, Alive: ago <= daemonSilentAfter, Ago: ago})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Alive != out[j].Alive {
			return out[i].Alive
		}
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// health reads user's health record; nil when there is none.
func (f fleet) health(ctx context.Context, user string) (*healthRecord, error) {
	raw, err := f.rdb.Get(ctx, f.healthKey(user)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.healthKey(user), err)
	}
	var h healthRecord
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("%s is not a health record", f.healthKey(user))
	}
	return &h, nil
}

// lease returns how long user's refresh lease is still held (0: not held).
func (f fleet) lease(ctx context.Context, user string) (time.Duration, error) {
	d, err := f.rdb.PTTL(ctx, f.leaseKey(user)).Result()
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", f.leaseKey(user), err)
	}
	if d < 0 {
		return 0, nil // -2: no lease; -1 cannot happen (leases always expire)
	}
	return d, nil
}

// describe is a daemon in a human's words: "host (pid 42, v1.2.3)".
func (d daemonView) describe() string {
	s := d.Host + " (pid " + strconv.Itoa(d.PID)
	if d.Version != "" {
		s += ", " + d.Version
	}
	return s + ")"
}
