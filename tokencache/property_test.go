package tokencache_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
)

// TestTrustInvariantsUnderRandomFaults runs random sequences of Set, Token, Invalidate,
// forged messages on every channel, corrupt records of every layout and Redis restarts
// against three caches (one writer, two read-only, each on its own client), and checks
// after every step:
//
//   - no cache serves a token Redis never held (every served token was issued by the
//     broker or stored by a Set: never a forged or corrupt one);
//   - the version each cache serves for a user never goes down;
//   - logins per user never exceed the refreshes the steps needed: one to start, and at
//     most one per corrupt record, revoked token and restart, plus the login attempts
//     the steps made fail (a broker outage);
//   - once the faults stop, every cache serves Redis's record within MaxStaleness.
//
// It is seeded: a failure prints its seed; BROKERTOKEN_PROPERTY_SEED=<n> replays it.
func TestTrustInvariantsUnderRandomFaults(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BROKERTOKEN_PROPERTY_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
		seed = v
	}
	runs := 3
	if testing.Short() {
		runs = 1
	}
	for i := range runs {
		s := seed + uint64(i)
		t.Run(fmt.Sprint("seed=", s), func(t *testing.T) {
			t.Logf("replay with BROKERTOKEN_PROPERTY_SEED=%d", s)
			newPropertyRun(t, s).run(150)
		})
	}
}

// propertyRun is one random run and what it has seen.
type propertyRun struct {
	t      *testing.T
	rng    *rand.Rand
	srv    *testutil.Server
	e      *env
	broker *checkingBroker
	caches []*tokencache.Cache // [0] writes, [1] and [2] only read
	users  []string

	mu      sync.Mutex
	legit   map[string]bool // every token the broker issued or a Set stored
	served  map[[2]int]int64
	needed  map[string]int // refreshes the steps needed, per user
	logins  map[string]int // login attempts, per user
	failing int            // login attempts still to fail (a broker outage)
	steps   []string
	restart int
}

// countingAuth counts the login attempts per user and fails them during an outage.
type countingAuth struct{ r *propertyRun }

func (a countingAuth) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	a.r.mu.Lock()
	a.r.logins[user]++
	fail := a.r.failing > 0
	if fail {
		a.r.failing--
		a.r.needed[user]++ // a failed attempt is retried after the backoff
	}
	a.r.mu.Unlock()
	if fail {
		return nil, errors.New("broker outage")
	}
	return a.r.broker.Login(ctx, user)
}

func (a countingAuth) Renew(ctx context.Context, user string, t *tokencache.Token) (*tokencache.Token, error) {
	return a.r.broker.Renew(ctx, user, t)
}

func (a countingAuth) Check(ctx context.Context, user string, t *tokencache.Token) error {
	return a.r.broker.Check(ctx, user, t)
}

const propertyStaleness = 300 * time.Millisecond

func newPropertyRun(t *testing.T, seed uint64) *propertyRun {
	srv := testutil.StartRedis(t)
	r := &propertyRun{
		t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), srv: srv, e: &env{t: t, srv: srv},
		broker: &checkingBroker{broker: &broker{}},
		legit:  map[string]bool{}, served: map[[2]int]int64{}, needed: map[string]int{}, logins: map[string]int{},
	}
	r.broker.issued = func(tok string) { r.mu.Lock(); r.legit[tok] = true; r.mu.Unlock() }
	tweak := func(o *tokencache.Options) {
		o.MaxStaleness = propertyStaleness
		o.RetryMin, o.RetryMax = 20*time.Millisecond, 100*time.Millisecond
		o.LeaseTTL = time.Second
	}
	r.caches = []*tokencache.Cache{r.e.cache(countingAuth{r}, tweak), r.e.cache(nil, tweak), r.e.cache(nil, tweak)}
	r.users = []string{r.e.user("A"), r.e.user("B")}
	for _, u := range r.users {
		r.needed[u] = 1
	}
	return r
}

func (r *propertyRun) run(steps int) {
	ctx := context.Background()
	for range steps {
		user := r.users[r.rng.IntN(len(r.users))]
		ci := r.rng.IntN(len(r.caches))
		switch n := r.rng.IntN(100); {
		case n < 35:
			r.token(ctx, ci, user)
		case n < 45:
			r.step("set %s via cache %d", user, ci)
			tok := &tokencache.Token{AccessToken: fmt.Sprintf("set-%s-%d", user, r.rng.Uint32()), Expiry: time.Now().Add(time.Hour)}
			r.mu.Lock()
			r.legit[tok.AccessToken] = true
			r.mu.Unlock()
			if _, err := r.caches[ci].Set(ctx, user, tok); err != nil {
				r.require(errors.Is(err, tokencache.ErrRedisUnavailable), "Set: %v", err)
			}
		case n < 53:
			r.revokeAndReport(ctx, ci, user)
		case n < 65:
			r.forgeAnnouncement(ctx, user)
		case n < 75:
			r.forgeReport(ctx, user)
		case n < 82:
			r.step("forged record message for %s", user)
			v := time.Now().Add(time.Hour).UnixMicro()
			_ = r.e.client().Publish(ctx, r.srv.Prefix+":records",
				fmt.Sprintf("%d:%s\nv1:%d:%s", v, user, v, body("EVIL-record"))).Err()
		case n < 93:
			r.corrupt(ctx, user)
		case n < 95:
			k := 1 + r.rng.IntN(3)
			r.step("broker outage: the next %d login attempts fail", k)
			r.mu.Lock()
			r.failing += k
			r.mu.Unlock()
		case n < 97 && r.restart < 2:
			r.restart++
			r.step("redis restart")
			for _, u := range r.users {
				r.need(u)
			}
			r.srv.Stop(r.t)
			r.srv.Start(r.t)
		default:
			time.Sleep(time.Duration(r.rng.IntN(30)) * time.Millisecond)
		}
		r.checkLogins()
	}
	r.converge(ctx)
}

func (r *propertyRun) step(format string, args ...any) {
	r.steps = append(r.steps, fmt.Sprintf(format, args...))
}

func (r *propertyRun) need(user string) {
	r.mu.Lock()
	r.needed[user]++
	r.mu.Unlock()
}

// require fails the run with its steps so far.
func (r *propertyRun) require(ok bool, format string, args ...any) {
	r.t.Helper()
	if !ok {
		last := r.steps
		if len(last) > 15 {
			last = last[len(last)-15:]
		}
		r.t.Fatalf("%s\nlast steps:\n  %s", fmt.Sprintf(format, args...), strings.Join(last, "\n  "))
	}
}

// token asks a cache and checks what it serves.
func (r *propertyRun) token(ctx context.Context, ci int, user string) *tokencache.Token {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tok, err := r.caches[ci].Token(ctx, user)
	r.step("token %s via cache %d: %v %v", user, ci, tok, err)
	if err != nil {
		var re *tokencache.RefreshError
		r.require(errors.Is(err, tokencache.ErrNoToken) || errors.Is(err, tokencache.ErrRedisUnavailable) ||
			errors.As(err, &re) && strings.Contains(err.Error(), "broker outage"),
			"cache %d, %s: unexpected error %v", ci, user, err)
		return nil
	}
	r.checkServed(ci, user, tok)
	return tok
}

func (r *propertyRun) checkServed(ci int, user string, tok *tokencache.Token) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.require(r.legit[tok.AccessToken], "cache %d served %s a token Redis never held: %v", ci, user, tok)
	k := [2]int{ci, userIndex(r.users, user)}
	r.require(tok.Version >= r.served[k], "cache %d served %s version %d after %d", ci, user, tok.Version, r.served[k])
	r.served[k] = tok.Version
}

func userIndex(users []string, u string) int {
	for i, x := range users {
		if x == u {
			return i
		}
	}
	return -1
}

// revokeAndReport is a real 401: the broker revokes the token a cache serves, and the
// cache reports it.
func (r *propertyRun) revokeAndReport(ctx context.Context, ci int, user string) {
	tok, err := r.caches[ci].Token(ctx, user)
	if err != nil {
		return
	}
	r.checkServed(ci, user, tok)
	r.step("revoke %s's %d and report via cache %d", user, tok.Version, ci)
	r.broker.revoke(tok.AccessToken)
	r.need(user)
	err = r.caches[ci].Invalidate(ctx, user, tok.AccessToken)
	r.require(err == nil || errors.Is(err, tokencache.ErrRedisUnavailable), "Invalidate: %v", err)
}

func (r *propertyRun) forgeAnnouncement(ctx context.Context, user string) {
	v := []string{"9999999999999999", "9223372036854775807", strconv.FormatInt(time.Now().UnixMicro()+r.rng.Int64N(1e9), 10), "garbage", "1"}[r.rng.IntN(5)]
	payload := v + ":" + user
	if r.rng.IntN(3) == 0 {
		payload = "!" + payload
	}
	r.step("forged announcement %q", payload)
	_ = r.e.client().Publish(ctx, r.srv.Prefix+":invalidate", payload).Err()
}

func (r *propertyRun) forgeReport(ctx context.Context, user string) {
	v := strconv.FormatInt(time.Now().UnixMicro()-r.rng.Int64N(1e9), 10)
	if st, err := r.caches[1].Status(ctx, user); err == nil && st.Token != nil && r.rng.IntN(2) == 0 {
		v = strconv.FormatInt(st.Token.Version, 10) // the stored version
		if r.broker.Check(ctx, user, st.Token) != nil {
			// The broker refuses the stored token (a Set stored one it never issued):
			// the report is true, and the writer's check rightly leads to a refresh.
			r.need(user)
		}
	}
	r.step("forged report %s:%s", v, user)
	_ = r.e.client().Publish(ctx, r.srv.Prefix+":reports", v+":"+user).Err()
}

func (r *propertyRun) corrupt(ctx context.Context, user string) {
	far := time.Now().Add(time.Hour).UnixMilli()
	layouts := []string{
		fmt.Sprintf(`{"v": 5, "a": "EVIL-json", "e": %d}`, far),
		fmt.Sprintf(`{"v":5,"a":"EVIL-old","e":%d}`, far),
		"v1:9007199254740993:" + body("EVIL-huge"),
		"v1:" + strconv.FormatInt(time.Now().Add(48*time.Hour).UnixMicro(), 10) + ":" + body("EVIL-future"),
		"v1:07:" + body("EVIL-zero"),
		"v1:12:{\"a\":\"EVIL-\xff\",\"e\":" + strconv.FormatInt(far, 10) + "}",
		"garbage",
	}
	l := layouts[r.rng.IntN(len(layouts))]
	r.step("corrupt record of %s: %.30q", user, l)
	r.need(user)
	_ = r.e.client().Set(ctx, r.srv.Prefix+":{"+user+"}:record", l, time.Hour).Err()
}

func (r *propertyRun) checkLogins() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range r.users {
		r.require(r.logins[u] <= r.needed[u], "%s: %d login attempts, but the steps needed at most %d", u, r.logins[u], r.needed[u])
	}
}

// converge stops the faults and waits for every cache to serve Redis's record: within
// MaxStaleness (plus scheduling slack) of the record's last change.
func (r *propertyRun) converge(ctx context.Context) {
	r.t.Helper()
	r.step("converge")
	r.mu.Lock()
	r.failing = 0 // the broker is back
	r.mu.Unlock()
	for _, user := range r.users {
		deadline := time.Now().Add(15 * time.Second)
		var last int64
		changed := time.Now()
		for {
			r.token(ctx, 0, user) // the writer repairs what the faults left, as a daemon's check does
			st, err := r.caches[1].Status(ctx, user)
			r.require(err == nil, "status: %v", err)
			if st.Token == nil {
				r.require(time.Now().Before(deadline), "Redis holds no token for %s", user)
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if st.Token.Version != last {
				last, changed = st.Token.Version, time.Now()
			}
			var behind []string
			for ci := range r.caches {
				if tok := r.token(ctx, ci, user); tok == nil || tok.Version != last {
					behind = append(behind, fmt.Sprintf("cache %d: %v", ci, tok))
				}
			}
			if len(behind) == 0 {
				break
			}
			r.require(time.Since(changed) < propertyStaleness+2*time.Second && time.Now().Before(deadline),
				"Redis holds version %d of %s since %s; still behind: %v", last, user, time.Since(changed), behind)
			time.Sleep(10 * time.Millisecond)
		}
	}
	r.checkLogins()
}
