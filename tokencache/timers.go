package tokencache

import (
	"sync"
	"time"
)

// timers wakes entries at their armed times with one runtime timer for the whole cache:
// a min-heap of entries by armed time. A process serving thousands of users then keeps
// no timer, and allocates none, per user; re-arming an entry is a heap fix.
//
// Lock order: an entry's mu, then timers.mu (schedule is called with e.mu held). fire
// takes entries off the heap under timers.mu, releases it, and only then takes each
// entry's mu. An entry's slot changes when other entries move in the heap, so it is
// read and written under timers.mu only; its at is written under both locks, so either
// reads it.
type timers struct {
	mu    sync.Mutex // guards the fields below and every entry's at and slot
	heap  []armed    // by at; an entry's slot is its index, -1 when not in the heap
	timer *time.Timer
	next  int64 // when timer fires (Unix ns); 0 when stopped
	fire  func(e *entry)
	stop  bool
}

// armed is one heap item. Its time sits in the heap's own array (Unix ns), so ordering
// it reads no entry.
type armed struct {
	at int64
	e  *entry
}

// schedule makes e's wake-up at (replacing any earlier one). Entries are compared by
// their time only; e.mu is held by the caller, so e.at changes under both locks.
func (ts *timers) schedule(e *entry, at, now time.Time) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.stop || e.slot >= 0 && e.at.Equal(at) {
		return // closed, or armed for then already
	}
	e.at = at
	if e.slot >= 0 {
		ts.heap[e.slot].at = at.UnixNano()
		ts.fix(int(e.slot))
	} else {
		e.slot = int32(len(ts.heap))
		ts.heap = append(ts.heap, armed{at.UnixNano(), e})
		ts.up(len(ts.heap) - 1)
	}
	ts.arm(now.UnixNano())
}

// cancel takes e off the heap. e.mu is held by the caller.
func (ts *timers) cancel(e *entry) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if e.slot >= 0 {
		ts.remove(int(e.slot))
	}
}

// close stops every wake-up.
func (ts *timers) close() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.stop = true
	if ts.timer != nil {
		ts.timer.Stop()
	}
	for _, a := range ts.heap {
		a.e.slot = -1
	}
	ts.heap = nil
}

// arm sets the runtime timer for the heap's earliest time; now is in Unix ns. ts.mu
// must be held.
func (ts *timers) arm(now int64) {
	if len(ts.heap) == 0 {
		return // a timer that fires with nothing due does nothing
	}
	at := ts.heap[0].at
	if ts.next != 0 && at >= ts.next {
		return // it fires early enough already
	}
	ts.next = at
	d := time.Duration(at - now)
	if ts.timer == nil {
		ts.timer = time.AfterFunc(d, ts.wake)
	} else {
		ts.timer.Reset(d)
	}
}

// wake runs when the earliest time came: it takes every entry due off the heap and
// fires each, then re-arms for the next.
func (ts *timers) wake() {
	ts.mu.Lock()
	ts.next = 0
	now := time.Now().UnixNano()
	var due []*entry
	for len(ts.heap) > 0 && ts.heap[0].at <= now {
		due = append(due, ts.heap[0].e)
		ts.remove(0)
	}
	if !ts.stop {
		ts.arm(now)
	}
	ts.mu.Unlock()
	for _, e := range due {
		ts.fire(e)
	}
}

// up, down, fix and remove keep the heap ordered by at. ts.mu must be held.
func (ts *timers) up(i int) {
	h := ts.heap
	for i > 0 {
		p := (i - 1) / 2
		if h[i].at >= h[p].at {
			break
		}
		ts.swap(i, p)
		i = p
	}
}

func (ts *timers) down(i int) bool {
	h, start := ts.heap, i
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && h[r].at < h[l].at {
			m = r
		}
		if h[m].at >= h[i].at {
			break
		}
		ts.swap(i, m)
		i = m
	}
	return i > start
}

func (ts *timers) fix(i int) {
	if !ts.down(i) {
		ts.up(i)
	}
}

func (ts *timers) remove(i int) {
	last := len(ts.heap) - 1
	ts.heap[i].e.slot = -1
	if i != last {
		ts.heap[i] = ts.heap[last]
		ts.heap[i].e.slot = int32(i)
	}
	ts.heap[last] = armed{}
	ts.heap = ts.heap[:last]
	if i != last {
		ts.fix(i)
	}
}

func (ts *timers) swap(i, j int) {
	h := ts.heap
	h[i], h[j] = h[j], h[i]
	h[i].e.slot, h[j].e.slot = int32(i), int32(j)
}
