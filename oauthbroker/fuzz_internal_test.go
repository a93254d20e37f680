package oauthbroker

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// The fuzz targets check that nothing stored in Redis (by any process, or a tampering
// one) and nothing a provider answers makes the parsers panic, and that what they accept
// keeps its invariants. Seed corpora live in testdata/fuzz/<target>.

func FuzzDecodeRecords(f *testing.F) {
	f.Add(`o1:3:0123456789abcdef:{"family":1,"refresh_token":"rt-abcdef0123456789","refresh_expiry_ms":1790000000000,"authorized_ms":1780000000000,"access_token":"at-0123456789abcdef","access_expiry_ms":1780000001800,"obtained_ms":1780000000000,"rotations":2}`)
	f.Add(`o1:2:0123456789abcdef:{"provider":"schwab","state":"lost","family":1,"authorized_ms":1,"rotations":1,"since_ms":5,"detail":"x"}`)
	f.Add(`o1:01:0123456789abcdef:{}`)
	f.Add(`o1:1:0123456789ABCDEF:{}`)
	f.Add(`o1:9999999999999999999999:{}`)
	f.Add(`o2:1:{}`)
	f.Fuzz(func(t *testing.T, raw string) {
		if h, s, err := decodeSecret(raw); err == nil {
			if h.gen < 1 || !validGrantID(h.grant) || !usableToken(s.RefreshToken) || s.Family > h.gen || leadingGen(raw) != h.gen {
				t.Fatalf("accepted an inconsistent secret: %+v %+v", h, s)
			}
			again, err := encodeRecord(h, s)
			if err != nil {
				t.Fatal(err)
			}
			if h2, s2, err := decodeSecret(again); err != nil || h2 != h || *s2 != *s {
				t.Fatalf("round trip: %v %+v %+v", err, h2, s2)
			}
		}
		if h, s, err := decodeStatus(raw); err == nil {
			if s.State != StateActive && s.State != StateRevoked && s.State != StateLost || leadingGen(raw) != h.gen || !validGrantID(h.grant) {
				t.Fatalf("accepted a bad status: %+v", s)
			}
			again, _ := encodeRecord(h, s)
			if h2, s2, err := decodeStatus(again); err != nil || h2 != h || *s2 != *s {
				t.Fatalf("round trip: %v", err)
			}
		}
	})
}

func FuzzTokenAnswer(f *testing.F) {
	f.Add([]byte(`{"expires_in":1800,"token_type":"Bearer","scope":"api","refresh_token":"rt-abcdef","access_token":"at-0123456789","id_token":"x"}`))
	f.Add([]byte(`{"access_token":"at","token_type":"bearer","expires_in":"1800","refresh_token_expires_in":604800}`))
	f.Add([]byte(`{"access_token":"at","token_type":"mac","refresh_token_expires_in":"-5"}`))
	f.Add([]byte(`{"access_token":"a b","refresh_token":"\u0000"}`))
	f.Add([]byte(`{"access_token":"at","expires_in":-1}`))
	b := &Broker{opts: Options{Provider: Provider{Name: "fuzz", AccessTokenLifetime: time.Minute}}}
	f.Fuzz(func(t *testing.T, body []byte) {
		// Build the token as x/oauth2 decodes a JSON answer.
		var tj struct {
			AccessToken  string          `json:"access_token"`
			TokenType    string          `json:"token_type"`
			RefreshToken string          `json:"refresh_token"`
			ExpiresIn    json.RawMessage `json:"expires_in"`
		}
		if json.Unmarshal(body, &tj) != nil {
			return
		}
		raw := map[string]any{}
		_ = json.Unmarshal(body, &raw)
		now := time.Now()
		tok := &oauth2.Token{AccessToken: tj.AccessToken, TokenType: tj.TokenType, RefreshToken: tj.RefreshToken}
		var n json.Number
		if json.Unmarshal(tj.ExpiresIn, &n) == nil {
			if i, err := n.Int64(); err == nil && i != 0 && i < 1<<31 && i > -(1<<31) {
				tok.Expiry = now.Add(time.Duration(i) * time.Second)
				tok.ExpiresIn = i
			}
		}
		g, err := b.grantFrom(tok.WithExtra(raw), now)
		if err != nil {
			for _, secret := range []string{tj.AccessToken, tj.RefreshToken} {
				if len(secret) > 12 && strings.Contains(err.Error(), secret) {
					t.Fatalf("the error shows a token: %v", err)
				}
			}
			return
		}
		switch {
		case !usableToken(g.access), g.refresh != "" && !usableToken(g.refresh):
			t.Fatalf("unusable token accepted: %+v", g)
		case !g.accessExpiry.After(now):
			t.Fatalf("access expiry %v not after now", g.accessExpiry)
		case !g.refreshExpiry.IsZero() && (!g.refreshExpiry.After(now) || g.refreshExpiry.Sub(now) > maxRefreshLifetime):
			t.Fatalf("refresh expiry %v out of range", g.refreshExpiry)
		}
	})
}

func FuzzLoginState(f *testing.F) {
	f.Add("0123456789abcdef0123456789abcdef", `s1::{"user":"schwab-main","verifier":"`+strings.Repeat("v", 43)+`"}`)
	f.Add("0123456789ABCDEF0123456789abcdef", `s1:`+strings.Repeat("ab", 32)+`:{"user":"a:b"}`)
	f.Add("", `s1:zz:{"user":"u","extra":1}`)
	f.Fuzz(func(t *testing.T, state, raw string) {
		if validState(state) && (len(state) != 32 || strings.ContainsAny(state, ":{}*? ")) {
			t.Fatalf("unsafe state accepted: %q", state)
		}
		ls, err := parseLoginState(raw)
		if err != nil {
			return
		}
		if ls.User == "" || strings.ContainsAny(ls.User, ":{} ") {
			t.Fatalf("unsafe user accepted: %q", ls.User)
		}
		if ls.Verifier != "" && (len(ls.Verifier) < 43 || !usableToken(ls.Verifier)) {
			t.Fatalf("bad verifier accepted: %q", ls.Verifier)
		}
	})
}

func FuzzParseClaim(f *testing.F) {
	f.Add("3:0123456789abcdef:1780000000000:0:host/123/abcdef")
	f.Add("3:0123456789abcdef:1780000000000:1780000000500:host:with:colons")
	f.Add("3:0123456789abcdef:x:0:o")
	f.Add("-1:0123456789abcdef:1:1:")
	f.Add("3:nothex:1:1:o")
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := parseClaim(raw)
		if err != nil {
			return
		}
		if c.owner == "" || c.gen < 0 || !validGrantID(c.grant) || c.deadline.Before(time.UnixMilli(0)) {
			t.Fatalf("bad claim accepted: %+v", c)
		}
	})
}
