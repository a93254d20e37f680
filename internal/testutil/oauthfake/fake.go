// Package oauthfake is an in-process OAuth2 authorization server for tests, as strict as
// the real ones, with Charles Schwab's paths.
//
// GET /v1/oauth/authorize?response_type=code&client_id=ID&redirect_uri=URI&state=S plays
// the human too: it "logs in" at once as Options.User and redirects (HTTP 302) to URI
// with code, session and state; with Options.LoginPassword it shows a form a browser
// fills in instead. The client must be registered ([Server.AddClient]) and URI must be
// its callback URL exactly. A PKCE challenge (S256) is remembered with the code.
//
// POST /v1/oauth/token takes form-encoded grants and requires the client's credentials
// as HTTP Basic authentication, exactly (credentials in the body, or wrong ones:
// HTTP 401 invalid_client):
//   - grant_type=authorization_code: a code works once, within Options.CodeTTL, with
//     the redirect_uri it was issued for and the PKCE verifier when a challenge was
//     given (and refuses a verifier for a code issued without a challenge). A code
//     used twice revokes what it issued (RFC 6749 section 4.1.2). A new authorization
//     revokes every earlier grant of the app, as Schwab does: one grant per app.
//   - grant_type=refresh_token: each answer rotates the refresh token (unless
//     Options.KeepRefreshTokens) and the old one is dead. Presenting a dead refresh
//     token of the family is reuse: the whole family (every refresh and access token
//     issued since the authorization) is revoked, and every token of it is refused from
//     then on.
//
// Errors use RFC 6749's JSON shape, {"error":"invalid_grant","error_description":"..."},
// HTTP 400 (401 for invalid_client). Access tokens live Options.AccessTokenLifetime;
// refresh tokens Options.RefreshTokenLifetime from the authorization (or from their
// issue, with Options.SlidingRefresh).
//
// GET /trader/v1/accounts/accountNumbers with "Authorization: Bearer TOKEN" stands for
// the API: it answers the account list, or 401 for a token that is unknown, expired or
// revoked. [Server.Stats] counts exchanges, refreshes, reuse detections, revocations
// and refusals. Start one with [New] (closed by t.Cleanup) or [Start]. A [Server] is
// safe for concurrent use.
package oauthfake

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Paths of the fake's endpoints (Schwab's).
const (
	AuthorizePath = "/v1/oauth/authorize"
	TokenPath     = "/v1/oauth/token"
	AccountsPath  = "/trader/v1/accounts/accountNumbers"
)

// Options configures a fake. The zero value is a strict server whose human logs in as
// "fakeuser", with Schwab's lifetimes: 30-minute access tokens, 7-day refresh tokens
// counted from the authorization, 30-second codes, and rotating refresh tokens.
type Options struct {
	// User is who logs in (default "fakeuser").
	User string
	// LoginPassword makes the authorize endpoint a login form (GET shows it, POST with
	// username User and this password completes it). Default: no form, the login
	// completes at once.
	LoginPassword string
	// AccessTokenLifetime is the access tokens' lifetime (default 30 minutes).
	AccessTokenLifetime time.Duration
	// RefreshTokenLifetime is the refresh tokens' lifetime (default 7 days).
	RefreshTokenLifetime time.Duration
	// SlidingRefresh counts each refresh token's lifetime from its issue (default: from
	// the authorization, as Schwab does).
	SlidingRefresh bool
	// KeepRefreshTokens answers refreshes with the refresh token they used, which stays
	// valid (default: rotate, and detect reuse).
	KeepRefreshTokens bool
	// ReportRefreshExpiry adds refresh_token_expires_in to token answers (default off).
	ReportRefreshExpiry bool
	// SchwabRefusals answers a refused refresh token as Schwab does (HTTP 400,
	// "unsupported_token_type" with "refresh_token_authentication_error" in the
	// description) instead of the standard invalid_grant.
	SchwabRefusals bool
	// CodeTTL is how long a code can be exchanged (default 30 seconds).
	CodeTTL time.Duration
	// Now is the fake's clock (default time.Now).
	Now func() time.Time
}

// Stats counts what the fake did.
type Stats struct {
	Exchanges       int // codes exchanged
	Refreshes       int // refresh grants answered with new tokens
	ReuseDetections int // dead refresh tokens (or codes) presented again
	Revocations     int // families revoked for reuse
	Superseded      int // families ended by a newer authorization of the app
	Refused         int // invalid_grant answers
	APICalls        int // API requests answered 200
	APIRejected     int // API requests answered 401
}

// Server is a running fake.
type Server struct {
	opts Options
	srv  *httptest.Server

	mu       sync.Mutex // guards the fields below
	clients  map[string]*client
	codes    map[string]*code
	refresh  map[string]*refreshToken
	access   map[string]*accessToken
	families []*family
	stats    Stats
	onToken  func(grantType string) // called before a token answer, outside mu
}

type client struct{ id, secret, redirect string }

type family struct {
	clientID   string
	authorized time.Time
	revoked    bool
}

type code struct {
	clientID, redirect, challenge string
	expires                       time.Time
	used                          bool
	fam                           *family
}

type refreshToken struct {
	fam     *family
	used    bool
	expires time.Time
}

type accessToken struct {
	fam     *family
	expires time.Time
}

// New starts a fake and registers its Close with t.Cleanup.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	s := Start(opts)
	t.Cleanup(s.Close)
	return s
}

// Start starts a fake on a free loopback port; Close stops it.
func Start(opts Options) *Server {
	if opts.User == "" {
		opts.User = "fakeuser"
	}
	if opts.AccessTokenLifetime == 0 {
		opts.AccessTokenLifetime = 30 * time.Minute
	}
	if opts.RefreshTokenLifetime == 0 {
		opts.RefreshTokenLifetime = 7 * 24 * time.Hour
	}
	if opts.CodeTTL == 0 {
		opts.CodeTTL = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{opts: opts, clients: map[string]*client{}, codes: map[string]*code{},
		refresh: map[string]*refreshToken{}, access: map[string]*accessToken{}}
	mux := http.NewServeMux()
	mux.HandleFunc(AuthorizePath, s.handleAuthorize)
	mux.HandleFunc(TokenPath, s.handleToken)
	mux.HandleFunc(AccountsPath, s.handleAccounts)
	s.srv = httptest.NewServer(mux)
	return s
}

// URL returns the fake's base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) URL() string { return s.srv.URL }

// Close stops the fake.
func (s *Server) Close() { s.srv.Close() }

// AddClient registers an app: its client ID, secret and callback URL.
func (s *Server) AddClient(id, secret, redirectURL string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[id] = &client{id: id, secret: secret, redirect: redirectURL}
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// OnToken sets a function called with the grant type before each successful token
// answer is sent (after the tokens were issued), outside the fake's lock: a test blocks
// there or kills the client meanwhile. nil removes it.
func (s *Server) OnToken(f func(grantType string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onToken = f
}

// RefreshTokenState says what the fake thinks of a refresh token: "valid", "used",
// "revoked", "expired" or "unknown".
func (s *Server) RefreshTokenState(tok string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := s.refresh[tok]
	switch {
	case rt == nil:
		return "unknown"
	case rt.fam.revoked:
		return "revoked"
	case rt.used:
		return "used"
	case !s.opts.Now().Before(rt.expires):
		return "expired"
	}
	return "valid"
}

// Secrets returns every code, refresh token and access token the fake issued, for
// tests that check that none of them is ever shown.
func (s *Server) Secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.codes {
		out = append(out, k)
	}
	for k := range s.refresh {
		out = append(out, k)
	}
	for k := range s.access {
		out = append(out, k)
	}
	return out
}

// RevokeAll revokes every family, as a user who withdraws the app's access.
func (s *Server) RevokeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.families {
		if !f.revoked {
			f.revoked = true
			s.stats.Revocations++
		}
	}
}

// ValidRefreshTokens counts the refresh tokens the fake would accept now.
func (s *Server) ValidRefreshTokens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	now := s.opts.Now()
	for _, rt := range s.refresh {
		if !rt.used && !rt.fam.revoked && now.Before(rt.expires) {
			n++
		}
	}
	return n
}

// randomToken returns an opaque token: 32 random bytes, base64url.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// oauthError writes RFC 6749's error answer.
func oauthError(w http.ResponseWriter, status int, code, description string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="oauth"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": description})
}

// handleAuthorize is the authorization endpoint.
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	var q url.Values
	switch {
	case r.Method == http.MethodGet:
		q = r.URL.Query()
	case r.Method == http.MethodPost && s.opts.LoginPassword != "":
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			http.Error(w, "invalid form", http.StatusBadRequest)
			return
		}
		q = r.PostForm
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	c := s.clients[q.Get("client_id")]
	s.mu.Unlock()
	// An unknown client or a redirect URI that is not the registered one is shown to
	// the user, never redirected to (RFC 6749 section 4.1.2.1).
	if c == nil {
		http.Error(w, "unknown client_id", http.StatusBadRequest)
		return
	}
	if q.Get("redirect_uri") != c.redirect {
		http.Error(w, "redirect_uri does not match the app's callback URL", http.StatusBadRequest)
		return
	}
	back, _ := url.Parse(c.redirect)
	bq := back.Query()
	if st := q.Get("state"); st != "" {
		bq.Set("state", st)
	}
	redirectErr := func(code string) {
		bq.Set("error", code)
		back.RawQuery = bq.Encode()
		http.Redirect(w, r, back.String(), http.StatusFound)
	}
	if q.Get("response_type") != "code" {
		redirectErr("unsupported_response_type")
		return
	}
	challenge := q.Get("code_challenge")
	if challenge != "" && q.Get("code_challenge_method") != "S256" {
		redirectErr("invalid_request")
		return
	}
	if s.opts.LoginPassword != "" {
		ok := r.Method == http.MethodPost && q.Get("username") == s.opts.User &&
			subtle.ConstantTimeCompare([]byte(q.Get("password")), []byte(s.opts.LoginPassword)) == 1
		if !ok {
			if r.Method == http.MethodPost && q.Get("action") == "deny" {
				redirectErr("access_denied")
				return
			}
			p := loginPage{Params: map[string]string{}}
			for _, k := range []string{"response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method", "scope"} {
				p.Params[k] = q.Get(k)
			}
			if r.Method == http.MethodPost {
				p.Error = "Invalid username or password."
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			_ = loginTemplate.Execute(w, p)
			return
		}
	}
	cd := randomToken()
	s.mu.Lock()
	s.codes[cd] = &code{clientID: c.id, redirect: c.redirect, challenge: challenge, expires: s.opts.Now().Add(s.opts.CodeTTL)}
	s.mu.Unlock()
	bq.Set("code", cd)
	bq.Set("session", randomToken()[:16])
	back.RawQuery = bq.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

// loginPage is the login form's data.
type loginPage struct {
	Params map[string]string
	Error  string
}

var loginTemplate = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>OAuth (fake) - Log in</title></head><body>
<h1>Log in to authorize the app (fake)</h1>
{{with .Error}}<p class="error" role="alert">{{.}}</p>{{end}}
<form method="post">
{{range $k, $v := .Params}}<input type="hidden" name="{{$k}}" value="{{$v}}">
{{end}}<label>Username <input name="username" id="username" autocomplete="username"></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password"></label>
<button type="submit" name="action" value="allow" id="allow">Allow</button>
<button type="submit" name="action" value="deny" id="deny">Deny</button>
</form></body></html>
`))

// handleToken is the token endpoint.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "POST only")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable form")
		return
	}
	f := r.PostForm
	if f.Has("client_secret") {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client credentials must be sent with HTTP Basic authentication")
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		// RFC 6749 section 2.3.1: the id and secret are form-encoded before Basic.
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	}
	s.mu.Lock()
	c := s.clients[id]
	s.mu.Unlock()
	if !ok || c == nil || subtle.ConstantTimeCompare([]byte(secret), []byte(c.secret)) != 1 {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	switch f.Get("grant_type") {
	case "authorization_code":
		s.exchange(w, c, f)
	case "refresh_token":
		s.refreshGrant(w, c, f)
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
	}
}

// exchange answers an authorization_code grant.
func (s *Server) exchange(w http.ResponseWriter, c *client, f url.Values) {
	s.mu.Lock()
	now := s.opts.Now()
	cd := s.codes[f.Get("code")]
	var problem string
	switch {
	case cd == nil || cd.clientID != c.id:
		problem = "unknown authorization code"
	case cd.used:
		problem = "authorization code already used"
		s.stats.ReuseDetections++
		if cd.fam != nil && !cd.fam.revoked {
			cd.fam.revoked = true
			s.stats.Revocations++
		}
	case !now.Before(cd.expires):
		problem = "authorization code expired"
	case f.Get("redirect_uri") != cd.redirect:
		problem = "redirect_uri does not match the authorization request"
	case cd.challenge != "" && !pkceMatches(cd.challenge, f.Get("code_verifier")):
		problem = "PKCE verification failed"
	case cd.challenge == "" && f.Has("code_verifier"):
		problem = "code_verifier sent for an authorization request without code_challenge"
	}
	if problem != "" {
		if cd != nil && cd.clientID == c.id {
			cd.used = true
		}
		s.stats.Refused++
		s.mu.Unlock()
		oauthError(w, http.StatusBadRequest, "invalid_grant", problem)
		return
	}
	cd.used = true
	for _, old := range s.families { // a new authorization ends the app's earlier grants
		if old.clientID == c.id && !old.revoked {
			old.revoked = true
			s.stats.Superseded++
		}
	}
	fam := &family{clientID: c.id, authorized: now}
	cd.fam = fam
	s.families = append(s.families, fam)
	s.stats.Exchanges++
	answer := s.issueLocked(fam, now, "")
	hook := s.onToken
	s.mu.Unlock()
	if hook != nil {
		hook("authorization_code")
	}
	writeJSON(w, answer)
}

// refreshGrant answers a refresh_token grant.
func (s *Server) refreshGrant(w http.ResponseWriter, c *client, f url.Values) {
	s.mu.Lock()
	now := s.opts.Now()
	rt := s.refresh[f.Get("refresh_token")]
	var problem string
	switch {
	case rt == nil || rt.fam.clientID != c.id:
		problem = "unknown refresh token"
	case rt.fam.revoked:
		problem = "refresh token revoked"
	case rt.used:
		problem = "refresh token reused: every token of its family is revoked"
		rt.fam.revoked = true
		s.stats.ReuseDetections++
		s.stats.Revocations++
	case !now.Before(rt.expires):
		problem = "refresh token expired"
	}
	if problem != "" {
		s.stats.Refused++
		s.mu.Unlock()
		if s.opts.SchwabRefusals {
			oauthError(w, http.StatusBadRequest, "unsupported_token_type",
				`400 Bad Request: "{\"error_description\":\"Exception while authenticating refresh token [tokenDigest=fake], Exception=Failed refresh token authentication [tokenDigest=fake]]\",\"error\":\"refresh_token_authentication_error\"}"`)
			return
		}
		oauthError(w, http.StatusBadRequest, "invalid_grant", problem)
		return
	}
	keep := ""
	if s.opts.KeepRefreshTokens {
		keep = f.Get("refresh_token")
	} else {
		rt.used = true
	}
	s.stats.Refreshes++
	answer := s.issueLocked(rt.fam, now, keep)
	hook := s.onToken
	s.mu.Unlock()
	if hook != nil {
		hook("refresh_token")
	}
	writeJSON(w, answer)
}

// issueLocked issues an access token (and a refresh token, unless keep names the one to
// answer again) for fam at now and returns the answer.
func (s *Server) issueLocked(fam *family, now time.Time, keep string) map[string]any {
	at := randomToken()
	s.access[at] = &accessToken{fam: fam, expires: now.Add(s.opts.AccessTokenLifetime)}
	rtExpiry := fam.authorized.Add(s.opts.RefreshTokenLifetime)
	rt := keep
	if rt == "" {
		rt = randomToken()
		if s.opts.SlidingRefresh {
			rtExpiry = now.Add(s.opts.RefreshTokenLifetime)
		}
		s.refresh[rt] = &refreshToken{fam: fam, expires: rtExpiry}
	} else {
		rtExpiry = s.refresh[rt].expires
	}
	answer := map[string]any{
		"access_token":  at,
		"token_type":    "Bearer",
		"expires_in":    int(s.opts.AccessTokenLifetime / time.Second),
		"refresh_token": rt,
		"scope":         "api",
	}
	if s.opts.ReportRefreshExpiry {
		answer["refresh_token_expires_in"] = int(rtExpiry.Sub(now) / time.Second)
	}
	return answer
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// pkceMatches checks an S256 challenge (RFC 7636 section 4.6).
func pkceMatches(challenge, verifier string) bool {
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

// handleAccounts is the API endpoint that checks bearer tokens.
func (s *Server) handleAccounts(w http.ResponseWriter, r *http.Request) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	at := s.access[tok]
	valid := ok && at != nil && !at.fam.revoked && s.opts.Now().Before(at.expires)
	if valid {
		s.stats.APICalls++
	} else {
		s.stats.APIRejected++
	}
	s.mu.Unlock()
	if !valid {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]any{"message": "Client not authorized", "errors": []string{"invalid_token"}})
		return
	}
	writeJSON(w, []map[string]string{{"accountNumber": "12345678", "hashValue": "4B0D5FAKEHASH"}})
}
