package tradovate

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Credential is one Tradovate login. Its JSON form is an entry of credentials.json:
// the original {"username","password"} plus optional fields.
//
// Formatting a Credential with fmt (any verb) or logging it with log/slog never shows
// Password or Sec.
type Credential struct {
	// Username is the login name, e.g. "APEX_272045". Required.
	Username string `json:"username"`
	// Password is the login password. Required.
	Password string `json:"password"`
	// Method is how this user logs in; empty means Options.Method's rule.
	Method Method `json:"method,omitempty"`
	// AppID, AppVersion, CID and Sec are the API key fields of the official login; empty
	// fields fall back to Options.
	AppID      string `json:"appId,omitempty"`
	AppVersion string `json:"appVersion,omitempty"`
	CID        CID    `json:"cid,omitempty"`
	Sec        string `json:"sec,omitempty"`
	// DeviceID overrides the derived deviceId for this user (at most 64 characters).
	DeviceID string `json:"deviceId,omitempty"`
	// Accounts lists the trading sub-accounts that share this login's token, e.g.
	// "PAAPEX2720450000001". See [NewAccountMap].
	Accounts []string `json:"accounts,omitempty"`
}

// CredentialSource finds the credential of a login user. Implementations must be safe
// for concurrent use and return an error wrapping [ErrUnknownUser] for a user they do
// not know. [*Credentials] is the usual one.
type CredentialSource interface {
	Credential(ctx context.Context, user string) (Credential, error)
}

// String shows the credential without its secrets.
func (c Credential) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Credential{Username:%q Password:%s", c.Username, redacted(c.Password))
	if c.Method != "" {
		fmt.Fprintf(&b, " Method:%s", c.Method)
	}
	if c.AppID != "" {
		fmt.Fprintf(&b, " AppID:%q", c.AppID)
	}
	if c.AppVersion != "" {
		fmt.Fprintf(&b, " AppVersion:%q", c.AppVersion)
	}
	if c.CID != "" {
		fmt.Fprintf(&b, " CID:%s", string(c.CID))
	}
	if c.Sec != "" {
		fmt.Fprintf(&b, " Sec:%s", redacted(c.Sec))
	}
	if c.DeviceID != "" {
		fmt.Fprintf(&b, " DeviceID:%q", c.DeviceID)
	}
	if len(c.Accounts) > 0 {
		fmt.Fprintf(&b, " Accounts:%q", c.Accounts)
	}
	return b.String() + "}"
}

// GoString is String, so %#v hides the secrets too.
func (c Credential) GoString() string { return c.String() }

// Format makes every fmt verb print String.
func (c Credential) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", c.String())
		return
	}
	_, _ = f.Write([]byte(c.String()))
}

// LogValue makes log/slog record the credential without its secrets.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("username", c.Username),
		slog.String("password", redacted(c.Password)),
		slog.String("method", string(c.Method)),
	)
}

// redacted says whether a secret is set, never any of its characters.
func redacted(secret string) string {
	if secret == "" {
		return `""`
	}
	return "[REDACTED]"
}

// method returns the login method for c under opts.
func (c Credential) method(opts *Options) Method {
	switch {
	case c.Method != "":
		return c.Method
	case opts.Method != "":
		return opts.Method
	case c.Sec != "" || opts.Sec != "":
		return MethodOfficial
	}
	return MethodTradingView
}

// validate checks one entry; the error names the problem, never a secret.
func (c Credential) validate() error {
	switch {
	case strings.TrimSpace(c.Username) == "":
		return fmt.Errorf("username is empty")
	case tokencache.CheckName(c.Username) != nil:
		return fmt.Errorf("username: %w", tokencache.CheckName(c.Username))
	case c.Password == "":
		return fmt.Errorf("password of %q is empty", c.Username)
	case !c.Method.valid():
		return fmt.Errorf("method %q of %q is not %q or %q", string(c.Method), c.Username, MethodOfficial, MethodTradingView)
	case len(c.DeviceID) > maxDeviceIDLen:
		return fmt.Errorf("deviceId of %q is %d characters, more than %d", c.Username, len(c.DeviceID), maxDeviceIDLen)
	}
	for i, a := range c.Accounts {
		if strings.TrimSpace(a) == "" {
			return fmt.Errorf("account %d of %q is empty", i, c.Username)
		}
		if err := tokencache.CheckName(a); err != nil {
			return fmt.Errorf("account %d of %q: %w", i, c.Username, err)
		}
	}
	return nil
}
