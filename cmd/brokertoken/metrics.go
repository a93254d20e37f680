package main

import (
	"math"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/brokertoken/brokertoken/tokencache/promhooks"
)

// metrics are the daemon's /metrics, on a registry of their own: the Go runtime,
// process and build-info collectors every Go service exports; the cache's series
// (tokencache/promhooks, the same a library user gets); and the daemon's own: token
// validity and expiry per user read at each scrape, failing users, alerts, Redis
// reachability, the number of users and the daemon's build. Its methods are safe for
// concurrent use.
type metrics struct {
	reg         *prometheus.Registry
	cache       *promhooks.Metrics
	alerts      *prometheus.CounterVec
	alertErrors prometheus.Counter
}

// newMetrics registers every collector. views and redisUp are read at each scrape.
func newMetrics(views func() []userView, redisUp func() bool) (*metrics, error) {
	reg := prometheus.NewRegistry()
	cache, err := promhooks.New(promhooks.Options{Registerer: reg, Classify: failureKind})
	if err != nil {
		return nil, err
	}
	m := &metrics{
		reg:   reg,
		cache: cache,
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "brokertoken_alerts_total",
			Help: "Alerts this process delivered, by event."}, []string{"event"}),
		alertErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "brokertoken_alert_errors_total",
			Help: "Alerts that could not be delivered to the webhook."}),
	}
	for _, ev := range []string{eventFailure, eventCaptcha, eventLockedOut, eventRecovered, eventRedisDown, eventRedisUp, eventForeignWriter,
		eventLoginNeeded, eventTokenRejected, eventTokenUnchecked, eventGrantRevoked, eventGrantLost, eventInvalidClient, eventRefreshExpiring} {
		m.alerts.WithLabelValues(ev)
	}
	b := readBuild()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
		m.alerts, m.alertErrors,
		&stateCollector{views: views, redisUp: redisUp},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "brokertoken_build_info",
			Help:        "Always 1: the version, commit and Go version the daemon was built from.",
			ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.shortCommit(), "goversion": b.Go}},
			func() float64 { return 1 }),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// setUsers makes the per-user series exist at zero from the start, so rate() and
// absent() work before anything happens.
func (m *metrics) setUsers(users []string) { m.cache.AddUsers(users...) }

func (m *metrics) alertSent(event string) { m.alerts.WithLabelValues(event).Inc() }

func (m *metrics) alertFailed() { m.alertErrors.Inc() }

// handler serves the registry in the Prometheus text format (or OpenMetrics, when the
// scraper asks for it).
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, EnableOpenMetrics: true})
}

// stateCollector exports the daemon's view of each user and of Redis, read at scrape
// time.
type stateCollector struct {
	views   func() []userView
	redisUp func() bool
}

var (
	descExpiry  = prometheus.NewDesc("brokertoken_token_expiry_seconds", "Seconds until the user's newest known token expires (negative once expired); absent while no token is known.", []string{"user"}, nil)
	descValid   = prometheus.NewDesc("brokertoken_token_valid", "1 when the user's newest known token has not expired and its broker has not refused it.", []string{"user"}, nil)
	descFailing = prometheus.NewDesc("brokertoken_user_failing", "1 while the user's refreshes fail (since the last good token).", []string{"user"}, nil)
	descUsers   = prometheus.NewDesc("brokertoken_users", "Login users in the credentials file.", nil, nil)

	descHuman       = prometheus.NewDesc("brokertoken_human_login", "1 for a user a human logs in through a browser (Kite): its token lapses every day by design.", []string{"user"}, nil)
	descLoginNeeded = prometheus.NewDesc("brokertoken_login_needed", "1 while a browser-login user needs a human login: a Kite user without a valid token once the day's reminder time has passed; an OAuth2 user whose grant is missing, refused or expired.", []string{"user"}, nil)
	descRefreshExp  = prometheus.NewDesc("brokertoken_refresh_token_expiry_seconds", "Seconds until an OAuth2 user's refresh token expires (negative once expired), after which a human must authorize the app again; absent while unknown or not authorized.", []string{"user"}, nil)
	descRedisUp     = prometheus.NewDesc("brokertoken_redis_up", "1 when Redis answered the last pings.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descExpiry, descValid, descFailing, descUsers, descRedisUp, descHuman, descLoginNeeded, descRefreshExp} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	views := c.views()
	for _, v := range views {
		if v.tok != nil {
			secs := math.Round(v.tok.Expiry.Sub(now).Seconds()*1000) / 1000
			ch <- prometheus.MustNewConstMetric(descExpiry, prometheus.GaugeValue, secs, v.user)
		}
		ch <- prometheus.MustNewConstMetric(descValid, prometheus.GaugeValue, b2f(v.tok != nil && now.Before(v.tok.Expiry) && !v.rejected), v.user)
		ch <- prometheus.MustNewConstMetric(descFailing, prometheus.GaugeValue, b2f(v.failing), v.user)
		ch <- prometheus.MustNewConstMetric(descHuman, prometheus.GaugeValue, b2f(v.human), v.user)
		ch <- prometheus.MustNewConstMetric(descLoginNeeded, prometheus.GaugeValue, b2f(v.loginNeeded), v.user)
		if !v.refreshExpiry.IsZero() {
			secs := math.Round(v.refreshExpiry.Sub(now).Seconds()*1000) / 1000
			ch <- prometheus.MustNewConstMetric(descRefreshExp, prometheus.GaugeValue, secs, v.user)
		}
	}
	ch <- prometheus.MustNewConstMetric(descUsers, prometheus.GaugeValue, float64(len(views)))
	ch <- prometheus.MustNewConstMetric(descRedisUp, prometheus.GaugeValue, b2f(c.redisUp()))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
