package zerodha

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"
)

// maxMessage bounds how many characters of Kite's message an [APIError] keeps.
const maxMessage = 300

// envelope is every Kite Connect answer: {"status": "success"|"error", "data": ...,
// "message": ..., "error_type": ...}.
type envelope struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	Message   any             `json:"message"`
	ErrorType any             `json:"error_type"`
}

// sessionData is the data of a successful POST /session/token or
// /session/refresh_token (the latter may carry only user_id, access_token and
// refresh_token).
type sessionData struct {
	UserID        string `json:"user_id"`
	UserName      string `json:"user_name"`
	UserShortName string `json:"user_shortname"`
	UserType      string `json:"user_type"`
	Broker        string `json:"broker"`
	AccessToken   string `json:"access_token"`
	PublicToken   string `json:"public_token"`
	RefreshToken  string `json:"refresh_token"`
	LoginTime     string `json:"login_time"`
	Exchanges     []any  `json:"exchanges"`
	Products      []any  `json:"products"`
	OrderTypes    []any  `json:"order_types"`
}

// kiteTimeLayout is how Kite writes times: IST wall clock, no zone.
const kiteTimeLayout = "2006-01-02 15:04:05"

// decodeSession decodes the body of a successful session exchange or renewal. It fails
// with ErrMalformedResponse (never quoting the body) unless status is "success" and
// data.access_token is a usable string. (An error envelope is turned into an *APIError
// by kiteError before this is called.)
func decodeSession(body []byte) (*Session, error) {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object (%d bytes)", ErrMalformedResponse, len(body))
	}
	if env.Status != "success" {
		return nil, fmt.Errorf("%w: status %q", ErrMalformedResponse, clean(env.Status, 20))
	}
	var d sessionData
	if err := json.Unmarshal(env.Data, &d); err != nil {
		// One member of an unexpected type (exchanges as a string, say) must not lose
		// the session: read the tokens alone.
		var tokens struct {
			UserID       any `json:"user_id"`
			AccessToken  any `json:"access_token"`
			RefreshToken any `json:"refresh_token"`
		}
		if json.Unmarshal(env.Data, &tokens) != nil {
			return nil, fmt.Errorf("%w: data is not a session object", ErrMalformedResponse)
		}
		d = sessionData{}
		d.UserID, _ = tokens.UserID.(string)
		d.AccessToken, _ = tokens.AccessToken.(string)
		d.RefreshToken, _ = tokens.RefreshToken.(string)
	}
	if !usableToken(d.AccessToken) {
		return nil, fmt.Errorf("%w: no usable access_token", ErrMalformedResponse)
	}
	s := &Session{
		UserID:      clean(d.UserID, 64),
		UserName:    clean(d.UserName, 128),
		Broker:      clean(d.Broker, 64),
		AccessToken: d.AccessToken,
		PublicToken: d.PublicToken,
		info: UserInfo{
			UserID:        clean(d.UserID, 64),
			UserName:      clean(d.UserName, 128),
			UserShortName: clean(d.UserShortName, 64),
			UserType:      clean(d.UserType, 64),
			Broker:        clean(d.Broker, 64),
			Exchanges:     cleanList(d.Exchanges),
			Products:      cleanList(d.Products),
			OrderTypes:    cleanList(d.OrderTypes),
		},
	}
	if usableToken(d.RefreshToken) {
		s.RefreshToken = d.RefreshToken
	}
	if t, err := time.ParseInLocation(kiteTimeLayout, d.LoginTime, ist); err == nil {
		s.LoginTime = t
		s.info.LoginTime = t
	}
	return s, nil
}

// maxTokenLen bounds a usable token; Kite's are 32 characters.
const maxTokenLen = 4 << 10

// usableToken reports whether tok can be sent in a header or form: non-empty, bounded,
// without spaces or control characters.
func usableToken(tok string) bool {
	if tok == "" || len(tok) > maxTokenLen {
		return false
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// cleanList keeps the short strings of a JSON list (exchanges, products, order types),
// at most 32 of them.
func cleanList(v []any) []string {
	var out []string
	for _, e := range v {
		if s, ok := e.(string); ok && s != "" && len(out) < 32 {
			out = append(out, clean(s, 32))
		}
	}
	return out
}

// decodeProfile reads a GET /user/profile answer and returns the user_id in it.
func decodeProfile(body []byte) (string, error) {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil || env.Status != "success" {
		return "", fmt.Errorf("%w: not a profile answer (%d bytes)", ErrMalformedResponse, len(body))
	}
	var d struct {
		UserID any `json:"user_id"`
	}
	if json.Unmarshal(env.Data, &d) != nil {
		return "", fmt.Errorf("%w: data is not a profile object", ErrMalformedResponse)
	}
	id, _ := d.UserID.(string)
	if id = clean(id, 64); id == "" {
		return "", fmt.Errorf("%w: no user_id in the profile", ErrMalformedResponse)
	}
	return id, nil
}

// kiteError returns the error an answer carries, or nil for a success: any status
// outside 2xx, and (as the official Python client does, whatever the status) a body
// whose envelope says "status": "error" or names an error_type.
func kiteError(endpoint string, status int, body []byte) *APIError {
	if status < 200 || status > 299 {
		return decodeError(endpoint, status, body)
	}
	var env envelope
	if json.Unmarshal(body, &env) != nil {
		return nil // not JSON: the caller's decoder says what is wrong with it
	}
	if env.Status == "error" || env.ErrorType != nil && env.ErrorType != "" {
		return decodeError(endpoint, status, body)
	}
	return nil
}

// decodeError turns a Kite error answer into an APIError for endpoint. It never fails:
// a body that is not Kite's JSON leaves ErrorType empty and Message the status text. The
// body itself is never quoted, only Kite's message field.
func decodeError(endpoint string, status int, body []byte) *APIError {
	e := &APIError{Endpoint: endpoint, StatusCode: status}
	var env envelope
	if json.Unmarshal(body, &env) == nil {
		if s, ok := env.Message.(string); ok {
			e.Message = clean(s, maxMessage)
		}
		if s, ok := env.ErrorType.(string); ok {
			e.ErrorType = clean(s, 64)
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	if status >= 500 || status == http.StatusTooManyRequests {
		e.Err = ErrUnavailable
	}
	return e
}

// clean returns s without control characters or invalid UTF-8, cut to at most max
// runes, so a broker's text can go in a log line or a page as it is.
func clean(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == max {
			b.WriteString("…")
			break
		}
		if r == unicode.ReplacementChar || unicode.IsControl(r) {
			r = ' '
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}
