package tokencache

import (
	"sync"
	"sync/atomic"
)

// cells hands out the entries' fresh pointers from shared blocks. A process serving
// thousands of users then reads its hits from a few dense pages instead of one line of
// each 224-byte entry: the name lookup finds the cell without touching the entry. Eight
// cells share a cache line, so a store to one (rare: a new token, a timer, an
// invalidation) briefly costs its neighbours' readers a miss.
type cells struct {
	mu   sync.Mutex
	free []atomic.Pointer[Token]
}

// cellBlock is how many cells one allocation makes (512 bytes).
const cellBlock = 64

func (c *cells) take() *atomic.Pointer[Token] {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.free) == 0 {
		c.free = make([]atomic.Pointer[Token], cellBlock)
	}
	p := &c.free[0]
	c.free = c.free[1:]
	return p
}
