package zerodha

import (
	"fmt"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// The fuzz targets check that nothing Kite (or a proxy in front of it) answers makes the
// decoders panic, and that what they return keeps its invariants: a session always has
// a usable access token that its printed forms hide; an error is never nil, keeps the
// status, and carries only short, printable text. Seed corpora live in
// testdata/fuzz/<target>.

func FuzzDecodeSession(f *testing.F) {
	f.Add([]byte(`{"status":"success","data":{"user_id":"AB1234","user_name":"A B","broker":"ZERODHA","access_token":"` +
		`xY4nR8dLqT2mVw9sZk3PbJ7hCf6GaE1u","public_token":"pub","login_time":"2025-01-06 09:15:02"}}`))
	f.Add([]byte(`{"status":"success","data":{"access_token":""}}`))
	f.Add([]byte(`{"status":"error","message":"Token is invalid or has expired.","data":null,"error_type":"TokenException"}`))
	f.Add([]byte(`{"status":"success","data":[1,2]}`))
	f.Add([]byte(`<html>502 Bad Gateway</html>`))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := decodeSession(body)
		if err != nil {
			if s != nil {
				t.Fatal("session and error")
			}
			if strings.Contains(err.Error(), string(body)) && len(body) > 40 {
				t.Fatalf("the error quotes the body: %v", err)
			}
			return
		}
		if s.AccessToken == "" || strings.ContainsAny(s.AccessToken, " \t\r\n") {
			t.Fatalf("unusable access token %q", s.AccessToken)
		}
		if !s.LoginTime.IsZero() && s.LoginTime.Location() != ist {
			t.Fatal("login time not in IST")
		}
		for _, text := range []string{s.UserID, s.UserName, s.Broker} {
			checkClean(t, text, 130)
		}
		if len(s.AccessToken) > 12 {
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
				if out := fmt.Sprintf(verb, s); strings.Contains(out, s.AccessToken) {
					t.Fatalf("%s shows the access token: %s", verb, out)
				}
			}
		}
	})
}

func FuzzDecodeError(f *testing.F) {
	f.Add(403, []byte(`{"status":"error","message":"Incorrect `+"`api_key` or `access_token`"+`.","data":null,"error_type":"TokenException"}`))
	f.Add(403, []byte(`{"status":"error","message":"Invalid `+"`checksum`"+`.","data":null,"error_type":"TokenException"}`))
	f.Add(400, []byte(`{"status":"error","message":"Missing request_token","error_type":"InputException"}`))
	f.Add(502, []byte(`{"status":"error","message":"Exchange unavailable","error_type":"NetworkException"}`))
	f.Add(429, []byte(`Too many requests`))
	f.Add(500, []byte(`{"message":["not","a","string"],"error_type":42}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := decodeError("/session/token", status, body)
		if e == nil {
			t.Fatal("nil error")
		}
		if e.StatusCode != status || e.Endpoint != "/session/token" {
			t.Fatalf("lost the status or endpoint: %+v", e)
		}
		checkClean(t, e.Message, maxMessage+1)
		checkClean(t, e.ErrorType, 65)
		if e.ErrorType == "" && e.Message != "" && len(body) > 0 && strings.Contains(string(body), e.Message) &&
			!strings.Contains(string(body), `"message"`) && len(e.Message) > 30 {
			t.Fatalf("a body that is not Kite's JSON was quoted: %q", e.Message)
		}
		_ = e.Error()
		_ = e.Temporary()
		if (e.ErrorType == TokenException) != e.Is(ErrTokenException) {
			t.Fatal("Is(ErrTokenException) disagrees with ErrorType")
		}
	})
}

// checkClean fails unless s is valid UTF-8 without control characters and at most max
// runes long.
func checkClean(t *testing.T, s string, max int) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Fatalf("invalid UTF-8: %q", s)
	}
	if utf8.RuneCountInString(s) > max {
		t.Fatalf("too long: %d runes", utf8.RuneCountInString(s))
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			t.Fatalf("control character in %q", s)
		}
	}
}
