package testutil

import "go.uber.org/goleak"

// LeakOptions are the goleak options every test binary of this module uses:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }
//
// go-redis dials new connections in a goroutine of its pool that retries a refused
// dial with backoff and is not waited for by Client.Close; the fault tests, which stop
// Redis on purpose, can end while one is still backing off. Nothing of ours is ignored.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).dialConn"),
	}
}
