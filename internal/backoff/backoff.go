// Package backoff computes the waits between retries that every part of brokertoken
// uses: exponential, capped, and jittered so a fleet does not retry in step.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Jittered returns the wait before retry n (1-based, after the n-th consecutive
// failure): base doubled n-1 times, capped at limit, then a random value between half
// of that and all of it. A limit below base is taken as base.
func Jittered(n int, base, limit time.Duration) time.Duration {
	limit = max(limit, base)
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	half := d / 2
	return half + rand.N(half+1)
}
