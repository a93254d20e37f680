// Package demoenv is the scaffolding the runnable examples share when run by hand: an
// embedded Redis unless REDIS_URL names one, and a process-wide stand-in for the
// testing.TB that the fake servers of internal/testutil expect. None of it is what an
// example teaches; the consumer code lives in each example's main.go.
package demoenv

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// RedisOptions connects to REDIS_URL when it is set, else starts an embedded Redis
// (miniredis). stop shuts the embedded one down.
func RedisOptions() (opts *redis.Options, stop func(), err error) {
	if url := os.Getenv("REDIS_URL"); url != "" {
		opts, err := redis.ParseURL(url)
		return opts, func() {}, err
	}
	m, err := miniredis.Run()
	if err != nil {
		return nil, nil, err
	}
	return &redis.Options{Addr: m.Addr()}, m.Close, nil
}

// Process lets fakes written for tests run inside a program: it implements the
// testing.TB methods they call (Helper, Fatalf, Cleanup). Any other method panics on the
// nil embedded interface. Close runs the cleanups, last first, as testing does.
type Process struct {
	testing.TB
	mu       sync.Mutex // guards cleanups
	cleanups []func()
}

// Helper does nothing.
func (p *Process) Helper() {}

// Fatalf panics: a fake that cannot start leaves the demo nothing to show.
func (p *Process) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// Cleanup registers f to run at Close.
func (p *Process) Cleanup(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, f)
}

// Close runs the registered cleanups, last first.
func (p *Process) Close() {
	p.mu.Lock()
	fs := p.cleanups
	p.cleanups = nil
	p.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
