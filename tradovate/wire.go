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

// This file holds the wire formats of docs/tradovate-auth.md and their decoders.
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
	PTicket  string      `json:"p-ticket"`
	PTime    flexNumber  `json:"p-time"` // seconds
	PCaptcha flexBoolean `json:"p-captcha"`
}

// penalty returns the penalty in p, or nil when p is not one.
func (p penaltyFields) penalty() *penalty {
	if p.PTicket == "" && !p.PCaptcha {
		return nil
	}
	secs := float64(p.PTime)
	if secs < 0 || math.IsNaN(secs) {
		secs = 0
	}
	const maxSecs = 24 * 3600 // no documented penalty comes close; guards the Duration
	secs = math.Min(secs, maxSecs)
	return &penalty{ticket: p.PTicket, wait: time.Duration(secs * float64(time.Second)), captcha: bool(p.PCaptcha)}
}

type penalty struct {
	ticket  string
	wait    time.Duration
	captcha bool
}

// tokenResponse is the answer of accesstokenrequest and renewaccesstoken: a token pair,
// an errorText, or a penalty.
type tokenResponse struct {
	AccessToken    string `json:"accessToken"`
	MDAccessToken  string `json:"mdAccessToken"`
	ExpirationTime string `json:"expirationTime"`
	UserStatus     string `json:"userStatus"`
	ErrorText      string `json:"errorText"`
	penaltyFields
}

// decodeTokenResponse decodes a tokenResponse. Any JSON object decodes; the caller
// decides whether it holds a token, an error or a penalty.
func decodeTokenResponse(body []byte) (tokenResponse, error) {
	var r tokenResponse
	err := decodeObject(body, &r)
	return r, err
}

// tvResponse is the answer of the TradingView-style login:
// {"s":"ok","d":{"access_token":"...","expiration":1760789707}} or {"s":"error","errmsg":"..."}.
type tvResponse struct {
	S      string `json:"s"`
	ErrMsg string `json:"errmsg"`
	D      *struct {
		AccessToken string     `json:"access_token"`
		Expiration  flexNumber `json:"expiration"` // unix seconds, optional
	} `json:"d"`
	penaltyFields
}

// decodeTVResponse decodes a tvResponse.
func decodeTVResponse(body []byte) (tvResponse, error) {
	var r tvResponse
	err := decodeObject(body, &r)
	return r, err
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

// unixExpiration reads the TradingView expiration: unix seconds (milliseconds are
// accepted too, recognised by their size). ok is false when absent or out of range.
func unixExpiration(v flexNumber) (time.Time, bool) {
	f := float64(v)
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

// flexNumber is a JSON number that may also arrive as a numeric string or null.
type flexNumber float64

// UnmarshalJSON accepts a number, a numeric string or null.
func (n *flexNumber) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "null" {
		return nil
	}
	s = strings.Trim(s, `"`)
	if s == "" {
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return errors.New("not a number")
	}
	*n = flexNumber(f)
	return nil
}

// flexBoolean is a JSON boolean that may also arrive as "true"/"false" or null.
type flexBoolean bool

// UnmarshalJSON accepts a boolean, "true"/"false" or null.
func (v *flexBoolean) UnmarshalJSON(b []byte) error {
	switch strings.Trim(strings.TrimSpace(string(b)), `"`) {
	case "true":
		*v = true
	case "false", "null", "":
		*v = false
	default:
		return errors.New("not a boolean")
	}
	return nil
}
