package tokencache_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/tokencache"
)

// benchCache returns a cache holding a fresh token for the returned user.
func benchCache(b *testing.B) (*tokencache.Cache, *testutil.Server, string) {
	srv := testutil.Redis(b)
	c := newCache(b, srv.Client(b), srv.Prefix, &broker{})
	user := srv.Name("U")
	if _, err := c.Token(context.Background(), user); err != nil {
		b.Fatal(err)
	}
	return c, srv, user
}

// oauth2Source is the baseline: golang.org/x/oauth2's ReuseTokenSource holding a valid token.
func oauth2Source() oauth2.TokenSource {
	return oauth2.ReuseTokenSource(&oauth2.Token{AccessToken: "x", Expiry: time.Now().Add(time.Hour)}, nil)
}

func BenchmarkHit(b *testing.B) {
	ctx := context.Background()
	c, _, user := benchCache(b)
	src := c.Source(user)
	base := oauth2Source()

	b.Run("oauth2.ReuseTokenSource/serial", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := base.Token(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("oauth2.ReuseTokenSource/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := base.Token(); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("Source.Token/serial", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := src.Token(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Source.Token/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := src.Token(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("Cache.Token/serial", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := c.Token(ctx, user); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Cache.Token/parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Token(ctx, user); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

func BenchmarkMiss(b *testing.B) {
	ctx := context.Background()
	c, srv, user := benchCache(b)
	rdb := srv.Client(b)
	key := srv.Prefix + ":{" + user + "}:record"

	b.Run("bare go-redis GET", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := rdb.Get(ctx, key).Bytes(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Cache.Token L1 miss", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			c.Forget(user)
			if _, err := c.Token(ctx, user); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMissVsGET alternates a bare GET and an L1 miss in one loop, so both see the
// same machine load, and reports the medians and their ratio.
func BenchmarkMissVsGET(b *testing.B) {
	ctx := context.Background()
	c, srv, user := benchCache(b)
	rdb := srv.Client(b)
	key := srv.Prefix + ":{" + user + "}:record"
	get := make([]time.Duration, 0, b.N)
	miss := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := rdb.Get(ctx, key).Bytes(); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		c.Forget(user)
		if _, err := c.Token(ctx, user); err != nil {
			b.Fatal(err)
		}
		end := time.Now()
		get = append(get, mid.Sub(start))
		miss = append(miss, end.Sub(mid))
	}
	b.StopTimer()
	p50 := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	g, m := p50(get), p50(miss)
	b.ReportMetric(float64(g.Nanoseconds()), "get-p50-ns")
	b.ReportMetric(float64(m.Nanoseconds()), "miss-p50-ns")
	b.ReportMetric(float64(m)/float64(g), "miss/get")
}
