package zerodha

import (
	"encoding/json"
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
		if !usableToken(s.AccessToken) {
			t.Fatalf("unusable access token %q", s.AccessToken)
		}
		if s.RefreshToken != "" && !usableToken(s.RefreshToken) {
			t.Fatalf("unusable refresh token %q", s.RefreshToken)
		}
		if len(s.RefreshToken) > 12 {
			for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
				if out := fmt.Sprintf(verb, s); strings.Contains(out, s.RefreshToken) {
					t.Fatalf("%s shows the refresh token: %s", verb, out)
				}
			}
		}
		for _, list := range [][]string{s.info.Exchanges, s.info.Products, s.info.OrderTypes} {
			if len(list) > 32 {
				t.Fatalf("list of %d", len(list))
			}
			for _, e := range list {
				checkClean(t, e, 33)
			}
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
			!strings.Contains(strings.ToLower(string(body)), `"message"`) && len(e.Message) > 30 {
			// (encoding/json matches member names case-insensitively: "messAge" is Kite's
			// message member too.)
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

func FuzzKiteError(f *testing.F) {
	f.Add(200, []byte(`{"status":"error","message":"Session expired","data":null,"error_type":"TokenException"}`))
	f.Add(200, []byte(`{"status":"success","data":{"user_id":"AB1234"}}`))
	f.Add(200, []byte(`{"status":"error"}`))
	f.Add(200, []byte(`{"error_type":7}`))
	f.Add(403, []byte(`{"status":"error","message":"Incorrect`+"`api_key` or `access_token`"+`.","error_type":"TokenException"}`))
	f.Add(204, []byte(``))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := kiteError("/user/profile", status, body)
		if status < 200 || status > 299 {
			if e == nil {
				t.Fatalf("HTTP %d is not an error", status)
			}
		}
		if e != nil {
			if e.StatusCode != status {
				t.Fatal("lost the status")
			}
			checkClean(t, e.Message, maxMessage+1)
			return
		}
		var env envelope
		if json.Unmarshal(body, &env) == nil && env.Status == "error" {
			t.Fatal(`"status":"error" read as a success`)
		}
	})
}

func FuzzDecodeProfile(f *testing.F) {
	f.Add([]byte(`{"status":"success","data":{"user_id":"AB1234","user_type":"individual","email":"x@example.com","user_name":"A B","broker":"ZERODHA","exchanges":["NSE"],"products":["CNC"],"order_types":["MARKET"],"avatar_url":null,"meta":{"demat_consent":"physical"}}}`))
	f.Add([]byte(`{"status":"success","data":{}}`))
	f.Add([]byte(`{"status":"success","data":{"user_id":5}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		id, err := decodeProfile(body)
		if err == nil {
			if id == "" {
				t.Fatal("no user_id and no error")
			}
			checkClean(t, id, 65)
		}
	})
}

func FuzzDecodeUserInfo(f *testing.F) {
	f.Add([]byte(`{"user_id":"AB1234","user_name":"Kite Fake","broker":"ZERODHA","exchanges":["NSE","BSE"],"login_time":"2025-01-06T09:15:02+05:30","updated":"2025-01-06T03:45:02Z"}`))
	f.Add([]byte(`{"user_id":""}`))
	f.Add([]byte(`{"user_id":"AB\u0001"}`))
	f.Add([]byte(`{"user_id":"AB","products":[1]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		info, err := decodeUserInfo(raw)
		if err != nil {
			return
		}
		if info.UserID == "" {
			t.Fatal("no user_id")
		}
		for _, s := range append([]string{info.UserID, info.UserName, info.UserShortName, info.UserType, info.Broker}, info.Exchanges...) {
			checkClean(t, s, len(s)+1)
			if strings.TrimSpace(s) != s {
				t.Fatalf("padded text %q", s)
			}
		}
	})
}
