package testutil

import (
	"fmt"
	"runtime"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine (for example of a client or
// of the goroutine waiting for a redis-server process) outlives the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, LeakOptions()...)
}

// recordingTB wraps a real testing.TB but records Skip and Fatal calls
// instead of applying them to the test, so that the skip-or-fail decisions
// can be tested without skipping or failing anything.
type recordingTB struct {
	testing.TB

	mu      sync.Mutex
	skipped bool
	failed  bool
	msg     string
}

// runRecorded runs f with a recordingTB wrapping t in its own goroutine
// (Skip and Fatal end it with runtime.Goexit, as the testing package does)
// and returns the record.
func runRecorded(t *testing.T, f func(tb testing.TB)) *recordingTB {
	t.Helper()
	r := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

func (r *recordingTB) stop(skip bool, msg string) {
	r.mu.Lock()
	if skip {
		r.skipped = true
	} else {
		r.failed = true
	}
	r.msg = msg
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recordingTB) Helper()                           {}
func (r *recordingTB) Skip(args ...any)                  { r.stop(true, fmt.Sprint(args...)) }
func (r *recordingTB) Skipf(format string, args ...any)  { r.stop(true, fmt.Sprintf(format, args...)) }
func (r *recordingTB) SkipNow()                          { r.stop(true, "") }
func (r *recordingTB) Fatal(args ...any)                 { r.stop(false, fmt.Sprint(args...)) }
func (r *recordingTB) Fatalf(format string, args ...any) { r.stop(false, fmt.Sprintf(format, args...)) }
func (r *recordingTB) FailNow()                          { r.stop(false, "") }
func (r *recordingTB) Error(args ...any)                 { r.stop(false, fmt.Sprint(args...)) }
func (r *recordingTB) Errorf(format string, args ...any) { r.stop(false, fmt.Sprintf(format, args...)) }
