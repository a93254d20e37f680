package tokencache

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNamesKeepUsersAndAccountsApart(t *testing.T) {
	var r names
	var cs cells
	x := r.addUser("X", &cs)
	y := r.addAccount("X", "Y", &cs) // account X belongs to user Y
	require.NotSame(t, x, y)
	assert.Same(t, x, r.user("X"))
	assert.Same(t, y, r.account("X"))
	assert.Same(t, y, r.user("Y"), "user Y's entry was made for the account")
	assert.Nil(t, r.account("Y"))
	assert.Equal(t, "Y", y.user)
	assert.Same(t, x, r.addUser("X", &cs), "the first entry stays")
	assert.Same(t, y, r.addAccount("X", "Z", &cs), "the first mapping stays")
	assert.Nil(t, r.user("Z"))
	self := r.addAccount("S", "S", &cs) // an account that is its own user: one key
	assert.Same(t, self, r.user("S"))
	assert.Same(t, self, r.account("S"))
}

// Many goroutines adding and reading the same names agree on one entry per name, every
// user is listed once, and the overflow map is merged so reads stop taking the lock.
func TestNamesConcurrentAddsAgree(t *testing.T) {
	var r names
	var cs cells
	const n, workers = 2000, 8
	got := make([][]*entry, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[w] = make([]*entry, n)
			for i := range n {
				k := fmt.Sprintf("u%d", (i*7+w*13)%n)
				e := r.user(k)
				if e == nil {
					e = r.addUser(k, &cs)
				}
				acct := r.addAccount("acct-"+k, k, &cs)
				require.Same(t, e, acct)
				got[w][(i*7+w*13)%n] = e
			}
		}()
	}
	wg.Wait()
	for i := range n {
		for w := 1; w < workers; w++ {
			require.Same(t, got[0][i], got[w][i], "name u%d", i)
		}
	}
	seen := map[*entry]int{}
	for _, e := range r.users() {
		seen[e]++
	}
	assert.Len(t, seen, n)
	for e, count := range seen {
		require.Equal(t, 1, count, e.user)
	}
	for range 4 * n { // enough slow reads to pay for a merge of whatever is left
		r.account("missing")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	assert.Empty(t, r.dirty)
	assert.Len(t, r.read.Load().names, 2*n)
	assert.Len(t, r.read.Load().fresh, n, "one fresh cell per account")
}

// A hit reads the account's fresh cell straight from the name lookup: it must be the
// cell of the entry the account belongs to, and nothing for a name that is no account.
func TestNamesFreshIsTheAccountsCell(t *testing.T) {
	var r names
	var cs cells
	x := r.addUser("X", &cs)
	r.addAccount("A", "X", &cs)
	for i := 0; r.fresh("A") == nil; i++ { // merged by the slow operations so far, or soon
		require.Less(t, i, 10, "the overflow map is never merged")
		require.Same(t, x, r.account("A"))
	}
	assert.Same(t, x.fresh, r.fresh("A"))
	assert.Nil(t, r.fresh("X"), "X is a user, not an account")
	assert.Nil(t, r.fresh("B"))
}

func TestCellsAreDistinct(t *testing.T) {
	var cs cells
	seen := map[*atomic.Pointer[Token]]bool{}
	for range 3*cellBlock + 1 {
		p := cs.take()
		require.False(t, seen[p], "a cell handed out twice")
		seen[p] = true
		p.Store(&Token{}) // each is usable on its own
	}
	for p := range seen {
		require.NotNil(t, p.Load())
	}
}
