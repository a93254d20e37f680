package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// cmdToken prints the bare access token (or with md the market-data token) of account.
// It reads the cache like any consumer: from Redis, refreshing through the fleet's
// single refresh when needed (when a credentials file is available; without one it
// only reads what the daemon stored).
func cmdToken(ctx context.Context, cfg *config, log *slog.Logger, s *scrubber, args []string, md bool, stdout io.Writer) error {
	if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
		return usagef("token: want one ACCOUNT: brokertoken token ACCOUNT [--md]")
	}
	account := args[0]
	d, err := setup(ctx, cfg, log, s, setupOptions{creds: credsOptional})
	if err != nil {
		return err
	}
	defer d.close()
	if err := d.checkAccount(cfg, account); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	tok, err := d.cache.Token(ctx, account)
	if err != nil {
		if errors.Is(err, tokencache.ErrNoToken) && d.creds == nil {
			return fmt.Errorf("token for %s: no valid token in redis %s (read-only: no credentials file %s; is `brokertoken run` running?)",
				account, cfg.redis.display, cfg.credentials)
		}
		return fmt.Errorf("token for %s: %w", account, err)
	}
	out := tok.AccessToken
	if md {
		if tok.MDAccessToken == "" {
			return fmt.Errorf("token for %s: the stored token has no market-data token (a TradingView-style login gets one at its first renewal)", account)
		}
		out = tok.MDAccessToken
	}
	_, err = fmt.Fprintln(stdout, out)
	return err
}

// checkAccount refuses an account that is neither a login user of the credentials file
// nor one of their sub-accounts (without a credentials file every name is allowed).
func (d *deps) checkAccount(cfg *config, account string) error {
	if d.creds == nil {
		return nil
	}
	user := d.userOf(account)
	for _, u := range d.creds.Users() {
		if u == user {
			return nil
		}
	}
	return usagef("account %q is neither a user in %s nor a sub-account of one", account, cfg.credentials)
}

// cmdInvalidate forces a refresh of account's login user: the stored token is reported
// bad, so it is never served again and one refresh (a new login) replaces it for the
// whole fleet. It waits for the new token and prints its redacted form.
func cmdInvalidate(ctx context.Context, cfg *config, log *slog.Logger, s *scrubber, args []string, stdout io.Writer) error {
	if len(args) != 1 || strings.TrimSpace(args[0]) == "" {
		return usagef("invalidate: want one ACCOUNT: brokertoken invalidate ACCOUNT")
	}
	account := args[0]
	d, err := setup(ctx, cfg, log, s, setupOptions{creds: credsRequired})
	if err != nil {
		return err
	}
	defer d.close()
	if err := d.checkAccount(cfg, account); err != nil {
		return err
	}
	user := d.userOf(account)
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	before, err := d.cache.Status(ctx, user)
	if err != nil {
		return fmt.Errorf("invalidate %s: %w", account, err)
	}
	if before.Token != nil {
		if err := d.cache.Invalidate(ctx, account, before.Token.AccessToken); err != nil {
			return fmt.Errorf("invalidate %s: %w", account, err)
		}
	}
	tok, err := d.cache.Token(ctx, account)
	if err != nil {
		return fmt.Errorf("invalidate %s: no new token: %w", account, err)
	}
	old := "none"
	if before.Token != nil {
		old = fmt.Sprintf("version %d", before.Token.Version)
	}
	_, err = fmt.Fprintf(stdout, "%s: %s replaced by version %d (token %s, expires in %s)\n", user, old, tok.Version,
		tokencache.Redact(tok.AccessToken), time.Until(tok.Expiry).Round(time.Second))
	return err
}

// cooldown is a captcha or lockout pause recorded by the tradovate package.
type cooldown struct {
	Reason   string    `json:"reason"` // "captcha" or "locked-out"
	Until    time.Time `json:"until"`
	AllUsers bool      `json:"all_users"`
	Cause    string    `json:"cause,omitempty"`
}

// readCooldown reads user's cool-down, or the fleet-wide login pause, through the
// tradovate package, from the keys it shares with every process logging in to the
// configured environment.
func readCooldown(ctx context.Context, rdb redis.UniversalClient, cfg *config, user string) (*cooldown, error) {
	cd, err := tradovate.ReadCooldown(ctx, tradovate.Options{Redis: rdb, Environment: cfg.environment,
		RESTURL: cfg.restURL}, user)
	if err != nil || cd == nil {
		return nil, err
	}
	reason := "locked-out"
	if errors.Is(cd.Reason, tradovate.ErrCaptchaRequired) {
		reason = "captcha"
	}
	return &cooldown{Reason: reason, Until: cd.Until.UTC(), AllUsers: cd.AllUsers, Cause: cd.Cause}, nil
}

// userStatus is one row of the status command.
type userStatus struct {
	User       string     `json:"user"`
	Accounts   []string   `json:"accounts"`
	State      string     `json:"state"`       // token state, or "locked out" during a cool-down
	TokenState string     `json:"token_state"` // fresh, stale, expired or missing
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	ExpiresIn  *float64   `json:"expires_in_seconds,omitempty"`
	Version    int64      `json:"version,omitempty"`
	ObtainedAt *time.Time `json:"obtained_at,omitempty"`
	ObtainedBy string     `json:"obtained_by,omitempty"` // login, renew, set or reseed
	Token      string     `json:"token,omitempty"`       // redacted: prefix and length
	Cooldown   *cooldown  `json:"cooldown,omitempty"`
}

// cmdStatus prints a table (or JSON) of the users of the credentials file, or of the
// users named in args, as Redis holds them. It reads only.
func cmdStatus(ctx context.Context, cfg *config, log *slog.Logger, s *scrubber, args []string, asJSON bool, stdout io.Writer) error {
	need := credsRequired
	if len(args) > 0 {
		need = credsOptional
	}
	d, err := setup(ctx, cfg, log, s, setupOptions{creds: need})
	if err != nil {
		return err
	}
	defer d.close()
	users := args
	if len(users) == 0 {
		users = d.users()
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	now := time.Now()
	rows := make([]userStatus, 0, len(users))
	for _, u := range users {
		u = d.userOf(u)
		st, err := d.cache.Status(ctx, u)
		if err != nil {
			return fmt.Errorf("status of %s: %w", u, err)
		}
		cd, err := readCooldown(ctx, d.rdb, cfg, u)
		if err != nil {
			return fmt.Errorf("status of %s: reading cool-down: %w", u, err)
		}
		row := userStatus{User: u, Accounts: d.accountsOf(u), TokenState: string(st.State), State: string(st.State),
			ObtainedBy: st.ObtainedBy, Cooldown: cd}
		if row.Accounts == nil {
			row.Accounts = []string{}
		}
		if cd != nil {
			row.State = "locked out"
		}
		if t := st.Token; t != nil {
			exp, got := t.Expiry.UTC(), t.ObtainedAt.UTC()
			secs := float64(t.Expiry.Sub(now).Round(time.Second) / time.Second)
			row.ExpiresAt, row.ExpiresIn, row.Version, row.Token = &exp, &secs, t.Version, tokencache.Redact(t.AccessToken)
			if !t.ObtainedAt.IsZero() {
				row.ObtainedAt = &got
			}
		}
		rows = append(rows, row)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"users": rows})
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tACCOUNTS\tSTATE\tEXPIRES IN\tVERSION\tLAST REFRESH\tBY\tTOKEN\tNOTE")
	for _, r := range rows {
		expires, version, last, by, token := "-", "-", "-", "-", "-"
		if r.ExpiresAt != nil {
			d := r.ExpiresAt.Sub(now)
			expires = shortDuration(d)
			if d <= 0 {
				expires = "expired " + shortDuration(-d) + " ago"
			}
			version = fmt.Sprint(r.Version)
			token = r.Token
		}
		if r.ObtainedAt != nil {
			last = r.ObtainedAt.Local().Format("2006-01-02 15:04:05") + " (" + shortDuration(now.Sub(*r.ObtainedAt)) + " ago)"
		}
		if r.ObtainedBy != "" {
			by = r.ObtainedBy
		}
		note := ""
		if r.Cooldown != nil {
			note = strings.ReplaceAll(r.Cooldown.Reason, "-", " ")
			if r.Cooldown.AllUsers {
				note = "all logins paused (" + note + ")"
			}
			if !r.Cooldown.Until.IsZero() {
				note += " until " + r.Cooldown.Until.Local().Format("15:04:05")
			}
			note += "; token " + r.TokenState
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.User, accountsCell(r.Accounts), r.State, expires,
			version, last, by, token, note)
	}
	return tw.Flush()
}

// accountsCell shows the first account and how many more there are.
func accountsCell(accounts []string) string {
	switch len(accounts) {
	case 0:
		return "-"
	case 1:
		return accounts[0]
	}
	return fmt.Sprintf("%s (+%d)", accounts[0], len(accounts)-1)
}

// shortDuration rounds d for a human: 45s, 12m30s, 1h20m, 3d4h.
func shortDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", d/time.Minute, d%time.Minute/time.Second)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
}
