package oauthbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/brokertoken/brokertoken/tokencache"
)

// The rotation protocol. tokencache calls Login or Renew for at most one caller at a
// time across the fleet (its lease), but a lease can run out under a process that is
// paused, so the refresh token is guarded on its own:
//
//  0. In one process, one refresh at a time (the Broker's turn, commit.go), and none
//     while a rotation the provider answered is held, not yet stored.
//  1. begin.lua reads the stored refresh token of generation G of grant X and claims
//     it with a rotation marker (owner, deadline = Redis time + hold), in one round
//     trip. While a marker of (G, X) is within its deadline (and for a takeover delay
//     after), whoever owns it, the caller waits instead of sending G's refresh token a
//     second time.
//  2. Right before sending, check.lua asks Redis's clock whether the marker is still
//     the caller's and how much of the hold is left; the request gets at most that
//     long. A process that was paused (or whose claim was taken over) sends nothing.
//  3. The answer:
//     - new tokens: commit.lua stores them as generation G+1 of X, only if (G, X) is
//       still stored (or Redis lost everything and nothing newer was authorized) and
//       no other owner took the marker over, and deletes the marker. Redis failures
//       are retried by a writer goroutine until Redis takes it or a newer grant
//       supersedes it (commit.go). Only then is the access token returned: no process
//       serves a token whose refresh token is not in Redis.
//     - the grant refused (invalid_grant): revoke.lua moves the refused secret aside,
//       marks the status revoked and records the alert, if (G, X) is still stored;
//       the process whose call did that calls Hooks.Revoked, once for the fleet. If
//       another grant or generation is stored now, the refusal says nothing about it:
//       the caller begins again.
//     - the app refused (invalid_client): nothing was rotated; the marker is dropped,
//       an alert is recorded, and the error is not temporary.
//     - another error answer below HTTP 500: nothing was rotated; release.lua deletes
//       the marker.
//     - no answer (timeout, connection lost, unreadable body, HTTP 5xx): the provider
//       may have rotated. The marker stays as the record of an interrupted refresh;
//       after its deadline and the takeover delay the next process sends G's refresh
//       token again: a lenient provider answers, a strict one refuses it as reused
//       (invalid_grant), and the user is stopped with one alert naming the
//       interrupted refresh.

// markerTTL is how long a rotation marker is kept at most; after its deadline it only
// records an interrupted refresh.
const markerTTL = 24 * time.Hour

// timing returns how long a claim holds (hold), how long a marker past its deadline is
// still respected (takeover), the longest pause between two attempts to store a
// rotation (retryMax, a fraction of takeover so an owner that outlived a Redis outage
// stores its result before anyone takes over), and the timeout of one such attempt
// (attempt, bounded by the takeover delay too).
func (b *Broker) timing() (hold, takeover, retryMax, attempt time.Duration) {
	rt := b.opts.RequestTimeout
	hold = rt + rt/4
	takeover = max(rt/2, 500*time.Millisecond)
	retryMax = min(time.Second, takeover/4)
	attempt = min(2*time.Second, takeover/2)
	return hold, takeover, retryMax, attempt
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
	return a.b.obtain(ctx, user)
}

// Renew returns a new access token obtained with the stored refresh token, as Login
// does. It never hands out an access token that an earlier refresh obtained: that one
// was returned to its own caller already, and serving it again as new would give one
// token two versions.
func (a *Authenticator) Renew(ctx context.Context, user string, _ *tokencache.Token) (*tokencache.Token, error) {
	return a.b.obtain(ctx, user)
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
	hold, takeover, _, _ := b.timing()
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
		return permanentError{fmt.Errorf("oauthbroker: %s of %s: %w (the writer role needs the rights of the README's brokertoken-writer on %s, %s, %s and %s)",
			doing, b.opts.User, err, b.secretKey(), b.statusKey(), b.rotationKey(), b.alertsKey())}
	}
	return redisErr(doing+" of "+b.opts.User, err)
}

// maxRounds bounds how often one call claims the refresh token again because the
// stored one changed under it (a refusal of an older generation, a claim that ran
// out before the request was sent).
const maxRounds = 3

// obtain is Login and Renew.
func (b *Broker) obtain(ctx context.Context, user string) (*tokencache.Token, error) {
	if user != b.opts.User {
		return nil, permanentError{fmt.Errorf("oauthbroker: this %s Broker serves %s, not %s", b.opts.Provider.Name, b.opts.User, user)}
	}
	if b.opts.ClientSecret == "" {
		return nil, permanentError{fmt.Errorf("oauthbroker: Options.ClientSecret is not set: this process cannot refresh %s", user)}
	}
	if err := b.rot.take(ctx); err != nil {
		return nil, err
	}
	defer b.rot.give()
	if pc := b.rot.serve(); pc != nil && halfLived(pc.tok, time.Now()) {
		t := *pc.tok
		return &t, nil
	}
	if held := b.rot.heldCommit(); held != nil {
		t, err := b.awaitHeld(ctx, held)
		switch {
		case t != nil && halfLived(t, time.Now()):
			return t, nil
		case err != nil && !errors.Is(err, errSuperseded):
			return nil, err
		}
	}
	for range maxRounds {
		t, again, err := b.refreshOnce(ctx)
		if !again {
			return t, err
		}
	}
	return nil, temporaryError{fmt.Errorf("%w: the stored refresh token of %s kept changing during the refresh", ErrRotationInFlight, user)}
}

// halfLived reports whether t has more than half its life ahead at now.
func halfLived(t *tokencache.Token, now time.Time) bool {
	return !t.Expiry.IsZero() && t.Expiry.Sub(now) > t.Expiry.Sub(t.ObtainedAt)/2
}

// claim runs begin.lua until it claims (or finds nothing to claim), waiting while
// another refresh may be using the refresh token.
func (b *Broker) claim(ctx context.Context) (*claimed, error) {
	for {
		c, err := b.begin(ctx)
		if err != nil || c.kind != "busy" {
			return c, err
		}
		other, _ := parseClaim(c.marker)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < c.wait+b.opts.RequestTimeout {
			return nil, temporaryError{fmt.Errorf("%w: %s holds the refresh token of %s for %s more",
				ErrRotationInFlight, other.owner, b.opts.User, c.wait.Round(time.Millisecond))}
		}
		b.opts.Logger.Info("oauthbroker: a refresh may be using the refresh token; waiting rather than sending it twice",
			"user", b.opts.User, "owner", other.owner, "wait", c.wait.Round(time.Millisecond))
		t := time.NewTimer(c.wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("oauthbroker: waiting for another refresh of %s: %w", b.opts.User, ctx.Err())
		case <-b.rot.closing:
			t.Stop()
			return nil, permanentError{ErrClosed}
		}
	}
}

// refreshOnce claims the stored refresh token, sends it and stores what the provider
// answered. again says that the stored refresh token changed under the call, so
// nothing is known yet: the caller claims again.
func (b *Broker) refreshOnce(ctx context.Context) (t *tokencache.Token, again bool, err error) {
	c, err := b.claim(ctx)
	if err != nil {
		return nil, false, err
	}
	if c.kind == "none" {
		return nil, false, b.missing(ctx, c.status)
	}
	h, sec, err := decodeSecret(c.secret)
	if errors.Is(err, ErrRecordFormat) {
		b.release(ctx)
		return nil, false, fmt.Errorf("oauthbroker: user %q: %w", b.opts.User, err)
	}
	if err != nil {
		b.release(ctx)
		lre := &LoginRequiredError{User: b.opts.User, Reason: ErrNotAuthorized, Detail: "the stored refresh token record cannot be read: " + err.Error()}
		b.linkFor(ctx, lre)
		return nil, false, lre
	}
	b.rot.remember(h, sec)
	b.hook("claimed")
	left, err := b.check(ctx, h)
	if err != nil {
		b.release(ctx)
		return nil, false, err
	}
	if left <= 0 {
		if left == 0 {
			b.release(ctx) // still ours, too late to send: drop it, nothing was sent
		}
		b.opts.Logger.Warn("oauthbroker: the claim on the refresh token ran out before it was sent; claiming again",
			"user", b.opts.User, "generation", h.gen)
		return nil, true, nil
	}
	now := time.Now()
	rctx, cancel := context.WithTimeout(ctx, min(b.opts.RequestTimeout, left))
	g, out, err := b.refresh(rctx, sec.RefreshToken)
	cancel()
	b.hook("answered")
	if err != nil {
		switch {
		case errors.Is(err, ErrInvalidGrant):
			return b.revoke(ctx, h, sec, c.earlier, err)
		case errors.Is(err, ErrInvalidClient):
			b.release(ctx)
			return nil, false, b.clientRefused(ctx, h, err)
		case out == answered:
			b.release(ctx) // nothing was rotated: the next attempt need not wait
		default:
			b.opts.Logger.Warn("oauthbroker: refresh without a usable answer; the provider may have rotated the refresh token",
				"user", b.opts.User, "generation", h.gen, "err", err)
		}
		return nil, false, err
	}
	t, err = b.commit(ctx, b.successor(h, sec, g, now))
	if err == nil {
		b.hook("committed")
	}
	return t, false, err
}

// check runs check.lua: the ms left to send the refresh token within the claim (by
// Redis's clock), 0 when too little is left, -1 when the claim is not the caller's
// any more.
func (b *Broker) check(ctx context.Context, h header) (time.Duration, error) {
	hold, _, _, _ := b.timing()
	margin := hold - b.opts.RequestTimeout // the request must end this long before the deadline
	ms, err := checkScript.Run(ctx, b.opts.Redis, []string{b.rotationKey()},
		h.gen, h.grant, b.owner, margin.Milliseconds()).Int64()
	if err != nil {
		return 0, b.scriptErr("check the claim on the refresh token", err)
	}
	left := time.Duration(ms) * time.Millisecond
	if ms > 0 && left < b.opts.RequestTimeout/2 {
		return 0, nil // a request this short would likely time out and leave the outcome unknown
	}
	if ms < 0 {
		return -1, nil
	}
	return left, nil
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

// expiryTolerance is how far a refresh's refresh_token_expires_in may put the refresh
// token's expiry from the stored one and still be taken as the same expiry. A provider
// that reports the remaining lifetime on every refresh without extending it (Schwab's
// 7 days count from the authorization) gives whole seconds counted when it answered,
// so now+expires_in moves by up to a second plus the request's time at each refresh;
// storing each would move the expiry by milliseconds every time, and make each expiry
// alert (keyed by the expiry) fall due again. A minute absorbs that noise and is
// nothing next to the alert leads (hours); a provider that really extends the lifetime
// moves it by the time between refreshes, which is stored once it exceeds a minute.
const expiryTolerance = time.Minute

// steadyExpiry returns the refresh-token expiry (Unix ms) to store after a refresh
// that computed computed, when stored was stored: stored if they are within
// expiryTolerance, else computed.
func steadyExpiry(stored, computed int64) int64 {
	if stored > 0 && computed > 0 && max(stored-computed, computed-stored) <= expiryTolerance.Milliseconds() {
		return stored
	}
	return computed
}

// successor builds the records of the rotation of generation h by g, at now.
func (b *Broker) successor(h header, sec *secret, g *grant, now time.Time) *pendingCommit {
	p := b.opts.Provider
	next := *sec
	next.RefreshToken = g.refresh
	switch {
	case !g.refreshExpiry.IsZero():
		next.RefreshExpiryMS = steadyExpiry(sec.RefreshExpiryMS, timeMS(g.refreshExpiry))
	case g.refresh != sec.RefreshToken && p.RotationRenewsLifetime && p.RefreshTokenLifetime > 0:
		next.RefreshExpiryMS = now.Add(p.RefreshTokenLifetime).UnixMilli()
	}
	next.AccessToken, next.AccessExpiryMS, next.ObtainedMS = g.access, timeMS(g.accessExpiry), now.UnixMilli()
	next.Rotations++
	st := statusBody{Provider: p.Name, State: StateActive, Family: next.Family, AuthorizedMS: next.AuthorizedMS,
		RotatedMS: now.UnixMilli(), Rotations: next.Rotations, RefreshExpiryMS: next.RefreshExpiryMS}
	nh := header{gen: h.gen + 1, grant: h.grant}
	secRaw, _ := encodeRecord(nh, next)
	stRaw, _ := encodeRecord(nh, st)
	return &pendingCommit{base: h, secret: secRaw, status: stRaw,
		tok:      &tokencache.Token{AccessToken: g.access, Expiry: g.accessExpiry, ObtainedAt: now},
		resolved: make(chan struct{})}
}

// alertPayload is the JSON of an alert's payload in the alerts hash (alerts.lua).
type alertPayload struct {
	Kind     AlertKind `json:"kind"`
	AtMS     int64     `json:"at_ms"`
	Detail   string    `json:"detail,omitempty"`
	ExpiryMS int64     `json:"expiry_ms,omitempty"`
	LeadMS   int64     `json:"lead_ms,omitempty"`
}

func (p alertPayload) encode() string {
	js, _ := json.Marshal(p)
	return string(js)
}

// alertField names an alert of grant h in the alerts hash.
func alertField(kind string, h header, rest string) string {
	return kind + ":" + h.grant + ":" + rest
}

// revoke records that the provider refused the refresh token of generation h and
// returns the error for the caller, or again when another refresh token is stored now
// (see revoke.lua). The process whose call changed the status calls Hooks.Revoked:
// once for the fleet.
func (b *Broker) revoke(ctx context.Context, h header, sec *secret, earlier string, cause error) (*tokencache.Token, bool, error) {
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
	js, _ := json.Marshal(st)
	payload := alertPayload{Kind: AlertRevoked, AtMS: now.UnixMilli(), Detail: st.Detail}.encode()
	lre := &LoginRequiredError{User: b.opts.User, Reason: ErrRevoked, Since: time.UnixMilli(now.UnixMilli()), Detail: st.Detail, Cause: cause}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	n, err := revokeScript.Run(rctx, b.opts.Redis,
		[]string{b.secretKey(), b.statusKey(), b.rotationKey(), b.refusedKey(), b.alertsKey()},
		h.gen, h.grant, string(js), alertField("revoked", h, strconv.FormatInt(h.gen, 10)), payload).Int64()
	cancel()
	switch {
	case err != nil:
		b.opts.Logger.Error("oauthbroker: the provider refused the refresh token, and recording it failed; the next attempt sends it again",
			"user", b.opts.User, "err", err, "cause", cause)
	case n == 2:
		b.opts.Logger.Warn("oauthbroker: the provider refused a refresh token that is not the stored one any more; claiming the stored one",
			"user", b.opts.User, "generation", h.gen)
		return nil, true, nil
	case n == 1:
		b.linkFor(ctx, lre)
		b.opts.Logger.Error("oauthbroker: the provider refused the refresh token; refreshes of this user stop until a human authorizes again",
			"user", b.opts.User, "login", b.logLink(lre), "detail", lre.Detail)
		if h := b.opts.Hooks.Revoked; h != nil {
			h(b.opts.User, lre)
		}
		return nil, false, lre
	}
	b.linkFor(ctx, lre)
	return nil, false, lre
}

// clientRefused records the alert of a refused app (invalid_client) and returns err
// as a non-temporary error.
func (b *Broker) clientRefused(ctx context.Context, h header, err error) error {
	b.opts.Logger.Error("oauthbroker: the provider refused the app's credentials (invalid_client): check the client ID and secret; the refresh token was not used up",
		"user", b.opts.User, "client_id", b.opts.ClientID, "err", err)
	payload := alertPayload{Kind: AlertInvalidClient, AtMS: time.Now().UnixMilli(), Detail: clean(err.Error(), 600)}.encode()
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if aerr := alertsScript.Run(actx, b.opts.Redis, []string{b.alertsKey()}, "add",
		alertField("client", h, strconv.FormatInt(h.gen, 10)), "pending:0:0::"+payload).Err(); aerr != nil {
		b.opts.Logger.Warn("oauthbroker: could not record the invalid_client alert", "user", b.opts.User, "err", aerr)
	}
	return permanentError{err}
}

// missing is the error when no refresh token is stored; statusRaw is the status
// record ("" none), which says whether one was refused or lost. When the status (or
// this Broker's memory) says a grant was stored, the loss is recorded for the fleet
// with an alert (lost.lua).
func (b *Broker) missing(ctx context.Context, statusRaw string) error {
	lre := &LoginRequiredError{User: b.opts.User, Reason: ErrNotAuthorized}
	defer b.linkFor(ctx, lre)
	var known *remembered
	if statusRaw != "" {
		h, st, err := decodeStatus(statusRaw)
		if err != nil {
			lre.Detail = "the stored status cannot be read: " + err.Error()
			return lre
		}
		switch st.State {
		case StateRevoked:
			lre.Reason, lre.Since, lre.Detail = ErrRevoked, msTime(st.SinceMS), st.Detail
			return lre
		case StateLost:
			lre.Reason, lre.Since, lre.Detail = ErrLost, msTime(st.SinceMS), st.Detail
			return lre
		}
		known = &remembered{h: h, family: st.Family, authorizedMS: st.AuthorizedMS, refreshExpiryMS: st.RefreshExpiryMS, rotations: st.Rotations}
	} else {
		known = b.rot.recalled()
	}
	if known == nil {
		b.opts.Logger.Warn("oauthbroker: no refresh token is stored: a human must authorize the app", "user", b.opts.User)
		return lre
	}
	now := time.Now()
	lre.Reason, lre.Since = ErrLost, time.UnixMilli(now.UnixMilli())
	lre.Detail = fmt.Sprintf("Redis no longer holds the refresh token of generation %d (it lost its data or evicted the key)", known.h.gen)
	st := statusBody{Provider: b.opts.Provider.Name, State: StateLost, Family: known.family, AuthorizedMS: known.authorizedMS,
		Rotations: known.rotations, RefreshExpiryMS: known.refreshExpiryMS, SinceMS: now.UnixMilli(), Detail: lre.Detail}
	raw, _ := encodeRecord(known.h, st)
	payload := alertPayload{Kind: AlertLost, AtMS: now.UnixMilli(), Detail: lre.Detail}.encode()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	n, err := lostScript.Run(rctx, b.opts.Redis, []string{b.secretKey(), b.statusKey(), b.alertsKey()},
		statusRaw, raw, alertField("lost", known.h, strconv.FormatInt(known.h.gen, 10)), payload).Int64()
	cancel()
	switch {
	case err != nil:
		b.opts.Logger.Warn("oauthbroker: could not record the lost refresh token", "user", b.opts.User, "err", err)
	case n == 1:
		b.opts.Logger.Error("oauthbroker: Redis lost the refresh token: a human must authorize the app again",
			"user", b.opts.User, "generation", known.h.gen)
	}
	return lre
}
