// Package tradovatefake is an in-process Tradovate authentication server for tests.
//
// It follows docs/tradovate.md (the broker's documented behaviour, and where the fake is
// knowingly lenient): the official login (POST /v1/auth/accesstokenrequest), the
// TradingView-style form login (POST /authorize?locale=en, answering either shape that
// public material shows, see Options.TVCamelCase), renewal (GET
// /v1/auth/renewaccesstoken), the user check (GET /v1/auth/me) and both lists of a
// user's trading accounts (GET /v1/account/list, GET /accounts?locale=en), whose
// accounts tests change at run time ([Server.SetAccounts]). It issues real
// EdDSA-signed JWTs with sub, exp, jti and phs claims, tracks sessions (a third login
// revokes the oldest session's tokens), validates Bearer tokens, counts every call per
// endpoint and user, and can be scripted to answer with penalties, captchas, 429, 423,
// errorText, 5xx, slowness, garbage or an answer cut short.
//
// Start one with [New]; it is closed by t.Cleanup. A [Server] is safe for concurrent use.
package tradovatefake

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Endpoint names one of the fake's endpoints.
type Endpoint string

// The endpoints the fake serves.
const (
	// AccessTokenRequest is the official login, POST {REST}/auth/accesstokenrequest.
	AccessTokenRequest Endpoint = "auth/accesstokenrequest"
	// RenewAccessToken is the renewal, GET {REST}/auth/renewaccesstoken.
	RenewAccessToken Endpoint = "auth/renewaccesstoken"
	// Authorize is the TradingView-style login, POST {TV}/authorize?locale=en.
	Authorize Endpoint = "authorize"
	// AuthMe is the user check, GET {REST}/auth/me.
	AuthMe Endpoint = "auth/me"
	// AccountList is the official list of the user's accounts, GET {REST}/account/list.
	AccountList Endpoint = "account/list"
	// TVAccounts is the TradingView-style list of the user's accounts,
	// GET {TV}/accounts?locale=en.
	TVAccounts Endpoint = "accounts"
)

// BadCredentialsText is the errorText the fake answers for a wrong user or password.
const BadCredentialsText = "Incorrect username or password. Please try again, noting that passwords are case-sensitive."

// Options configures a fake. The zero value is a fake with 80-minute JWTs and the
// documented limit of 2 sessions per user.
type Options struct {
	// Lifetime is how long issued tokens live (default 80 minutes). A JWT's exp claim has
	// whole seconds, so a JWT's lifetime is rounded up to the next second; opaque tokens
	// (see OpaqueTokens) live exactly Lifetime, to the millisecond, which suits tests with
	// sub-second lifetimes.
	Lifetime time.Duration
	// SessionLimit is how many sessions a user may hold (default 2); the login that
	// opens one more revokes the oldest session's tokens.
	SessionLimit int
	// KeyID is the JWT header's kid (default "4").
	KeyID string
	// OpaqueTokens makes the official login and renewals issue opaque random strings
	// instead of JWTs. TradingView logins always issue JWTs.
	OpaqueTokens bool
	// OmitExpiration leaves expirationTime (official, renew) and expiration
	// (TradingView) out of responses, so clients must read the JWT exp claim.
	OmitExpiration bool
	// TVCamelCase makes the TradingView-style login answer the second shape public
	// material shows, {"s":"ok","d":{"accessToken":...,"expirationTime":"<ISO>",
	// "userId":...,"userName":...}}, instead of the first (and default),
	// {"s":"ok","d":{"access_token":...,"expiration":<unix seconds>}}.
	TVCamelCase bool
	// RenewIncludesMD makes renewals of REST tokens return a new mdAccessToken. By
	// default they omit it, as the documentation allows. Renewing a TradingView token
	// (the exchange for a REST pair) always returns one.
	RenewIncludesMD bool
	// BadCredentialsStatus is the HTTP status of a bad-credentials answer on the official
	// login (default 200, with errorText; 401 is the other documented form).
	BadCredentialsStatus int
	// Latency is added before every answer (default none).
	Latency time.Duration
	// LockoutWindow is how long an HTTP 429 lockout lasts once scripted; every login
	// attempt during it answers 429 and restarts the window (default 1 hour).
	LockoutWindow time.Duration
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	opts Options
	srv  *httptest.Server
	key  ed25519.PrivateKey

	mu            sync.Mutex                  // guards the fields below
	users         map[string]*user            // by login name
	tokens        map[string]*tokenInfo       // every token issued, by value
	sessions      map[string][]*session       // open sessions per user, oldest first
	calls         map[callKey]int             // requests received
	logins        map[string]int              // successful logins per user
	renewals      map[string]int              // successful renewals per user
	requests      []Request                   // every request, in arrival order
	scripts       map[callKey][]Response      // canned answers, consumed in order
	penalties     map[callKey]*pendingPenalty // outstanding p-tickets
	captcha       map[string]bool             // users that must solve a captcha
	lockedUntil   time.Time                   // HTTP 429 lockout of the whole "subnet"
	hook          func(Call) (Response, bool) // optional answer override
	accounts      map[string][]account        // trading accounts per user, in list order
	nextUserID    int64
	nextSession   int64
	nextAccountID int64
}

type callKey struct {
	ep   Endpoint
	user string
}

// New starts a fake and registers its Close with t.Cleanup. Add users with
// [Server.AddUser] and point clients at [Server.RESTURL] and [Server.TradingViewURL].
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Lifetime <= 0 {
		opts.Lifetime = 80 * time.Minute
	}
	if opts.SessionLimit <= 0 {
		opts.SessionLimit = 2
	}
	if opts.KeyID == "" {
		opts.KeyID = "4"
	}
	if opts.BadCredentialsStatus == 0 {
		opts.BadCredentialsStatus = http.StatusOK
	}
	if opts.LockoutWindow <= 0 {
		opts.LockoutWindow = time.Hour
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("tradovatefake: generate key: %v", err)
	}
	s := &Server{
		opts:          opts,
		key:           key,
		users:         map[string]*user{},
		tokens:        map[string]*tokenInfo{},
		sessions:      map[string][]*session{},
		calls:         map[callKey]int{},
		logins:        map[string]int{},
		renewals:      map[string]int{},
		scripts:       map[callKey][]Response{},
		penalties:     map[callKey]*pendingPenalty{},
		captcha:       map[string]bool{},
		accounts:      map[string][]account{},
		nextUserID:    3865651,
		nextAccountID: 17200369,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/"+string(AccessTokenRequest), s.handleAccessTokenRequest)
	mux.HandleFunc("/v1/"+string(RenewAccessToken), s.handleRenew)
	mux.HandleFunc("/v1/"+string(AuthMe), s.handleMe)
	mux.HandleFunc("/"+string(Authorize), s.handleAuthorize)
	mux.HandleFunc("/v1/"+string(AccountList), s.handleAccountList)
	mux.HandleFunc("/"+string(TVAccounts), s.handleTVAccounts)
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

// RESTURL is the REST base URL, the fake's counterpart of https://demo.tradovateapi.com/v1.
func (s *Server) RESTURL() string { return s.srv.URL + "/v1" }

// TradingViewURL is the TradingView-style login base URL, the fake's counterpart of
// https://tv-demo.tradovateapi.com (the login posts to TradingViewURL + "/authorize").
func (s *Server) TradingViewURL() string { return s.srv.URL }

// Close stops the server. It is also called by t.Cleanup.
func (s *Server) Close() { s.srv.Close() }

// Request is one request the fake received.
type Request struct {
	Endpoint Endpoint
	// User is the login name sent, or for renewals and checks the Bearer token's user
	// ("" when the token is unknown).
	User string
	// Time is when the request arrived.
	Time time.Time
	// Fields is the decoded JSON body (official login) or form (TradingView login),
	// nil for renewals, checks or bodies that did not decode. JSON numbers are
	// json.Number.
	Fields map[string]any
	// Query is the URL's query (e.g. locale=en on the TradingView login).
	Query url.Values
	// Header is the request's header.
	Header http.Header
	// Status is the HTTP status the fake answered.
	Status int
}

// Calls returns how many requests for user reached ep (any outcome). user "" counts
// requests of every user.
func (s *Server) Calls(ep Endpoint, user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if user != "" {
		return s.calls[callKey{ep, user}]
	}
	n := 0
	for k, c := range s.calls {
		if k.ep == ep {
			n += c
		}
	}
	return n
}

// Logins returns how many logins of user (either kind) succeeded.
func (s *Server) Logins(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins[user]
}

// Renewals returns how many renewals of user's tokens succeeded.
func (s *Server) Renewals(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renewals[user]
}

// Requests returns a copy of every request received so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// record logs r and returns its index in the request log.
func (s *Server) record(r Request) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[callKey{r.Endpoint, r.User}]++
	s.requests = append(s.requests, r)
	return len(s.requests) - 1
}

func (s *Server) setLastStatus(idx, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if idx >= 0 && idx < len(s.requests) {
		s.requests[idx].Status = status
	}
}
