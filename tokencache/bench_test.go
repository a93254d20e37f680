package tokencache_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/internal/procstat"
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

// BenchmarkColdAccountVsGET measures a long-lived cache's first Token for an account
// another process stored (its entry is created, the record read and installed) against
// a bare GET of the same record. Half the accounts go through one loop that pairs the
// two, so both see the same load: their median wall times and allocations. The other
// half measures CPU: a loop of bare GETs, then a loop of first Tokens, each timed with
// the process's CPU clock (getrusage, Linux), which load on the machine does not
// inflate as it does wall times. Run it with a fixed count, e.g. -benchtime 4000x.
func BenchmarkColdAccountVsGET(b *testing.B) {
	ctx := context.Background()
	srv := testutil.Redis(b)
	writer := newCache(b, srv.Client(b), srv.Prefix, nil)
	users := make([]string, b.N)
	for i := range users {
		users[i] = srv.Name(fmt.Sprint("cold", i))
		if _, err := writer.Set(ctx, users[i], &tokencache.Token{AccessToken: "tok-" + users[i], MDAccessToken: "md",
			Expiry: time.Now().Add(time.Hour)}); err != nil {
			b.Fatal(err)
		}
	}
	c := newCache(b, srv.Client(b), srv.Prefix, nil) // long-lived: subscribed, idle
	rdb := srv.Client(b)
	_ = rdb.Ping(ctx).Err()
	key := func(u string) string { return srv.Prefix + ":{" + u + "}:record" }
	paired, timed := users[:b.N/2], users[b.N/2:]
	get := make([]time.Duration, 0, len(paired))
	miss := make([]time.Duration, 0, len(paired))
	var getAllocs, missAllocs, getBytes, missBytes uint64
	var m0, m1, m2 runtime.MemStats
	b.ResetTimer()
	for _, u := range paired {
		runtime.ReadMemStats(&m0)
		start := time.Now()
		if _, err := rdb.Get(ctx, key(u)).Result(); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		runtime.ReadMemStats(&m1)
		mid2 := time.Now()
		if _, err := c.Token(ctx, u); err != nil {
			b.Fatal(err)
		}
		end := time.Now()
		runtime.ReadMemStats(&m2)
		get = append(get, mid.Sub(start))
		miss = append(miss, end.Sub(mid2))
		getAllocs += m1.Mallocs - m0.Mallocs
		missAllocs += m2.Mallocs - m1.Mallocs
		getBytes += m1.TotalAlloc - m0.TotalAlloc
		missBytes += m2.TotalAlloc - m1.TotalAlloc
	}
	cpu0 := procstat.CPU()
	for _, u := range timed {
		if _, err := rdb.Get(ctx, key(u)).Result(); err != nil {
			b.Fatal(err)
		}
	}
	cpu1 := procstat.CPU()
	for _, u := range timed {
		if _, err := c.Token(ctx, u); err != nil {
			b.Fatal(err)
		}
	}
	cpu2 := procstat.CPU()
	b.StopTimer()
	if len(paired) == 0 {
		return // the first, one-iteration run
	}
	p50 := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	g, m := p50(get), p50(miss)
	n, nt := float64(len(paired)), float64(len(timed))
	b.ReportMetric(float64(g.Nanoseconds()), "get-p50-ns")
	b.ReportMetric(float64(m.Nanoseconds()), "miss-p50-ns")
	b.ReportMetric(float64((m - g).Nanoseconds()), "extra-p50-ns")
	b.ReportMetric(float64(getAllocs)/n, "get-allocs/op")
	b.ReportMetric(float64(missAllocs)/n, "miss-allocs/op")
	b.ReportMetric(float64(getBytes)/n, "get-B/op")
	b.ReportMetric(float64(missBytes)/n, "miss-B/op")
	b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/nt, "get-cpu-ns/op")
	b.ReportMetric(float64((cpu2-cpu1).Nanoseconds())/nt, "miss-cpu-ns/op")
	b.ReportMetric(float64((cpu2-cpu1-(cpu1-cpu0)).Nanoseconds())/nt, "extra-cpu-ns/op")
}

// cannedGet answers every GET with the same stored record, without going to Redis: the
// other commands (the subscription) go through.
type cannedGet struct{ raw string }

func (cannedGet) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h cannedGet) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if sc, ok := cmd.(*redis.StringCmd); ok && cmd.Name() == "get" {
			sc.SetVal(h.raw)
			return nil
		}
		return next(ctx, cmd)
	}
}
func (cannedGet) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// BenchmarkColdMissCPU measures what a long-lived cache's first Token for an account
// costs beyond its GET, without the network: the GET is answered in the client by a
// hook (the same for the bare GET and the cache's), so what is left is the CPU and the
// allocations of go-redis's command and of the cache (the entry, the parse, the install,
// the timer). Compare the two sub-benchmarks' ns/op and allocs/op.
func BenchmarkColdMissCPU(b *testing.B) {
	ctx := context.Background()
	srv := testutil.Redis(b)
	tok := &tokencache.Token{AccessToken: strings.Repeat("t", 215), MDAccessToken: strings.Repeat("m", 215),
		Expiry: time.Now().Add(time.Hour), ObtainedAt: time.Now()}
	writer := newCache(b, srv.Client(b), srv.Prefix, nil)
	stored, err := writer.Set(ctx, srv.Name("template"), tok)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := srv.Client(b).Get(ctx, srv.Prefix+":{"+srv.Name("template")+"}:record").Result()
	if err != nil {
		b.Fatal(err)
	}
	_ = stored
	rdb := srv.Client(b)
	rdb.AddHook(cannedGet{raw: raw})
	b.Run("bare GET", func(b *testing.B) {
		keys := make([]string, b.N)
		for i := range keys {
			keys[i] = srv.Prefix + ":{" + srv.Name(fmt.Sprint("g", i)) + "}:record"
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if _, err := rdb.Get(ctx, keys[i]).Result(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Cache.Token first call", func(b *testing.B) {
		// A cache of 2,000 accounts, as a service starting with that many meets them;
		// a new one for each 2,000 (made outside the timing).
		const accounts = 2000
		users := make([]string, accounts)
		for i := range users {
			users[i] = srv.Name(fmt.Sprint("c", i))
		}
		var c *tokencache.Cache
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if i%accounts == 0 {
				b.StopTimer()
				if c != nil {
					_ = c.Close()
				}
				c, err = tokencache.New(tokencache.Options{Redis: rdb, Prefix: srv.Prefix})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			if _, err := c.Token(ctx, users[i%accounts]); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		_ = c.Close()
	})
}
