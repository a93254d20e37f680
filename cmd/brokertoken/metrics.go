package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// metrics counts the daemon's events for /metrics. Its methods are safe for concurrent
// use and cheap enough for the cache's hooks.
type metrics struct {
	mu               sync.Mutex // guards every field below
	users            []string
	logins           map[string]uint64
	renewals         map[string]uint64
	failures         map[failureKey]uint64
	leaseWaits       map[string]uint64
	leaseWaitSeconds map[string]float64
	invalidations    map[string]uint64
	alerts           map[string]uint64 // sent by this process, by event
	alertErrors      uint64
}

type failureKey struct{ user, op, kind string }

func newMetrics() *metrics {
	return &metrics{
		logins: map[string]uint64{}, renewals: map[string]uint64{}, failures: map[failureKey]uint64{},
		leaseWaits: map[string]uint64{}, leaseWaitSeconds: map[string]float64{},
		invalidations: map[string]uint64{}, alerts: map[string]uint64{},
	}
}

// setUsers sets the users whose series are always present (at zero until something
// happens), so rate() and absent() work from the start.
func (m *metrics) setUsers(users []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.users = append([]string(nil), users...)
}

func (m *metrics) refreshed(user, op string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if op == "renew" {
		m.renewals[user]++
	} else {
		m.logins[user]++
	}
}

func (m *metrics) failed(user, op, kind string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failures[failureKey{user, op, kind}]++
}

func (m *metrics) leaseWait(user string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leaseWaits[user]++
	m.leaseWaitSeconds[user] += d.Seconds()
}

func (m *metrics) invalidated(user string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.invalidations[user]++
}

func (m *metrics) alertSent(event string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.alerts[event]++
}

func (m *metrics) alertFailed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.alertErrors++
}

// promWriter writes the Prometheus text exposition format (version 0.0.4).
type promWriter struct {
	w *bufio.Writer
}

func (p promWriter) header(name, typ, help string) {
	fmt.Fprintf(p.w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// sample writes one sample; labels alternate names and values.
func (p promWriter) sample(name string, value float64, labels ...string) {
	p.w.WriteString(name)
	if len(labels) > 0 {
		p.w.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				p.w.WriteByte(',')
			}
			p.w.WriteString(labels[i])
			p.w.WriteString(`="`)
			p.w.WriteString(escapeLabel(labels[i+1]))
			p.w.WriteByte('"')
		}
		p.w.WriteByte('}')
	}
	p.w.WriteByte(' ')
	p.w.WriteString(formatFloat(value))
	p.w.WriteByte('\n')
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }

func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// write writes every metric: the counters, and the gauges read from the daemon's
// per-user views at the time of the scrape.
func (m *metrics) write(w io.Writer, views []userView, redisUp bool, now time.Time) error {
	bw := bufio.NewWriter(w)
	p := promWriter{bw}

	m.mu.Lock()
	users := m.users
	counter := func(name, help string, by map[string]uint64) {
		p.header(name, "counter", help)
		for _, u := range users {
			p.sample(name, float64(by[u]), "user", u)
		}
	}
	p.header("brokertoken_refreshes_total", "counter", "Tokens this process obtained from the broker and stored, by operation (login or renew).")
	for _, u := range users {
		p.sample("brokertoken_refreshes_total", float64(m.logins[u]), "user", u, "op", "login")
		p.sample("brokertoken_refreshes_total", float64(m.renewals[u]), "user", u, "op", "renew")
	}
	counter("brokertoken_logins_total", "Successful broker logins by this process.", m.logins)
	counter("brokertoken_renewals_total", "Successful token renewals by this process.", m.renewals)

	p.header("brokertoken_refresh_failures_total", "counter", "Failed refreshes by this process, by operation (login, renew, redis) and kind of failure.")
	keys := make([]failureKey, 0, len(m.failures))
	for k := range m.failures {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.user != b.user {
			return a.user < b.user
		}
		if a.op != b.op {
			return a.op < b.op
		}
		return a.kind < b.kind
	})
	for _, k := range keys {
		p.sample("brokertoken_refresh_failures_total", float64(m.failures[k]), "user", k.user, "op", k.op, "kind", k.kind)
	}
	counter("brokertoken_lease_waits_total", "Times this process waited for another process's refresh of a user.", m.leaseWaits)
	p.header("brokertoken_lease_wait_seconds_total", "counter", "Seconds this process spent waiting for other processes' refreshes.")
	for _, u := range users {
		p.sample("brokertoken_lease_wait_seconds_total", m.leaseWaitSeconds[u], "user", u)
	}
	counter("brokertoken_invalidations_total", "Newer tokens announced by other processes that replaced this process's copy.", m.invalidations)
	p.header("brokertoken_alerts_total", "counter", "Alerts this process delivered, by event.")
	for _, ev := range []string{eventFailure, eventCaptcha, eventLockedOut, eventRecovered, eventRedisDown, eventRedisUp} {
		p.sample("brokertoken_alerts_total", float64(m.alerts[ev]), "event", ev)
	}
	p.header("brokertoken_alert_errors_total", "counter", "Alerts that could not be delivered to the webhook.")
	p.sample("brokertoken_alert_errors_total", float64(m.alertErrors))
	m.mu.Unlock()

	p.header("brokertoken_token_expiry_seconds", "gauge", "Seconds until the user's newest known token expires (negative once expired); absent while no token is known.")
	for _, v := range views {
		if v.tok != nil {
			p.sample("brokertoken_token_expiry_seconds", math.Round(v.tok.Expiry.Sub(now).Seconds()*1000)/1000, "user", v.user)
		}
	}
	p.header("brokertoken_token_valid", "gauge", "1 when the user's newest known token has not expired.")
	for _, v := range views {
		p.sample("brokertoken_token_valid", b2f(v.tok != nil && now.Before(v.tok.Expiry)), "user", v.user)
	}
	p.header("brokertoken_user_failing", "gauge", "1 while the user's refreshes fail (since the last good token).")
	for _, v := range views {
		p.sample("brokertoken_user_failing", b2f(v.failing), "user", v.user)
	}
	p.header("brokertoken_users", "gauge", "Login users in the credentials file.")
	p.sample("brokertoken_users", float64(len(views)))
	p.header("brokertoken_redis_up", "gauge", "1 when Redis answered the last pings.")
	p.sample("brokertoken_redis_up", b2f(redisUp))
	return bw.Flush()
}

// handleMetrics serves /metrics.
func (dm *daemon) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	views := make([]userView, len(dm.users))
	for i, u := range dm.users {
		views[i] = dm.view(u)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	up, _ := dm.redisState()
	_ = dm.metrics.write(w, views, up, time.Now())
}
