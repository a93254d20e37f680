package kitefake

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ist is India Standard Time (UTC+05:30, no daylight saving time).
var ist = time.FixedZone("IST", 5*60*60+30*60)

// nextMorning returns the next 06:00 IST after t, when Kite flushes access tokens.
func nextMorning(t time.Time) time.Time {
	l := t.In(ist)
	at := time.Date(l.Year(), l.Month(), l.Day(), 6, 0, 0, 0, ist)
	if !at.After(t) {
		at = at.Add(24 * time.Hour)
	}
	return at
}

// handleLogin is Kite's login page. Without Options.LoginPassword the human's part is
// done at once: it issues a request token and redirects to the app's redirect URL. With
// it, GET shows a form and the form's POST logs in.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if s.opts.LoginPassword != "" {
		s.loginForm(w, r)
		return
	}
	s.completeLogin(w, r, r.URL.Query())
}

// completeLogin issues a request token for the app q names and redirects the browser
// to its redirect URL.
func (s *Server) completeLogin(w http.ResponseWriter, r *http.Request, q url.Values) {
	s.mu.Lock()
	a := s.apps[q.Get("api_key")]
	var target string
	status := http.StatusFound
	var problem string
	switch {
	case r.Method != http.MethodGet && s.opts.LoginPassword == "":
		status, problem = http.StatusMethodNotAllowed, "GET only"
	case a == nil:
		status, problem = http.StatusBadRequest, "Invalid `api_key`."
	case a.redirect == "":
		status, problem = http.StatusBadRequest, "The app has no redirect URL."
	default:
		extra, err := url.ParseQuery(q.Get("redirect_params"))
		u, uerr := url.Parse(a.redirect)
		if err != nil || uerr != nil {
			status, problem = http.StatusBadRequest, "Invalid `redirect_params`."
			break
		}
		back := u.Query()
		for k, vs := range extra {
			back[k] = vs
		}
		back.Set("action", "login")
		back.Set("type", "login")
		back.Set("status", "success")
		back.Set("request_token", s.issueRequestTokenLocked(a.key))
		u.RawQuery = back.Encode()
		target = u.String()
	}
	s.mu.Unlock()
	s.record(r, ConnectLogin, status)
	if problem != "" {
		http.Error(w, problem, status)
		return
	}
	http.Redirect(w, r, target, http.StatusFound)
}

// loginForm is Kite's login page for a browser: GET shows the form, POST checks the
// user ID and password and completes the login.
func (s *Server) loginForm(w http.ResponseWriter, r *http.Request) {
	var q url.Values
	switch r.Method {
	case http.MethodGet:
		q = r.URL.Query()
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := r.ParseForm(); err != nil {
			s.record(r, ConnectLogin, http.StatusBadRequest)
			http.Error(w, "Invalid form.", http.StatusBadRequest)
			return
		}
		q = r.PostForm
	default:
		s.record(r, ConnectLogin, http.StatusMethodNotAllowed)
		http.Error(w, "GET or POST only", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	a, user := s.apps[q.Get("api_key")], s.user
	s.mu.Unlock()
	if a == nil {
		s.record(r, ConnectLogin, http.StatusBadRequest)
		http.Error(w, "Invalid `api_key`.", http.StatusBadRequest)
		return
	}
	page := loginPage{APIKey: q.Get("api_key"), RedirectParams: q.Get("redirect_params"), V: q.Get("v")}
	if r.Method == http.MethodPost {
		okUser := strings.EqualFold(strings.TrimSpace(q.Get("user_id")), user)
		okPassword := subtle.ConstantTimeCompare([]byte(q.Get("password")), []byte(s.opts.LoginPassword)) == 1
		if okUser && okPassword {
			s.completeLogin(w, r, q)
			return
		}
		page.Error = "Invalid `user_id` or `password`."
	}
	s.record(r, ConnectLogin, http.StatusOK)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = loginTemplate.Execute(w, page)
}

// loginPage is the login form's data.
type loginPage struct {
	APIKey, RedirectParams, V string
	Error                     string
}

var loginTemplate = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Kite (fake) - Login</title></head><body>
<h1>Login to Kite (fake)</h1>
{{with .Error}}<p class="error" role="alert">{{.}}</p>{{end}}
<form method="post" action="/connect/login">
<input type="hidden" name="api_key" value="{{.APIKey}}">
<input type="hidden" name="redirect_params" value="{{.RedirectParams}}">
<input type="hidden" name="v" value="{{.V}}">
<p><label for="user_id">User ID</label> <input id="user_id" name="user_id" autocomplete="username"></p>
<p><label for="password">Password</label> <input id="password" type="password" name="password" autocomplete="current-password"></p>
<p><button type="submit">Login</button></p>
</form></body></html>
`))

// handleSession serves POST /session/token (the exchange) and DELETE /session/token
// (logout).
func (s *Server) handleSession(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		s.exchange(w, r)
	case http.MethodDelete:
		s.logout(w, r)
	default:
		s.record(r, SessionToken, http.StatusMethodNotAllowed)
		writeError(w, http.StatusMethodNotAllowed, "InputException", "Method not allowed.")
	}
}

// kiteError is an error answer about to be written.
type kiteError struct {
	status    int
	errorType string
	message   string
}

func (s *Server) exchange(w http.ResponseWriter, r *http.Request) {
	var fail *kiteError
	var data map[string]any
	func() {
		if r.Header.Get("X-Kite-Version") != "3" {
			fail = &kiteError{http.StatusBadRequest, "InputException", "Invalid or missing `X-Kite-Version` header."}
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if err := r.ParseForm(); err != nil {
			fail = &kiteError{http.StatusBadRequest, "InputException", "Invalid form body."}
			return
		}
		apiKey, rt, sum := r.PostForm.Get("api_key"), r.PostForm.Get("request_token"), r.PostForm.Get("checksum")
		s.mu.Lock()
		defer s.mu.Unlock()
		a := s.apps[apiKey]
		switch {
		case apiKey == "" || rt == "" || sum == "":
			fail = &kiteError{http.StatusBadRequest, "InputException", "Missing `api_key`, `request_token` or `checksum`."}
			return
		case a == nil:
			fail = &kiteError{http.StatusForbidden, "InputException", "Invalid `api_key`."}
			return
		}
		t := s.requestTokens[rt]
		if t == nil || t.used || t.apiKey != apiKey || !s.opts.Now().Before(t.expires) {
			fail = &kiteError{http.StatusForbidden, "TokenException", MsgInvalidToken}
			return
		}
		want := sha256.Sum256([]byte(apiKey + rt + a.secret))
		got, err := hex.DecodeString(sum)
		if err != nil || subtle.ConstantTimeCompare(got, want[:]) != 1 {
			fail = &kiteError{http.StatusForbidden, "TokenException", MsgInvalidChecksum}
			return // a wrong checksum does not use the request token up
		}
		t.used = true
		now := s.opts.Now()
		access, public := s.issueLocked(apiKey, t.userID), randomToken()
		refresh := ""
		if s.opts.RefreshTokens {
			refresh = randomToken()
			s.refreshTokens[refresh] = &refreshToken{apiKey: apiKey, userID: t.userID}
		}
		data = map[string]any{
			"user_type": "individual", "email": strings.ToLower(t.userID) + "@example.com",
			"user_name": s.userName, "user_shortname": s.userName, "broker": "ZERODHA",
			"exchanges": []string{"NSE", "BSE", "NFO"}, "products": []string{"CNC", "MIS", "NRML"},
			"order_types": []string{"MARKET", "LIMIT", "SL", "SL-M"}, "avatar_url": nil,
			"user_id": t.userID, "api_key": apiKey, "access_token": access, "public_token": public,
			"refresh_token": refresh, "enctoken": randomToken(),
			"login_time": now.In(ist).Format("2006-01-02 15:04:05"),
			"meta":       map[string]any{"demat_consent": "consent"},
		}
	}()
	if fail != nil {
		s.record(r, SessionToken, fail.status)
		writeError(w, fail.status, fail.errorType, fail.message)
		return
	}
	s.record(r, SessionToken, http.StatusOK)
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": data})
}

// issueLocked issues a new access token for apiKey and userID, killing the previous
// one: Kite keeps one valid access token per app and user. s.mu must be held.
func (s *Server) issueLocked(apiKey, userID string) string {
	for _, old := range s.tokens {
		if old.apiKey == apiKey && old.userID == userID {
			s.killLocked(old, "superseded")
		}
	}
	now := s.opts.Now()
	expires := nextMorning(now)
	if s.opts.TokenLifetime > 0 {
		expires = now.Add(s.opts.TokenLifetime)
	}
	access := randomToken()
	s.tokens[access] = &accessToken{apiKey: apiKey, userID: userID, expires: expires, done: make(chan struct{})}
	s.issued = append(s.issued, access)
	return access
}

// handleRefresh serves POST /session/refresh_token: a refresh token and its checksum
// for a new access token.
func (s *Server) handleRefresh(w http.ResponseWriter, r *http.Request) {
	var fail *kiteError
	var data map[string]any
	func() {
		switch {
		case r.Method != http.MethodPost:
			fail = &kiteError{http.StatusMethodNotAllowed, "InputException", "Method not allowed."}
			return
		case r.Header.Get("X-Kite-Version") != "3":
			fail = &kiteError{http.StatusBadRequest, "InputException", "Invalid or missing `X-Kite-Version` header."}
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if err := r.ParseForm(); err != nil {
			fail = &kiteError{http.StatusBadRequest, "InputException", "Invalid form body."}
			return
		}
		apiKey, rt, sum := r.PostForm.Get("api_key"), r.PostForm.Get("refresh_token"), r.PostForm.Get("checksum")
		s.mu.Lock()
		defer s.mu.Unlock()
		a := s.apps[apiKey]
		switch {
		case apiKey == "" || rt == "" || sum == "":
			fail = &kiteError{http.StatusBadRequest, "InputException", "Missing `api_key`, `refresh_token` or `checksum`."}
			return
		case a == nil:
			fail = &kiteError{http.StatusForbidden, "InputException", "Invalid `api_key`."}
			return
		}
		t := s.refreshTokens[rt]
		if t == nil || t.dead || t.apiKey != apiKey {
			fail = &kiteError{http.StatusForbidden, "TokenException", MsgInvalidToken}
			return
		}
		want := sha256.Sum256([]byte(apiKey + rt + a.secret))
		got, err := hex.DecodeString(sum)
		if err != nil || subtle.ConstantTimeCompare(got, want[:]) != 1 {
			fail = &kiteError{http.StatusForbidden, "TokenException", MsgInvalidChecksum}
			return
		}
		next := rt
		if s.opts.RotateRefreshTokens {
			t.dead = true
			next = randomToken()
			s.refreshTokens[next] = &refreshToken{apiKey: apiKey, userID: t.userID}
		}
		data = map[string]any{"user_id": t.userID, "access_token": s.issueLocked(apiKey, t.userID), "refresh_token": next}
	}()
	if fail != nil {
		s.record(r, SessionRefresh, fail.status)
		writeError(w, fail.status, fail.errorType, fail.message)
		return
	}
	s.record(r, SessionRefresh, http.StatusOK)
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": data})
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	t := s.tokens[q.Get("access_token")]
	ok := t != nil && t.apiKey == q.Get("api_key")
	if ok {
		s.killLocked(t, "logged out")
	}
	s.mu.Unlock()
	if !ok {
		s.record(r, SessionToken, http.StatusForbidden)
		writeError(w, http.StatusForbidden, "TokenException", MsgIncorrectAccessToken)
		return
	}
	s.record(r, SessionToken, http.StatusOK)
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": true})
}

// authorized returns the live token named by apiKey and access, or nil.
func (s *Server) authorized(apiKey, access string) *accessToken {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[access]
	if t == nil || t.apiKey != apiKey || !s.aliveLocked(t) {
		return nil
	}
	return t
}

// handleProfile is an ordinary authenticated API call, and the cheap check of a token.
// It answers any method (Kite's is GET only: a known leniency).
func (s *Server) handleProfile(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Kite-Version") != "3" {
		s.record(r, UserProfile, http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, "InputException", "Invalid or missing `X-Kite-Version` header.")
		return
	}
	cred, ok := strings.CutPrefix(r.Header.Get("Authorization"), "token ")
	apiKey, access, _ := strings.Cut(cred, ":")
	t := s.authorized(apiKey, access)
	if !ok || t == nil {
		s.record(r, UserProfile, http.StatusForbidden)
		writeError(w, http.StatusForbidden, "TokenException", MsgIncorrectAccessToken)
		return
	}
	s.mu.Lock()
	name := s.userName
	s.mu.Unlock()
	s.record(r, UserProfile, http.StatusOK)
	writeJSON(w, http.StatusOK, map[string]any{"status": "success", "data": map[string]any{
		"user_id": t.userID, "user_type": "individual", "email": strings.ToLower(t.userID) + "@example.com",
		"user_name": name, "user_shortname": name, "broker": "ZERODHA",
		"exchanges": []string{"NSE", "BSE", "NFO"}, "products": []string{"CNC", "MIS", "NRML"},
		"order_types": []string{"MARKET", "LIMIT", "SL", "SL-M"}, "avatar_url": nil,
		"meta": map[string]any{"demat_consent": "consent"}}})
}

// handleFeed streams "tick N" lines while the token lives.
func (s *Server) handleFeed(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	access := q.Get("access_token")
	t := s.authorized(q.Get("api_key"), access)
	status := http.StatusOK
	if t == nil {
		status = http.StatusForbidden
	}
	s.mu.Lock()
	s.feeds = append(s.feeds, FeedAttempt{AccessToken: access, Status: status, Time: time.Now()})
	s.requests = append(s.requests, Request{Endpoint: Feed, Method: r.Method, Header: r.Header.Clone(), Status: status, Time: time.Now()})
	if t != nil {
		s.active++
	}
	drop := s.drop
	s.mu.Unlock()
	if t == nil {
		writeError(w, http.StatusForbidden, "TokenException", MsgIncorrectAccessToken)
		return
	}
	defer func() {
		s.mu.Lock()
		s.active--
		s.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	expiry := time.NewTimer(t.expires.Sub(s.opts.Now()))
	defer expiry.Stop()
	ticker := time.NewTicker(s.opts.TickInterval)
	defer ticker.Stop()
	for n := 1; ; n++ {
		if _, err := fmt.Fprintf(w, "tick %d\n", n); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-ticker.C:
		case <-t.done:
			return
		case <-expiry.C:
			s.mu.Lock()
			alive := s.aliveLocked(t)
			s.mu.Unlock()
			if !alive {
				return
			}
		case <-drop:
			return
		case <-s.quit:
			return
		case <-r.Context().Done():
			return
		}
	}
}

func writeError(w http.ResponseWriter, status int, errorType, message string) {
	writeJSON(w, status, map[string]any{"status": "error", "message": message, "data": nil, "error_type": errorType})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
