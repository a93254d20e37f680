package tradovate

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/brokertoken/brokertoken/tokencache"
)

// Authenticator logs Tradovate users in and renews their tokens. It implements
// [tokencache.Authenticator] and [tokencache.Renewer], so a tokencache.Cache given one
// logs each user in once for the whole fleet and renews instead of logging in again.
//
// Logins pass a fleet-wide budget and respect cool-downs kept in Redis (see [Options]);
// renewals do neither. An Authenticator starts no goroutines and needs no Close. It is
// safe for concurrent use.
type Authenticator struct {
	opts     Options
	machine  string // stable machine identifier for derived deviceIds
	budget   *budget
	cooldown *cooldowns
}

var (
	_ tokencache.Authenticator = (*Authenticator)(nil)
	_ tokencache.Renewer       = (*Authenticator)(nil)
)

// New returns an Authenticator for opts (see [Options] for defaults). It fails when
// Options.Credentials is nil, a URL or the environment is invalid, or no deviceId can be
// derived and none is configured. Warnings carried by a [*Credentials] are logged.
func New(opts Options) (*Authenticator, error) {
	opts.init()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	opts.RESTURL = strings.TrimRight(opts.RESTURL, "/")
	opts.TradingViewURL = strings.TrimRight(opts.TradingViewURL, "/")
	a := &Authenticator{opts: opts}
	if opts.DeviceID == "" {
		m, err := machineID(machineIDFiles, os.Hostname)
		if err != nil {
			return nil, err
		}
		a.machine = m
	}
	a.budget = newBudget(&a.opts)
	a.cooldown = newCooldowns(&a.opts)
	if c, ok := opts.Credentials.(*Credentials); ok {
		for _, w := range c.Warnings {
			opts.Logger.Warn(w)
		}
	}
	return a, nil
}

// ClearCooldown ends the cool-down of user, and the fleet-wide pause if it was started
// by that user, for every process sharing the Redis. Call it once a human has solved
// the captcha or the lockout has passed.
func (a *Authenticator) ClearCooldown(ctx context.Context, user string) error {
	return a.cooldown.clear(ctx, user)
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
