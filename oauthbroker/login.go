package oauthbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/brokertoken/brokertoken/tokencache"
)

// stateBytes is the entropy of a login state: 128 bits, hex-encoded.
const stateBytes = 16

// loginState is what a state stands for, stored under "<Prefix>:oauth:state:<state>"
// (readable by the writer role only: it holds the PKCE verifier).
type loginState struct {
	User     string `json:"user"`
	Verifier string `json:"verifier,omitempty"`
}

// validState reports whether s has the shape of a state this package mints, so that
// nothing else is ever used in a Redis key.
func validState(s string) bool { return validHex(s, 2*stateBytes) }

// validHex reports whether s is n lower-case hex digits.
func validHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// stateFormat starts a stored state's value: "s1:<binding>:<JSON of loginState>", the
// binding being the hex SHA-256 of the browser cookie that started it ("" unbound).
const stateFormat = "s1:"

// parseLoginState reads a stored state's value.
func parseLoginState(raw string) (*loginState, error) {
	rest, ok := strings.CutPrefix(raw, stateFormat)
	if !ok {
		return nil, fmt.Errorf("%w: login state format", errRecord)
	}
	binding, js, ok := strings.Cut(rest, ":")
	if !ok || (binding != "" && !validHex(binding, 64)) {
		return nil, fmt.Errorf("%w: login state binding", errRecord)
	}
	var ls loginState
	if err := decodeStrict([]byte(js), &ls); err != nil {
		return nil, err
	}
	if err := tokencache.CheckName(ls.User); err != nil {
		return nil, fmt.Errorf("%w: %v", errRecord, err)
	}
	if ls.Verifier != "" && (len(ls.Verifier) < 43 || len(ls.Verifier) > 128 || !usableToken(ls.Verifier)) {
		return nil, fmt.Errorf("%w: bad PKCE verifier", errRecord)
	}
	return &ls, nil
}

// LoginURL returns the provider's authorization URL for the user with a new single-use
// state, valid for [Options.StateTTL] (and a PKCE challenge when [Provider.PKCE]):
//
//	https://api.schwabapi.com/v1/oauth/authorize?client_id=KEY&redirect_uri=...&response_type=code&state=...
//
// The provider hands the state back to the redirect URL, where
// [Broker.RedirectHandler] (or [Broker.Complete]) consumes it. A state minted here is
// not bound to a browser: prefer [Broker.LoginHandler], whose states only the browser
// that started them can complete. Errors wrap [tokencache.ErrRedisUnavailable] when
// the state could not be stored.
func (b *Broker) LoginURL(ctx context.Context) (string, error) {
	return b.mintURL(ctx, "")
}

// mintURL stores a new state bound to binding ("" none) and returns its URL.
func (b *Broker) mintURL(ctx context.Context, binding string) (string, error) {
	raw := make([]byte, stateBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("oauthbroker: making a login state: %w", err)
	}
	state := hex.EncodeToString(raw)
	ls := loginState{User: b.opts.User}
	var opts []oauth2.AuthCodeOption
	if b.opts.Provider.PKCE {
		ls.Verifier = oauth2.GenerateVerifier()
		opts = append(opts, oauth2.S256ChallengeOption(ls.Verifier))
	}
	js, _ := json.Marshal(ls)
	ok, err := b.opts.Redis.SetNX(ctx, b.stateKey(state), stateFormat+binding+":"+string(js), b.opts.StateTTL).Result()
	if err != nil {
		return "", redisErr("store a login state", err)
	}
	if !ok {
		return "", errors.New("oauthbroker: login state collision") // 2^-128: never in practice
	}
	return b.conf.AuthCodeURL(state, opts...), nil
}

// loginLink is the URL to show a human who must authorize: StartURL when configured,
// else a freshly minted authorization URL ("" if Redis refused it). hasState says
// that it carries a login state: it may then go to the human, never into a log or an
// error message.
func (b *Broker) loginLink(ctx context.Context) (link string, hasState bool) {
	if b.opts.StartURL != "" {
		return b.opts.StartURL, false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	link, err := b.LoginURL(ctx)
	if err != nil {
		return "", false
	}
	return link, true
}

// linkFor sets lre's URL.
func (b *Broker) linkFor(ctx context.Context, lre *LoginRequiredError) {
	lre.URL, lre.urlHasState = b.loginLink(ctx)
}

// logLink is what a log line may say of lre's URL.
func (b *Broker) logLink(lre *LoginRequiredError) string {
	switch {
	case lre.URL == "":
		return "none (set Options.StartURL)"
	case lre.urlHasState:
		return "minted (in the error's URL; set Options.StartURL for a stable one)"
	}
	return lre.URL
}

// consumeState returns what state stands for, once: nil when it is unknown, expired or
// was used. When bound is true, a state bound to a browser is consumed only when
// binding (the hex SHA-256 of the request's cookie, "" none) matches: mismatch
// reports that it did not, and the state stays for its own browser.
func consumeState(ctx context.Context, rdb redis.UniversalClient, prefix, state, binding string, bound bool) (ls *loginState, mismatch bool, err error) {
	if !validState(state) {
		return nil, false, nil
	}
	require := "0"
	if bound {
		require = "1"
	}
	res, err := consumeStateScript.Run(ctx, rdb, []string{prefix + ":oauth:state:" + state}, binding, require).StringSlice()
	if err != nil {
		return nil, false, redisErr("check a login state", err)
	}
	switch {
	case len(res) > 0 && res[0] == "mismatch":
		return nil, true, nil
	case len(res) < 2 || res[0] != "ok":
		return nil, false, nil
	}
	ls, err = parseLoginState(res[1])
	if err != nil {
		return nil, false, nil // not one of ours
	}
	return ls, false, nil
}

// Store is where a completed authorization puts the access token.
// [*tokencache.Cache] implements it: Set stores the token as the user's newest version
// and announces it to every process sharing the Redis.
type Store interface {
	Set(ctx context.Context, user string, t *tokencache.Token) (*tokencache.Token, error)
}

var _ Store = (*tokencache.Cache)(nil)

// Complete finishes an authorization from the query of the provider's redirect (code
// and state, or error): it consumes the state, exchanges the code once, stores the
// refresh token as a new grant (replacing a revoked or older one, and ending any
// revoked status), then the access token with store.Set. It is what
// [Broker.RedirectHandler] runs, for headless setups where a human pastes the
// redirected URL's query instead; it does not check which browser started the state
// (see [Broker.LoginHandler]), since the human may have used another machine's.
//
// Errors: [ErrInvalidState], the provider's refusal as [*AuthorizeError] or
// [*TokenError], Redis failures wrapping [tokencache.ErrRedisUnavailable], and the
// store's error.
func (b *Broker) Complete(ctx context.Context, store Store, query map[string][]string) (*tokencache.Token, error) {
	q := values(query)
	if e := q("error"); e != "" {
		return nil, &AuthorizeError{Code: clean(e, 60), Description: clean(q("error_description"), 200)}
	}
	ls, _, err := consumeState(ctx, b.opts.Redis, b.opts.Prefix, q("state"), "", false)
	if err != nil {
		return nil, err
	}
	if ls == nil || ls.User != b.opts.User {
		return nil, ErrInvalidState
	}
	return b.complete(ctx, store, ls, q("code"))
}

// values reads the first value of a query parameter.
func values(q map[string][]string) func(string) string {
	return func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
}

// AuthorizeError is the provider's refusal sent back to the redirect URL
// (error=access_denied, ...): the human declined, or the request was wrong.
type AuthorizeError struct {
	Code        string // the "error" parameter
	Description string // the "error_description" parameter, cleaned
}

func (e *AuthorizeError) Error() string {
	msg := "oauthbroker: the provider did not authorize the app: " + e.Code
	if e.Description != "" {
		msg += ": " + e.Description
	}
	return msg
}

// complete exchanges code for the state ls and stores the result.
func (b *Broker) complete(ctx context.Context, store Store, ls *loginState, code string) (*tokencache.Token, error) {
	if b.opts.ClientSecret == "" {
		return nil, errors.New("oauthbroker: Options.ClientSecret is not set: this process cannot exchange codes")
	}
	if code == "" || len(code) > maxTokenBytes {
		return nil, errors.New("oauthbroker: the redirect carried no usable code")
	}
	now := time.Now()
	g, err := b.exchange(ctx, code, ls.Verifier)
	if err != nil {
		return nil, err
	}
	gen, err := b.authorize(ctx, g, now)
	if err != nil {
		return nil, err
	}
	stored, err := store.Set(ctx, b.opts.User, &tokencache.Token{AccessToken: g.access, Expiry: g.accessExpiry, ObtainedAt: now})
	if err != nil {
		return nil, fmt.Errorf("oauthbroker: the refresh token is stored (generation %d) but the access token could not be: %w", gen, err)
	}
	b.opts.Logger.Info("oauthbroker: authorized", "user", b.opts.User, "generation", gen, "version", stored.Version,
		"token", tokencache.Redact(stored.AccessToken))
	return stored, nil
}

// authorize stores the grant g obtained at now as a new family (authorize.lua),
// reading the newest generation again when another write came first.
func (b *Broker) authorize(ctx context.Context, g *grant, now time.Time) (int64, error) {
	p := b.opts.Provider
	refreshExpiry := g.refreshExpiry
	if refreshExpiry.IsZero() && p.RefreshTokenLifetime > 0 {
		refreshExpiry = now.Add(p.RefreshTokenLifetime)
	}
	// Detached: the provider issued these tokens; a browser that gives up must not
	// lose them.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for range 5 {
		vals, err := b.opts.Redis.Pipelined(ctx, func(pl redis.Pipeliner) error {
			pl.Get(ctx, b.secretKey())
			pl.Get(ctx, b.statusKey())
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, redisErr("read the grant", err)
		}
		var newest int64
		for _, v := range vals {
			if s, err := v.(*redis.StringCmd).Result(); err == nil {
				newest = max(newest, leadingGen(s))
			}
		}
		gen := newest + 1
		h := header{gen: gen, grant: newGrantID()}
		sec := secret{Family: gen, RefreshToken: g.refresh, RefreshExpiryMS: timeMS(refreshExpiry), AuthorizedMS: now.UnixMilli(),
			AccessToken: g.access, AccessExpiryMS: timeMS(g.accessExpiry), ObtainedMS: now.UnixMilli()}
		st := statusBody{Provider: p.Name, State: StateActive, Family: gen, AuthorizedMS: now.UnixMilli(), RefreshExpiryMS: sec.RefreshExpiryMS}
		secRaw, _ := encodeRecord(h, sec)
		stRaw, _ := encodeRecord(h, st)
		res, err := authorizeScript.Run(ctx, b.opts.Redis, []string{b.secretKey(), b.statusKey(), b.rotationKey(), b.alertsKey()},
			newest, secRaw, stRaw).Int64()
		if err != nil {
			return 0, b.scriptErr("store the authorization", err)
		}
		if res == -1 {
			b.rot.remember(h, &sec)
			return gen, nil
		}
		if res == -2 {
			return 0, fmt.Errorf("oauthbroker: user %q: %w", b.opts.User, ErrRecordFormat)
		}
	}
	return 0, errors.New("oauthbroker: the grant kept changing while the authorization was stored")
}

// leadingGen reads the generation of a record as authorize.lua does: 0 when it has
// none.
func leadingGen(raw string) int64 {
	rest, ok := strings.CutPrefix(raw, recordPrefix)
	if !ok {
		return 0
	}
	num, _, ok := strings.Cut(rest, ":")
	if !ok || num == "" {
		return 0
	}
	var n int64
	for i := 0; i < len(num); i++ {
		if num[i] < '0' || num[i] > '9' || n > 1<<50 {
			return 0
		}
		n = n*10 + int64(num[i]-'0')
	}
	return n
}
