package tokencache

import (
	"sync"
	"sync/atomic"
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
