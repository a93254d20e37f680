// Package tradovatews is the server half of Tradovate's websocket framing: what a
// server sends (data and close frames) and how it reads a client's request frames. The
// client half, what services use, is in package tradovate; this half serves the test
// fakes (internal/testutil/wsfake), which answer like the broker's sockets.
package tradovatews

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// Request is a request frame a client sends: "op\nid\nquery\nbody".
type Request struct {
	// Op is the operation, e.g. "authorize", "md/subscribeQuote", "md/getChart".
	Op string
	// ID numbers the request; the response carries it back. Authorize uses 0.
	ID int64
	// Query is the URL-style query, usually empty.
	Query string
	// Body is the request's body: JSON for most operations, the bare token for
	// authorize.
	Body string
}

// String shows the request without an authorize frame's token.
func (r Request) String() string {
	body := r.Body
	if r.Op == "authorize" {
		body = tokencache.Redact(body)
	}
	return fmt.Sprintf("%s id=%d query=%q body=%s", r.Op, r.ID, r.Query, body)
}

// ParseRequest parses a request frame, the inverse of [tradovate.RequestFrame]; servers and test
// fakes use it. Errors wrap [tradovate.ErrMalformedFrame]. A heartbeat ([tradovate.HeartbeatFrame]) is not a
// request.
func ParseRequest(data []byte) (Request, error) {
	parts := strings.SplitN(string(data), "\n", 4)
	if len(parts) != 4 {
		return Request{}, malformedFrame(data, "request has %d of its 4 newline-separated parts", len(parts))
	}
	r := Request{Op: parts[0], Query: parts[2], Body: parts[3]}
	if r.Op == "" || strings.ContainsRune(r.Op, '\r') || strings.ContainsRune(r.Query, '\r') {
		return Request{}, malformedFrame(data, "empty or invalid operation")
	}
	id, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || id < 0 || strconv.FormatInt(id, 10) != parts[1] {
		return Request{}, malformedFrame(data, "request id is not a non-negative integer")
	}
	r.ID = id
	return r, nil
}

// DataFrame returns the data frame `a[...]` holding msgs, as a server sends it; test
// fakes use it.
func DataFrame(msgs ...tradovate.Message) ([]byte, error) {
	if msgs == nil {
		msgs = []tradovate.Message{}
	}
	b, err := json.Marshal(msgs)
	if err != nil {
		return nil, fmt.Errorf("tradovatews: data frame: %w", err)
	}
	return append([]byte{byte(tradovate.FrameData)}, b...), nil
}

// CloseFrame returns the close frame `c[code,"reason"]`, as a server sends it before
// closing a socket; test fakes use it.
func CloseFrame(code int, reason string) []byte {
	r, _ := json.Marshal(reason) // a string always marshals
	return []byte("c[" + strconv.Itoa(code) + "," + string(r) + "]")
}

func malformedFrame(data []byte, format string, args ...any) error {
	return fmt.Errorf("%w: %s (%d bytes)", tradovate.ErrMalformedFrame, fmt.Sprintf(format, args...), len(data))
}
