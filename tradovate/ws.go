package tradovate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Websocket endpoints. The trading socket is authorized with a token's AccessToken, the
// market-data socket with its MDAccessToken. Dial them with any websocket library and
// speak the frames below; this package holds no websocket client.
const (
	DemoTradingSocketURL = "wss://demo.tradovateapi.com/v1/websocket"
	LiveTradingSocketURL = "wss://live.tradovateapi.com/v1/websocket"
	// MarketDataSocketURL serves both environments (some clients use md-demo. for demo).
	MarketDataSocketURL = "wss://md.tradovateapi.com/v1/websocket"
)

// HeartbeatFrame is what a client sends about every 2.5 seconds to keep a socket open.
const HeartbeatFrame = "[]"

// ErrMalformedFrame means a websocket frame does not follow Tradovate's framing. The
// error's message gives the reason and the frame's length, never its content.
var ErrMalformedFrame = errors.New("tradovate: malformed websocket frame")

// FrameType is the first character of a frame the server sends.
type FrameType byte

// The frame types the server sends.
const (
	FrameOpen      FrameType = 'o' // the socket is open: authorize now
	FrameHeartbeat FrameType = 'h' // the server is alive
	FrameData      FrameType = 'a' // a JSON array of responses and events
	FrameClose     FrameType = 'c' // the server closes the socket
)

// String returns the frame type's letter.
func (t FrameType) String() string { return string(rune(t)) }

// Frame is one frame received from the server, as returned by [ParseFrame].
type Frame struct {
	// Type is the frame's type.
	Type FrameType
	// Messages are the elements of a data frame ('a'), in order; nil for other types.
	Messages []Message
	// CloseCode and CloseReason come from a close frame with a payload,
	// `c[code,"reason"]`; they are 0 and "" for a bare `c` and for other types.
	CloseCode   int
	CloseReason string
}

// Message is one element of a data frame: either the response to a request (Status and
// ID set, Event empty) or an event the server pushes (Event set).
type Message struct {
	// Event names a pushed event, e.g. "md" (quotes, DOM), "chart", "props",
	// "shutdown", "clock"; it is empty for a response.
	Event string
	// Status is a response's HTTP-like status: 200 on success, 401 for a token the
	// server does not accept, 404 for an unknown operation.
	Status int
	// ID is the id of the request a response answers (0 for authorize).
	ID int64
	// Data is the payload ("d"): a response's result or error text, an event's body.
	// It is nil when the message has none.
	Data json.RawMessage
}

// wireMessage is Message's JSON form. Pointers tell an absent "s" or "i" from zero.
type wireMessage struct {
	Event  string          `json:"e,omitempty"`
	Status *int            `json:"s,omitempty"`
	ID     *int64          `json:"i,omitempty"`
	Data   json.RawMessage `json:"d,omitempty"`
}

// IsResponse reports whether m answers a request (it has no Event).
func (m Message) IsResponse() bool { return m.Event == "" }

// OK reports whether m is a successful response (a status from 200 to 299).
func (m Message) OK() bool { return m.IsResponse() && m.Status >= 200 && m.Status < 300 }

// Text returns Data when it is a JSON string, such as the "Invalid access token" of a
// refused authorize, and "" otherwise.
func (m Message) Text() string {
	var s string
	if json.Unmarshal(m.Data, &s) != nil {
		return ""
	}
	return s
}

// MarshalJSON writes m as the server does: {"e":...,"d":...} for an event and
// {"s":...,"i":...,"d":...} for a response.
func (m Message) MarshalJSON() ([]byte, error) {
	w := wireMessage{Event: m.Event, Data: m.Data}
	if m.IsResponse() {
		w.Status, w.ID = &m.Status, &m.ID
	}
	return json.Marshal(w)
}

// ParseFrame parses one frame received from the server: `o`, `h`, `a[...]` (each
// element a JSON object with "s", "i", "e" and "d" as in [Message]) or `c`, optionally
// `c[code,"reason"]`. Anything else, including trailing bytes after `o` or `h`, is an
// error wrapping [ErrMalformedFrame]; ParseFrame never panics.
func ParseFrame(data []byte) (Frame, error) {
	if len(data) == 0 {
		return Frame{}, malformedFrame(data, "empty frame")
	}
	switch t := FrameType(data[0]); t {
	case FrameOpen, FrameHeartbeat:
		if len(data) != 1 {
			return Frame{}, malformedFrame(data, "bytes after the %q frame", t)
		}
		return Frame{Type: t}, nil
	case FrameData:
		msgs, err := parseMessages(data[1:])
		if err != nil {
			return Frame{}, malformedFrame(data, "%v", err)
		}
		return Frame{Type: t, Messages: msgs}, nil
	case FrameClose:
		f := Frame{Type: t}
		if len(data) == 1 {
			return f, nil
		}
		var payload []json.RawMessage
		if err := strictUnmarshal(data[1:], &payload); err != nil {
			return Frame{}, malformedFrame(data, "close payload is not a JSON array")
		}
		if len(payload) == 0 || len(payload) > 2 {
			return Frame{}, malformedFrame(data, "close payload has %d elements, want [code] or [code,reason]", len(payload))
		}
		if err := strictUnmarshal(payload[0], &f.CloseCode); err != nil {
			return Frame{}, malformedFrame(data, "close code is not an integer")
		}
		if len(payload) == 2 {
			if err := strictUnmarshal(payload[1], &f.CloseReason); err != nil {
				return Frame{}, malformedFrame(data, "close reason is not a string")
			}
		}
		return f, nil
	default:
		return Frame{}, malformedFrame(data, "unknown frame type %q", rune(data[0]))
	}
}

// parseMessages decodes the JSON array of a data frame.
func parseMessages(b []byte) ([]Message, error) {
	var elems []json.RawMessage
	if err := strictUnmarshal(b, &elems); err != nil || elems == nil {
		return nil, errors.New("data is not a JSON array")
	}
	msgs := make([]Message, 0, len(elems))
	for i, e := range elems {
		if e = bytes.TrimLeft(e, " \t\r\n"); len(e) == 0 || e[0] != '{' {
			return nil, fmt.Errorf("element %d is not a JSON object", i)
		}
		var w wireMessage
		if err := json.Unmarshal(e, &w); err != nil {
			return nil, fmt.Errorf("element %d: wrong field type", i)
		}
		m := Message{Event: w.Event}
		if bytes.Equal(w.Data, []byte("null")) {
			w.Data = nil
		}
		if w.Data != nil {
			m.Data = append(json.RawMessage(nil), w.Data...)
		}
		if w.Status != nil {
			m.Status = *w.Status
		}
		if w.ID != nil {
			m.ID = *w.ID
		}
		if m.Event == "" && w.Status == nil {
			return nil, fmt.Errorf("element %d has neither an event nor a status", i)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// strictUnmarshal is json.Unmarshal that also rejects JSON null.
func strictUnmarshal(b []byte, v any) error {
	if t := bytes.TrimSpace(b); bytes.Equal(t, []byte("null")) {
		return errors.New("null")
	}
	return json.Unmarshal(b, v)
}

func malformedFrame(data []byte, format string, args ...any) error {
	return fmt.Errorf("%w: %s (%d bytes)", ErrMalformedFrame, fmt.Sprintf(format, args...), len(data))
}

// AuthorizeFrame returns the frame that authorizes a socket, "authorize\n0\n\n<token>",
// sent right after the server's `o` frame. Use a token's MDAccessToken on the
// market-data socket and its AccessToken on the trading socket. The server answers with
// a response of ID 0: Status 200, or 401 and "Invalid access token". The frame holds the
// whole token: never log it.
func AuthorizeFrame(token string) []byte {
	return []byte("authorize\n0\n\n" + token)
}

// RequestFrame returns the frame of a request, "op\nid\nquery\nbody", such as
// RequestFrame("md/subscribeQuote", 1, "", `{"symbol":"ESZ6"}`). It fails when op is
// empty, op or query holds a newline, or id is negative.
func RequestFrame(op string, id int64, query, body string) ([]byte, error) {
	switch {
	case op == "":
		return nil, errors.New("tradovate: request frame: empty operation")
	case strings.ContainsAny(op, "\r\n"):
		return nil, errors.New("tradovate: request frame: newline in operation")
	case strings.ContainsAny(query, "\r\n"):
		return nil, errors.New("tradovate: request frame: newline in query")
	case id < 0:
		return nil, errors.New("tradovate: request frame: negative id")
	}
	return []byte(op + "\n" + strconv.FormatInt(id, 10) + "\n" + query + "\n" + body), nil
}
