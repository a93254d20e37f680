package tradovatefake

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The userStatus values Tradovate documents.
const (
	StatusActive           = "Active"
	StatusClosed           = "Closed"
	StatusInitiated        = "Initiated"
	StatusTemporaryLocked  = "TemporaryLocked"
	StatusUnconfirmedEmail = "UnconfirmedEmail"
)

type user struct {
	name     string
	password string
	id       int64
	status   string
}

type session struct {
	id     int64
	user   string
	phs    int64
	tokens []string // every token issued in this session
}

type tokenKind int

const (
	kindAccess tokenKind = iota // REST access token (official login or renewal)
	kindMD                      // market-data token
	kindTV                      // TradingView-style login token
)

type tokenInfo struct {
	user    string
	session *session
	kind    tokenKind
	expiry  time.Time
	revoked bool
}

// AddUser registers a login with an Active status. Adding an existing user replaces its
// password.
func (s *Server) AddUser(name, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u, ok := s.users[name]; ok {
		u.password = password
		return
	}
	s.nextUserID++
	s.users[name] = &user{name: name, password: password, id: s.nextUserID, status: StatusActive}
}

// UserID returns the numeric userId the fake gives name (0 if the user was not added).
func (s *Server) UserID(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.users[name]; u != nil {
		return u.id
	}
	return 0
}

// SetUserStatus sets the userStatus the fake reports for name (see the Status
// constants). It panics if the user was not added.
func (s *Server) SetUserStatus(name, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[name].status = status
}

// Valid reports whether token was issued by this fake (access, market-data or
// TradingView token) and is neither expired nor revoked. Websocket fakes use it to
// answer authorize requests.
func (s *Server) Valid(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ti, ok := s.tokens[token]
	return ok && !ti.revoked && time.Now().Before(ti.expiry)
}

// Revoke makes token (and nothing else) invalid, as if the broker had dropped it.
func (s *Server) Revoke(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ti, ok := s.tokens[token]; ok {
		ti.revoked = true
	}
}

// Sessions returns how many sessions user holds open.
func (s *Server) Sessions(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions[user])
}

// openSession starts a session for u and revokes the oldest sessions past the limit.
// s.mu must be held.
func (s *Server) openSession(u *user) *session {
	s.nextSession++
	sess := &session{id: s.nextSession, user: u.name, phs: randomInt(1 << 30)}
	list := append(s.sessions[u.name], sess)
	for len(list) > s.opts.SessionLimit {
		for _, tok := range list[0].tokens {
			s.tokens[tok].revoked = true
		}
		list = list[1:]
	}
	s.sessions[u.name] = list
	return sess
}

// issue creates a token of kind in sess. s.mu must be held.
func (s *Server) issue(u *user, sess *session, kind tokenKind, now time.Time) (string, time.Time, error) {
	opaque := s.opts.OpaqueTokens && kind != kindTV
	// expirationTime has milliseconds: truncating to them keeps the reported expiry at or
	// before the real one. A JWT exp has whole seconds: round up so the token never lives
	// shorter than Lifetime.
	expiry := now.Add(s.opts.Lifetime).Truncate(time.Millisecond)
	if !opaque {
		if r := expiry.Truncate(time.Second); r.Before(expiry) {
			expiry = r.Add(time.Second)
		}
	}
	var tok string
	if opaque {
		tok = randomHex(32)
	} else {
		claims := jwt.MapClaims{
			"sub": strconv.FormatInt(u.id, 10),
			"exp": expiry.Unix(),
			"jti": fmt.Sprintf("%d-%s", sess.id, randomHex(12)),
			"phs": sess.phs,
		}
		t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
		t.Header["kid"] = s.opts.KeyID
		var err error
		if tok, err = t.SignedString(s.key); err != nil {
			return "", time.Time{}, err
		}
	}
	s.tokens[tok] = &tokenInfo{user: u.name, session: sess, kind: kind, expiry: expiry}
	sess.tokens = append(sess.tokens, tok)
	return tok, expiry, nil
}

// PublicKey returns the key that verifies the fake's JWTs.
func (s *Server) PublicKey() any { return s.key.Public() }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randomInt(limit int64) int64 {
	n, err := rand.Int(rand.Reader, big.NewInt(limit))
	if err != nil {
		return 1
	}
	return n.Int64()
}
