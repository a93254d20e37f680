package tokencache_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/brokertoken/brokertoken/internal/testutil"
)

// BenchmarkManyUsers is issue 7 item 7 inside the package's tests, for profiling
// (go test -bench ManyUsers -memprofile / -cpuprofile): a Cache.Token hit over 1 user
// and over 10,000 users round robin, and the heap per cached user.
func BenchmarkManyUsers(b *testing.B) {
	ctx := context.Background()
	srv := testutil.Redis(b)
	c := newCache(b, srv.Client(b), srv.Prefix, &broker{})
	users := make([]string, 10000)
	for i := range users {
		users[i] = fmt.Sprintf("%s-%06d", srv.Name("U"), i)
	}
	if _, err := c.Token(ctx, users[0]); err != nil {
		b.Fatal(err)
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for _, u := range users[1:] {
		if _, err := c.Token(ctx, u); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	perUser := float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(len(users)-1)

	for _, n := range []int{1, len(users)} {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			us := users[:n]
			for i := range b.N {
				if _, err := c.Token(ctx, us[i%n]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(perUser, "heap-B/user")
		})
	}
}
