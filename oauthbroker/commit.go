package oauthbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/internal/backoff"
	"github.com/brokertoken/brokertoken/tokencache"
)

// rotation is the refresh state of one Broker; it is the only owner of it.
//
//   - turn: one refresh of this Broker at a time, so that two calls of one process
//     never send the same refresh token (a channel, so that waiting for it respects
//     the caller's context).
//   - held: a rotation the provider answered that Redis has not taken yet. While one
//     is held, the Broker refreshes nothing (the stored refresh token is the one it
//     used up); a writer goroutine, started when the first store failed, retries it
//     until Redis takes it or a newer grant supersedes it, and ends then. Close ends
//     it too, after trying for CommitGrace more.
//   - last: the grant this Broker last saw stored, to recognize a grant that Redis
//     lost with every key of the user.
type rotation struct {
	turn chan struct{}

	mu      sync.Mutex     // guards the fields below
	held    *pendingCommit // nil: nothing held
	writer  chan struct{}  // closed when the writer goroutine ends; nil: none runs
	closing chan struct{}  // closed by Close
	closed  bool
	last    *remembered
	// unserved is a held rotation the writer stored after its caller had given up:
	// its access token was returned to nobody, so the next call may serve it, once.
	unserved *pendingCommit
}

// remembered is what a Broker knows of the grant it last saw stored.
type remembered struct {
	h                                                header
	family, authorizedMS, refreshExpiryMS, rotations int64
}

func newRotation() *rotation {
	return &rotation{turn: make(chan struct{}, 1), closing: make(chan struct{})}
}

// take waits for the Broker's turn to refresh.
func (r *rotation) take(ctx context.Context) error {
	select {
	case r.turn <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("oauthbroker: waiting for this process's other refresh: %w", ctx.Err())
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		<-r.turn
		return permanentError{ErrClosed}
	}
	return nil
}

// give ends the turn.
func (r *rotation) give() { <-r.turn }

func (r *rotation) heldCommit() *pendingCommit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held
}

// serve takes the unserved rotation, if any.
func (r *rotation) serve() *pendingCommit {
	r.mu.Lock()
	defer r.mu.Unlock()
	pc := r.unserved
	r.unserved = nil
	return pc
}

func (r *rotation) remember(h header, s *secret) {
	r.mu.Lock()
	r.last = &remembered{h: h, family: s.Family, authorizedMS: s.AuthorizedMS, refreshExpiryMS: s.RefreshExpiryMS, rotations: s.Rotations}
	r.mu.Unlock()
}

func (r *rotation) recalled() *remembered {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// pendingCommit is a rotation the provider answered, to be stored as generation
// base.gen+1 of base.grant.
type pendingCommit struct {
	base   header
	secret string // the new secret record
	status string // the new status record
	tok    *tokencache.Token

	resolved chan struct{} // closed once stored, superseded or given up
	err      error         // set before resolved is closed: nil when stored
}

// errSuperseded says a rotation was not stored because the stored grant changed: it is
// not the fleet's newest any more.
var errSuperseded = errors.New("oauthbroker: rotation superseded")

// commit stores a rotation (commit.lua) before its access token is returned. When Redis
// does not take it at once, the rotation is held by the Broker and a writer goroutine
// retries it; commit waits for that as long as ctx lasts. A rotated refresh token that
// is not stored is lost for the whole fleet, so no context ever cancels the writer:
// only Broker.Close does, after CommitGrace.
func (b *Broker) commit(ctx context.Context, pc *pendingCommit) (*tokencache.Token, error) {
	_, _, _, attempt := b.timing()
	done, err := b.store(context.WithoutCancel(ctx), pc, attempt, 1)
	if done {
		return b.resolve(pc, err)
	}
	b.opts.Logger.Warn("oauthbroker: storing the rotated refresh token failed; retrying until Redis takes it",
		"user", b.opts.User, "generation", pc.base.gen, "err", err)
	b.hold(pc)
	return b.awaitHeld(ctx, pc)
}

// store makes one attempt to run commit.lua for pc, bounded by timeout. done says that
// Redis answered: err is then nil (stored) or why not; otherwise err is Redis's
// failure.
func (b *Broker) store(ctx context.Context, pc *pendingCommit, timeout time.Duration, attempt int) (done bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	keys := []string{b.secretKey(), b.statusKey(), b.rotationKey()}
	args := []any{pc.base.gen, pc.base.grant, b.owner, pc.secret, pc.status}
	var res []string
	var acked int64 = -1
	if n := b.opts.CommitReplicas; n > 0 {
		// WAIT counts the writes of its own connection: commit.lua and WAIT go in one
		// pipeline, which go-redis sends on one connection (of the key's primary).
		var c redis.Cmdable = b.opts.Redis
		if cc, ok := b.opts.Redis.(*redis.ClusterClient); ok {
			node, err := cc.MasterForKey(ctx, b.secretKey())
			if err != nil {
				return false, err
			}
			c = node
		}
		pipe := c.Pipeline()
		ev := pipe.Eval(ctx, commitLua, keys, args...)
		w := pipe.Do(ctx, "WAIT", n, (timeout / 2).Milliseconds())
		if _, err := pipe.Exec(ctx); err != nil && ev.Err() != nil {
			err = ev.Err()
		}
		if res, err = ev.StringSlice(); err == nil {
			var werr error
			if acked, werr = w.Int64(); werr != nil {
				acked = 0
				b.opts.Logger.Warn("oauthbroker: WAIT after storing the rotation failed (does the writer role have +wait?)",
					"user", b.opts.User, "err", werr)
			}
		}
	} else {
		res, err = commitScript.Run(ctx, b.opts.Redis, keys, args...).StringSlice()
	}
	if err != nil {
		if strings.HasPrefix(err.Error(), "NOPERM") && attempt == 1 { // once per held rotation, not each retry
			b.opts.Logger.Error("oauthbroker: the rotated refresh token cannot be stored (missing ACL right); retrying until it can",
				"user", b.opts.User, "err", err)
		}
		return false, err
	}
	if len(res) > 0 && res[0] == "ok" {
		if acked >= 0 && acked < int64(b.opts.CommitReplicas) {
			b.opts.Logger.Warn("oauthbroker: the rotated refresh token is stored on the primary, but fewer replicas than Options.CommitReplicas confirmed it",
				"user", b.opts.User, "replicas", acked, "want", b.opts.CommitReplicas)
		}
		b.opts.Logger.Info("oauthbroker: refreshed", "user", b.opts.User, "generation", pc.base.gen+1,
			"token", tokencache.Redact(pc.tok.AccessToken), "attempts", attempt)
		return true, nil
	}
	why := "superseded"
	if len(res) > 1 {
		why = res[1]
	}
	b.opts.Logger.Warn("oauthbroker: refreshed, but not stored: "+why, "user", b.opts.User, "generation", pc.base.gen)
	return true, temporaryError{fmt.Errorf("%w: the refresh of %s was not stored: %s", errSuperseded, b.opts.User, why)}
}

// resolve records pc's outcome (err nil: stored) and returns what the caller gets.
func (b *Broker) resolve(pc *pendingCommit, err error) (*tokencache.Token, error) {
	b.rot.mu.Lock()
	if b.rot.held == pc {
		b.rot.held = nil
		if err == nil {
			b.rot.unserved = pc
		}
	}
	select {
	case <-pc.resolved:
	default:
		pc.err = err
		close(pc.resolved)
	}
	b.rot.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if h := b.opts.Hooks.Rotated; h != nil {
		h(b.opts.User, pc.base.gen+1)
	}
	t := *pc.tok
	return &t, nil
}

// hold makes pc the held rotation and starts the writer goroutine.
func (b *Broker) hold(pc *pendingCommit) {
	r := b.rot
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held = pc
	if r.writer == nil {
		r.writer = make(chan struct{})
		go b.write(pc, r.writer, r.closing)
	}
}

// write retries pc until Redis answers, or, once Close began, for CommitGrace.
func (b *Broker) write(pc *pendingCommit, done chan struct{}, closing <-chan struct{}) {
	defer func() {
		b.rot.mu.Lock()
		b.rot.writer = nil
		b.rot.mu.Unlock()
		close(done)
	}()
	_, _, retryMax, attempt := b.timing()
	var graceEnd time.Time
	for n := 2; ; n++ {
		t := time.NewTimer(backoff.Jittered(n-1, 20*time.Millisecond, retryMax))
		select {
		case <-t.C:
		case <-closing:
			t.Stop()
			if graceEnd.IsZero() {
				graceEnd = time.Now().Add(b.opts.CommitGrace)
			}
			closing = nil // keep trying, until graceEnd
		}
		timeout := attempt
		if !graceEnd.IsZero() {
			left := time.Until(graceEnd)
			if left <= 0 {
				b.opts.Logger.Error("oauthbroker: the rotated refresh token could not be stored before Close; the fleet loses it",
					"user", b.opts.User, "generation", pc.base.gen, "attempts", n-1)
				_, _ = b.resolve(pc, fmt.Errorf("%w: Redis did not take the rotated refresh token of %s before Close", ErrRotationLost, b.opts.User))
				return
			}
			timeout = min(timeout, left)
		}
		if stored, err := b.store(context.Background(), pc, timeout, n); stored {
			_, _ = b.resolve(pc, err)
			return
		}
	}
}

// awaitHeld waits for the held rotation pc to be stored, as long as ctx lasts.
func (b *Broker) awaitHeld(ctx context.Context, pc *pendingCommit) (*tokencache.Token, error) {
	select {
	case <-pc.resolved:
		if pc.err != nil {
			return nil, pc.err
		}
		if b.rot.serve() != pc {
			return nil, nil // served already: the caller refreshes
		}
		t := *pc.tok
		return &t, nil
	case <-ctx.Done():
		return nil, temporaryError{fmt.Errorf("%w: %s (generation %d): this process keeps storing it in the background: %w",
			ErrRotationPending, b.opts.User, pc.base.gen+1, ctx.Err())}
	case <-b.rot.closing:
		return nil, temporaryError{fmt.Errorf("%w: %s (generation %d): the Broker is closing and stores it first",
			ErrRotationPending, b.opts.User, pc.base.gen+1)}
	}
}

// Close ends the Broker: its Authenticator fails with [ErrClosed] from then on. It
// waits for a refresh in flight (at most [Options.RequestTimeout] for the request).
// When a rotated refresh token is still waiting for Redis, Close keeps trying to store
// it for [Options.CommitGrace] and returns an error wrapping [ErrRotationLost] if it
// could not. Close the cache that uses the Broker first. Calling Close again does
// nothing.
func (b *Broker) Close() error {
	r := b.rot
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.closing)
	r.mu.Unlock()
	r.turn <- struct{}{} // the refresh in flight has returned; no other starts
	defer func() { <-r.turn }()
	r.mu.Lock()
	writer, held := r.writer, r.held
	r.mu.Unlock()
	if writer != nil {
		<-writer
	}
	if held != nil {
		<-held.resolved
		if held.err != nil && !errors.Is(held.err, errSuperseded) {
			return held.err
		}
	}
	return nil
}
