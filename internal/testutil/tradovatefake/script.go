package tradovatefake

import (
	"net/http"
	"time"
)

// Response is a canned answer. The zero value answers normally; set fields to answer
// otherwise. Build them with the helpers ([Penalty], [Captcha], [Status], ...).
type Response struct {
	// Delay is waited before answering (bounded by the request's context). A Response
	// with only Delay set answers normally after the delay.
	Delay time.Duration
	// Status is the HTTP status to answer with an empty body (e.g. 429, 423, 500).
	Status int
	// Body is sent as is with HTTP 200 (or Status), e.g. garbage or "{}".
	Body string
	// ErrorText answers HTTP 200 {"errorText": ErrorText} (for the TradingView login
	// {"s":"error","errmsg": ErrorText}).
	ErrorText string
	// PenaltySeconds answers a time penalty {"p-ticket":...,"p-time":PenaltySeconds,
	// "p-captcha":false}. The next request for the same endpoint and user must carry the
	// ticket and come at least PenaltySeconds later, or it gets a new penalty.
	PenaltySeconds int
	// Captcha answers a penalty with "p-captcha": true; every later login of that user
	// answers the same until [Server.ClearCaptcha].
	Captcha bool
	// Lockout answers HTTP 429 and locks every login out for Options.LockoutWindow,
	// each attempt during the window restarting it, until [Server.ClearLockout].
	Lockout bool
	// Cut handles the request normally (a login opens its session) but sends only the
	// first half of the answer's body and drops the connection, as a network failure
	// in the middle of an answer would.
	Cut bool
}

// canned reports whether r answers by itself rather than normally.
func (r Response) canned() bool {
	return r.Status != 0 || r.Body != "" || r.ErrorText != "" || r.PenaltySeconds != 0 || r.Captcha || r.Lockout
}

// Cut handles the request but drops the connection half-way through the answer.
func Cut() Response { return Response{Cut: true} }

// Penalty answers a time penalty of the given seconds.
func Penalty(seconds int) Response { return Response{PenaltySeconds: seconds} }

// Captcha answers a penalty with p-captcha true.
func Captcha() Response { return Response{Captcha: true} }

// Lockout answers HTTP 429 and starts the rolling lockout.
func Lockout() Response { return Response{Lockout: true} }

// Status answers the given HTTP status with an empty body (423, 500, 503...).
func Status(code int) Response { return Response{Status: code} }

// ErrorText answers HTTP 200 with errorText (errmsg on the TradingView login).
func ErrorText(text string) Response { return Response{ErrorText: text} }

// Garbage answers HTTP 200 with a body that is not JSON.
func Garbage() Response { return Response{Body: `{"accessToken": <html>oops`} }

// NoToken answers HTTP 200 with neither a token nor an error.
func NoToken() Response { return Response{Body: `{}`} }

// Slow answers normally after d.
func Slow(d time.Duration) Response { return Response{Delay: d} }

// Call describes a request for a hook.
type Call struct {
	Endpoint Endpoint
	User     string
	// Request is the HTTP request; its body has already been read.
	Request *http.Request
}

// Script queues answers for requests of user to ep, used one per request in order
// before normal handling resumes. user "" matches any user without a queue of its own.
func (s *Server) Script(ep Endpoint, user string, answers ...Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := callKey{ep, user}
	s.scripts[k] = append(s.scripts[k], answers...)
}

// ClearScripts drops every queued answer and outstanding penalty ticket.
func (s *Server) ClearScripts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts = map[callKey][]Response{}
	s.penalties = map[callKey]*pendingPenalty{}
}

// SetHook installs fn, asked for every request that no script answers: when it returns
// true its Response is used. nil removes the hook. fn must be safe for concurrent use.
func (s *Server) SetHook(fn func(Call) (Response, bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = fn
}

// ClearCaptcha lets user log in again after a captcha, as if a human had solved it.
func (s *Server) ClearCaptcha(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.captcha, user)
}

// ClearLockout ends an HTTP 429 lockout.
func (s *Server) ClearLockout() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lockedUntil = time.Time{}
}

type pendingPenalty struct {
	ticket    string
	notBefore time.Time
	seconds   int
}

// nextAnswer decides how to answer a request of user to ep that carried ticket
// (possibly ""). ok false means answer normally.
func (s *Server) nextAnswer(c Call, ticket string) (Response, bool) {
	now := time.Now()
	s.mu.Lock()
	k := callKey{c.Endpoint, c.User}
	if c.Endpoint == AccessTokenRequest || c.Endpoint == Authorize { // logins only
		if now.Before(s.lockedUntil) {
			s.lockedUntil = now.Add(s.opts.LockoutWindow) // rolling window
			s.mu.Unlock()
			return Response{Status: http.StatusTooManyRequests}, true
		}
		if s.captcha[c.User] {
			s.mu.Unlock()
			return Response{Captcha: true}, true
		}
	}
	if p := s.penalties[k]; p != nil {
		if ticket != p.ticket || now.Before(p.notBefore) {
			// Not handled: the caller ignored the ticket or came back too early.
			s.mu.Unlock()
			return Response{PenaltySeconds: p.seconds}, true
		}
		delete(s.penalties, k)
	}
	q, qk := s.scripts[k], k
	if len(q) == 0 {
		qk = callKey{c.Endpoint, ""}
		q = s.scripts[qk]
	}
	if len(q) > 0 {
		r := q[0]
		s.scripts[qk] = q[1:]
		s.mu.Unlock()
		return r, true
	}
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		return hook(c)
	}
	return Response{}, false
}

// startPenalty records the ticket the next request must carry.
func (s *Server) startPenalty(ep Endpoint, user string, seconds int) string {
	ticket := randomHex(16)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.penalties[callKey{ep, user}] = &pendingPenalty{
		ticket:    ticket,
		notBefore: time.Now().Add(time.Duration(seconds) * time.Second),
		seconds:   seconds,
	}
	return ticket
}

func (s *Server) startCaptcha(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.captcha[user] = true
}

func (s *Server) startLockout() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lockedUntil = time.Now().Add(s.opts.LockoutWindow)
}
