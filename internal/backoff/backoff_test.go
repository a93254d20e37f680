package backoff

import (
	"testing"
	"time"
)

func TestJitteredDoublesCapsAndStaysInItsUpperHalf(t *testing.T) {
	for _, tc := range []struct {
		n           int
		base, limit time.Duration
		want        time.Duration // before jitter
	}{
		{1, time.Second, time.Minute, time.Second},
		{2, time.Second, time.Minute, 2 * time.Second},
		{4, time.Second, time.Minute, 8 * time.Second},
		{10, time.Second, time.Minute, time.Minute},
		{1000, time.Second, time.Minute, time.Minute},
		{3, time.Second, time.Millisecond, time.Second}, // a limit below base is base
		{0, 100 * time.Millisecond, time.Second, 100 * time.Millisecond},
	} {
		for range 200 {
			d := Jittered(tc.n, tc.base, tc.limit)
			if d < tc.want/2 || d > tc.want {
				t.Fatalf("Jittered(%d, %s, %s) = %s, want within [%s, %s]", tc.n, tc.base, tc.limit, d, tc.want/2, tc.want)
			}
		}
	}
}

func TestJitteredSpreads(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 100 {
		seen[Jittered(3, time.Second, time.Minute)] = true
	}
	if len(seen) < 50 {
		t.Fatalf("100 waits took only %d values: not jittered", len(seen))
	}
}
