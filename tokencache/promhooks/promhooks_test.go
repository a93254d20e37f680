package promhooks_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tokencache/promhooks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

// slowBroker logs users in after a delay, numbering its tokens; it refuses users whose
// name ends in "-bad".
type slowBroker struct {
	delay time.Duration
	n     atomic.Int64
}

func (b *slowBroker) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	select {
	case <-time.After(b.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if strings.HasSuffix(user, "-bad") {
		return nil, errors.New("refused")
	}
	return &tokencache.Token{AccessToken: fmt.Sprintf("tok-%d", b.n.Add(1)), Expiry: time.Now().Add(time.Hour)}, nil
}

// value returns the value of the sample of name whose labels are labels (name=value
// pairs); -1 when there is none. Histograms give their sample count.
func value(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	families, err := g.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}

// Two caches (two processes) with their own registries ask for the same user at once:
// one logs in, the other waits for its lease. A Set by one is an invalidation for the
// other, and a refused login is a failure of kind "other".
func TestMetricsCountWhatTheCachesDo(t *testing.T) {
	srv := testutil.Redis(t)
	ctx := context.Background()
	b := &slowBroker{delay: 300 * time.Millisecond}
	user, bad := srv.Name("u"), srv.Name("u-bad")

	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	caches := make([]*tokencache.Cache, 2)
	for i, reg := range regs {
		m, err := promhooks.New(promhooks.Options{Registerer: reg})
		require.NoError(t, err)
		m.AddUsers(user)
		c, err := tokencache.New(tokencache.Options{Redis: srv.Client(t), Prefix: srv.Prefix, Authenticator: b,
			Hooks: m.Hooks(), RetryMin: time.Hour})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		caches[i] = c
	}
	for i, reg := range regs {
		assert.Equal(t, 0.0, value(t, reg, "brokertoken_logins_total", "user", user), "cache %d before", i)
		assert.Equal(t, 0.0, value(t, reg, "brokertoken_broker_call_duration_seconds", "op", "login", "result", "ok"))
	}

	var wg sync.WaitGroup
	for _, c := range caches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Token(ctx, user)
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	logins := value(t, regs[0], "brokertoken_logins_total", "user", user) + value(t, regs[1], "brokertoken_logins_total", "user", user)
	assert.Equal(t, 1.0, logins, "one login for both processes")
	waits := value(t, regs[0], "brokertoken_lease_waits_total", "user", user) + value(t, regs[1], "brokertoken_lease_waits_total", "user", user)
	assert.GreaterOrEqual(t, waits, 1.0, "the other process waited for the lease")
	calls := value(t, regs[0], "brokertoken_broker_call_duration_seconds", "op", "login", "result", "ok") +
		value(t, regs[1], "brokertoken_broker_call_duration_seconds", "op", "login", "result", "ok")
	assert.Equal(t, 1.0, calls, "one broker call observed")
	for _, reg := range regs {
		assert.Equal(t, 0.0, value(t, reg, "brokertoken_broker_calls_in_flight"))
	}

	// A Set by the first cache replaces the second's copy.
	_, err := caches[0].Set(ctx, user, &tokencache.Token{AccessToken: "set-by-0", Expiry: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return value(t, regs[1], "brokertoken_invalidations_total", "user", user) == 1
	}, 5*time.Second, 10*time.Millisecond)

	_, err = caches[0].Token(ctx, bad)
	require.Error(t, err)
	assert.Equal(t, 1.0, value(t, regs[0], "brokertoken_refresh_failures_total", "user", bad, "op", "login", "kind", "other"))
	assert.Equal(t, 1.0, value(t, regs[0], "brokertoken_broker_call_duration_seconds", "op", "login", "result", "error"))

	for _, reg := range regs {
		problems, err := promtest.GatherAndLint(reg)
		require.NoError(t, err)
		assert.Empty(t, problems)
	}
}

// Wrap feeds the metrics and the caller's own hooks; Classify names the kind label.
func TestWrapCallsBothAndClassifyNamesTheKind(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := promhooks.New(promhooks.Options{Registerer: reg, Namespace: "svc",
		Classify: func(error) string { return "mine" }})
	require.NoError(t, err)
	var own []string
	h := m.Wrap(tokencache.Hooks{
		RefreshFailed: func(user, op string, _ error) { own = append(own, "failed:"+user+":"+op) },
		BrokerCall: func(ctx context.Context, user, op string) (context.Context, func(error)) {
			return ctx, func(err error) { own = append(own, "done:"+op) }
		},
	})
	h.Refreshed("u", "renew", &tokencache.Token{})
	h.RefreshFailed("u", "login", errors.New("x"))
	h.LeaseWait("u", 1500*time.Millisecond)
	h.Invalidated("u", 7)
	ctx, done := h.BrokerCall(context.Background(), "u", "renew")
	require.NotNil(t, ctx)
	done(nil)
	_, notDue := h.BrokerCall(context.Background(), "u", "renew")
	notDue(fmt.Errorf("kite: %w", tokencache.ErrRenewalNotDue)) // nothing was sent: not timed

	assert.Equal(t, []string{"failed:u:login", "done:renew", "done:renew"}, own)
	assert.Equal(t, 1.0, value(t, reg, "svc_renewals_total", "user", "u"))
	assert.Equal(t, 1.0, value(t, reg, "svc_refreshes_total", "user", "u", "op", "renew"))
	assert.Equal(t, 1.0, value(t, reg, "svc_refresh_failures_total", "user", "u", "op", "login", "kind", "mine"))
	assert.Equal(t, 1.5, value(t, reg, "svc_lease_wait_seconds_total", "user", "u"))
	assert.Equal(t, 1.0, value(t, reg, "svc_invalidations_total", "user", "u"))
	assert.Equal(t, 1.0, value(t, reg, "svc_broker_call_duration_seconds", "op", "renew", "result", "ok"))
	assert.Equal(t, 0.0, value(t, reg, "svc_broker_call_duration_seconds", "op", "renew", "result", "error"))

	_, err = promhooks.New(promhooks.Options{Registerer: reg, Namespace: "svc"})
	assert.Error(t, err, "registering the same metrics twice")
}

func TestKind(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("x: %w", tokencache.ErrRedisUnavailable): "redis",
		tokencache.ErrTokenRejected:                         "token_rejected",
		tokencache.ErrNoToken:                               "no_token",
		context.DeadlineExceeded:                            "timeout",
		context.Canceled:                                    "canceled",
		errors.New("boom"):                                  "other",
	} {
		assert.Equal(t, want, promhooks.Kind(err), err.Error())
	}
}
