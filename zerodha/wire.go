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

// sessionData is the data of a successful POST /session/token.
type sessionData struct {
	UserID      string `json:"user_id"`
	UserName    string `json:"user_name"`
	Broker      string `json:"broker"`
	AccessToken string `json:"access_token"`
	PublicToken string `json:"public_token"`
	LoginTime   string `json:"login_time"`
}

// kiteTimeLayout is how Kite writes times: IST wall clock, no zone.
const kiteTimeLayout = "2006-01-02 15:04:05"

// decodeSession decodes the body of a successful session exchange. It fails with
// ErrMalformedResponse (never quoting the body) unless status is "success" and
// data.access_token is a non-empty string.
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
		return nil, fmt.Errorf("%w: data is not a session object", ErrMalformedResponse)
	}
	if d.AccessToken == "" || strings.ContainsAny(d.AccessToken, " \t\r\n") {
		return nil, fmt.Errorf("%w: no usable access_token", ErrMalformedResponse)
	}
	s := &Session{
		UserID:      clean(d.UserID, 64),
		UserName:    clean(d.UserName, 128),
		Broker:      clean(d.Broker, 64),
		AccessToken: d.AccessToken,
		PublicToken: d.PublicToken,
	}
	if t, err := time.ParseInLocation(kiteTimeLayout, d.LoginTime, ist); err == nil {
		s.LoginTime = t
	}
	return s, nil
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
