package tokencache

import (
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
)

// The locking rule of state.go is checked in race-enabled builds: an entry's state used
// without its lock panics, naming the user.
func TestEntryStateChecksItsLock(t *testing.T) {
	if !checkLocks {
		t.Skip("the lock check is compiled in race-enabled builds only (go test -race)")
	}
	e := newEntry("U", new(atomic.Pointer[Token]))
	assert.PanicsWithValue(t, "tokencache: the state of U's entry used without e.mu held", func() { e.signal() })
	e.mu.Lock()
	assert.NotPanics(t, func() { e.signal() })
	e.mu.Unlock()
}
