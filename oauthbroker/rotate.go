package oauthbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/brokertoken/brokertoken/internal/backoff"
	"github.com/brokertoken/brokertoken/tokencache"
)

// The rotation protocol. tokencache calls Login or Renew for at most one caller at a
// time across the fleet (its lease), but a lease can run out under a process that is
// paused, so the refresh token is guarded on its own:
//
//  1. begin.lua reads the stored refresh token of generation G and claims it with a
//     rotation marker (owner, deadline = Redis time + hold), in one round trip. While
//     another owner's marker of G is within its deadline (and for a takeover delay
//     after), the caller waits instead of sending G's refresh token a second time.
//  2. The refresh is sent with a deadline inside the marker's hold, so no request of
//     this process reaches the provider after another may have taken over.
//  3. The answer:
//     - new tokens: commit.lua stores them as generation G+1, only if G is still
//       stored and no other owner took the marker over, and deletes the marker. It is
//       retried, detached from the caller's context, until Redis takes it (for at most
//       CommitGrace once the context ended). Only then is the access token returned:
//       no process ever serves a token whose refresh token is not in Redis.
//     - the grant refused (invalid_grant): revoke.lua deletes the dead refresh token
//       of G and marks the status revoked; the process whose call did that alerts,
//       once for the fleet. Every later attempt fails at step 1 without a request.
//     - another error answer below HTTP 500: nothing was rotated; release.lua deletes
//       the marker.
//     - no answer (timeout, connection lost, unreadable body, HTTP 5xx): the provider may have
//       rotated. The marker stays as the record of an interrupted refresh; after its
//       deadline and the takeover delay the next process sends G's refresh token
//       again: a lenient provider answers, a strict one refuses it as reused
//       (invalid_grant), and the user is stopped with one alert naming the
//       interrupted refresh.

// markerTTL is how long a rotation marker is kept at most; after its deadline it only
// records an interrupted refresh.
const markerTTL = 24 * time.Hour

// timing returns how long a claim holds (hold), how long a marker past its deadline is
// still respected (takeover), and the longest pause between two attempts to store a
// rotation (retryMax, a fraction of takeover so an owner that outlived a Redis outage
// stores its result before anyone takes over).
func (b *Broker) timing() (hold, takeover, retryMax time.Duration) {
	rt := b.opts.RequestTimeout
	hold = rt + rt/4
	takeover = max(rt/2, 500*time.Millisecond)
	retryMax = min(time.Second, takeover/4)
	return hold, takeover, retryMax
}

// Authenticator is the [tokencache.Authenticator] and [tokencache.Renewer] of one
// [Broker]'s user, made by [Broker.Authenticator]. Give it to the writer's cache (the
// daemon):
//
//	cache, err := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: b.Authenticator()})
//
// Both methods refresh the access token with the refresh token stored in Redis,
// following the rotation protocol (see the package documentation); they need
// [Options.ClientSecret]. When no refresh token is stored, or the provider refused it,
// they return a [*LoginRequiredError] (not Temporary: the cache asks again after its
// RetryMax, and each attempt costs one Redis round trip and no request). An
// Authenticator is safe for concurrent use.
type Authenticator struct {
	b *Broker
}

var (
	_ tokencache.Authenticator = (*Authenticator)(nil)
	_ tokencache.Renewer       = (*Authenticator)(nil)
)

// Login returns a new access token obtained with the stored refresh token.
func (a *Authenticator) Login(ctx context.Context, user string) (*tokencache.Token, error) {
	return a.b.obtain(ctx, user, nil)
}

// Renew returns a new access token obtained with the stored refresh token, or, when a
// refresh by a process that died before the cache stored its result left a newer access
// token than current in Redis (with more than half its life ahead), that token,
// without a request.
func (a *Authenticator) Renew(ctx context.Context, user string, current *tokencache.Token) (*tokencache.Token, error) {
	return a.b.obtain(ctx, user, current)
}

// permanentError is a failure that trying again soon does not fix.
type permanentError struct{ error }

func (permanentError) Temporary() bool { return false }
func (e permanentError) Unwrap() error { return e.error }

// claimed is begin.lua's answer.
type claimed struct {
	kind    string        // "none", "busy" or "ok"
	secret  string        // ok: the secret record
	earlier string        // ok: an earlier marker of the same generation ("" none)
	status  string        // none: the status record ("" none)
	wait    time.Duration // busy: how long to wait
	marker  string        // busy: the other owner's marker
}

// begin runs begin.lua.
func (b *Broker) begin(ctx context.Context) (*claimed, error) {
	hold, takeover, _ := b.timing()
	res, err := beginScript.Run(ctx, b.opts.Redis, []string{b.secretKey(), b.statusKey(), b.rotationKey()},
		b.owner, hold.Milliseconds(), takeover.Milliseconds(), markerTTL.Milliseconds()).Slice()
	if err != nil {
		return nil, b.scriptErr("claim the refresh token", err)
	}
	str := func(i int) string {
		if i < len(res) {
			if s, ok := res[i].(string); ok {
				return s
			}
		}
		return ""
	}
	num := func(i int) int64 {
		if i < len(res) {
			if n, ok := res[i].(int64); ok {
				return n
			}
		}
		return 0
	}
	c := &claimed{kind: str(0)}
	switch c.kind {
	case "none":
		c.status = str(1)
	case "busy":
		c.wait, c.marker = time.Duration(num(1))*time.Millisecond, str(2)
	case "ok":
		c.secret, c.earlier = str(1), str(3)
	default:
		return nil, fmt.Errorf("oauthbroker: unexpected answer %q from begin.lua", clean(c.kind, 20))
	}
	return c, nil
}

// scriptErr explains a failed script call: a missing ACL right by name, else Redis
// unreachable.
func (b *Broker) scriptErr(doing string, err error) error {
	if strings.HasPrefix(err.Error(), "NOPERM") {
		return permanentError{fmt.Errorf("oauthbroker: %s of %s: %w (the writer role needs GET, SET, DEL, TIME and EVAL on %s, %s and %s)",
			doing, b.opts.User, err, b.secretKey(), b.statusKey(), b.rotationKey())}
	}
	return redisErr(doing+" of "+b.opts.User, err)
}

// obtain is Login (current nil) and Renew.
func (b *Broker) obtain(ctx context.Context, user string, current *tokencache.Token) (*tokencache.Token, error) {
	if user != b.opts.User {
		return nil, permanentError{fmt.Errorf("oauthbroker: this %s Broker serves %s, not %s", b.opts.Provider.Name, b.opts.User, user)}
	}
	if b.opts.ClientSecret == "" {
		return nil, permanentError{fmt.Errorf("oauthbroker: Options.ClientSecret is not set: this process cannot refresh %s", user)}
	}
	if t, err := b.flushPending(ctx); t != nil || err != nil {
		return t, err
	}
	start := time.Now()
	var c *claimed
	for {
		var err error
		if c, err = b.begin(ctx); err != nil {
			return nil, err
		}
		if c.kind != "busy" {
			break
		}
		other, _ := parseClaim(c.marker)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < c.wait+b.opts.RequestTimeout {
			return nil, temporaryError{fmt.Errorf("%w: %s holds the refresh token of %s for %s more",
				ErrRotationInFlight, other.owner, user, c.wait.Round(time.Millisecond))}
		}
		b.opts.Logger.Info("oauthbroker: another process is using the refresh token; waiting rather than sending it twice",
			"user", user, "owner", other.owner, "wait", c.wait.Round(time.Millisecond))
		t := time.NewTimer(c.wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("oauthbroker: waiting for another process's refresh of %s: %w", user, ctx.Err())
		}
		start = time.Now()
	}
	if c.kind == "none" {
		return nil, b.loginRequired(ctx, c.status)
	}
	gen, sec, err := decodeSecret(c.secret)
	if err != nil {
		b.release(ctx)
		lre := &LoginRequiredError{User: user, Reason: ErrNotAuthorized, Detail: "the stored refresh token record cannot be read: " + err.Error()}
		lre.URL, _ = b.loginLink(ctx)
		return nil, lre
	}
	now := time.Now()
	if t := b.newerStored(sec, current, now); t != nil {
		b.release(ctx)
		b.opts.Logger.Info("oauthbroker: a newer access token was stored with the refresh token; using it",
			"user", user, "generation", gen, "token", tokencache.Redact(t.AccessToken))
		return t, nil
	}
	b.hook("claimed")
	rctx, cancel := context.WithDeadline(ctx, start.Add(b.opts.RequestTimeout))
	g, out, err := b.refresh(rctx, sec.RefreshToken)
	cancel()
	b.hook("answered")
	if err != nil {
		switch {
		case errors.Is(err, ErrInvalidGrant):
			return nil, b.revoke(ctx, gen, sec, c.earlier, err)
		case out == answered:
			b.release(ctx) // nothing was rotated: the next attempt need not wait
		default:
			b.opts.Logger.Warn("oauthbroker: refresh without a usable answer; the provider may have rotated the refresh token",
				"user", user, "generation", gen, "err", err)
		}
		return nil, err
	}
	pc := b.successor(gen, sec, g, now)
	t, err := b.commit(ctx, pc)
	if err == nil {
		b.hook("committed")
	}
	return t, err
}

// newerStored returns the secret's access token when current is older and that token
// has more than half its life ahead (so the cache sees it as fresh), else nil. Only a
// renewal compares: a login's caller holds no token to compare with, and the cache may
// have been told that the stored one is bad.
func (b *Broker) newerStored(sec *secret, current *tokencache.Token, now time.Time) *tokencache.Token {
	if current == nil || sec.AccessToken == "" || sec.AccessToken == current.AccessToken || sec.AccessExpiryMS == 0 {
		return nil
	}
	exp, got := msTime(sec.AccessExpiryMS), msTime(sec.ObtainedMS)
	if !exp.After(current.Expiry) || exp.Sub(now) <= exp.Sub(got)/2 {
		return nil
	}
	return &tokencache.Token{AccessToken: sec.AccessToken, Expiry: exp, ObtainedAt: got}
}

// release deletes this Broker's rotation marker (see release.lua); failures only log:
// the marker then expires by itself.
func (b *Broker) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := releaseScript.Run(ctx, b.opts.Redis, []string{b.rotationKey()}, b.owner).Err(); err != nil {
		b.opts.Logger.Warn("oauthbroker: could not drop the rotation marker; others wait for its deadline", "user", b.opts.User, "err", err)
	}
}

// pendingCommit is a rotation the provider answered, to be stored as generation base+1.
type pendingCommit struct {
	base   int64
	secret string // the new secret record
	status string // the new status record
	tok    *tokencache.Token
}

// successor builds the records of the rotation of generation gen by g, at now.
func (b *Broker) successor(gen int64, sec *secret, g *grant, now time.Time) *pendingCommit {
	p := b.opts.Provider
	next := *sec
	next.RefreshToken = g.refresh
	switch {
	case !g.refreshExpiry.IsZero():
		next.RefreshExpiryMS = timeMS(g.refreshExpiry)
	case g.refresh != sec.RefreshToken && p.RotationRenewsLifetime && p.RefreshTokenLifetime > 0:
		next.RefreshExpiryMS = now.Add(p.RefreshTokenLifetime).UnixMilli()
	}
	next.AccessToken, next.AccessExpiryMS, next.ObtainedMS = g.access, timeMS(g.accessExpiry), now.UnixMilli()
	next.Rotations++
	st := statusBody{Provider: p.Name, State: StateActive, Family: next.Family, AuthorizedMS: next.AuthorizedMS,
		RotatedMS: now.UnixMilli(), Rotations: next.Rotations, RefreshExpiryMS: next.RefreshExpiryMS}
	secRaw, _ := encodeRecord(gen+1, next)
	stRaw, _ := encodeRecord(gen+1, st)
	return &pendingCommit{base: gen, secret: secRaw, status: stRaw,
		tok: &tokencache.Token{AccessToken: g.access, Expiry: g.accessExpiry, ObtainedAt: now}}
}

// commit stores a rotation (commit.lua) before its access token is returned. Redis
// failures are retried with a jittered backoff: for as long as ctx lasts, then, once
// ctx is done (the cache closing, SIGTERM), for CommitGrace more: each attempt runs
// detached from ctx, because a rotated refresh token that is not stored is lost for
// the whole fleet. What is still not stored then stays pending in this Broker, and the
// next Login or Renew stores it first.
func (b *Broker) commit(ctx context.Context, pc *pendingCommit) (*tokencache.Token, error) {
	b.mu.Lock()
	b.pending = pc
	b.mu.Unlock()
	_, _, retryMax := b.timing()
	var graceEnd time.Time
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		res, err := commitScript.Run(actx, b.opts.Redis, []string{b.secretKey(), b.statusKey(), b.rotationKey()},
			pc.base, b.owner, pc.secret, pc.status).StringSlice()
		cancel()
		if err == nil {
			b.mu.Lock()
			if b.pending == pc {
				b.pending = nil
			}
			b.mu.Unlock()
			if len(res) > 0 && res[0] == "ok" {
				b.opts.Logger.Info("oauthbroker: refreshed", "user", b.opts.User, "generation", pc.base+1,
					"token", tokencache.Redact(pc.tok.AccessToken), "attempts", attempt)
				if h := b.opts.Hooks.Rotated; h != nil {
					h(b.opts.User, pc.base+1)
				}
				t := *pc.tok
				return &t, nil
			}
			why := "superseded"
			if len(res) > 1 {
				why = res[1]
			}
			b.opts.Logger.Warn("oauthbroker: refreshed, but not stored: "+why, "user", b.opts.User, "generation", pc.base)
			return nil, temporaryError{fmt.Errorf("oauthbroker: the refresh of %s was not stored: %s", b.opts.User, why)}
		}
		if strings.HasPrefix(err.Error(), "NOPERM") {
			b.opts.Logger.Error("oauthbroker: the rotated refresh token cannot be stored (missing ACL right); the fleet loses it",
				"user", b.opts.User, "err", err)
			return nil, b.scriptErr("store the rotated refresh token", err)
		}
		now := time.Now()
		if graceEnd.IsZero() && ctx.Err() != nil {
			graceEnd = now.Add(b.opts.CommitGrace)
		}
		if !graceEnd.IsZero() && !now.Before(graceEnd) {
			b.opts.Logger.Error("oauthbroker: the rotated refresh token is not stored yet; this process keeps it and stores it at its next refresh, but it is lost if it stops now",
				"user", b.opts.User, "generation", pc.base, "attempts", attempt, "err", err)
			return nil, temporaryError{fmt.Errorf("%w: storing the rotated refresh token of %s: %w", ErrRotationLost, b.opts.User, redisErr("commit", err))}
		}
		if attempt == 1 {
			b.opts.Logger.Warn("oauthbroker: storing the rotated refresh token failed; retrying until Redis takes it",
				"user", b.opts.User, "generation", pc.base, "err", err)
		}
		wait := backoff.Jittered(attempt, 20*time.Millisecond, retryMax)
		t := time.NewTimer(wait)
		if graceEnd.IsZero() {
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		} else {
			<-t.C
		}
	}
}

// flushPending stores a rotation that an earlier call could not store, before anything
// else happens: its refresh token is the only valid one. It returns the rotation's
// access token when stored and still more than half-lived; nil and no error when there
// was nothing to store (or it was superseded, or it is stored but its access token is
// past half its life: then the normal path refreshes with the new refresh token).
func (b *Broker) flushPending(ctx context.Context) (*tokencache.Token, error) {
	b.mu.Lock()
	pc := b.pending
	b.mu.Unlock()
	if pc == nil {
		return nil, nil
	}
	t, err := b.commit(ctx, pc)
	if err != nil {
		var tmp temporaryError
		if errors.As(err, &tmp) && !errors.Is(err, ErrRotationLost) {
			return nil, nil // superseded: carry on with what Redis holds
		}
		return nil, err
	}
	now := time.Now()
	if t.Expiry.IsZero() || t.Expiry.Sub(now) <= t.Expiry.Sub(t.ObtainedAt)/2 {
		return nil, nil
	}
	return t, nil
}

// revoke records that the provider refused the refresh token of generation gen and
// returns the error for the caller. The process whose call changed the status calls
// Hooks.Revoked: once for the fleet.
func (b *Broker) revoke(ctx context.Context, gen int64, sec *secret, earlier string, cause error) error {
	now := time.Now()
	detail := cause.Error()
	if earlier != "" {
		who := "a process"
		if m, err := parseClaim(earlier); err == nil {
			who = m.owner
			if m.owner == b.owner {
				who = "this process"
			}
		}
		detail = fmt.Sprintf("an earlier refresh with this refresh token, by %s, got no answer or died before storing it; the provider had rotated it, so it was refused as reused: %s", who, detail)
	}
	st := statusBody{Provider: b.opts.Provider.Name, State: StateRevoked, Family: sec.Family, AuthorizedMS: sec.AuthorizedMS,
		Rotations: sec.Rotations, RefreshExpiryMS: sec.RefreshExpiryMS, SinceMS: now.UnixMilli(), Detail: clean(detail, 600)}
	raw, _ := encodeRecord(gen, st)
	lre := &LoginRequiredError{User: b.opts.User, Reason: ErrRevoked, Since: time.UnixMilli(now.UnixMilli()), Detail: st.Detail, Cause: cause}
	lre.URL, _ = b.loginLink(ctx)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	n, err := revokeScript.Run(rctx, b.opts.Redis, []string{b.secretKey(), b.statusKey(), b.rotationKey()}, gen, raw).Int64()
	cancel()
	switch {
	case err != nil:
		b.opts.Logger.Error("oauthbroker: the provider refused the refresh token, and recording it failed; the next attempt sends it again",
			"user", b.opts.User, "err", err, "cause", cause)
	case n == 1:
		b.opts.Logger.Error("oauthbroker: the provider refused the refresh token; refreshes of this user stop until a human authorizes again",
			"user", b.opts.User, "url", lre.URL, "detail", lre.Detail)
		if h := b.opts.Hooks.Revoked; h != nil {
			h(b.opts.User, lre)
		}
	}
	return lre
}

// loginRequired is the error when no refresh token is stored; statusRaw is the status
// record ("" none), which says whether one was refused.
func (b *Broker) loginRequired(ctx context.Context, statusRaw string) error {
	lre := &LoginRequiredError{User: b.opts.User, Reason: ErrNotAuthorized}
	if statusRaw != "" {
		if _, st, err := decodeStatus(statusRaw); err == nil && st.State == StateRevoked {
			lre.Reason, lre.Since, lre.Detail = ErrRevoked, msTime(st.SinceMS), st.Detail
		}
	}
	lre.URL, _ = b.loginLink(ctx)
	b.opts.Logger.Warn("oauthbroker: a human must authorize the app", "user", b.opts.User, "url", lre.URL, "reason", lre.Reason)
	return lre
}
