package oauthbroker

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// ExpiryAlert says that the user's refresh token expires within Lead: a human must
// authorize the app again before Expiry, at URL, or every service loses the token.
type ExpiryAlert struct {
	User     string
	Provider string
	// Lead is the alert lead time that fell due ([Options.AlertLeads]).
	Lead time.Duration
	// Expiry is when the refresh token expires.
	Expiry time.Time
	// URL is where to authorize ([Options.StartURL], or a freshly minted URL).
	URL string
}

// String is the alert as one line.
func (a ExpiryAlert) String() string {
	return fmt.Sprintf("the %s refresh token of %s expires in %s (at %s, alert %s before): authorize again at %s",
		a.Provider, a.User, time.Until(a.Expiry).Round(time.Minute), a.Expiry.UTC().Format(time.RFC3339), a.Lead, a.URL)
}

// ExpiryAlerts returns the expiry alert that fell due for the user and that no other
// process has reported: call it periodically (the daemon does, every minute or so) and
// send what it returns. Each lead time of [Options.AlertLeads] (default 24 h and 2 h)
// falls due once per refresh-token expiry: the first caller at or after Expiry - lead
// claims it in Redis (SET NX on "<Prefix>:{<User>}:oauth:alert:<expiry ms>:<lead s>",
// kept until a day after the expiry), so across every process sharing the Redis it is
// returned once. When several lead times are due at once (a daemon started late), only
// the most urgent is returned and the others are claimed silently. Nothing is due for a
// grant whose expiry is unknown, that is revoked or missing, or that expired already
// (the next refresh then fails with a [*LoginRequiredError], alerted once through
// [Hooks.Revoked]). A new expiry (a new authorization, or a provider whose refreshes
// extend it) gets its own alerts.
func (b *Broker) ExpiryAlerts(ctx context.Context) ([]ExpiryAlert, error) {
	st, err := b.Status(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if st.State != StateActive || st.RefreshExpiry.IsZero() || !now.Before(st.RefreshExpiry) {
		return nil, nil
	}
	left := st.RefreshExpiry.Sub(now)
	var due []time.Duration // ascending: the most urgent first
	for _, lead := range b.opts.AlertLeads {
		if left <= lead {
			due = append(due, lead)
		}
	}
	if len(due) == 0 {
		return nil, nil
	}
	exp := st.RefreshExpiry.UnixMilli()
	ttl := left + 24*time.Hour
	won := false
	for i, lead := range due {
		ok, err := b.opts.Redis.SetNX(ctx, b.alertKey(exp, strconv.FormatInt(int64(lead/time.Second), 10)), now.UnixMilli(), ttl).Result()
		if err != nil {
			return nil, redisErr("claim an expiry alert", err)
		}
		if i == 0 {
			won = ok
		}
	}
	if !won {
		return nil, nil
	}
	a := ExpiryAlert{User: b.opts.User, Provider: b.opts.Provider.Name, Lead: due[0], Expiry: st.RefreshExpiry}
	a.URL, _ = b.loginLink(ctx)
	b.opts.Logger.Warn("oauthbroker: refresh token expiring", "user", b.opts.User, "lead", a.Lead, "expiry", a.Expiry, "url", a.URL)
	return []ExpiryAlert{a}, nil
}
