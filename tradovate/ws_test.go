package tradovate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/tradovatews"
	"github.com/brokertoken/brokertoken/tradovate"
)

func TestParseFrameAcceptsEveryDocumentedFrame(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     tradovate.Frame
	}{
		{"open", `o`, tradovate.Frame{Type: tradovate.FrameOpen}},
		{"heartbeat", `h`, tradovate.Frame{Type: tradovate.FrameHeartbeat}},
		{"bare close", `c`, tradovate.Frame{Type: tradovate.FrameClose}},
		{"close with code", `c[1000]`, tradovate.Frame{Type: tradovate.FrameClose, CloseCode: 1000}},
		{"close with reason", `c[3000,"Go away!"]`,
			tradovate.Frame{Type: tradovate.FrameClose, CloseCode: 3000, CloseReason: "Go away!"}},
		{"empty data", `a[]`, tradovate.Frame{Type: tradovate.FrameData, Messages: []tradovate.Message{}}},
		{"authorized", `a[{"s":200,"i":0}]`, tradovate.Frame{Type: tradovate.FrameData,
			Messages: []tradovate.Message{{Status: 200, ID: 0}}}},
		{"refused", `a[{"s":401,"i":0,"d":"Invalid access token"}]`, tradovate.Frame{Type: tradovate.FrameData,
			Messages: []tradovate.Message{{Status: 401, ID: 0, Data: json.RawMessage(`"Invalid access token"`)}}}},
		{"event and response", `a[{"e":"md","d":{"quotes":[]}},{"s":200,"i":7,"d":{}}]`, tradovate.Frame{Type: tradovate.FrameData,
			Messages: []tradovate.Message{
				{Event: "md", Data: json.RawMessage(`{"quotes":[]}`)},
				{Status: 200, ID: 7, Data: json.RawMessage(`{}`)},
			}}},
		{"null data", `a[{"s":200,"i":3,"d":null}]`, tradovate.Frame{Type: tradovate.FrameData,
			Messages: []tradovate.Message{{Status: 200, ID: 3}}}},
		{"unknown fields ignored", `a[{"s":200,"i":1,"x":[1,2]}]`, tradovate.Frame{Type: tradovate.FrameData,
			Messages: []tradovate.Message{{Status: 200, ID: 1}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tradovate.ParseFrame([]byte(tc.in))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseFrameRejectsMalformedFrames(t *testing.T) {
	for _, in := range []string{
		``, `x`, `[]`, `oo`, `o `, `h1`, `a`, `a{}`, `a[`, `a[1]`, `a["s"]`, `a[null]`, `a null`,
		`a[{}]`, `a[{"i":1}]`, `a[{"s":"200","i":0}]`, `a[{"s":200,"i":1.5}]`, `a[{"s":200}]x`,
		`c[]`, `c[1,"a","b"]`, `c["1000"]`, `c[1000,5]`, `cx`, `c null`, `a[{"e":1}]`,
		"\xff", `a[{"s":200,"i":99999999999999999999}]`,
	} {
		_, err := tradovate.ParseFrame([]byte(in))
		assert.ErrorIs(t, err, tradovate.ErrMalformedFrame, "%q", in)
	}
}

func TestParseFrameErrorsDoNotQuoteTheFrame(t *testing.T) {
	secret := "eyJhbGciOiJFZERTQSJ9.secret-token-body"
	for _, in := range []string{`a[{"s":"` + secret + `"}]`, `c[1000,"` + secret + `",1]`, secret} {
		_, err := tradovate.ParseFrame([]byte(in))
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "secret-token-body")
	}
}

func TestMessageHelpers(t *testing.T) {
	f, err := tradovate.ParseFrame([]byte(`a[{"s":401,"i":0,"d":"Invalid access token"},{"s":200,"i":1,"d":{"a":1}},{"e":"md","d":"x"}]`))
	require.NoError(t, err)
	refused, ok, event := f.Messages[0], f.Messages[1], f.Messages[2]
	assert.False(t, refused.OK())
	assert.Equal(t, "Invalid access token", refused.Text())
	assert.True(t, ok.OK())
	assert.Equal(t, "", ok.Text())
	assert.False(t, event.IsResponse())
	assert.False(t, event.OK())
	assert.Equal(t, "a", tradovate.FrameData.String())
}

func TestRequestFrameRefusesWhatWouldBreakTheFraming(t *testing.T) {
	for _, tc := range []struct {
		op    string
		id    int64
		query string
	}{{"", 1, ""}, {"md/sub\nscribe", 1, ""}, {"op", 1, "a\nb"}, {"op\r", 1, ""}, {"op", -1, ""}} {
		_, err := tradovate.RequestFrame(tc.op, tc.id, tc.query, "{}")
		assert.Error(t, err, "%+v", tc)
	}
}

// FuzzParseFrame checks that no frame from the network panics the parsers, that every
// error wraps ErrMalformedFrame, and that what parses re-encodes to something that
// parses to the same value.
func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{
		"o", "h", "c", `c[3000,"Go away!"]`, `a[{"s":200,"i":0}]`,
		`a[{"s":401,"i":0,"d":"Invalid access token"}]`,
		`a[{"e":"md","d":{"quotes":[{"timestamp":"2025-10-18T12:00:00.000Z","contractId":1,"entries":{"Bid":{"price":5000.25,"size":3}}}]}}]`,
		`a[{"e":"chart","d":{"charts":[{"id":5,"eoh":true}]}}]`,
		"authorize\n0\n\ntoken", "md/subscribeQuote\n1\n\n{\"symbol\":\"ESZ6\"}", "[]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := tradovate.ParseFrame(data)
		if err != nil {
			if !errors.Is(err, tradovate.ErrMalformedFrame) {
				t.Fatalf("error does not wrap ErrMalformedFrame: %v", err)
			}
		} else {
			switch fr.Type {
			case tradovate.FrameOpen, tradovate.FrameHeartbeat, tradovate.FrameClose:
				if fr.Messages != nil {
					t.Fatalf("%s frame with messages", fr.Type)
				}
			case tradovate.FrameData:
				again, err := tradovatews.DataFrame(fr.Messages...)
				if err != nil {
					t.Fatalf("re-encoding a parsed frame: %v", err)
				}
				fr2, err := tradovate.ParseFrame(again)
				if err != nil {
					t.Fatalf("re-encoded frame does not parse: %v", err)
				}
				third, _ := tradovatews.DataFrame(fr2.Messages...)
				if string(third) != string(again) {
					t.Fatalf("encoding is not stable: %q then %q", again, third)
				}
			default:
				t.Fatalf("unknown type %q parsed", fr.Type)
			}
		}

		r, err := tradovatews.ParseRequest(data)
		if err != nil {
			if !errors.Is(err, tradovate.ErrMalformedFrame) {
				t.Fatalf("request error does not wrap ErrMalformedFrame: %v", err)
			}
			return
		}
		b, err := tradovate.RequestFrame(r.Op, r.ID, r.Query, r.Body)
		if err != nil {
			t.Fatalf("a parsed request does not re-encode: %v", err)
		}
		if string(b) != string(data) {
			t.Fatalf("request re-encodes to %q, want %q", b, data)
		}
	})
}

// A market-data streamer authorizes its socket with the mdAccessToken of a login, then
// subscribes. Here the broker is a stub that answers the official login.
func ExampleAuthenticator_Login_marketDataSocket() {
	broker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"accessToken":"rest-token","mdAccessToken":"md-token",`+
			`"expirationTime":"2099-01-01T00:00:00.000Z","userStatus":"Active","userId":1,"name":"APEX_272045"}`)
	}))
	defer broker.Close()

	creds, err := tradovate.NewCredentials(tradovate.Credential{Username: "APEX_272045", Password: "s3cret"})
	if err != nil {
		log.Fatal(err)
	}
	auth, err := tradovate.New(tradovate.Options{
		RESTURL:     broker.URL, // default tradovate.DemoRESTURL
		Method:      tradovate.MethodOfficial,
		Credentials: creds,
		DeviceID:    "example-device",
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := auth.Login(ctx, "APEX_272045") // in a service: cache.Token(ctx, account)
	if err != nil {
		log.Fatal(err)
	}

	// Dial tradovate.MarketDataSocketURL with a websocket library, wait for the "o"
	// frame, then send:
	fmt.Printf("%q\n", tradovate.AuthorizeFrame(tok.MDAccessToken))
	sub, _ := tradovate.RequestFrame("md/subscribeQuote", 1, "", `{"symbol":"ESZ6"}`)
	fmt.Printf("%q\n", sub)
	fmt.Printf("%q\n", tradovate.HeartbeatFrame) // about every 2.5 s
	// Output:
	// "authorize\n0\n\nmd-token"
	// "md/subscribeQuote\n1\n\n{\"symbol\":\"ESZ6\"}"
	// "[]"
}

// ParseFrame turns what the server sends into responses and events.
func ExampleParseFrame() {
	for _, raw := range []string{
		`o`,
		`a[{"s":200,"i":0}]`,
		`a[{"e":"md","d":{"quotes":[]}}]`,
		`a[{"s":401,"i":0,"d":"Invalid access token"}]`,
		`c[1008,"Access token revoked"]`,
		`a[{"s":200`,
	} {
		f, err := tradovate.ParseFrame([]byte(raw))
		switch {
		case errors.Is(err, tradovate.ErrMalformedFrame):
			fmt.Println("malformed: skip it")
		case f.Type == tradovate.FrameData:
			for _, m := range f.Messages {
				if m.IsResponse() {
					fmt.Printf("response to %d: ok=%v", m.ID, m.OK())
					if text := m.Text(); text != "" {
						fmt.Print(" ", text) // the error text of a failed request
					}
					fmt.Println()
				} else {
					fmt.Printf("event %s: %s\n", m.Event, m.Data)
				}
			}
		case f.Type == tradovate.FrameClose:
			fmt.Printf("closed: %d %s\n", f.CloseCode, f.CloseReason)
		default:
			fmt.Println(f.Type)
		}
	}
	// Output:
	// o
	// response to 0: ok=true
	// event md: {"quotes":[]}
	// response to 0: ok=false Invalid access token
	// closed: 1008 Access token revoked
	// malformed: skip it
}

func TestFrameConstantsMatchTheDocumentation(t *testing.T) {
	assert.Equal(t, "[]", tradovate.HeartbeatFrame)
	assert.True(t, strings.HasPrefix(tradovate.MarketDataSocketURL, "wss://md."))
	assert.True(t, strings.HasSuffix(tradovate.DemoTradingSocketURL, "/v1/websocket"))
	assert.True(t, strings.HasSuffix(tradovate.LiveTradingSocketURL, "/v1/websocket"))
}
