package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/coder/websocket"

	"github.com/brokertoken/brokertoken/tokencache"
	"github.com/brokertoken/brokertoken/tradovate"
)

// streamer keeps one market-data socket open for cfg.User's token. Its fields are used
// by the goroutine that calls run only.
type streamer struct {
	cfg   config
	cache *tokencache.Cache
	out   io.Writer

	tok     *tokencache.Token // the token of the current (or next) connection
	backoff time.Duration     // wait before reconnecting after the next drop

	conns, forToken, afterDrop, quotes int // for the summary
}

// ending says why a session ended.
type ending struct {
	next     *tokencache.Token // a newer token with another market-data token arrived
	rejected string            // the server refused or revoked the token: why
	err      error             // the socket failed, dropped or was closed by the server
}

// errStopped means ctx ended or the cache was closed: the streamer stops.
var errStopped = errors.New("stopped")

// run streams until ctx ends.
func (s *streamer) run(ctx context.Context) error {
	// Watch before Token, so no version stored in between is missed.
	changes := s.cache.Watch(ctx, s.cfg.User)
	tok, err := s.firstToken(ctx, changes)
	if err != nil {
		return s.stop(err)
	}
	s.tok, s.backoff = tok, s.cfg.RetryMin
	for {
		end := s.session(ctx, changes)
		switch {
		case ctx.Err() != nil || errors.Is(end.err, errStopped):
			return s.stop(errStopped)
		case end.next != nil:
			fmt.Fprintf(s.out, "token version %d has a new market-data token: reconnecting\n", end.next.Version)
			s.tok = end.next
			s.forToken++
		case end.rejected != "":
			fmt.Fprintf(s.out, "market-data token %s rejected (%s): reported; waiting for a new token\n",
				tokencache.Redact(socketToken(s.tok)), end.rejected)
			// The cache stops serving it; a cache that may log in refreshes at once. Report
			// the token the socket refused: the market-data one when there is one.
			_ = s.cache.Invalidate(ctx, s.cfg.User, socketToken(s.tok))
			next, err := s.newToken(ctx, changes, socketToken(s.tok))
			if err != nil {
				return s.stop(err)
			}
			fmt.Fprintf(s.out, "token version %d arrived: reconnecting\n", next.Version)
			s.tok = next
			s.forToken++
		default:
			if err := s.afterDropWait(ctx, changes, end.err); err != nil {
				return s.stop(err)
			}
		}
	}
}

// stop prints the summary; stopping because ctx ended is not an error.
func (s *streamer) stop(err error) error {
	fmt.Fprintf(s.out, "stopped: %d connections (%d for new tokens, %d after drops), %d quotes\n",
		s.conns, s.forToken, s.afterDrop, s.quotes)
	if errors.Is(err, errStopped) {
		return nil
	}
	return err
}

// firstToken returns the user's token, waiting for one to be stored if there is none
// yet (a read-only cache gets ErrNoToken until the daemon has logged the user in).
func (s *streamer) firstToken(ctx context.Context, changes <-chan *tokencache.Token) (*tokencache.Token, error) {
	told := false
	for {
		tok, err := s.cache.Token(ctx, s.cfg.User)
		switch {
		case err == nil:
			return tok, nil
		case errors.Is(err, tokencache.ErrNoToken), errors.Is(err, tokencache.ErrRedisUnavailable):
			if !told {
				why := "none stored yet"
				if errors.Is(err, tokencache.ErrRedisUnavailable) {
					why = "Redis unreachable"
				}
				fmt.Fprintf(s.out, "no token for %s (%s): waiting for the daemon to store one\n", s.cfg.User, why)
				told = true
			}
		case ctx.Err() != nil:
			return nil, errStopped
		default:
			return nil, err
		}
		select {
		case t, ok := <-changes:
			if !ok {
				return nil, errStopped
			}
			return t, nil
		case <-time.After(s.cfg.RetryMax): // a backstop: Watch tells us first
		case <-ctx.Done():
			return nil, errStopped
		}
	}
}

// newToken waits for a token whose market-data token is not rejected.
func (s *streamer) newToken(ctx context.Context, changes <-chan *tokencache.Token, rejected string) (*tokencache.Token, error) {
	for {
		select {
		case t, ok := <-changes:
			if !ok {
				return nil, errStopped
			}
			if t.Version > s.tok.Version && socketToken(t) != rejected {
				return t, nil
			}
		case <-ctx.Done():
			return nil, errStopped
		}
	}
}

// afterDropWait waits a jittered, growing backoff after a lost connection, then picks
// the token to reconnect with: a newer one if it arrived meanwhile, else the same.
func (s *streamer) afterDropWait(ctx context.Context, changes <-chan *tokencache.Token, cause error) error {
	wait := s.backoff/2 + rand.N(s.backoff/2+1)
	s.backoff = min(2*s.backoff, s.cfg.RetryMax)
	fmt.Fprintf(s.out, "connection lost (%v): reconnecting in %s\n", cause, wait.Round(time.Millisecond))
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case t, ok := <-changes:
			if !ok {
				return errStopped
			}
			if t.Version <= s.tok.Version {
				continue
			}
			if socketToken(t) != socketToken(s.tok) {
				fmt.Fprintf(s.out, "token version %d arrived meanwhile: reconnecting with it\n", t.Version)
				s.tok = t
				s.forToken++
				return nil
			}
			s.tok = t
		case <-timer.C:
			// The drop may have come with a token change whose news is still on its way:
			// ask the cache, which reads Redis if it has not heard of a newer version.
			if t, err := s.cache.Token(ctx, s.cfg.User); err == nil && t.Version > s.tok.Version {
				if socketToken(t) != socketToken(s.tok) {
					s.forToken++
				} else {
					s.afterDrop++
				}
				s.tok = t
				return nil
			}
			s.afterDrop++
			return nil
		case <-ctx.Done():
			return errStopped
		}
	}
}

// session connects with s.tok, authorizes, subscribes to every symbol and streams until
// the socket ends, ctx ends, or a token with another market-data token arrives.
func (s *streamer) session(ctx context.Context, changes <-chan *tokencache.Token) ending {
	dialCtx, cancelDial := context.WithTimeout(ctx, 10*time.Second)
	ws, _, err := websocket.Dial(dialCtx, s.cfg.URL, nil)
	cancelDial()
	if err != nil {
		return ending{err: fmt.Errorf("dial: %w", err)}
	}
	defer ws.CloseNow()
	s.conns++

	// One goroutine reads; this one decides. It ends with the session.
	sessCtx, cancel := context.WithCancel(ctx)
	frames := make(chan tradovate.Frame)
	readErr := make(chan error, 1)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			_, data, err := ws.Read(sessCtx)
			if err != nil {
				readErr <- err
				return
			}
			f, err := tradovate.ParseFrame(data)
			if err != nil {
				continue // a frame we cannot read is skipped, never fatal
			}
			select {
			case frames <- f:
			case <-sessCtx.Done():
				readErr <- sessCtx.Err()
				return
			}
		}
	}()
	defer func() { cancel(); ws.CloseNow(); <-readDone }()

	write := func(b []byte) error { return ws.Write(sessCtx, websocket.MessageText, b) }
	var (
		authorized bool
		pending    = map[int64]string{} // subscribe request id -> symbol
		symbols    = map[int]string{}   // contract id -> symbol
		heartbeat  = time.NewTicker(s.cfg.Heartbeat)
		silence    = time.NewTimer(s.cfg.Silence)
	)
	defer heartbeat.Stop()
	defer silence.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = ws.Close(websocket.StatusNormalClosure, "client stopping")
			return ending{err: errStopped}

		case err := <-readErr:
			if websocket.CloseStatus(err) == websocket.StatusPolicyViolation {
				return ending{rejected: "socket closed with 1008"}
			}
			return ending{err: err}

		case <-silence.C:
			return ending{err: fmt.Errorf("nothing received for %s", s.cfg.Silence)}

		case <-heartbeat.C:
			if authorized {
				if err := write([]byte(tradovate.HeartbeatFrame)); err != nil {
					return ending{err: err}
				}
			}

		case t, ok := <-changes:
			if !ok {
				return ending{err: errStopped}
			}
			if t.Version <= s.tok.Version {
				continue // connected with this one or a newer one already
			}
			if socketToken(t) == socketToken(s.tok) {
				// A renewal that kept the market-data token: the socket stays valid.
				fmt.Fprintf(s.out, "token version %d keeps the market-data token: socket kept\n", t.Version)
				s.tok = t
				continue
			}
			_ = ws.Close(websocket.StatusNormalClosure, "token changed")
			return ending{next: t}

		case f := <-frames:
			silence.Reset(s.cfg.Silence)
			switch f.Type {
			case tradovate.FrameOpen:
				if err := write(tradovate.AuthorizeFrame(socketToken(s.tok))); err != nil {
					return ending{err: err}
				}
			case tradovate.FrameClose:
				if f.CloseCode == int(websocket.StatusPolicyViolation) {
					return ending{rejected: fmt.Sprintf("server closed the socket: %s", f.CloseReason)}
				}
				return ending{err: fmt.Errorf("server closed the socket: %d %s", f.CloseCode, f.CloseReason)}
			case tradovate.FrameData:
				for _, m := range f.Messages {
					switch {
					case m.IsResponse() && m.ID == 0:
						if !m.OK() {
							return ending{rejected: fmt.Sprintf("authorize answered %d %s", m.Status, m.Text())}
						}
						authorized = true
						s.backoff = s.cfg.RetryMin
						fmt.Fprintf(s.out, "connected (connection %d) with market-data token %s, version %d\n",
							s.conns, tokencache.Redact(socketToken(s.tok)), s.tok.Version)
						for i, sym := range s.cfg.Symbols {
							id := int64(i + 1)
							body, _ := json.Marshal(map[string]string{"symbol": sym})
							req, err := tradovate.RequestFrame("md/subscribeQuote", id, "", string(body))
							if err == nil {
								err = write(req)
							}
							if err != nil {
								return ending{err: err}
							}
							pending[id] = sym
						}
					case m.IsResponse():
						sym, ok := pending[m.ID]
						if !ok {
							continue
						}
						delete(pending, m.ID)
						var d struct {
							ContractID int `json:"contractId"`
						}
						_ = json.Unmarshal(m.Data, &d)
						if !m.OK() {
							fmt.Fprintf(s.out, "subscribe %s failed: %d %s\n", sym, m.Status, m.Text())
							continue
						}
						symbols[d.ContractID] = sym
						fmt.Fprintf(s.out, "subscribed %s\n", sym)
					case m.Event == "md":
						s.printQuotes(m.Data, symbols)
					}
				}
			}
		}
	}
}

// printQuotes prints the quotes of an md event.
func (s *streamer) printQuotes(data json.RawMessage, symbols map[int]string) {
	type entry struct {
		Price float64 `json:"price"`
		Size  float64 `json:"size"`
	}
	var md struct {
		Quotes []struct {
			ContractID int              `json:"contractId"`
			Entries    map[string]entry `json:"entries"`
		} `json:"quotes"`
	}
	if json.Unmarshal(data, &md) != nil {
		return
	}
	for _, q := range md.Quotes {
		name, ok := symbols[q.ContractID]
		if !ok {
			name = fmt.Sprint("contract ", q.ContractID)
		}
		bid, ask := q.Entries["Bid"], q.Entries["Offer"]
		fmt.Fprintf(s.out, "quote %s bid %.2f x %g, ask %.2f x %g\n", name, bid.Price, bid.Size, ask.Price, ask.Size)
		s.quotes++
	}
}

// socketToken is the token that authorizes the market-data socket: the market-data
// token, or the access token when the broker issued none (a TradingView-style login
// not exchanged for a REST pair).
func socketToken(t *tokencache.Token) string {
	if t.MDAccessToken != "" {
		return t.MDAccessToken
	}
	return t.AccessToken
}
