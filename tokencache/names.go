package tokencache

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
)

// names maps account and login-user names to entries. It is read on every Cache.Token
// call and written once per new name, so reads go to an immutable Go map behind one
// atomic load: no lock, no allocation, and fewer memory accesses than a sync.Map when a
// process serves thousands of users. New names go to a small locked overflow map that
// is merged into a new immutable map once the slow path has been taken as often as the
// merged map would have names: merging costs O(1) amortized per slow operation.
//
// One map serves both namespaces: a name's user and account entries sit side by side in
// its value, so the common case, an account that is its own login user, costs one key.
// A hit reads a second, smaller map built in the same merge (see frozen).
type names struct {
	read  atomic.Pointer[frozen] // immutable once stored
	mu    sync.Mutex             // guards the fields below
	dirty map[string]name        // changes not yet in read; they win over read
	slow  int                    // slow operations since the last merge
}

// frozen is one immutable generation of the names. A hit only needs an account's fresh
// cell, so those have a map of their own with small slots: fewer bytes to pull into
// the CPU's caches when a process serves thousands of accounts.
type frozen struct {
	names map[string]name
	fresh map[string]*atomic.Pointer[Token] // account -> its entry's fresh
}

// name is what one name stands for.
type name struct {
	user    *entry // the entry of the login user with this name
	account *entry // the entry the account with this name belongs to
}

// user returns the entry of login user key, or nil.
func (r *names) user(key string) *entry {
	if e := r.fast(key).user; e != nil {
		return e
	}
	return r.locking(key).user
}

// account returns the entry account key belongs to, or nil.
func (r *names) account(key string) *entry {
	if e := r.fast(key).account; e != nil {
		return e
	}
	return r.locking(key).account
}

// fresh returns the fresh pointer of the entry account key belongs to, or nil when the
// name is not in the immutable map yet. It is all a hit reads: no lock, no entry.
func (r *names) fresh(key string) *atomic.Pointer[Token] {
	if f := r.read.Load(); f != nil {
		return f.fresh[key]
	}
	return nil
}

// fast returns what key stands for in the immutable map: no lock.
func (r *names) fast(key string) name {
	if f := r.read.Load(); f != nil {
		return f.names[key]
	}
	return name{}
}

// locking returns what key stands for, overflow map included.
func (r *names) locking(key string) name {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.locked(key)
	r.tookSlowPath()
	return n
}

// addUser returns the entry of login user key, making one (with a cell from cells)
// when it has none. The lookup that found it missing counted as the slow operation.
func (r *names) addUser(key string, cells *cells) *entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.locked(key)
	if n.user == nil {
		n.user = newEntry(key, cells.take())
		r.put(key, n)
	}
	return n.user
}

// addAccount returns the entry account belongs to, mapping it to user's entry when it
// is new (and making that entry, with a cell from cells, when user has none): one
// locked operation. The lookup that found the account missing counted as the slow
// operation.
func (r *names) addAccount(account, user string, cells *cells) *entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.locked(account)
	if a.account != nil {
		return a.account
	}
	u := a
	if user != account {
		u = r.locked(user)
	}
	if u.user == nil {
		u.user = newEntry(user, cells.take())
		if user != account {
			r.put(user, u)
		} else {
			a = u
		}
	}
	a.account = u.user
	r.put(account, a)
	return a.account
}

// put records what key stands for in the overflow map. r.mu must be held.
func (r *names) put(key string, n name) {
	if r.dirty == nil {
		r.dirty = map[string]name{}
	}
	r.dirty[key] = n
}

// users returns every login user's entry.
func (r *names) users() []*entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*entry
	if f := r.read.Load(); f != nil {
		for k, n := range f.names {
			if _, changed := r.dirty[k]; !changed && n.user != nil {
				out = append(out, n.user)
			}
		}
	}
	for _, n := range r.dirty {
		if n.user != nil {
			out = append(out, n.user)
		}
	}
	return out
}

// locked returns what key stands for. r.mu must be held.
func (r *names) locked(key string) name {
	if n, ok := r.dirty[key]; ok {
		return n
	}
	if f := r.read.Load(); f != nil {
		return f.names[key]
	}
	return name{}
}

// tookSlowPath counts a slow operation and merges the overflow map into a new
// immutable map when enough of them paid for the copy. r.mu must be held.
func (r *names) tookSlowPath() {
	r.slow++
	if len(r.dirty) == 0 {
		return
	}
	var read map[string]name
	if f := r.read.Load(); f != nil {
		read = f.names
	}
	if r.slow < len(read)+len(r.dirty) {
		return
	}
	merged := make(map[string]name, len(read)+len(r.dirty))
	for k, n := range read {
		merged[k] = n
	}
	for k, n := range r.dirty {
		merged[k] = n
	}
	fresh := make(map[string]*atomic.Pointer[Token], len(merged))
	for k, n := range merged {
		if n.account != nil {
			fresh[k] = n.account.fresh
		}
	}
	r.read.Store(&frozen{names: merged, fresh: fresh})
	r.dirty, r.slow = nil, 0
}

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

// maxNameBytes bounds account and user names.
const maxNameBytes = 200

// CheckName returns nil when name may be used as an account or login user name, else
// an error wrapping [ErrInvalidName] that says which rule it breaks. A name must be
// non-empty, at most 200 bytes of printable UTF-8 without spaces, contain no { or }
// (they would break the Redis Cluster hash tag that keeps a user's keys in one slot),
// and no ':' (the legacy key layout names a list after each user, and every other key
// the library or the legacy services use has a ':', so no user can be named like one:
// "token:PA2", "brokertoken:legacy-owner"). Every process applies the same rules
// whatever its options, so a name is valid for all of them or none.
func CheckName(name string) error {
	if plainName(name) {
		return nil
	}
	switch {
	case name == "":
		return ErrEmptyName
	case len(name) > maxNameBytes:
		return fmt.Errorf("%w: %d bytes, more than %d", ErrInvalidName, len(name), maxNameBytes)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not UTF-8", ErrInvalidName)
	case strings.ContainsAny(name, "{}"):
		return fmt.Errorf("%w: %q contains { or } (they would break the Redis Cluster hash tag)", ErrInvalidName, name)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("%w: %q contains a space or control character", ErrInvalidName, name)
		}
	}
	if strings.Contains(name, ":") {
		return fmt.Errorf("%w: %q contains ':' (a user's legacy list key would collide with keys such as token:<account>)", ErrInvalidName, name)
	}
	return nil
}

// plainName reports, in one pass over the bytes, whether name is valid by the common
// case: 1 to maxNameBytes printable ASCII characters other than space, braces and ':'.
// Anything else is decided by CheckName's full rules.
func plainName(name string) bool {
	if name == "" || len(name) > maxNameBytes {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c <= ' ' || c >= 0x7f || c == '{' || c == '}' || c == ':':
			return false
		}
	}
	return true
}
