package tradovate

import (
	"fmt"
	"log/slog"
	"strings"
)

// String lists the users, never a password or secret.
func (c Credentials) String() string {
	users := make([]string, len(c.list))
	for i, cr := range c.list {
		users[i] = cr.Username
	}
	return fmt.Sprintf("Credentials{Users:%q Warnings:%d}", users, len(c.Warnings))
}

// GoString is String, so %#v hides the secrets too.
func (c Credentials) GoString() string { return c.String() }

// Format makes every fmt verb print String.
func (c Credentials) Format(f fmt.State, verb rune) { formatSafe(f, verb, c.String()) }

// LogValue makes log/slog record String.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// String shows the options that are not secret: where requests go and how.
func (o Options) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Options{Environment:%s RESTURL:%q TradingViewURL:%q Method:%s", o.Environment, o.RESTURL, o.TradingViewURL, o.Method)
	if o.AppID != "" {
		fmt.Fprintf(&b, " AppID:%q", o.AppID)
	}
	if o.Sec != "" {
		fmt.Fprintf(&b, " Sec:%s", redacted(o.Sec))
	}
	if o.Credentials != nil {
		fmt.Fprintf(&b, " Credentials:%T", o.Credentials)
	}
	return b.String() + "}"
}

// GoString is String, so %#v hides the secrets too.
func (o Options) GoString() string { return o.String() }

// Format makes every fmt verb print String.
func (o Options) Format(f fmt.State, verb rune) { formatSafe(f, verb, o.String()) }

// LogValue makes log/slog record String.
func (o Options) LogValue() slog.Value { return slog.StringValue(o.String()) }

// String describes the Authenticator by its options, never a secret.
func (a *Authenticator) String() string {
	return "tradovate.Authenticator" + strings.TrimPrefix(a.opts.String(), "Options")
}

// GoString is String, so %#v hides the secrets too.
func (a *Authenticator) GoString() string { return a.String() }

// Format makes every fmt verb print String.
func (a *Authenticator) Format(f fmt.State, verb rune) { formatSafe(f, verb, a.String()) }

// LogValue makes log/slog record String.
func (a *Authenticator) LogValue() slog.Value { return slog.StringValue(a.String()) }

// formatSafe writes s for any verb (%q quotes it), so no verb reaches a secret field.
func formatSafe(f fmt.State, verb rune, s string) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s)
		return
	}
	_, _ = f.Write([]byte(s))
}
