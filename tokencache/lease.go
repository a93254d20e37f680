package tokencache

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed scripts/acquire.lua
	acquireLua    string
	acquireScript = redis.NewScript(acquireLua)
	//go:embed scripts/extend.lua
	extendLua    string
	extendScript = redis.NewScript(extendLua)
	//go:embed scripts/release.lua
	releaseLua    string
	releaseScript = redis.NewScript(releaseLua)
)

// lease is a held refresh lease: while it is held, no other process refreshes the user.
// It is extended in the background until released, so a slow broker does not let a
// second process in, while a crashed holder stops extending and is replaced after ttl.
type lease struct {
	rdb   redis.UniversalClient
	key   string
	owner string
	stop  chan struct{}
	wg    sync.WaitGroup
}

// newOwner returns a random lease owner value, unique per attempt.
func newOwner() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newLease starts extending a lease just taken by owner (see store.acquire).
func newLease(rdb redis.UniversalClient, key, owner string, ttl time.Duration) *lease {
	l := &lease{rdb: rdb, key: key, owner: owner, stop: make(chan struct{})}
	l.wg.Add(1)
	go l.extend(ttl)
	return l
}

// extend pushes the lease's expiry out every third of its TTL until release.
func (l *lease) extend(ttl time.Duration) {
	defer l.wg.Done()
	tick := time.NewTicker(ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
			ctx, cancel := context.WithTimeout(context.Background(), ttl/3)
			held, err := extendScript.Run(ctx, l.rdb, []string{l.key}, l.owner, ttl.Milliseconds()).Int64()
			cancel()
			if err == nil && held == 0 {
				return // lost (expired while we were paused): the version check guards our write
			}
		}
	}
}

// release stops extending and deletes the lease if this holder still owns it. It uses
// its own short context: a lease must be freed even when the refresh was cancelled.
func (l *lease) release() {
	close(l.stop)
	l.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = releaseScript.Run(ctx, l.rdb, []string{l.key}, l.owner).Err()
}
