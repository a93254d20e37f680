package tradovate

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// The fuzz targets below check that no input from a file or the broker panics, and that
// decoded values keep their invariants. Seed corpora live in testdata/fuzz/<target>.

func FuzzLoadCredentials(f *testing.F) {
	f.Add([]byte(`[{"username":"APEX_272045","password":"pw"}]`))
	f.Add([]byte(`[{"username":"u","password":"p","method":"official","cid":1234,"accounts":["A"]}]`))
	f.Add([]byte(`{"username":"u"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCredentials("fuzz.json", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "tradovate: credentials file fuzz.json: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if c.Len() == 0 {
			t.Fatal("parsed an empty set")
		}
		for _, u := range c.Users() {
			cr, err := c.Credential(context.Background(), u)
			if err != nil || cr.validate() != nil {
				t.Fatalf("user %q: %v", u, err)
			}
			if len(cr.Password) >= 12 && strings.Contains(cr.String(), cr.Password) {
				t.Fatalf("String shows the password")
			}
		}
	})
}

func FuzzDecodeTokenResponse(f *testing.F) {
	f.Add(200, []byte(`{"accessToken":"A","mdAccessToken":"M","expirationTime":"2021-06-15T15:40:30.056Z","userStatus":"Active"}`))
	f.Add(200, []byte(`{"p-ticket":"T","p-time":15,"p-captcha":false}`))
	f.Add(200, []byte(`{"errorText":"Incorrect username or password."}`))
	f.Add(401, []byte(``))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		_, _ = decodeTokenResponse(body)
		for _, login := range []bool{true, false} {
			ans, err := interpretTokenAnswer(status, body, login)
			checkInterpretation(t, ans, err)
		}
	})
}

func FuzzDecodeTVResponse(f *testing.F) {
	f.Add(200, []byte(`{"s":"ok","d":{"access_token":"A","expiration":1760789707}}`))
	f.Add(200, []byte(`{"s":"error","errmsg":"Invalid login"}`))
	f.Add(200, []byte(`{"p-ticket":"T","p-time":"1","p-captcha":"true"}`))
	f.Add(500, []byte(`oops`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		_, _ = decodeTVResponse(body)
		ans, err := interpretTVAnswer(status, body)
		checkInterpretation(t, ans, err)
	})
}

// checkInterpretation asserts that exactly one of ans and err is set, and that an
// answer holds a token or a bounded penalty.
func checkInterpretation(t *testing.T, ans *answer, err *APIError) {
	t.Helper()
	switch {
	case (ans == nil) == (err == nil):
		t.Fatalf("want exactly one of answer and error, got %v and %v", ans, err)
	case err != nil:
		if err.Err == nil || !strings.HasPrefix(err.Error(), "tradovate: ") {
			t.Fatalf("bad error %v", err)
		}
	case ans.penalty != nil:
		if ans.penalty.wait < 0 || ans.penalty.wait > 24*time.Hour {
			t.Fatalf("penalty wait %s out of range", ans.penalty.wait)
		}
	case ans.access == "":
		t.Fatal("answer without token or penalty")
	}
}

func FuzzParseExpirationTime(f *testing.F) {
	f.Add("2021-06-15T15:40:30.056Z")
	f.Add("2021-06-15T15:40:30Z")
	f.Add("2021-06-15T15:40:30")
	f.Add("2021-06-15T17:40:30+02:00")
	f.Fuzz(func(t *testing.T, s string) {
		tm, ok := parseExpirationTime(s)
		if ok && tm.Location() != time.UTC {
			t.Fatalf("%q parsed to a non-UTC time %v", s, tm)
		}
		if !ok && !tm.IsZero() {
			t.Fatalf("%q: not ok but non-zero", s)
		}
	})
}

func FuzzCID(f *testing.F) {
	f.Add([]byte(`1234`))
	f.Add([]byte(`"1234"`))
	f.Add([]byte(`"abc"`))
	f.Add([]byte(`1e3`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c CID
		if json.Unmarshal(data, &c) != nil {
			return
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("marshal %q: %v", string(c), err)
		}
		var back CID
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("round trip of %q: %v", string(c), err)
		}
		if _, isNum := c.number(); !isNum && back != c {
			t.Fatalf("round trip changed %q to %q", string(c), string(back))
		}
	})
}
