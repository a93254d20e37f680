package main

import (
	"context"
	_ "embed" // for the registry's scripts
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tradovate"
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
//	{prefix}:{USER}:accounts hash  the broker's last answer for the user's accounts
//	                         (at_us, names, daemon, at): shared between the daemons
//
// {prefix}:accounts is written in one step (register.lua), and each user's shared
// answer only by a newer one (sharedaccounts.lua): daemons whose views differ for a
// moment never leave a mix, and all follow the newest answer from the broker.
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
func (f fleet) sharedAccountsKey(user string) string {
	return f.prefix + ":{" + user + "}:accounts"
}

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
	Broker      string    `json:"broker"`             // "tradovate", "kite", "schwab" or "oauth2"
	Environment string    `json:"environment"`        // demo or live
	RESTURL     string    `json:"rest_url,omitempty"` // when not the environment's
	Daemon      string    `json:"daemon"`             // id of the daemon that wrote the entry
	Updated     time.Time `json:"updated"`

	// LoginURL is the login page of a user a human logs in through a browser ("kite",
	// "schwab", "oauth2").
	LoginURL string `json:"login_url,omitempty"`
	// Provider names an OAuth2 user's provider ("schwab", or the entry's provider);
	// its grant's status is at {prefix}:{USER}:oauth (oauthbroker.ReadStatus).
	Provider string `json:"provider,omitempty"`
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

var (
	//go:embed register.lua
	registerLua    string
	registerScript = redis.NewScript(registerLua)

	//go:embed sharedaccounts.lua
	sharedAccountsLua    string
	sharedAccountsScript = redis.NewScript(sharedAccountsLua)
)

// register writes users and their accounts into the registry, and removes accounts
// that belonged to these users but no longer do; the account map in one step
// (register.lua).
func (f fleet) register(ctx context.Context, users map[string]fleetUser) error {
	userFields := make([]any, 0, 2*len(users))
	var accounts []any
	for u, e := range users {
		raw, err := json.Marshal(e)
		if err != nil {
			return err
		}
		userFields = append(userFields, u, string(raw))
		accounts = append(accounts, u, len(e.Accounts))
		for _, a := range e.Accounts {
			accounts = append(accounts, a)
		}
	}
	if len(users) == 0 {
		return nil
	}
	if err := registerScript.Run(ctx, f.rdb, []string{f.accountsKey()}, accounts...).Err(); err != nil {
		return err
	}
	return f.rdb.HSet(ctx, f.usersKey(), userFields...).Err()
}

// accountStore shares the broker's answers about each user's accounts between the
// daemons through {prefix}:{USER}:accounts (tradovate.AccountStore): each daemon
// follows the newest answer, whichever daemon asked. Clocks compare the answers' times:
// the daemons' must agree within seconds, as they must for token expiries.
type accountStore struct {
	fleet  fleet
	daemon string // the id of this daemon, stored with its answers
}

var _ tradovate.AccountStore = accountStore{}

// LoadAccounts reads the answer stored for user; a zero At when none is.
func (s accountStore) LoadAccounts(ctx context.Context, user string) (tradovate.AccountList, error) {
	m, err := s.fleet.rdb.HGetAll(ctx, s.fleet.sharedAccountsKey(user)).Result()
	if err != nil {
		return tradovate.AccountList{}, fmt.Errorf("reading %s: %w", s.fleet.sharedAccountsKey(user), err)
	}
	if len(m) == 0 {
		return tradovate.AccountList{}, nil
	}
	return s.parse(user, m["at_us"], m["names"])
}

// StoreAccounts stores l for user unless an answer asked for later is stored, and
// returns the newest stored.
func (s accountStore) StoreAccounts(ctx context.Context, user string, l tradovate.AccountList) (tradovate.AccountList, error) {
	names := l.Names
	if names == nil {
		names = []string{}
	}
	raw, err := json.Marshal(names)
	if err != nil {
		return tradovate.AccountList{}, err
	}
	key := s.fleet.sharedAccountsKey(user)
	res, err := sharedAccountsScript.Run(ctx, s.fleet.rdb, []string{key}, l.At.UnixMicro(), string(raw), s.daemon,
		l.At.UTC().Format(time.RFC3339Nano)).StringSlice()
	if err != nil {
		return tradovate.AccountList{}, fmt.Errorf("writing %s: %w", key, err)
	}
	if len(res) != 2 {
		return tradovate.AccountList{}, fmt.Errorf("writing %s: unexpected answer %q", key, res)
	}
	if res[0] == strconv.FormatInt(l.At.UnixMicro(), 10) && res[1] == string(raw) {
		return l, nil // ours, with its full precision
	}
	return s.parse(user, res[0], res[1])
}

// parse reads a stored answer.
func (s accountStore) parse(user, atUS, names string) (tradovate.AccountList, error) {
	us, err := strconv.ParseInt(atUS, 10, 64)
	var l tradovate.AccountList
	if err == nil {
		err = json.Unmarshal([]byte(names), &l.Names)
	}
	if err != nil {
		return tradovate.AccountList{}, fmt.Errorf("%s is not an account list: %w", s.fleet.sharedAccountsKey(user), err)
	}
	l.At = time.UnixMicro(us)
	return l, nil
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
