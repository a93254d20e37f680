package tokencache

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed scripts/claim.lua
	claimLua    string
	claimScript = redis.NewScript(claimLua)
)

// LegacyOwnerKey is the Redis key that names the prefix whose writers own the legacy keys
// (see Options.LegacyKeys). It carries no prefix, like the keys it guards.
const LegacyOwnerKey = "brokertoken:legacy-owner"

// Claim timing: a running owner renews its claim every legacyClaimEvery; a stopped one
// lets another prefix take over legacyClaimTTL after its last renewal.
const (
	legacyClaimTTL   = 2 * time.Minute
	legacyClaimEvery = 30 * time.Second
)

// ErrLegacyKeysOwned is returned by [Cache.ClaimLegacyKeys] when writers of another
// prefix own the legacy keys: writing them too would overwrite their tokens.
var ErrLegacyKeysOwned = errors.New("tokencache: the legacy keys are owned by another prefix")

// ClaimLegacyKeys claims the legacy keys (token:{account}, auth:{user}, the {user}
// list, token_expiry:{user}) for this cache's prefix, or fails with an error wrapping
// [ErrLegacyKeysOwned] that names the prefix owning them. Those keys carry no prefix:
// two fleets with different prefixes writing them would overwrite each other's tokens.
// A cache with Options.LegacyKeys claims them by itself and renews the claim while it
// runs (a stopped owner's claim lapses two minutes after its last renewal); while
// another prefix owns them, or while it could not claim them (Redis unreachable, an ACL
// without the claim key), it writes none and logs why: it never writes them unclaimed.
// Call ClaimLegacyKeys at start to refuse to run instead, as the daemon does.
func (c *Cache) ClaimLegacyKeys(ctx context.Context) error {
	if c.closed.Load() {
		return ErrClosed
	}
	owner, err := claimScript.Run(ctx, c.opts.Redis, []string{LegacyOwnerKey}, c.opts.Prefix, legacyClaimTTL.Milliseconds()).Text()
	if isNoPerm(err) {
		return fmt.Errorf("tokencache: claim the legacy keys: %w (a writer of legacy keys needs read and write access to %s)", err, LegacyOwnerKey)
	}
	if err != nil {
		return redisErr("claim the legacy keys ("+LegacyOwnerKey+")", err)
	}
	c.legacyOwner.Store(&owner)
	if owner != "" {
		return fmt.Errorf("%w: prefix %q owns them (key %s); use that prefix, or turn the legacy keys off here",
			ErrLegacyKeysOwned, owner, LegacyOwnerKey)
	}
	return nil
}

// keepLegacyClaim renews the legacy claim until Close, logging when it changes hands.
// The first claim is made by the first legacy write (or a ClaimLegacyKeys call).
func (c *Cache) keepLegacyClaim() {
	defer c.wg.Done()
	last := ""
	tick := time.NewTicker(legacyClaimEvery)
	defer tick.Stop()
	for {
		select {
		case <-c.base.Done():
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(c.base, 5*time.Second)
		err := c.ClaimLegacyKeys(ctx)
		cancel()
		switch {
		case errors.Is(err, ErrLegacyKeysOwned) && err.Error() != last:
			c.log.Error("tokencache: not writing the legacy keys", "err", err)
			last = err.Error()
		case err == nil && last != "":
			c.log.Info("tokencache: the legacy keys are this prefix's again", "prefix", c.opts.Prefix)
			last = ""
		}
	}
}

// legacyOwnedElsewhere returns the prefix owning the legacy keys when it is not this
// cache's, as last seen; "" when they are ours. Call it after a claim succeeded once.
func (c *Cache) legacyOwnedElsewhere() string {
	if p := c.legacyOwner.Load(); p != nil {
		return *p
	}
	return ""
}
