// Package kitefake is an in-process Zerodha Kite Connect server for tests.
//
// It plays both Kite and the human at the keyboard. GET /connect/login?api_key=KEY
// "logs in" at once as the fake's current user and redirects (HTTP 302) to the app's
// registered redirect URL with request_token, action, type, status=success and the
// parameters of redirect_params, as Kite does. With Options.LoginPassword the human's
// part is left to a browser instead: GET /connect/login answers an HTML login form
// (user ID and password) that POSTs back to /connect/login, which redirects the same
// way once the user ID is the fake's current user and the password is right. POST /session/token exchanges a request
// token: it requires X-Kite-Version: 3 and checks the checksum (hex SHA-256 of api_key +
// request_token + api_secret); a request token works once and only for
// Options.RequestTokenTTL. A successful exchange kills the app's previous access token
// for that user, as Kite does. DELETE /session/token logs a token out.
//
// With Options.RefreshTokens, every session also carries a refresh_token, which POST
// /session/refresh_token trades (with the checksum SHA-256 of api_key + refresh_token +
// api_secret) for a new access token, killing the previous one; with
// Options.RotateRefreshTokens each renewal also replaces the refresh token.
//
// Access tokens are checked by GET /user/profile ("Authorization: token
// api_key:access_token", X-Kite-Version: 3) and by GET /feed?api_key=KEY&access_token=TOKEN, a market-data
// stream of "tick N" lines standing in for Kite's websocket. Both answer 403 with a
// TokenException once the token is expired ([Server.ExpireAccessTokens], the morning
// flush, or Options.TokenLifetime), killed by a newer login, or logged out; a feed
// streaming with a token is closed the moment the token dies.
//
// Error answers use Kite's JSON shape and messages:
// {"status":"error","message":"Invalid `checksum`.","data":null,"error_type":"TokenException"}.
//
// [Server.Script] queues canned answers per endpoint, such as an error envelope inside
// HTTP 200. docs/kite.md lists what the fake imitates and where it is knowingly lenient.
//
// Start one with [New] (closed by t.Cleanup) or [Start]. A [Server] is safe for
// concurrent use.
package kitefake

import (
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Kite's messages, as the fake sends them.
const (
	// MsgInvalidToken answers an unknown, used or expired request token.
	MsgInvalidToken = "Token is invalid or has expired."
	// MsgInvalidChecksum answers a wrong checksum.
	MsgInvalidChecksum = "Invalid `checksum`."
	// MsgIncorrectAccessToken answers an API call with a dead or unknown access token.
	MsgIncorrectAccessToken = "Incorrect `api_key` or `access_token`."
)

// Endpoint names one of the fake's endpoints in its request log.
type Endpoint string

// The fake's endpoints.
const (
	ConnectLogin   Endpoint = "connect/login"         // GET /connect/login
	SessionToken   Endpoint = "session/token"         // POST (exchange) and DELETE (logout) /session/token
	SessionRefresh Endpoint = "session/refresh_token" // POST /session/refresh_token
	UserProfile    Endpoint = "user/profile"          // GET /user/profile
	Feed           Endpoint = "feed"                  // GET /feed
	Unknown        Endpoint = "unknown"               // anything else (404)
)

// Options configures a fake. The zero value is a fake whose human logs in as "AB1234",
// whose request tokens live 5 minutes and whose access tokens live until the next
// 06:00 IST.
type Options struct {
	// UserID is the Kite client ID of the human who logs in (default "AB1234"); change
	// it later with [Server.SetUser].
	UserID string
	// UserName is that user's name (default "Kite Fake").
	UserName string
	// RequestTokenTTL is how long a request token can be exchanged (default 5 minutes).
	RequestTokenTTL time.Duration
	// TokenLifetime is how long access tokens live (default: until the next 06:00 IST,
	// as Kite's).
	TokenLifetime time.Duration
	// TickInterval is the pause between two lines of a feed (default 20 ms).
	TickInterval time.Duration
	// RefreshTokens makes every session carry a refresh_token (default: "", as for
	// most apps), which POST /session/refresh_token accepts.
	RefreshTokens bool
	// RotateRefreshTokens makes each renewal answer a new refresh_token and kill the one
	// it was given (default: the same refresh token is answered and keeps working).
	RotateRefreshTokens bool
	// Now is the fake's clock (default time.Now). Tests move it to expire request
	// tokens and access tokens without waiting; feeds still end on real timers.
	Now func() time.Time
	// LoginPassword, when set, makes GET /connect/login show a login form for a
	// browser (see the package comment); the current user logs in with this password
	// (default "": the login completes at once, without a form).
	LoginPassword string
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	opts Options
	srv  *httptest.Server
	quit chan struct{} // closed by Close: ends every feed
	once sync.Once

	mu            sync.Mutex               // guards the fields below
	user          string                   // who logs in next
	userName      string                   // that user's name
	apps          map[string]*app          // by api_key
	requestTokens map[string]*requestToken // by value
	refreshTokens map[string]*refreshToken // by value
	scripts       map[Endpoint][]Answer    // canned answers, consumed in order
	tokens        map[string]*accessToken  // by value
	issued        []string                 // access tokens in issue order
	requests      []Request                // every request, in arrival order
	feeds         []FeedAttempt            // every feed request, in arrival order
	active        int                      // feeds streaming now
	drop          chan struct{}            // closed and replaced by DropFeeds
}

// app is a registered Kite Connect app.
type app struct {
	key, secret, redirect string
}

type requestToken struct {
	apiKey, userID string
	expires        time.Time
	used           bool
}

type refreshToken struct {
	apiKey, userID string
	dead           bool
}

type accessToken struct {
	apiKey, userID string
	expires        time.Time
	dead           string        // why it no longer works ("" while it does)
	done           chan struct{} // closed when it dies
}

// New starts a fake and registers its Close with t.Cleanup. Register apps with
// [Server.AddApp].
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	s := Start(opts)
	t.Cleanup(s.Close)
	return s
}

// Start starts a fake outside a test (for runnable examples). Stop it with Close.
func Start(opts Options) *Server {
	if opts.UserID == "" {
		opts.UserID = "AB1234"
	}
	if opts.UserName == "" {
		opts.UserName = "Kite Fake"
	}
	if opts.RequestTokenTTL <= 0 {
		opts.RequestTokenTTL = 5 * time.Minute
	}
	if opts.TickInterval <= 0 {
		opts.TickInterval = 20 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		opts:          opts,
		quit:          make(chan struct{}),
		user:          opts.UserID,
		userName:      opts.UserName,
		apps:          map[string]*app{},
		requestTokens: map[string]*requestToken{},
		refreshTokens: map[string]*refreshToken{},
		scripts:       map[Endpoint][]Answer{},
		tokens:        map[string]*accessToken{},
		drop:          make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/connect/login", s.handleLogin)
	mux.HandleFunc("/session/token", s.scripted(SessionToken, s.handleSession))
	mux.HandleFunc("/session/refresh_token", s.scripted(SessionRefresh, s.handleRefresh))
	mux.HandleFunc("/user/profile", s.scripted(UserProfile, s.handleProfile))
	mux.HandleFunc("/feed", s.handleFeed)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.record(r, Unknown, http.StatusNotFound)
		writeError(w, http.StatusNotFound, "GeneralException", "Route not found")
	})
	s.srv = httptest.NewServer(mux)
	return s
}

// Close ends every feed and stops the server. It is idempotent.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.quit)
		s.srv.Close()
	})
}

// URL is the fake's base URL: the API root (Kite's https://api.kite.trade).
func (s *Server) URL() string { return s.srv.URL }

// LoginURL is the login page (Kite's https://kite.zerodha.com/connect/login).
func (s *Server) LoginURL() string { return s.srv.URL + "/connect/login" }

// FeedURL is the market-data stream (standing in for Kite's wss://ws.kite.trade).
func (s *Server) FeedURL() string { return s.srv.URL + "/feed" }

// AddApp registers a Kite Connect app: its api_key, api_secret and redirect URL.
// Registering a key again replaces it.
func (s *Server) AddApp(apiKey, apiSecret, redirectURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apps[apiKey] = &app{key: apiKey, secret: apiSecret, redirect: redirectURL}
}

// SetUser makes the next logins be those of userID.
func (s *Server) SetUser(userID, userName string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.user, s.userName = userID, userName
}

// IssueRequestToken returns a request token for apiKey as if the human had just logged
// in, without the redirect. It panics if apiKey is not registered.
func (s *Server) IssueRequestToken(apiKey string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apps[apiKey] == nil {
		panic("kitefake: IssueRequestToken for an unregistered api_key")
	}
	return s.issueRequestTokenLocked(apiKey)
}

func (s *Server) issueRequestTokenLocked(apiKey string) string {
	v := randomToken()
	s.requestTokens[v] = &requestToken{apiKey: apiKey, userID: s.user, expires: s.opts.Now().Add(s.opts.RequestTokenTTL)}
	return v
}

// ExpireAccessTokens kills every access token now, as Kite's morning flush does: API
// calls with them answer 403 TokenException and their feeds are closed.
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.tokens {
		s.killLocked(t, "expired")
	}
}

// RevokeRefreshTokens makes every refresh token issued so far unusable, as when the
// user revokes the app's access: renewals with them answer 403 TokenException.
func (s *Server) RevokeRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.refreshTokens {
		r.dead = true
	}
}

// RefreshTokenValid reports whether Kite would accept refreshToken now.
func (s *Server) RefreshTokenValid(refreshToken string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.refreshTokens[refreshToken]
	return r != nil && !r.dead
}

// Answer is a canned answer for [Server.Script]: Body sent with Status.
type Answer struct {
	Status int
	Body   string
}

// ErrorAnswer is Kite's error envelope with errorType and message, sent with status
// (Kite sometimes sends it with 200).
func ErrorAnswer(status int, errorType, message string) Answer {
	b, _ := json.Marshal(map[string]any{"status": "error", "message": message, "data": nil, "error_type": errorType})
	return Answer{Status: status, Body: string(b)}
}

// Script queues answers for the next requests to ep (SessionToken, SessionRefresh or
// UserProfile), one per request in order, before normal handling resumes. A scripted
// request changes nothing in the fake.
func (s *Server) Script(ep Endpoint, answers ...Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[ep] = append(s.scripts[ep], answers...)
}

// scripted answers a request to ep from its script, or passes it to next.
func (s *Server) scripted(ep Endpoint, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		q := s.scripts[ep]
		var a Answer
		if len(q) > 0 {
			a, s.scripts[ep] = q[0], q[1:]
		}
		s.mu.Unlock()
		if a.Status == 0 {
			next(w, r)
			return
		}
		s.record(r, ep, a.Status)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.Status)
		_, _ = io.WriteString(w, a.Body)
	}
}

// DropFeeds closes every streaming feed without touching the tokens, like a network
// blip: clients may connect again with the same token.
func (s *Server) DropFeeds() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.drop)
	s.drop = make(chan struct{})
}

// Valid reports whether Kite would accept accessToken now.
func (s *Server) Valid(accessToken string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[accessToken]
	return t != nil && s.aliveLocked(t)
}

// AccessTokens returns every access token issued so far, oldest first.
func (s *Server) AccessTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// Request is one request the fake received.
type Request struct {
	// Endpoint is the endpoint the request reached.
	Endpoint Endpoint
	// Method is the HTTP method.
	Method string
	// Header is the request's header.
	Header http.Header
	// Status is the HTTP status the fake answered.
	Status int
	// Time is when the request arrived (real time).
	Time time.Time
}

// Requests returns a copy of every request received so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Calls returns how many requests reached ep with method and were answered status;
// method "" and status 0 match any.
func (s *Server) Calls(ep Endpoint, method string, status int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r.Endpoint == ep && (method == "" || r.Method == method) && (status == 0 || r.Status == status) {
			n++
		}
	}
	return n
}

// FeedAttempt is one request for the feed.
type FeedAttempt struct {
	// AccessToken is the token the client sent.
	AccessToken string
	// Status is 200 when the stream started, 403 when the token was refused.
	Status int
	// Time is when the request arrived (real time).
	Time time.Time
}

// FeedAttempts returns every feed request so far, in arrival order.
func (s *Server) FeedAttempts() []FeedAttempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]FeedAttempt(nil), s.feeds...)
}

// ActiveFeeds returns how many feeds are streaming now.
func (s *Server) ActiveFeeds() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

// aliveLocked reports whether t is accepted now. s.mu must be held.
func (s *Server) aliveLocked(t *accessToken) bool {
	if t.dead == "" && !s.opts.Now().Before(t.expires) {
		s.killLocked(t, "expired")
	}
	return t.dead == ""
}

// killLocked makes t unusable and ends its feeds. s.mu must be held.
func (s *Server) killLocked(t *accessToken, why string) {
	if t.dead != "" {
		return
	}
	t.dead = why
	close(t.done)
}

// record logs one request. s.mu must not be held.
func (s *Server) record(r *http.Request, ep Endpoint, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{Endpoint: ep, Method: r.Method, Header: r.Header.Clone(), Status: status, Time: time.Now()})
}

// randomToken returns 32 random alphanumeric characters, the shape of Kite's tokens.
func randomToken() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand does not fail on supported platforms
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
