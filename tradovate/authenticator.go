package tradovate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Authenticator logs Tradovate users in, renews and checks their tokens. It implements
// [tokencache.Authenticator], [tokencache.Renewer] and [tokencache.Checker], so a
// tokencache.Cache given one logs each user in once for the whole fleet, renews instead
// of logging in again, and checks a reported token before replacing it.
//
// Logins pass a fleet-wide budget and respect cool-downs kept in Redis (see [Options]);
// renewals do neither. An Authenticator starts no goroutines and needs no Close. It is
// safe for concurrent use.
type Authenticator struct {
	opts     Options
	budget   *budget
	cooldown *cooldowns
	holds    *holds
	devices  *devices
}

var (
	_ tokencache.Authenticator = (*Authenticator)(nil)
	_ tokencache.Renewer       = (*Authenticator)(nil)
)

// New returns an Authenticator for opts (see [Options] for defaults). It fails when
// Options.Credentials is nil, a URL or the environment is invalid, or (without Redis and
// without Options.DeviceID) no deviceId can be derived from the machine. Warnings
// carried by a [*Credentials] are logged.
func New(opts Options) (*Authenticator, error) {
	return newAuthenticator(opts, thisMachine)
}

// newAuthenticator is New with the source of the machine's identifier, which tests
// replace to play several machines.
func newAuthenticator(opts Options, machine func() (string, error)) (*Authenticator, error) {
	opts.init()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts.RESTURL = strings.TrimRight(opts.RESTURL, "/")
	opts.TradingViewURL = strings.TrimRight(opts.TradingViewURL, "/")
	a := &Authenticator{opts: opts}
	var m string
	if opts.DeviceID == "" && opts.Redis == nil {
		var err error
		if m, err = machine(); err != nil {
			return nil, err
		}
	}
	a.budget = newBudget(&a.opts)
	a.cooldown = newCooldowns(&a.opts)
	a.holds = newHolds(&a.opts)
	a.devices = newDevices(&a.opts, m)
	if c, ok := opts.Credentials.(*Credentials); ok {
		for _, w := range c.Warnings {
			opts.Logger.Warn(w)
		}
	}
	return a, nil
}

// ClearCooldown ends the cool-down of user, the fleet-wide pause if it was started by
// that user, and the hold after a login answer that was not understood
// ([ErrUnknownLoginAnswer]), for every process sharing the Redis. Call it once a human
// has solved the captcha, the lockout has passed, or the library has been updated.
// Without an Authenticator (an operator's `brokertoken clear-cooldown`), use the
// function [ClearCooldown].
func (a *Authenticator) ClearCooldown(ctx context.Context, user string) error {
	return clearCooldown(ctx, a.cooldown, a.holds, user)
}

// ClearCooldown is [Authenticator.ClearCooldown] for a process that has no
// Authenticator (no credentials): it needs opts.Redis and what selects the keys
// (Namespace, else Environment or RESTURL), and the right to delete them.
func ClearCooldown(ctx context.Context, opts Options, user string) error {
	opts.init()
	if opts.Redis == nil {
		return errors.New("tradovate: ClearCooldown needs Options.Redis")
	}
	return clearCooldown(ctx, newCooldowns(&opts), newHolds(&opts), user)
}

func clearCooldown(ctx context.Context, c *cooldowns, h *holds, user string) error {
	if err := c.clear(ctx, user); err != nil {
		return err
	}
	return h.clear(ctx, user)
}

// credential returns user's credential from the source.
func (a *Authenticator) credential(ctx context.Context, user string) (Credential, error) {
	cr, err := a.opts.Credentials.Credential(ctx, user)
	if err != nil {
		return Credential{}, err
	}
	if cr.Username == "" {
		cr.Username = user
	}
	if err := cr.validate(); err != nil {
		return Credential{}, fmt.Errorf("tradovate: credential of user %q: %w", user, err)
	}
	return cr, nil
}
