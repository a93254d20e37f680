package tradovate

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"
)

// This file holds the wire formats of docs/tradovate.md and their decoders.
// Unknown fields are ignored, as the broker adds fields over time.

// officialRequest is the body of POST /auth/accesstokenrequest. Empty optional fields
// are omitted; PTicket is set when resending after a time penalty.
type officialRequest struct {
	Name       string `json:"name"`
	Password   string `json:"password"`
	AppID      string `json:"appId,omitempty"`
	AppVersion string `json:"appVersion,omitempty"`
	CID        CID    `json:"cid,omitempty"`
	Sec        string `json:"sec,omitempty"`
	DeviceID   string `json:"deviceId,omitempty"`
	PTicket    string `json:"p-ticket,omitempty"`
}

// penaltyFields is the time-penalty answer: the request was not handled.
type penaltyFields struct {
	PTicket  string  // p-ticket
	PTime    float64 // p-time, seconds
	PCaptcha bool    // p-captcha
}

// penalty returns the penalty in p, or nil when p is not one.
func (p penaltyFields) penalty() *penalty {
	if p.PTicket == "" && !p.PCaptcha {
		return nil
	}
	secs := p.PTime
	if secs < 0 || math.IsNaN(secs) {
		secs = 0
	}
	const maxSecs = 24 * 3600 // no documented penalty comes close; guards the Duration
	secs = math.Min(secs, maxSecs)
	return &penalty{ticket: p.PTicket, wait: time.Duration(secs * float64(time.Second)), captcha: p.PCaptcha}
}

type penalty struct {
	ticket  string
	wait    time.Duration
	captcha bool
}

// tokenResponse is the answer of accesstokenrequest and renewaccesstoken: a token pair,
// an errorText, or a penalty. The user fields come with a token and are kept beside the
// user (see [UserInfo]).
type tokenResponse struct {
	AccessToken    string
	MDAccessToken  string
	ExpirationTime string
	UserStatus     string
	ErrorText      string
	user           userFields
	// accepted is true when the answer carries a field only a successful login has
	// (accessToken, mdAccessToken, expirationTime or userId), whether or not its
	// token can be read: such a login opened a session and must not be sent again.
	accepted bool
	penaltyFields
}

// userFields are the facts about the user that a login or renewal answer may carry.
type userFields struct {
	userID  int64
	name    string
	hasLive *bool
	status  string
}

// decodeTokenResponse decodes a tokenResponse. Any JSON object decodes; each member is
// read on its own, so an optional member of an unexpected type is ignored rather than
// spoiling the answer. The caller decides whether it holds a token, an error or a
// penalty.
func decodeTokenResponse(body []byte) (tokenResponse, error) {
	var r tokenResponse
	obj, err := decodeMembers(body)
	if err != nil {
		return r, err
	}
	r.AccessToken, _ = obj.str("accessToken")
	r.MDAccessToken, _ = obj.str("mdAccessToken")
	r.ExpirationTime, _ = obj.str("expirationTime")
	r.UserStatus, _ = obj.str("userStatus")
	r.ErrorText, _ = obj.str("errorText")
	r.user = obj.userFields("name")
	r.user.status = r.UserStatus
	r.accepted = obj.has("accessToken") || obj.has("mdAccessToken") || obj.has("expirationTime") || obj.has("userId")
	r.penaltyFields = obj.penaltyFields()
	return r, nil
}

// tvResponse is the answer of the TradingView-style login. Public material shows two
// shapes of a success, {"s":"ok","d":{"access_token":"...","expiration":1760789707}} and
// {"s":"ok","d":{"accessToken":"...","expirationTime":"2025-01-21T20:00:00.000Z",
// "userId":12345,"userName":"..."}}; both are read. A failure is
// {"s":"error","errmsg":"..."}.
type tvResponse struct {
	S      string
	ErrMsg string
	// Token is d.access_token, else d.accessToken ("" when neither is a string).
	Token string
	// Expiry is d.expiration, else d.expirationTime (unix seconds or milliseconds, or
	// an ISO-8601 time); zero when absent or unreadable.
	Expiry time.Time
	user   userFields
	penaltyFields
}

// decodeTVResponse decodes a tvResponse; like decodeTokenResponse, any JSON object
// decodes.
func decodeTVResponse(body []byte) (tvResponse, error) {
	var r tvResponse
	obj, err := decodeMembers(body)
	if err != nil {
		return r, err
	}
	r.S, _ = obj.str("s")
	r.ErrMsg, _ = obj.str("errmsg")
	r.penaltyFields = obj.penaltyFields()
	d, ok := obj.object("d")
	if !ok {
		return r, nil
	}
	if tok, ok := d.str("access_token"); ok && tok != "" {
		r.Token = tok
	} else {
		r.Token, _ = d.str("accessToken")
	}
	for _, name := range []string{"expiration", "expirationTime"} {
		if t, ok := d.time(name); ok {
			r.Expiry = t
			break
		}
	}
	r.user = d.userFields("userName", "name")
	return r, nil
}

var errNotObject = errors.New("answer is not a JSON object")

// decodeObject decodes a single JSON object into v; anything else is an error.
func decodeObject(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return errNotObject
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() || dec.InputOffset() != int64(len(body)) {
		return errors.New("data after the JSON object")
	}
	return nil
}

// parseExpirationTime reads an ISO-8601 expirationTime such as
// "2021-06-15T15:40:30.056Z" (milliseconds optional; no zone means UTC). ok is false
// for an empty or unreadable value, which callers treat as absent.
func parseExpirationTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, false
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), true
	}
	if t, err := time.ParseInLocation("2006-01-02T15:04:05.999999999", s, time.UTC); err == nil {
		return t, true
	}
	return time.Time{}, false
}

// unixExpiration reads a unix time: seconds, or milliseconds (recognised by their
// size). ok is false when absent or out of range.
func unixExpiration(f float64) (time.Time, bool) {
	switch {
	case f <= 0 || math.IsNaN(f) || math.IsInf(f, 0):
		return time.Time{}, false
	case f > 1e15:
		return time.Time{}, false
	case f > 1e11: // milliseconds
		return time.UnixMilli(int64(f)).UTC(), true
	}
	return time.Unix(int64(f), 0).UTC(), true
}

// members is a decoded JSON object whose members are read one at a time, each with the
// type it should have: a member that is absent, null or of another type reads as not
// there, so one odd optional field never spoils a whole answer.
type members map[string]json.RawMessage

// decodeMembers decodes a single JSON object; anything else is an error.
func decodeMembers(body []byte) (members, error) {
	m := members{}
	if err := decodeObject(body, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// has reports whether name is present and not null.
func (m members) has(name string) bool {
	raw, ok := m[name]
	return ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// str returns member name when it is a JSON string.
func (m members) str(name string) (string, bool) {
	raw := bytes.TrimSpace(m[name])
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false // absent, null (which would unmarshal as ""), or not a string
	}
	return s, true
}

// num returns member name when it is a JSON number or a string holding one.
func (m members) num(name string) (float64, bool) {
	raw, ok := m[name]
	if !ok {
		return 0, false
	}
	text := strings.TrimSpace(string(raw))
	if s, ok := m.str(name); ok {
		text = strings.TrimSpace(s)
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// boolean returns member name when it is a JSON boolean or the string "true" or "false".
func (m members) boolean(name string) (bool, bool) {
	text := strings.TrimSpace(string(m[name]))
	if s, ok := m.str(name); ok {
		text = s
	}
	switch text {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// object returns member name when it is a JSON object.
func (m members) object(name string) (members, bool) {
	raw, ok := m[name]
	if !ok {
		return nil, false
	}
	obj, err := decodeMembers(raw)
	return obj, err == nil
}

// time returns member name read as an expiry: an ISO-8601 string, or a unix time in
// seconds or milliseconds (number or numeric string).
func (m members) time(name string) (time.Time, bool) {
	if f, ok := m.num(name); ok {
		return unixExpiration(f)
	}
	if s, ok := m.str(name); ok {
		return parseExpirationTime(s)
	}
	return time.Time{}, false
}

// userFields reads userId (a whole number), the first of names that is a string, and
// hasLive.
func (m members) userFields(names ...string) userFields {
	var u userFields
	if f, ok := m.num("userId"); ok && f > 0 && f < 1<<53 && f == math.Trunc(f) {
		u.userID = int64(f)
	}
	for _, n := range names {
		if s, ok := m.str(n); ok && s != "" {
			u.name = s
			break
		}
	}
	if b, ok := m.boolean("hasLive"); ok {
		u.hasLive = &b
	}
	return u
}

// penaltyFields reads p-ticket, p-time and p-captcha.
func (m members) penaltyFields() penaltyFields {
	var p penaltyFields
	p.PTicket, _ = m.str("p-ticket")
	p.PTime, _ = m.num("p-time")
	p.PCaptcha, _ = m.boolean("p-captcha")
	return p
}
