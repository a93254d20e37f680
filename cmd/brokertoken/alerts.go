package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Alert events.
const (
	eventFailure   = "failure"    // a user's first failed refresh since its last good token
	eventCaptcha   = "captcha"    // the broker asks for a captcha for a user
	eventLockedOut = "locked_out" // HTTP 429/423: every login paused
	eventRecovered = "recovered"  // a user that failed has a new valid token
	eventRedisDown = "redis_down" // this daemon cannot reach Redis
	eventRedisUp   = "redis_up"   // ...and can again
	// eventForeignWriter: a legacy key holds a token this fleet did not write (legacy.go).
	eventForeignWriter = "foreign_writer"

	eventLoginNeeded    = "login_needed"    // reminder: a browser-login user has no valid token for the day
	eventTokenRejected  = "token_rejected"  // the broker rejected a browser-login user's token before its expiry
	eventTokenUnchecked = "token_unchecked" // such a token was reported bad, but the broker could not be asked

	eventGrantRevoked    = "refresh_token_revoked"  // an OAuth2 provider refused a user's refresh token (invalid_grant)
	eventGrantLost       = "refresh_token_lost"     // Redis lost an OAuth2 user's refresh token (data loss, eviction)
	eventInvalidClient   = "invalid_client"         // an OAuth2 provider refused the app key/secret (invalid_client)
	eventRefreshExpiring = "refresh_token_expiring" // an OAuth2 user's refresh token expires within a lead time
)

// Fleet agreement: how long the keys that make one alert per event live.
const (
	incidentTTL = 24 * time.Hour // a failing user is reported again after a day
	blockTTL    = time.Hour      // Tradovate's cool-down after a captcha or lockout
)

// alertEvent is one thing worth telling a human.
type alertEvent struct {
	Event    string
	User     string
	Accounts []string
	Kind     string    // failureKind of the error
	Error    string    // scrubbed, one line
	Version  int64     // the user's newest token version known here
	Expiry   time.Time // its expiry
	Until    time.Time // end of the cool-down (captcha, lockout), when known
	AllUsers bool      // the cool-down pauses every login
	Keys     []string  // the Redis keys concerned (foreign_writer)
	Time     time.Time

	Broker   string // a browser-login user's broker ("Kite"), for its texts
	URL      string // the login page, for login_needed and token_rejected
	Day      string // the reminder's day (IST date), for login_needed
	Reminder string // the reminder's time and days, for login_needed

	Since         time.Time     // when oauthbroker raised the alert, for refresh_token_revoked, _lost, invalid_client
	RefreshExpiry time.Time     // when the refresh token expires, for refresh_token_expiring
	Lead          time.Duration // the lead time that fell due, for refresh_token_expiring

	// ack, when set, acknowledges the alert at its source (oauthbroker's Broker.Ack):
	// called once the alert is delivered (or, without a webhook, logged), never when
	// it was dropped or failed, so that the source returns it again.
	ack func(context.Context)
	// unsent, when set, is told that the alert was dropped or its delivery failed
	// (the source returns it after its lease, and it may be queued again).
	unsent func()
}

// dropped tells ev's source, if it listens, that ev was not delivered.
func (ev alertEvent) dropped() {
	if ev.unsent != nil {
		ev.unsent()
	}
}

// alerter delivers alerts to the webhook, one at a time, in the background.
//
// Every daemon sharing a Redis sees the same failures, and exactly one of them sends
// each alert. They agree through keys in Redis:
//
//   - failure: SET {prefix}:{user}:alert NX EX 24h opens the user's incident; the daemon
//     whose SET succeeds sends the alert.
//   - captcha: SET {prefix}:{user}:alert-captcha NX (for the cool-down) does the same,
//     and opens the incident.
//   - lockout: SET {prefix}:alert:lockout NX (for the cool-down): one alert for the
//     fleet, since a lockout pauses every login; it opens the incident of the user
//     that met it.
//   - login_needed (the daily reminder of a browser-login user): SET
//     {prefix}:{user}:alert-login:<day> NX, for two days; it opens the incident too, so
//     the login is reported as a recovery.
//   - token_rejected (a browser-login user's token refused before its expiry): SET
//     {prefix}:{user}:alert-rejected:<version> NX, for two days, and the incident.
//   - token_unchecked (such a token reported bad, the broker not reachable to check
//     it): SET {prefix}:{user}:alert-unchecked:<version> NX, for two days, and the
//     incident.
//   - the OAuth2 alerts (refresh_token_revoked, refresh_token_lost, invalid_client,
//     refresh_token_expiring): oauthbroker's Broker.Alerts reserves each for one daemon
//     of the fleet, and the daemon acknowledges it (Broker.Ack) once it was delivered,
//     so nothing more is agreed on here (a second key would turn a failed delivery into
//     no alert at all). All but refresh_token_expiring open the user's incident, so the
//     token that ends them is reported as a recovery.
//   - recovery: DEL {prefix}:{user}:alert; only the daemon whose DEL removed the key
//     sends it, so a recovery is reported once, and only after a failure was.
//
// When Redis cannot be reached the daemons cannot agree: each sends the alert itself,
// rather than none of them. redis_down and redis_up are always sent by each daemon.
type alerter struct {
	url, format string
	rdb         redis.UniversalClient
	prefix      string
	cfg         *config
	host        string
	client      *http.Client
	log         *slog.Logger
	scrub       *scrubber
	metrics     *metrics
	queue       chan alertEvent

	mu       sync.Mutex      // guards unagreed
	unagreed map[string]bool // users whose failure alert was sent without agreement
}

func newAlerter(cfg *config, rdb redis.UniversalClient, log *slog.Logger, s *scrubber, m *metrics) *alerter {
	host, _ := os.Hostname()
	return &alerter{
		url: cfg.alertWebhook, format: cfg.alertFormat, rdb: rdb, prefix: cfg.prefix, cfg: cfg, host: host,
		client: &http.Client{Timeout: 10 * time.Second}, log: log, scrub: s, metrics: m,
		queue: make(chan alertEvent, 256), unagreed: map[string]bool{},
	}
}

// describe says where alerts go, without the webhook's secret path.
func (a *alerter) describe() string {
	if a.url == "" {
		return "log only"
	}
	u, err := url.Parse(a.url)
	if err != nil {
		return a.format
	}
	return a.format + " webhook at " + u.Scheme + "://" + u.Host
}

// enqueue hands ev to the sender without blocking (but for ev.ack without a webhook:
// one bounded Redis call). Without a webhook, alerts are only the log lines the daemon
// writes anyway, and are acknowledged as delivered.
func (a *alerter) enqueue(ev alertEvent) {
	if a.url == "" {
		if ev.ack != nil {
			ev.ack(context.Background())
		}
		return
	}
	select {
	case a.queue <- ev:
	default:
		a.log.Error("brokertoken: alert queue full; alert dropped", "event", ev.Event, "user", ev.User)
		ev.dropped()
	}
}

// run sends queued alerts until ctx is done; alerts still queued then are dropped.
func (a *alerter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-a.queue:
			a.handle(ctx, ev)
		}
	}
}

func (a *alerter) handle(ctx context.Context, ev alertEvent) {
	if (ev.Event == eventCaptcha || ev.Event == eventLockedOut) && ev.Until.IsZero() {
		// The broker's first captcha or lockout answer does not say until when; the
		// cool-down tradovate recorded does.
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if cd, err := readCooldown(rctx, a.rdb, a.cfg, ev.User); err == nil && cd != nil {
			ev.Until = cd.Until
		}
		cancel()
	}
	send, err := a.claim(ctx, ev)
	if ctx.Err() != nil {
		ev.dropped()
		return
	}
	if err != nil {
		a.log.Warn("brokertoken: cannot agree on alerts through redis; sending this one anyway",
			"event", ev.Event, "user", ev.User, "err", a.scrub.scrub(oneLine(err.Error())))
		send = true
		if ev.Event == eventFailure || ev.Event == eventCaptcha || ev.Event == eventLockedOut ||
			ev.Event == eventLoginNeeded || ev.Event == eventTokenRejected || ev.Event == eventTokenUnchecked ||
			ev.Event == eventGrantRevoked || ev.Event == eventGrantLost || ev.Event == eventInvalidClient {
			a.mu.Lock()
			a.unagreed[ev.User] = true
			a.mu.Unlock()
		}
	}
	if !send {
		if ev.Event != eventRecovered {
			a.log.Debug("brokertoken: alert already sent by another daemon", "event", ev.Event, "user", ev.User)
		}
		if ev.ack != nil {
			ev.ack(ctx)
		}
		return
	}
	if err := a.post(ctx, ev); err != nil {
		ev.dropped()
		if ctx.Err() != nil {
			return
		}
		a.metrics.alertFailed()
		a.log.Error("brokertoken: alert not delivered", "event", ev.Event, "user", ev.User, "err", a.scrub.scrub(oneLine(err.Error())))
		return
	}
	a.metrics.alertSent(ev.Event)
	a.log.Info("brokertoken: alert sent", "event", ev.Event, "user", ev.User)
	if ev.ack != nil {
		ev.ack(ctx)
	}
}

func (a *alerter) incidentKey(user string) string { return a.prefix + ":{" + user + "}:alert" }
func (a *alerter) captchaKey(user string) string  { return a.prefix + ":{" + user + "}:alert-captcha" }
func (a *alerter) lockoutKey() string             { return a.prefix + ":alert:lockout" }
func (a *alerter) foreignKey(user string) string  { return a.prefix + ":{" + user + "}:alert-foreign" }
func (a *alerter) loginKey(user, day string) string {
	return a.prefix + ":{" + user + "}:alert-login:" + day
}
func (a *alerter) rejectedKey(user string, version int64) string {
	return a.prefix + ":{" + user + "}:alert-rejected:" + strconv.FormatInt(version, 10)
}
func (a *alerter) uncheckedKey(user string, version int64) string {
	return a.prefix + ":{" + user + "}:alert-unchecked:" + strconv.FormatInt(version, 10)
}

// humanAlertTTL is how long the keys of the daily reminder and of a rejected token
// live: past the day they are about.
const humanAlertTTL = 48 * time.Hour

// claim reports whether this daemon is the one to send ev (see alerter).
func (a *alerter) claim(ctx context.Context, ev alertEvent) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	record, _ := json.Marshal(map[string]any{"event": ev.Event, "kind": ev.Kind, "host": a.host,
		"version": ev.Version, "time": ev.Time.UTC().Format(time.RFC3339)})
	blockFor := blockTTL
	if d := time.Until(ev.Until); !ev.Until.IsZero() && d > time.Second {
		blockFor = d
	}
	switch ev.Event {
	case eventFailure:
		return a.rdb.SetNX(ctx, a.incidentKey(ev.User), record, incidentTTL).Result()
	case eventCaptcha, eventLockedOut:
		key := a.captchaKey(ev.User)
		if ev.Event == eventLockedOut {
			key = a.lockoutKey()
		}
		won, err := a.rdb.SetNX(ctx, key, record, blockFor).Result()
		if err != nil {
			return false, err
		}
		// The same episode must not also be reported as a plain failure, and its end
		// must be reported as a recovery.
		if err := a.rdb.SetNX(ctx, a.incidentKey(ev.User), record, incidentTTL).Err(); err != nil {
			return false, err
		}
		return won, nil
	case eventForeignWriter:
		// Once a day per user for the fleet: the other writer runs until a human stops it.
		return a.rdb.SetNX(ctx, a.foreignKey(ev.User), record, incidentTTL).Result()
	case eventGrantRevoked, eventGrantLost, eventInvalidClient:
		// oauthbroker chose this daemon to send it (see alerter); the token that ends it
		// is a recovery.
		if err := a.rdb.SetNX(ctx, a.incidentKey(ev.User), record, incidentTTL).Err(); err != nil {
			return false, err
		}
		return true, nil
	case eventLoginNeeded, eventTokenRejected, eventTokenUnchecked:
		key := a.loginKey(ev.User, ev.Day)
		switch ev.Event {
		case eventTokenRejected:
			key = a.rejectedKey(ev.User, ev.Version)
		case eventTokenUnchecked:
			key = a.uncheckedKey(ev.User, ev.Version)
		}
		won, err := a.rdb.SetNX(ctx, key, record, humanAlertTTL).Result()
		if err != nil {
			return false, err
		}
		// The login that ends it is reported as a recovery.
		if err := a.rdb.SetNX(ctx, a.incidentKey(ev.User), record, incidentTTL).Err(); err != nil {
			return false, err
		}
		return won, nil
	case eventRecovered:
		n, err := a.rdb.Del(ctx, a.incidentKey(ev.User)).Result()
		if err != nil {
			return false, err
		}
		_ = a.rdb.Del(ctx, a.captchaKey(ev.User)).Err()
		a.mu.Lock()
		own := a.unagreed[ev.User]
		delete(a.unagreed, ev.User)
		a.mu.Unlock()
		return n == 1 || own, nil
	}
	return true, nil // redis_down, redis_up: no agreement possible
}

// post delivers ev, trying up to three times on network errors, HTTP 429 and 5xx.
func (a *alerter) post(ctx context.Context, ev alertEvent) error {
	body, err := a.render(ev)
	if err != nil {
		return err
	}
	var last error
	for attempt := range 3 {
		if attempt > 0 {
			wait := time.Duration(attempt) * time.Second
			if ra, ok := last.(retryAfter); ok && ra.d > 0 {
				wait = min(ra.d, 10*time.Second)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
		last = a.postOnce(ctx, body)
		if last == nil {
			return nil
		}
		var perm permanentError
		if errors.As(last, &perm) {
			return last
		}
	}
	return last
}

type permanentError struct{ error }

type retryAfter struct {
	error
	d time.Duration
}

func (a *alerter) postOnce(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, bytes.NewReader(body))
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "brokertoken")
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		secs, _ := strconv.ParseFloat(resp.Header.Get("Retry-After"), 64)
		return retryAfter{fmt.Errorf("webhook answered HTTP %d", resp.StatusCode), time.Duration(secs * float64(time.Second))}
	}
	return permanentError{fmt.Errorf("webhook answered HTTP %d", resp.StatusCode)}
}

// isDiscordWebhook reports whether raw is a Discord webhook URL (discord.com,
// discordapp.com or a subdomain such as ptb.discord.com).
func isDiscordWebhook(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	h := strings.ToLower(u.Hostname())
	for _, d := range []string{"discord.com", "discordapp.com"} {
		if h == d || strings.HasSuffix(h, "."+d) {
			return true
		}
	}
	return false
}

// alertText is an alert's title, description and severity.
func (a *alerter) alertText(ev alertEvent) (title, text, severity string) {
	left := ""
	if !ev.Expiry.IsZero() {
		if d := time.Until(ev.Expiry); d > 0 {
			left = fmt.Sprintf(" Its current token (version %d) stays valid for %s.", ev.Version, d.Round(time.Second))
		} else {
			left = fmt.Sprintf(" Its last token (version %d) has expired: consumers have no valid token.", ev.Version)
		}
	} else if ev.User != "" {
		left = " No valid token is stored: consumers have none."
	}
	why := "" // the source's words, for the OAuth2 grant alerts
	if ev.Error != "" {
		why = " (" + ev.Error + ")"
	}
	until := ""
	if !ev.Until.IsZero() {
		until = " until " + ev.Until.UTC().Format(time.RFC3339)
	}
	switch ev.Event {
	case eventFailure:
		if ev.Kind == "unknown_login_answer" {
			return "Tradovate login answer not understood: " + ev.User,
				fmt.Sprintf("Tradovate accepted a login of %s but this version of brokertoken cannot read its answer (%s). The login opened a session, so no process sends it again%s: update brokertoken, then run `brokertoken clear-cooldown %s`.%s",
					ev.User, ev.Error, until, ev.User, left),
				"critical"
		}
		return "Token refresh failing: " + ev.User,
			fmt.Sprintf("Refreshing the token of %s failed (%s): %s.%s Retries continue with backoff; no further alert until it recovers.", ev.User, ev.Kind, ev.Error, left),
			"error"
	case eventCaptcha:
		return "Captcha required: " + ev.User,
			fmt.Sprintf("Tradovate asks for a captcha for %s. No process logs it in%s; log in once by hand in Tradovate's web app to clear it.%s Error: %s", ev.User, until, left, ev.Error),
			"critical"
	case eventLockedOut:
		return "Tradovate login lockout",
			fmt.Sprintf("Tradovate locked logins out (HTTP 429/423; met for %s). Logins of every user are paused%s; renewals continue.%s Error: %s", ev.User, until, left, ev.Error),
			"critical"
	case eventRecovered:
		valid := ""
		if !ev.Expiry.IsZero() {
			valid = fmt.Sprintf(" (version %d, valid for %s)", ev.Version, time.Until(ev.Expiry).Round(time.Second))
		}
		return "Token refresh recovered: " + ev.User,
			fmt.Sprintf("%s has a new valid token%s.", ev.User, valid), "info"
	case eventLoginNeeded:
		return ev.Broker + " login needed: " + ev.User,
			fmt.Sprintf("%s has no valid %s token for today (reminder %s). Services using it have none until someone logs in: %s.",
				ev.User, ev.Broker, ev.Reminder, loginHint(ev)), "error"
	case eventTokenRejected:
		renew := ""
		if ev.Error != "" {
			renew = " Renewing with the refresh token failed: " + ev.Error + "."
		}
		return ev.Broker + " token rejected: " + ev.User,
			fmt.Sprintf("%s rejected the token of %s (version %d) before its expiry: a service met a 403 and the daemon's check confirmed it (a login elsewhere or a logout ends the session).%s Services have no valid token until someone logs in: %s.",
				ev.Broker, ev.User, ev.Version, renew, loginHint(ev)), "error"
	case eventTokenUnchecked:
		return ev.Broker + " token reported refused, not confirmed: " + ev.User,
			fmt.Sprintf("A service reported that %s refused the token of %s (version %d), but the daemon could not ask %s whether it still accepts it (%s), and cannot renew it without a human. The token stays in Redis and is checked again while services report it. If services keep failing, log in: %s.",
				ev.Broker, ev.User, ev.Version, ev.Broker, ev.Error, loginHint(ev)), "warning"
	case eventGrantRevoked:
		return ev.Broker + " refresh token refused: " + ev.User,
			fmt.Sprintf("%s refused the refresh token of %s%s at %s. No process refreshes it any more (no retries).%s A human must authorize the app again: %s.",
				ev.Broker, ev.User, why, ev.Since.UTC().Format(time.RFC3339), left, authorizeHint(ev)), "critical"
	case eventGrantLost:
		return ev.Broker + " refresh token lost: " + ev.User,
			fmt.Sprintf("Redis no longer holds the %s refresh token of %s%s, noticed at %s: it lost its data or evicted the key (run it with persistence and maxmemory-policy noeviction). No process refreshes the user any more.%s A human must authorize the app again: %s.",
				ev.Broker, ev.User, why, ev.Since.UTC().Format(time.RFC3339), left, authorizeHint(ev)), "critical"
	case eventInvalidClient:
		file := "the credentials file"
		if a.cfg != nil && a.cfg.credentials != "" {
			file += " (" + a.cfg.credentials + ")"
		}
		return ev.Broker + " app key/secret refused: " + ev.User,
			fmt.Sprintf("%s refuses the app key or secret of %s (invalid_client)%s since %s: fix app_key and app_secret of the entry in %s and restart the daemons. No refresh succeeds until then; the refresh token is kept and no new authorization is needed.%s",
				ev.Broker, ev.User, why, ev.Since.UTC().Format(time.RFC3339), file, left), "critical"
	case eventRefreshExpiring:
		return ev.Broker + " refresh token expiring: " + ev.User,
			fmt.Sprintf("The %s refresh token of %s expires in %s (at %s; alert %s before). After that every service loses the token until a human authorizes the app again: %s.",
				ev.Broker, ev.User, time.Until(ev.RefreshExpiry).Round(time.Minute), ev.RefreshExpiry.UTC().Format(time.RFC3339), ev.Lead, authorizeHint(ev)), "warning"
	case eventRedisDown:
		return "Redis unreachable",
			fmt.Sprintf("brokertoken on %s cannot reach Redis: %s. Consumers cannot read tokens and no token is refreshed until it is back.", a.host, ev.Error),
			"critical"
	case eventRedisUp:
		return "Redis reachable again", fmt.Sprintf("brokertoken on %s reaches Redis again.", a.host), "info"
	case eventForeignWriter:
		return "Another writer of the legacy keys: " + ev.User, ev.Error, "warning"
	}
	return ev.Event, ev.Error, "error"
}

// loginHint says where a human logs in to ev.Broker: the login page, or (a daemon
// that serves none) the page of another daemon.
func loginHint(ev alertEvent) string {
	if ev.URL == "" {
		return fmt.Sprintf("open the login page of a daemon that serves one (this daemon serves none: see --listen and --login-listen) and press \"Log in with %s\"", ev.Broker)
	}
	return fmt.Sprintf("open %s and press \"Log in with %s\"", ev.URL, ev.Broker)
}

// authorizeHint says where a human authorizes an OAuth2 app again: the login page, or
// (a daemon that serves none) another daemon's page or the authorize command.
func authorizeHint(ev alertEvent) string {
	if ev.URL == "" {
		return fmt.Sprintf("open the login page of a daemon that serves one and press \"Log in with %s\", or run `brokertoken authorize %s --paste`", ev.Broker, ev.User)
	}
	return fmt.Sprintf("open %s and press \"Log in with %s\" (or run `brokertoken authorize %s --paste`)", ev.URL, ev.Broker, ev.User)
}

// render returns ev's webhook body: a Discord embed (red for failures, orange for
// warnings, green for recoveries) or a plain JSON object.
func (a *alerter) render(ev alertEvent) ([]byte, error) {
	title, text, severity := a.alertText(ev)
	title, text = a.scrub.scrub(title), a.scrub.scrub(text)
	at := ev.Time.UTC().Format(time.RFC3339)
	if a.format == "discord" {
		color := 0xE74C3C // red
		switch severity {
		case "critical":
			color = 0x992D22 // dark red
		case "warning":
			color = 0xE67E22 // orange
		case "info":
			color = 0x2ECC71 // green
		}
		type field struct {
			Name   string `json:"name"`
			Value  string `json:"value"`
			Inline bool   `json:"inline,omitempty"`
		}
		var fields []field
		if ev.User != "" {
			fields = append(fields, field{"User", ev.User, true})
		}
		if ev.Kind != "" {
			fields = append(fields, field{"Kind", ev.Kind, true})
		}
		if len(ev.Accounts) > 0 {
			fields = append(fields, field{"Accounts", truncate(strings.Join(ev.Accounts, ", "), 1024), false})
		}
		if len(ev.Keys) > 0 {
			fields = append(fields, field{"Keys", truncate(strings.Join(ev.Keys, ", "), 1024), false})
		}
		if ev.URL != "" {
			fields = append(fields, field{"Log in", truncate(ev.URL, 1024), false})
		}
		return json.Marshal(map[string]any{
			"username": "brokertoken",
			"embeds": []map[string]any{{
				"title":       truncate(title, 256),
				"description": truncate(text, 4096),
				"color":       color,
				"fields":      fields,
				"timestamp":   at,
				"footer":      map[string]string{"text": "brokertoken on " + a.host},
			}},
		})
	}
	plain := map[string]any{
		"source": "brokertoken", "event": ev.Event, "severity": severity, "title": title,
		"message": text, "host": a.host, "time": at,
	}
	if ev.User != "" {
		plain["user"] = ev.User
	}
	if len(ev.Accounts) > 0 {
		plain["accounts"] = ev.Accounts
	}
	if len(ev.Keys) > 0 {
		plain["keys"] = ev.Keys
	}
	if ev.Kind != "" {
		plain["kind"] = ev.Kind
	}
	if ev.Error != "" {
		plain["error"] = a.scrub.scrub(ev.Error)
	}
	if ev.Version != 0 {
		plain["version"] = ev.Version
	}
	if !ev.Expiry.IsZero() {
		plain["expires_at"] = ev.Expiry.UTC().Format(time.RFC3339)
	}
	if !ev.Until.IsZero() {
		plain["until"] = ev.Until.UTC().Format(time.RFC3339)
	}
	if ev.URL != "" {
		plain["url"] = ev.URL
	}
	if ev.Broker != "" {
		plain["broker"] = ev.Broker
	}
	if !ev.Since.IsZero() {
		plain["since"] = ev.Since.UTC().Format(time.RFC3339)
	}
	if !ev.RefreshExpiry.IsZero() {
		plain["refresh_token_expires_at"] = ev.RefreshExpiry.UTC().Format(time.RFC3339)
	}
	if ev.Lead != 0 {
		plain["lead"] = ev.Lead.String()
	}
	return json.Marshal(plain)
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
