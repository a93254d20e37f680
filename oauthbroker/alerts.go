package oauthbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// AlertKind says what an [Alert] is about.
type AlertKind string

// The kinds of alerts.
const (
	// AlertRevoked: the provider refused the refresh token; a human must authorize the
	// app again.
	AlertRevoked AlertKind = "revoked"
	// AlertLost: Redis lost the refresh token (data loss or eviction); a human must
	// authorize the app again.
	AlertLost AlertKind = "lost"
	// AlertInvalidClient: the provider refused the app's credentials (invalid_client);
	// an operator must fix the client ID or secret. The refresh token is still good.
	AlertInvalidClient AlertKind = "invalid_client"
	// AlertExpiring: the refresh token expires within Lead; a human must authorize the
	// app again before Expiry.
	AlertExpiring AlertKind = "expiring"
)

// fieldKinds maps the kind part of an alert's field in Redis to its kind.
var fieldKinds = map[string]AlertKind{"revoked": AlertRevoked, "lost": AlertLost, "client": AlertInvalidClient, "expiring": AlertExpiring}

// Alert is something a human must act on, returned by [Broker.Alerts] until
// acknowledged with [Broker.Ack]. It holds no secret; URL is a login URL (see
// [Options.StartURL]).
type Alert struct {
	Kind     AlertKind
	User     string
	Provider string
	// At is when the alert was raised.
	At time.Time
	// Detail says what happened (the provider's refusal, what was lost).
	Detail string
	// Expiry and Lead: when the refresh token expires, and the lead time of
	// [Options.AlertLeads] that fell due (AlertExpiring only).
	Expiry time.Time
	Lead   time.Duration
	// URL is where to authorize the app again ("" when none could be made).
	URL string
	// Deliveries counts the times the alert was returned, this one included: more than
	// 1 means an earlier caller did not acknowledge it in time (it may have sent it).
	Deliveries int

	field, claim string // the alert's field and this delivery's claim, for Ack
}

// String is the alert as one line for a human.
func (a Alert) String() string {
	var what string
	switch a.Kind {
	case AlertRevoked:
		what = fmt.Sprintf("the %s refresh token of %s was refused: authorize the app again", a.Provider, a.User)
	case AlertLost:
		what = fmt.Sprintf("Redis lost the %s refresh token of %s: authorize the app again", a.Provider, a.User)
	case AlertInvalidClient:
		what = fmt.Sprintf("%s refused the app's credentials for %s (invalid_client): check the app key and secret", a.Provider, a.User)
	case AlertExpiring:
		what = fmt.Sprintf("the %s refresh token of %s expires in %s (at %s, alert %s before): authorize the app again",
			a.Provider, a.User, time.Until(a.Expiry).Round(time.Minute), a.Expiry.UTC().Format(time.RFC3339), a.Lead)
	default:
		what = fmt.Sprintf("%s alert for %s", a.Kind, a.User)
	}
	if a.Detail != "" {
		what += " (" + a.Detail + ")"
	}
	if a.URL != "" {
		what += " at " + a.URL
	}
	return what
}

// Alerts returns the user's alerts that are due and that no other caller holds: call
// it periodically (the daemon does, every minute or so), send each, and acknowledge it
// with [Broker.Ack]. Delivery is at least once and deduplicated across every process
// sharing the Redis: each returned alert is reserved for the caller for
// [Options.AlertLease]; one not acknowledged by then is returned again, to whoever
// asks first (with Deliveries counting up), so a process that dies while sending does
// not lose it. An acknowledged alert is never returned again.
//
// The alerts are a refused refresh token ([AlertRevoked], recorded by the refresh that
// was refused), a refresh token Redis lost ([AlertLost]), refused app credentials
// ([AlertInvalidClient]), and the refresh token's expiry ([AlertExpiring]): each lead
// time of [Options.AlertLeads] (default 24 h and 2 h) falls due once per expiry; when
// several are due at once (a daemon started late), only the most urgent is returned.
// Nothing expires for a grant whose expiry is unknown, that is revoked or lost, or that
// expired already (the next refresh then fails and raises AlertRevoked). A new
// authorization drops the alerts of earlier grants.
func (b *Broker) Alerts(ctx context.Context) ([]Alert, error) {
	raw, err := b.opts.Redis.Get(ctx, b.statusKey()).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, redisErr("read the status of "+b.opts.User, err)
	}
	args := []any{"claim", newGrantID(), b.opts.AlertLease.Milliseconds(), "", ""}
	if raw != "" {
		h, st, err := decodeStatus(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.statusKey(), err)
		}
		args[3] = h.grant
		args = append(args, b.expiryAlerts(h, st, time.Now())...)
	}
	res, err := alertsScript.Run(ctx, b.opts.Redis, []string{b.alertsKey()}, args...).StringSlice()
	if err != nil {
		return nil, b.scriptErr("claim alerts", err)
	}
	var out []Alert
	for i := 0; i+1 < len(res); i += 2 {
		a, ok := b.parseAlert(res[i], res[i+1], args[1].(string))
		if !ok {
			b.opts.Logger.Warn("oauthbroker: skipping an unreadable alert", "user", b.opts.User, "field", clean(res[i], 80))
			continue
		}
		out = append(out, a)
	}
	if len(out) > 0 {
		link, _ := b.loginLink(ctx)
		for i := range out {
			if out[i].Kind != AlertInvalidClient { // no login helps there: the app's credentials are wrong
				out[i].URL = link
			}
			b.opts.Logger.Warn("oauthbroker: alert", "user", b.opts.User, "kind", out[i].Kind, "deliveries", out[i].Deliveries)
		}
	}
	return out, nil
}

// expiryAlerts returns the alerts.lua pairs (field, value) of the expiry alerts due
// for grant h at now: the most urgent pending, the others done.
func (b *Broker) expiryAlerts(h header, st *statusBody, now time.Time) []any {
	exp := msTime(st.RefreshExpiryMS)
	if st.State != StateActive || exp.IsZero() || !now.Before(exp) {
		return nil
	}
	var pairs []any
	first := true
	for _, lead := range b.opts.AlertLeads { // ascending: the most urgent first
		if exp.Sub(now) > lead {
			continue
		}
		state := "done"
		if first {
			state, first = "pending", false
		}
		p := alertPayload{Kind: AlertExpiring, AtMS: now.UnixMilli(), ExpiryMS: st.RefreshExpiryMS, LeadMS: lead.Milliseconds()}
		pairs = append(pairs, alertField("expiring", h, strconv.FormatInt(st.RefreshExpiryMS, 10)+":"+strconv.FormatInt(lead.Milliseconds(), 10)),
			state+":0:0::"+p.encode())
	}
	return pairs
}

// parseAlert reads an alert claimed by claim.
func (b *Broker) parseAlert(field, value, claim string) (Alert, bool) {
	kind, ok := fieldKinds[strings.SplitN(field, ":", 2)[0]]
	if !ok {
		return Alert{}, false
	}
	parts := strings.SplitN(value, ":", 5)
	if len(parts) != 5 || parts[0] != "claimed" || parts[3] != claim {
		return Alert{}, false
	}
	n, _ := strconv.Atoi(parts[2])
	var p alertPayload
	if err := decodeStrict([]byte(parts[4]), &p); err != nil || p.Kind != kind {
		return Alert{}, false
	}
	return Alert{Kind: kind, User: b.opts.User, Provider: b.opts.Provider.Name, At: msTime(p.AtMS), Detail: p.Detail,
		Expiry: msTime(p.ExpiryMS), Lead: time.Duration(p.LeadMS) * time.Millisecond, Deliveries: n,
		field: field, claim: claim}, true
}

// Ack acknowledges an alert returned by [Broker.Alerts] once it was delivered: it is
// never returned again. It reports false when the alert's reservation had run out and
// another caller claimed it meanwhile (it may be delivered twice), or it was
// acknowledged already; either way it is acknowledged now.
func (b *Broker) Ack(ctx context.Context, a Alert) (bool, error) {
	if a.field == "" {
		return false, errors.New("oauthbroker: Ack takes an Alert returned by Alerts")
	}
	n, err := alertsScript.Run(ctx, b.opts.Redis, []string{b.alertsKey()}, "ack", a.field, a.claim).Int64()
	if err != nil {
		return false, b.scriptErr("acknowledge an alert", err)
	}
	return n == 1, nil
}
