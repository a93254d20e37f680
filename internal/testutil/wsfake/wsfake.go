// Package wsfake is an in-process fake of Tradovate's market-data websocket
// (wss://md.tradovateapi.com/v1/websocket), for tests and the examples' demos.
//
// It speaks the framing of docs/tradovate.md, "Websockets" (server frames `o`, `h`,
// `a[...]`, `c`; client requests "op\nid\nquery\nbody"; `[]` heartbeats), accepts
// `authorize` only with a token its Options.Valid accepts (tests pass
// tradovatefake.Server.Valid), streams quotes for md/subscribeQuote, answers
// md/getChart with bars, and closes every socket whose token Valid stops accepting
// (revoked or expired) with `c[1008,"Access token revoked"]`. It records every frame
// and every authorization it receives, so tests can check what clients sent.
//
// The answers' payloads are simplified: a subscription's answer carries the contract
// id its quotes use (real clients look ids up with contract/find), and prices are
// made up.
//
// Start one with [New] and stop it with [Server.Close]. A Server is safe for concurrent
// use.
package wsfake

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/brokertoken/brokertoken/internal/tradovatews"
	"github.com/brokertoken/brokertoken/tradovate"
)

// CloseRevoked is the close code the fake sends, in a `c` frame and in the websocket
// close, when it drops a socket whose token is no longer valid.
const CloseRevoked = 1008

// Options configures a fake. Only Valid is required.
type Options struct {
	// Valid reports whether a token may authorize a socket. It is asked again every
	// RecheckInterval for every authorized socket, and a socket whose token it stops
	// accepting is closed. Required; it must be safe for concurrent use.
	Valid func(token string) bool
	// HeartbeatInterval is how often the server sends `h` (default 2.5 s).
	HeartbeatInterval time.Duration
	// QuoteInterval is how often each socket gets the quotes of its subscriptions
	// (default 100 ms).
	QuoteInterval time.Duration
	// RecheckInterval is how often the tokens of open sockets are checked with Valid
	// (default 20 ms).
	RecheckInterval time.Duration
}

// Authorization is one authorize request the fake received.
type Authorization struct {
	Conn     int       // connection number, from 1
	Time     time.Time // when it arrived
	Token    string    // the token sent
	Accepted bool      // whether Valid accepted it
}

// Message is one frame the fake received from a client.
type Message struct {
	Conn      int       // connection number, from 1
	Time      time.Time // when it arrived
	Heartbeat bool      // the frame was `[]`
	Request   tradovatews.Request
	Err       error // the frame did not parse as a request (Request is zero)
}

// Server is a running fake.
type Server struct {
	opts   Options
	srv    *httptest.Server
	ctx    context.Context // cancelled by Close: ends every connection
	cancel context.CancelFunc
	wg     sync.WaitGroup // connection handlers

	mu       sync.Mutex      // guards the fields below
	closed   bool            // Close was called
	conns    map[int]*conn   // open connections by number
	next     int             // connections accepted so far
	received []Message       // every client frame, in arrival order
	auths    []Authorization // every authorize request, in arrival order
}

// conn is one client socket.
type conn struct {
	id int
	ws *websocket.Conn

	mu     sync.Mutex     // guards the fields below
	token  string         // the accepted token, "" before authorize
	subs   map[string]int // subscribed symbol -> contract id
	ticks  int            // quotes sent, to move the prices
	charts int            // charts requested, for their ids
}

// New starts a fake on a loopback port.
func New(opts Options) *Server {
	if opts.Valid == nil {
		panic("wsfake: Options.Valid is required")
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 2500 * time.Millisecond
	}
	if opts.QuoteInterval <= 0 {
		opts.QuoteInterval = 100 * time.Millisecond
	}
	if opts.RecheckInterval <= 0 {
		opts.RecheckInterval = 20 * time.Millisecond
	}
	s := &Server{opts: opts, conns: map[int]*conn{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/websocket", s.handle)
	s.srv = httptest.NewServer(mux)
	return s
}

// URL is the socket's address, the fake's counterpart of
// wss://md.tradovateapi.com/v1/websocket.
func (s *Server) URL() string {
	return "ws://" + strings.TrimPrefix(s.srv.URL, "http://") + "/v1/websocket"
}

// Close closes every socket and stops the server; it returns once every connection's
// goroutines have ended. Close is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.srv.Close()
	s.wg.Wait()
}

// DropAll closes every open socket abruptly, without a close frame, as a network
// failure would, and returns how many it closed.
func (s *Server) DropAll() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.ws.CloseNow()
	}
	return len(s.conns)
}

// Connections returns how many sockets the fake has accepted so far.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// Open returns how many sockets are open now.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Authorizations returns a copy of every authorize request received, in arrival order.
func (s *Server) Authorizations() []Authorization {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Authorization(nil), s.auths...)
}

// Received returns a copy of every frame received from clients, in arrival order.
func (s *Server) Received() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.received...)
}

// handle serves one socket until the client leaves, its token is revoked, or Close.
func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		http.Error(w, "closed", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1) // under mu, so Close's Wait sees every handler that got past the check
	s.mu.Unlock()
	defer s.wg.Done()

	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer ws.CloseNow()
	s.mu.Lock()
	s.next++
	c := &conn{id: s.next, ws: ws, subs: map[string]int{}}
	s.conns[c.id] = c
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c.id)
		s.mu.Unlock()
	}()

	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	if ws.Write(ctx, websocket.MessageText, []byte{byte(tradovate.FrameOpen)}) != nil {
		return
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer cancel()
		s.read(ctx, c)
	}()
	s.tick(ctx, c)
	_ = ws.CloseNow()
	<-readDone
}

// read handles the client's frames until the socket fails or ctx ends.
func (s *Server) read(ctx context.Context, c *conn) {
	for {
		_, data, err := c.ws.Read(ctx)
		if err != nil {
			return
		}
		msg := Message{Conn: c.id, Time: time.Now()}
		if string(data) == tradovate.HeartbeatFrame {
			msg.Heartbeat = true
			s.record(msg)
			continue
		}
		msg.Request, msg.Err = tradovatews.ParseRequest(data)
		s.record(msg)
		if msg.Err != nil {
			continue // Tradovate ignores what it cannot parse
		}
		if err := s.answer(ctx, c, msg.Request); err != nil {
			return
		}
	}
}

func (s *Server) record(m Message) {
	s.mu.Lock()
	s.received = append(s.received, m)
	s.mu.Unlock()
}

// answer handles one request.
func (s *Server) answer(ctx context.Context, c *conn, r tradovatews.Request) error {
	if r.Op == "authorize" {
		ok := s.opts.Valid(r.Body)
		s.mu.Lock()
		s.auths = append(s.auths, Authorization{Conn: c.id, Time: time.Now(), Token: r.Body, Accepted: ok})
		s.mu.Unlock()
		if !ok {
			return c.send(ctx, response(401, r.ID, "Invalid access token"))
		}
		c.mu.Lock()
		c.token = r.Body
		c.mu.Unlock()
		return c.send(ctx, tradovate.Message{Status: 200, ID: r.ID})
	}
	c.mu.Lock()
	authorized := c.token != ""
	c.mu.Unlock()
	if !authorized {
		return c.send(ctx, response(401, r.ID, "Access is denied"))
	}
	var body struct {
		Symbol         string `json:"symbol"`
		SubscriptionID int    `json:"subscriptionId"`
		TimeRange      struct {
			AsMuchAsElements int `json:"asMuchAsElements"`
		} `json:"timeRange"`
	}
	if r.Op != "md/cancelChart" && (json.Unmarshal([]byte(r.Body), &body) != nil || body.Symbol == "") {
		return c.send(ctx, response(400, r.ID, "symbol is required"))
	}
	switch r.Op {
	case "md/subscribeQuote":
		id := contractID(body.Symbol)
		c.mu.Lock()
		c.subs[body.Symbol] = id
		c.mu.Unlock()
		return c.send(ctx, response(200, r.ID, map[string]int{"contractId": id}))
	case "md/unsubscribeQuote":
		c.mu.Lock()
		delete(c.subs, body.Symbol)
		c.mu.Unlock()
		return c.send(ctx, response(200, r.ID, struct{}{}))
	case "md/getChart":
		return s.chart(ctx, c, r.ID, body.Symbol, body.TimeRange.AsMuchAsElements)
	case "md/cancelChart":
		return c.send(ctx, response(200, r.ID, struct{}{}))
	default:
		return c.send(ctx, response(404, r.ID, "Unknown operation"))
	}
}

// chart answers md/getChart: the subscription ids, then n one-minute bars ending now,
// then the end-of-history marker.
func (s *Server) chart(ctx context.Context, c *conn, reqID int64, symbol string, n int) error {
	n = min(max(n, 1), 500)
	c.mu.Lock()
	c.charts++
	hist := c.id*1000 + 2*c.charts
	c.mu.Unlock()
	if err := c.send(ctx, response(200, reqID, map[string]int{"historicalId": hist, "realtimeId": hist + 1})); err != nil {
		return err
	}
	base := basePrice(symbol)
	start := time.Now().UTC().Truncate(time.Minute).Add(-time.Duration(n-1) * time.Minute)
	bars := make([]map[string]any, n)
	for i := range bars {
		open := base + float64(i%7)*0.25
		bars[i] = map[string]any{
			"timestamp": start.Add(time.Duration(i) * time.Minute).Format("2006-01-02T15:04Z"),
			"open":      open, "high": open + 1, "low": open - 0.75, "close": open + 0.5,
			"upVolume": 100 + i, "downVolume": 90 + i,
		}
	}
	if err := c.send(ctx, event("chart", map[string]any{"charts": []any{map[string]any{"id": hist, "td": 0, "bars": bars}}})); err != nil {
		return err
	}
	return c.send(ctx, event("chart", map[string]any{"charts": []any{map[string]any{"id": hist, "eoh": true}}}))
}

// tick sends heartbeats and quotes and closes the socket when its token stops being
// valid, until ctx ends.
func (s *Server) tick(ctx context.Context, c *conn) {
	heartbeat := time.NewTicker(s.opts.HeartbeatInterval)
	defer heartbeat.Stop()
	quotes := time.NewTicker(s.opts.QuoteInterval)
	defer quotes.Stop()
	recheck := time.NewTicker(s.opts.RecheckInterval)
	defer recheck.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-heartbeat.C:
			err = c.ws.Write(ctx, websocket.MessageText, []byte{byte(tradovate.FrameHeartbeat)})
		case <-quotes.C:
			err = c.sendQuotes(ctx)
		case <-recheck.C:
			c.mu.Lock()
			token := c.token
			c.mu.Unlock()
			if token != "" && !s.opts.Valid(token) {
				const reason = "Access token revoked"
				_ = c.ws.Write(ctx, websocket.MessageText, tradovatews.CloseFrame(CloseRevoked, reason))
				_ = c.ws.Close(websocket.StatusCode(CloseRevoked), reason)
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// sendQuotes sends one md event with a quote per subscription.
func (c *conn) sendQuotes(ctx context.Context) error {
	c.mu.Lock()
	if len(c.subs) == 0 {
		c.mu.Unlock()
		return nil
	}
	c.ticks++
	now := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
	quotes := make([]any, 0, len(c.subs))
	for symbol, id := range c.subs {
		bid := basePrice(symbol) + float64(c.ticks%8)*0.25
		quotes = append(quotes, map[string]any{
			"timestamp": now, "contractId": id,
			"entries": map[string]any{
				"Bid":   map[string]any{"price": bid, "size": 5 + c.ticks%4},
				"Offer": map[string]any{"price": bid + 0.25, "size": 7 + c.ticks%3},
			},
		})
	}
	c.mu.Unlock()
	return c.send(ctx, event("md", map[string]any{"quotes": quotes}))
}

// send writes msgs as one data frame.
func (c *conn) send(ctx context.Context, msgs ...tradovate.Message) error {
	b, err := tradovatews.DataFrame(msgs...)
	if err != nil {
		return fmt.Errorf("wsfake: %w", err)
	}
	return c.ws.Write(ctx, websocket.MessageText, b)
}

func response(status int, id int64, data any) tradovate.Message {
	b, _ := json.Marshal(data) // the fake's payloads always marshal
	return tradovate.Message{Status: status, ID: id, Data: b}
}

func event(name string, data any) tradovate.Message {
	b, _ := json.Marshal(data)
	return tradovate.Message{Event: name, Data: b}
}

// contractID derives a stable contract id from a symbol.
func contractID(symbol string) int {
	h := fnv.New32a()
	h.Write([]byte(symbol))
	return 1_000_000 + int(h.Sum32()%1_000_000)
}

// basePrice derives a stable price from a symbol, on a 0.25 tick.
func basePrice(symbol string) float64 {
	return 1000 + float64(contractID(symbol)%16000)*0.25
}
