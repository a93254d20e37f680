package tokencache

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The heap keeps its order and every entry's slot through random schedules, re-arms
// and cancels.
func TestTimersHeapKeepsOrderAndSlots(t *testing.T) {
	ts := &timers{fire: func(*entry) {}}
	defer ts.close()
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Now().Add(time.Hour) // nothing fires during the test
	var es []*entry
	for range 500 {
		es = append(es, newEntry("u", nil))
	}
	for range 5000 {
		e := es[rng.IntN(len(es))]
		switch rng.IntN(4) {
		case 0:
			ts.cancel(e)
		default:
			ts.schedule(e, base.Add(time.Duration(rng.IntN(1000))*time.Millisecond), time.Now())
		}
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for i, a := range ts.heap {
		require.EqualValues(t, i, a.e.slot)
		require.Equal(t, a.e.at.UnixNano(), a.at)
		if i > 0 {
			require.LessOrEqual(t, ts.heap[(i-1)/2].at, a.at, "heap order at %d", i)
		}
	}
	for _, e := range es {
		if e.slot >= 0 {
			require.Same(t, e, ts.heap[e.slot].e)
		}
	}
}

// Entries fire at their times, in order, once each; a re-armed entry fires at its new
// time; a cancelled one never; after close, nothing.
func TestTimersFireInOrder(t *testing.T) {
	var mu sync.Mutex
	var fired []*entry
	ts := &timers{fire: func(e *entry) { mu.Lock(); fired = append(fired, e); mu.Unlock() }}
	now := time.Now()
	a, b, c, d := newEntry("a", nil), newEntry("b", nil), newEntry("c", nil), newEntry("d", nil)
	ts.schedule(c, now.Add(60*time.Millisecond), now)
	ts.schedule(a, now.Add(20*time.Millisecond), now)
	ts.schedule(b, now.Add(time.Hour), now)
	ts.schedule(b, now.Add(40*time.Millisecond), now) // re-armed earlier
	ts.schedule(d, now.Add(30*time.Millisecond), now)
	ts.cancel(d)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(fired) == 3 }, 5*time.Second, time.Millisecond)
	mu.Lock()
	assert.Equal(t, []*entry{a, b, c}, fired)
	mu.Unlock()
	ts.close()
	ts.schedule(a, time.Now().Add(time.Millisecond), time.Now())
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	assert.Len(t, fired, 3, "nothing after close")
	mu.Unlock()
}
