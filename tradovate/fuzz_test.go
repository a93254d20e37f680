package tradovate

import (
	"context"
	"encoding/json"
	"errors"
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
	f.Add(200, []byte(`{"s":"ok","d":{"accessToken":"B","expirationTime":"2025-01-21T20:00:00.000Z","userId":12345,"userName":"U"}}`))
	f.Add(200, []byte(`{"s":"ok","d":{"token":"T","ttl":4800}}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		r, _ := decodeTVResponse(body)
		ans, err := interpretTVAnswer(status, body)
		checkInterpretation(t, ans, err)
		if status == 200 && r.S == "ok" && r.Token == "" && ans != nil && ans.penalty == nil {
			t.Fatal("an accepted login without a token gave an answer")
		}
		if err != nil && errors.Is(err, ErrUnknownLoginAnswer) && err.Temporary() {
			t.Fatal("an accepted login would be resent")
		}
	})
}

func FuzzDescribeShape(f *testing.F) {
	f.Add([]byte(`{"s":"ok","d":{"token":"secret-token-value","ttl":4800,"list":[1,2],"n":null,"b":true}}`))
	f.Add([]byte(`{"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiIxIn0.sig":1}`))
	f.Add([]byte(`[{"a":{"b":{"c":"deep"}}}]`))
	f.Add([]byte(`not json at all`))
	f.Fuzz(func(t *testing.T, body []byte) {
		out := describeShape(body)
		if len(out) > 4096 {
			t.Fatalf("description of %d bytes", len(out))
		}
		var v any
		if json.Unmarshal(body, &v) != nil {
			return
		}
		// No string value of the input shows, unless the same text is also a member
		// name that the description may quote (short, plain names only).
		keys := map[string]bool{}
		var walk func(any)
		var values []string
		walk = func(v any) {
			switch x := v.(type) {
			case map[string]any:
				for k, e := range x {
					keys[k] = true
					walk(e)
				}
			case []any:
				for _, e := range x {
					walk(e)
				}
			case string:
				values = append(values, x)
			}
		}
		walk(v)
		for _, s := range values {
			if len(s) >= 8 && !keys[s] && strings.Contains(out, s) {
				t.Fatalf("the description %q shows the value %q", out, s)
			}
		}
	})
}

func FuzzDecodeUserInfo(f *testing.F) {
	f.Add([]byte(`{"user":"APEX_272045","userId":3865651,"name":"APEX_272045","hasLive":false,"userStatus":"Active","method":"tradingview","updated":"2026-11-29T12:00:00Z"}`))
	f.Add([]byte(`{"user":"u"}`))
	f.Add([]byte(`{"user":"","userId":-1}`))
	f.Add([]byte(`{"user":"u","updated":"yesterday"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		info, err := decodeUserInfo(raw)
		if err != nil {
			if info != nil {
				t.Fatal("info and error")
			}
			return
		}
		if info.User == "" || info.UserID < 0 || !printable(info.User) || !printable(info.Name) || !printable(info.UserStatus) {
			t.Fatalf("decoded an invalid record %+v", info)
		}
	})
}

func FuzzInterpretMe(f *testing.F) {
	f.Add(200, []byte(`{"errorText":"","userId":123456789,"name":"jdoe","fullName":"John Doe","email":"jdoe@example.com","emailVerified":true,"isTrial":false}`))
	f.Add(200, []byte(`{"errorText":"Access is denied"}`))
	f.Add(401, []byte(``))
	f.Add(200, []byte(`{"userId":"12"}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		ans, err := interpretMe(status, body)
		if (ans == nil) == (err == nil) {
			t.Fatalf("want exactly one of answer and error, got %v and %v", ans, err)
		}
		if ans != nil && (ans.user.userID <= 0 || ans.access != "") {
			t.Fatalf("bad answer %+v", ans)
		}
		if err != nil && (err.Err == nil || !strings.HasPrefix(err.Error(), "tradovate: ")) {
			t.Fatalf("bad error %v", err)
		}
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

func FuzzInterpretAccounts(f *testing.F) {
	f.Add(200, []byte(`[{"id":17200370,"name":"PAAPEX2720450000001","userId":3865651,"accountType":"Customer","active":true,"archived":false}]`))
	f.Add(200, []byte(`{"s":"ok","d":[{"id":"D17200370","name":"PAAPEX2720450000001","type":"demo","currency":"USD"}]}`))
	f.Add(200, []byte(`{"s":"error","errmsg":"Access denied"}`))
	f.Add(200, []byte(`[{"id":1,"name":"A","closed":true},{"id":2}]`))
	f.Add(401, []byte(``))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		for _, interpret := range []func(int, []byte) (*answer, *APIError){interpretAccountList, interpretTVAccounts} {
			ans, err := interpret(status, body)
			switch {
			case (ans == nil) == (err == nil):
				t.Fatalf("want exactly one of answer and error, got %v and %v", ans, err)
			case err != nil:
				if err.Err == nil || !strings.HasPrefix(err.Error(), "tradovate: ") {
					t.Fatalf("bad error %v", err)
				}
			case ans.penalty == nil:
				if ans.access != "" || len(ans.accounts) > maxAccounts {
					t.Fatalf("bad answer %+v", ans)
				}
				for _, a := range ans.accounts {
					if a.Name == "" {
						t.Fatal("an account without a name")
					}
				}
			}
		}
	})
}
