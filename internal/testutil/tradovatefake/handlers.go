package tradovatefake

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxBody bounds what the fake reads from a request.
const maxBody = 1 << 20

// statusWriter remembers the status written, for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

// WriteHeader records the first status written.
func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// serve records the request, applies latency, scripts and hooks, and calls normal for
// an ordinary answer.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, req Request, ticket string,
	normal func(w http.ResponseWriter)) {
	sw := &statusWriter{ResponseWriter: w}
	idx := s.record(req)
	defer func() { s.setLastStatus(idx, sw.status) }()
	if !sleep(r.Context(), s.opts.Latency) {
		return
	}
	answer, ok := s.nextAnswer(Call{Endpoint: req.Endpoint, User: req.User, Request: r}, ticket)
	if ok {
		if !sleep(r.Context(), answer.Delay) {
			return
		}
		if answer.canned() {
			s.writeCanned(sw, req.Endpoint, req.User, answer)
			return
		}
		if answer.Cut {
			normal(&cutWriter{statusWriter: sw})
			return
		}
	}
	normal(sw)
}

// cutWriter sends the status and the first half of the body, then aborts the
// connection: the client sees a body cut short.
type cutWriter struct {
	*statusWriter
	header bool
}

// WriteHeader declares the body's full length, which never arrives.
func (w *cutWriter) WriteHeader(code int) { w.status, w.header = code, true }

// Write sends half of b and aborts the connection.
func (w *cutWriter) Write(b []byte) (int, error) {
	if !w.header {
		w.WriteHeader(http.StatusOK)
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.statusWriter.WriteHeader(w.status)
	_, _ = w.statusWriter.Write(b[:len(b)/2])
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	panic(http.ErrAbortHandler) // net/http drops the connection without logging
}

func (s *Server) writeCanned(w http.ResponseWriter, ep Endpoint, user string, a Response) {
	switch {
	case a.Lockout:
		s.startLockout()
		w.WriteHeader(http.StatusTooManyRequests)
	case a.Captcha:
		s.startCaptcha(user)
		writeJSON(w, http.StatusOK, map[string]any{"p-ticket": randomHex(16), "p-time": 60, "p-captcha": true})
	case a.PenaltySeconds != 0:
		ticket := s.startPenalty(ep, user, a.PenaltySeconds)
		writeJSON(w, http.StatusOK, map[string]any{"p-ticket": ticket, "p-time": a.PenaltySeconds, "p-captcha": false})
	case a.ErrorText != "":
		if ep == Authorize || ep == TVAccounts { // the TradingView API's error shape
			writeJSON(w, http.StatusOK, map[string]any{"s": "error", "errmsg": a.ErrorText})
		} else {
			writeJSON(w, http.StatusOK, map[string]any{"errorText": a.ErrorText})
		}
	case a.Body != "":
		w.Header().Set("Content-Type", "application/json")
		status := a.Status
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, a.Body)
	default:
		w.WriteHeader(a.Status)
	}
}

// handleAccessTokenRequest serves the official login.
func (s *Server) handleAccessTokenRequest(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody))
	var fields map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	decodeErr := dec.Decode(&fields)
	name, _ := fields["name"].(string)
	password, _ := fields["password"].(string)
	ticket, _ := fields["p-ticket"].(string)
	req := Request{Endpoint: AccessTokenRequest, User: name, Time: time.Now(), Fields: fields, Query: r.URL.Query(), Header: r.Header.Clone()}
	if decodeErr != nil || name == "" || password == "" || !hasMediaType(r, "application/json") {
		// A missing or unreadable body is a bad request.
		idx := s.record(req)
		s.setLastStatus(idx, http.StatusBadRequest)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.serve(w, r, req, ticket, func(w http.ResponseWriter) {
		resp, ok := s.login(name, password, false)
		if !ok {
			writeJSON(w, s.opts.BadCredentialsStatus, map[string]any{"errorText": BadCredentialsText})
			return
		}
		writeJSON(w, http.StatusOK, resp)
	})
}

// handleAuthorize serves the TradingView-style form login.
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody))
	form, formErr := url.ParseQuery(string(body))
	login, password := form.Get("login"), form.Get("password")
	var fields map[string]any
	if formErr == nil && len(form) > 0 {
		fields = map[string]any{}
		for k := range form {
			fields[k] = form.Get(k)
		}
	}
	req := Request{Endpoint: Authorize, User: login, Time: time.Now(), Fields: fields, Query: r.URL.Query(), Header: r.Header.Clone()}
	if formErr != nil || login == "" || password == "" || !hasMediaType(r, "application/x-www-form-urlencoded") {
		idx := s.record(req)
		s.setLastStatus(idx, http.StatusBadRequest)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.serve(w, r, req, form.Get("p-ticket"), func(w http.ResponseWriter) {
		resp, ok := s.login(login, password, true)
		if !ok {
			writeJSON(w, http.StatusOK, map[string]any{"s": "error", "errmsg": "Invalid login or password"})
			return
		}
		writeJSON(w, http.StatusOK, resp)
	})
}

// login checks the password and opens a session. ok is false for bad credentials.
func (s *Server) login(name, password string, tv bool) (resp map[string]any, ok bool) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[name]
	if u == nil || u.password != password {
		return nil, false
	}
	sess := s.openSession(u)
	if tv {
		if u.status != StatusActive {
			return map[string]any{"s": "error", "errmsg": "User status: " + u.status}, true
		}
		tok, exp, err := s.issue(u, sess, kindTV, now)
		if err != nil {
			return map[string]any{"s": "error", "errmsg": err.Error()}, true
		}
		s.logins[name]++
		d := map[string]any{"access_token": tok}
		if !s.opts.OmitExpiration {
			d["expiration"] = exp.Unix()
		}
		if s.opts.TVCamelCase {
			d = map[string]any{"accessToken": tok, "userId": u.id, "userName": u.name}
			if !s.opts.OmitExpiration {
				d["expirationTime"] = exp.UTC().Format("2006-01-02T15:04:05.000Z07:00")
			}
		}
		return map[string]any{"s": "ok", "d": d}, true
	}
	access, exp, err := s.issue(u, sess, kindAccess, now)
	if err != nil {
		return map[string]any{"errorText": err.Error()}, true
	}
	md, _, err := s.issue(u, sess, kindMD, now)
	if err != nil {
		return map[string]any{"errorText": err.Error()}, true
	}
	s.logins[name]++
	return s.tokenResponse(u, access, md, exp), true
}

// tokenResponse is the shape of a successful official login or renewal, including
// fields a client must ignore. s.mu must be held.
func (s *Server) tokenResponse(u *user, access, md string, exp time.Time) map[string]any {
	resp := map[string]any{
		"accessToken":            access,
		"userStatus":             u.status,
		"userId":                 u.id,
		"name":                   u.name,
		"hasLive":                false,
		"outdatedTaC":            false,
		"hasFunded":              false,
		"hasMarketData":          true,
		"passwordExpirationTime": "2031-01-01T00:00:00.000Z",
		"hibpHint":               false,
	}
	if md != "" {
		resp["mdAccessToken"] = md
	}
	if !s.opts.OmitExpiration {
		resp["expirationTime"] = exp.UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	return resp
}

// bearerRequest reads the Bearer token of a GET to ep and records the request as the
// token owner's. ok is false when the method was wrong (and answered).
func (s *Server) bearerRequest(w http.ResponseWriter, r *http.Request, ep Endpoint) (bearer string, req Request, ok bool) {
	bearer, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	var owner string
	if ti := s.tokens[bearer]; ti != nil {
		owner = ti.user
	}
	s.mu.Unlock()
	req = Request{Endpoint: ep, User: owner, Time: time.Now(), Query: r.URL.Query(), Header: r.Header.Clone()}
	if r.Method != http.MethodGet {
		idx := s.record(req)
		s.setLastStatus(idx, http.StatusMethodNotAllowed)
		w.WriteHeader(http.StatusMethodNotAllowed)
		return "", req, false
	}
	return bearer, req, true
}

// restToken returns the live token a REST call presents, or nil: the market-data token
// is for the market-data socket only. s.mu must be held.
func (s *Server) restToken(bearer string, now time.Time) *tokenInfo {
	ti := s.tokens[bearer]
	if ti == nil || ti.revoked || !now.Before(ti.expiry) || ti.kind == kindMD {
		return nil
	}
	return ti
}

// handleMe serves auth/me: the caller's user data for a live token, 401 otherwise.
func (s *Server) handleMe(w http.ResponseWriter, r *http.Request) {
	bearer, req, ok := s.bearerRequest(w, r, AuthMe)
	if !ok {
		return
	}
	s.serve(w, r, req, "", func(w http.ResponseWriter) {
		s.mu.Lock()
		defer s.mu.Unlock()
		ti := s.restToken(bearer, time.Now())
		if ti == nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		u := s.users[ti.user]
		writeJSON(w, http.StatusOK, map[string]any{
			"userId": u.id, "name": u.name, "fullName": "Fake " + u.name, "email": strings.ToLower(u.name) + "@example.com",
			"emailVerified": true, "isTrial": false, "organizationName": "",
		})
	})
}

// handleRenew serves renewaccesstoken.
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	bearer, req, ok := s.bearerRequest(w, r, RenewAccessToken)
	if !ok {
		return
	}
	s.serve(w, r, req, "", func(w http.ResponseWriter) {
		now := time.Now()
		s.mu.Lock()
		defer s.mu.Unlock()
		ti := s.restToken(bearer, now)
		if ti == nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		u := s.users[ti.user]
		access, exp, err := s.issue(u, ti.session, kindAccess, now)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		var md string
		if ti.kind == kindTV || s.opts.RenewIncludesMD {
			if md, _, err = s.issue(u, ti.session, kindMD, now); err != nil {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
		}
		s.renewals[u.name]++
		writeJSON(w, http.StatusOK, s.tokenResponse(u, access, md, exp))
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func hasMediaType(r *http.Request, want string) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == want
}

// sleep waits d or until ctx ends; it reports whether the full wait happened.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
