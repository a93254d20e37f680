// Package promhooks turns the events of a [tokencache.Cache] into Prometheus metrics.
//
// Create the metrics once, give their hooks to the cache, and serve the registry:
//
//	m, err := promhooks.New(promhooks.Options{Registerer: reg})
//	cache, err := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: auth, Hooks: m.Hooks()})
//
// The series are the ones the brokertoken daemon exports, so one dashboard and one set
// of alert rules serve both:
//
//	brokertoken_refreshes_total{user,op}               tokens obtained and stored by this process (op login|renew)
//	brokertoken_logins_total{user}                     of which logins
//	brokertoken_renewals_total{user}                   of which renewals
//	brokertoken_refresh_failures_total{user,op,kind}   failed refreshes (op login|renew|redis)
//	brokertoken_lease_waits_total{user}                waits for another process's refresh
//	brokertoken_lease_wait_seconds_total{user}         time spent in those waits
//	brokertoken_invalidations_total{user}              newer tokens announced by other processes
//	brokertoken_broker_call_duration_seconds{op,result}  histogram of logins and renewals (result ok|error;
//	                                                   a renewal not due is none)
//	brokertoken_broker_calls_in_flight                 logins and renewals running now
//
// No token, password or error text reaches a label: the kind label comes from
// [Options.Classify], which returns one of a few fixed words.
package promhooks

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Options configures [New]. The zero value registers with prometheus.DefaultRegisterer
// under the "brokertoken" namespace.
type Options struct {
	// Registerer receives the collectors. Default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// Namespace starts every metric name. Default "brokertoken".
	Namespace string
	// Classify returns the kind label of a failed refresh: a short fixed word, never
	// text from the error. Default [Kind].
	Classify func(error) string
	// Buckets are the upper bounds, in seconds, of the broker call duration histogram.
	// Default 0.05 s to 60 s (logins may wait for the login budget or a time penalty).
	Buckets []float64
}

// defaultBuckets span a fast renewal to a login that waited out a penalty.
var defaultBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Metrics are the Prometheus metrics of one or more caches. Its methods are safe for
// concurrent use.
type Metrics struct {
	classify         func(error) string
	refreshes        *prometheus.CounterVec
	logins           *prometheus.CounterVec
	renewals         *prometheus.CounterVec
	failures         *prometheus.CounterVec
	leaseWaits       *prometheus.CounterVec
	leaseWaitSeconds *prometheus.CounterVec
	invalidations    *prometheus.CounterVec
	callDuration     *prometheus.HistogramVec
	inFlight         prometheus.Gauge
}

// New creates the metrics and registers them with opts.Registerer. It fails when a
// metric of the same name is registered already (for example by a second New on the
// same registry).
func New(opts Options) (*Metrics, error) {
	if opts.Registerer == nil {
		opts.Registerer = prometheus.DefaultRegisterer
	}
	if opts.Namespace == "" {
		opts.Namespace = "brokertoken"
	}
	if opts.Classify == nil {
		opts.Classify = Kind
	}
	if opts.Buckets == nil {
		opts.Buckets = defaultBuckets
	}
	ns := opts.Namespace
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help}, labels)
	}
	m := &Metrics{
		classify:         opts.Classify,
		refreshes:        counter("refreshes_total", "Tokens this process obtained from the broker and stored, by operation (login or renew).", "user", "op"),
		logins:           counter("logins_total", "Successful broker logins by this process.", "user"),
		renewals:         counter("renewals_total", "Successful token renewals by this process.", "user"),
		failures:         counter("refresh_failures_total", "Failed refreshes by this process, by operation (login, renew, redis) and kind of failure.", "user", "op", "kind"),
		leaseWaits:       counter("lease_waits_total", "Times this process waited for another process's refresh of a user.", "user"),
		leaseWaitSeconds: counter("lease_wait_seconds_total", "Seconds this process spent waiting for other processes' refreshes.", "user"),
		invalidations:    counter("invalidations_total", "Newer tokens announced by other processes that replaced this process's copy.", "user"),
		callDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "broker_call_duration_seconds",
			Help:    "How long logins and renewals sent to the broker took, waits for the login budget and time penalties included, by operation and result (ok or error).",
			Buckets: opts.Buckets}, []string{"op", "result"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "broker_calls_in_flight",
			Help: "Logins and renewals this process is sending to the broker now."}),
	}
	for _, c := range []prometheus.Collector{m.refreshes, m.logins, m.renewals, m.failures, m.leaseWaits,
		m.leaseWaitSeconds, m.invalidations, m.callDuration, m.inFlight} {
		if err := opts.Registerer.Register(c); err != nil {
			return nil, err
		}
	}
	for _, op := range []string{"login", "renew"} {
		for _, result := range []string{"ok", "error"} {
			m.callDuration.WithLabelValues(op, result)
		}
	}
	return m, nil
}

// AddUsers makes the per-user series of users exist at zero before anything happens to
// them, so rate() and increase() see their first event and absent() is false.
func (m *Metrics) AddUsers(users ...string) {
	for _, u := range users {
		m.refreshes.WithLabelValues(u, "login")
		m.refreshes.WithLabelValues(u, "renew")
		m.logins.WithLabelValues(u)
		m.renewals.WithLabelValues(u)
		m.leaseWaits.WithLabelValues(u)
		m.leaseWaitSeconds.WithLabelValues(u)
		m.invalidations.WithLabelValues(u)
	}
}

// Hooks returns the hooks that feed the metrics, for [tokencache.Options.Hooks].
func (m *Metrics) Hooks() tokencache.Hooks {
	return tokencache.Hooks{
		Refreshed:     m.refreshed,
		RefreshFailed: m.refreshFailed,
		LeaseWait:     m.leaseWait,
		Invalidated:   m.invalidated,
		BrokerCall:    m.brokerCall,
	}
}

// Wrap returns hooks that feed the metrics and then call h's (each of which may be
// nil): for a cache that has hooks of its own.
func (m *Metrics) Wrap(h tokencache.Hooks) tokencache.Hooks {
	return tokencache.Hooks{
		Refreshed: func(user, op string, t *tokencache.Token) {
			m.refreshed(user, op, t)
			if h.Refreshed != nil {
				h.Refreshed(user, op, t)
			}
		},
		RefreshFailed: func(user, op string, err error) {
			m.refreshFailed(user, op, err)
			if h.RefreshFailed != nil {
				h.RefreshFailed(user, op, err)
			}
		},
		LeaseWait: func(user string, waited time.Duration) {
			m.leaseWait(user, waited)
			if h.LeaseWait != nil {
				h.LeaseWait(user, waited)
			}
		},
		Invalidated: func(user string, version int64) {
			m.invalidated(user, version)
			if h.Invalidated != nil {
				h.Invalidated(user, version)
			}
		},
		BrokerCall: func(ctx context.Context, user, op string) (context.Context, func(error)) {
			ctx, done := m.brokerCall(ctx, user, op)
			if h.BrokerCall == nil {
				return ctx, done
			}
			cctx, inner := h.BrokerCall(ctx, user, op)
			if cctx == nil {
				cctx = ctx
			}
			return cctx, func(err error) {
				if inner != nil {
					inner(err)
				}
				done(err)
			}
		},
	}
}

func (m *Metrics) refreshed(user, op string, _ *tokencache.Token) {
	m.refreshes.WithLabelValues(user, op).Inc()
	if op == "renew" {
		m.renewals.WithLabelValues(user).Inc()
	} else {
		m.logins.WithLabelValues(user).Inc()
	}
}

func (m *Metrics) refreshFailed(user, op string, err error) {
	m.failures.WithLabelValues(user, op, m.classify(err)).Inc()
}

func (m *Metrics) leaseWait(user string, waited time.Duration) {
	m.leaseWaits.WithLabelValues(user).Inc()
	m.leaseWaitSeconds.WithLabelValues(user).Add(waited.Seconds())
}

func (m *Metrics) invalidated(user string, _ int64) {
	m.invalidations.WithLabelValues(user).Inc()
}

func (m *Metrics) brokerCall(ctx context.Context, _, op string) (context.Context, func(error)) {
	start := time.Now()
	m.inFlight.Inc()
	return ctx, func(err error) {
		m.inFlight.Dec()
		if errors.Is(err, tokencache.ErrRenewalNotDue) {
			return // the Renewer sent nothing: no call to time
		}
		result := "ok"
		if err != nil {
			result = "error"
		}
		m.callDuration.WithLabelValues(op, result).Observe(time.Since(start).Seconds())
	}
}

// Kind is the default [Options.Classify]: "redis" (Redis unreachable), "token_rejected",
// "no_token", "timeout", "canceled", or "other".
func Kind(err error) string {
	switch {
	case errors.Is(err, tokencache.ErrRedisUnavailable):
		return "redis"
	case errors.Is(err, tokencache.ErrTokenRejected):
		return "token_rejected"
	case errors.Is(err, tokencache.ErrNoToken):
		return "no_token"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "other"
}
