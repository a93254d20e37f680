package wsfake_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/wsfake"
	"github.com/brokertoken/brokertoken/tradovate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

// tokens is a set of valid tokens that tests revoke.
type tokens struct {
	mu    sync.Mutex
	valid map[string]bool
}

func newTokens(valid ...string) *tokens {
	t := &tokens{valid: map[string]bool{}}
	for _, v := range valid {
		t.valid[v] = true
	}
	return t
}

func (t *tokens) Valid(tok string) bool { t.mu.Lock(); defer t.mu.Unlock(); return t.valid[tok] }
func (t *tokens) Revoke(tok string)     { t.mu.Lock(); defer t.mu.Unlock(); delete(t.valid, tok) }

func start(t *testing.T, valid func(string) bool) *wsfake.Server {
	s := wsfake.New(wsfake.Options{
		Valid:             valid,
		HeartbeatInterval: 30 * time.Millisecond,
		QuoteInterval:     10 * time.Millisecond,
		RecheckInterval:   5 * time.Millisecond,
	})
	t.Cleanup(s.Close)
	return s
}

// client is a bare test client.
type client struct {
	t  *testing.T
	ws *websocket.Conn
}

func dial(t *testing.T, ctx context.Context, s *wsfake.Server) *client {
	ws, _, err := websocket.Dial(ctx, s.URL(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { ws.CloseNow() })
	c := &client{t: t, ws: ws}
	f := c.next(ctx)
	require.Equal(t, tradovate.FrameOpen, f.Type)
	return c
}

func (c *client) send(ctx context.Context, b []byte) {
	require.NoError(c.t, c.ws.Write(ctx, websocket.MessageText, b))
}

func (c *client) request(ctx context.Context, op string, id int64, body string) {
	b, err := tradovate.RequestFrame(op, id, "", body)
	require.NoError(c.t, err)
	c.send(ctx, b)
}

// next returns the next frame that is not a heartbeat.
func (c *client) next(ctx context.Context) tradovate.Frame {
	for {
		_, data, err := c.ws.Read(ctx)
		require.NoError(c.t, err)
		f, err := tradovate.ParseFrame(data)
		require.NoError(c.t, err, "%q", data)
		if f.Type != tradovate.FrameHeartbeat {
			return f
		}
	}
}

// response waits for the response to request id, skipping events.
func (c *client) response(ctx context.Context, id int64) tradovate.Message {
	for {
		f := c.next(ctx)
		for _, m := range f.Messages {
			if m.IsResponse() && m.ID == id {
				return m
			}
		}
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAuthorizeAcceptsOnlyValidTokens(t *testing.T) {
	ctx := testContext(t)
	s := start(t, newTokens("good").Valid)
	c := dial(t, ctx, s)

	c.send(ctx, tradovate.AuthorizeFrame("bad"))
	m := c.response(ctx, 0)
	assert.Equal(t, 401, m.Status)
	assert.Equal(t, "Invalid access token", m.Text())

	c.request(ctx, "md/subscribeQuote", 1, `{"symbol":"ESZ6"}`)
	assert.Equal(t, 401, c.response(ctx, 1).Status, "requests before authorize are refused")

	c.send(ctx, tradovate.AuthorizeFrame("good"))
	assert.True(t, c.response(ctx, 0).OK())

	assert.Equal(t, []wsfake.Authorization{
		{Conn: 1, Token: "bad", Accepted: false},
		{Conn: 1, Token: "good", Accepted: true},
	}, withoutTimes(s.Authorizations()))
}

func withoutTimes(in []wsfake.Authorization) []wsfake.Authorization {
	for i := range in {
		in[i].Time = time.Time{}
	}
	return in
}

func TestSubscribeStreamsQuotes(t *testing.T) {
	ctx := testContext(t)
	s := start(t, newTokens("good").Valid)
	c := dial(t, ctx, s)
	c.send(ctx, tradovate.AuthorizeFrame("good"))
	require.True(t, c.response(ctx, 0).OK())
	c.request(ctx, "md/subscribeQuote", 1, `{"symbol":"ESZ6"}`)
	resp := c.response(ctx, 1)
	require.True(t, resp.OK())
	var sub struct{ ContractID int }
	require.NoError(t, json.Unmarshal(resp.Data, &sub))

	for {
		f := c.next(ctx)
		if len(f.Messages) == 0 || f.Messages[0].Event != "md" {
			continue
		}
		var md struct {
			Quotes []struct {
				ContractID int `json:"contractId"`
				Entries    map[string]struct{ Price float64 }
			}
		}
		require.NoError(t, json.Unmarshal(f.Messages[0].Data, &md))
		require.Len(t, md.Quotes, 1)
		assert.Equal(t, sub.ContractID, md.Quotes[0].ContractID)
		assert.Equal(t, md.Quotes[0].Entries["Bid"].Price+0.25, md.Quotes[0].Entries["Offer"].Price)
		break
	}

	c.request(ctx, "md/nonsense", 2, `{"symbol":"ESZ6"}`)
	assert.Equal(t, 404, c.response(ctx, 2).Status)
	c.request(ctx, "md/subscribeQuote", 3, `{}`)
	assert.Equal(t, 400, c.response(ctx, 3).Status)
}

func TestGetChartSendsBarsThenEndOfHistory(t *testing.T) {
	ctx := testContext(t)
	s := start(t, newTokens("good").Valid)
	c := dial(t, ctx, s)
	c.send(ctx, tradovate.AuthorizeFrame("good"))
	require.True(t, c.response(ctx, 0).OK())
	c.request(ctx, "md/getChart", 1, `{"symbol":"NQZ6","chartDescription":{"underlyingType":"MinuteBar","elementSize":1,"elementSizeUnit":"UnderlyingUnits"},"timeRange":{"asMuchAsElements":5}}`)
	resp := c.response(ctx, 1)
	require.True(t, resp.OK())
	var ids struct{ HistoricalID, RealtimeID int }
	require.NoError(t, json.Unmarshal(resp.Data, &ids))
	require.NotZero(t, ids.HistoricalID)

	var charts []struct {
		ID   int
		EOH  bool
		Bars []struct{ Open, High, Low, Close float64 }
	}
	for done := false; !done; {
		f := c.next(ctx)
		for _, m := range f.Messages {
			if m.Event != "chart" {
				continue
			}
			var d struct {
				Charts []struct {
					ID   int
					EOH  bool
					Bars []struct{ Open, High, Low, Close float64 }
				}
			}
			require.NoError(t, json.Unmarshal(m.Data, &d))
			for _, ch := range d.Charts {
				charts = append(charts, ch)
				done = done || ch.EOH
			}
		}
	}
	require.Len(t, charts, 2)
	assert.Equal(t, ids.HistoricalID, charts[0].ID)
	assert.Len(t, charts[0].Bars, 5)
	assert.True(t, charts[1].EOH)

	c.request(ctx, "md/cancelChart", 2, `{"subscriptionId":1}`)
	assert.True(t, c.response(ctx, 2).OK())
}

func TestRevokedTokenClosesItsSocketOnly(t *testing.T) {
	ctx := testContext(t)
	toks := newTokens("a", "b")
	s := start(t, toks.Valid)
	ca, cb := dial(t, ctx, s), dial(t, ctx, s)
	ca.send(ctx, tradovate.AuthorizeFrame("a"))
	require.True(t, ca.response(ctx, 0).OK())
	cb.send(ctx, tradovate.AuthorizeFrame("b"))
	require.True(t, cb.response(ctx, 0).OK())

	toks.Revoke("a")
	var closeFrame tradovate.Frame
	for closeFrame.Type != tradovate.FrameClose {
		closeFrame = ca.next(ctx)
	}
	assert.Equal(t, wsfake.CloseRevoked, closeFrame.CloseCode)
	_, _, err := ca.ws.Read(ctx)
	assert.Equal(t, websocket.StatusCode(wsfake.CloseRevoked), websocket.CloseStatus(err))

	require.Eventually(t, func() bool { return s.Open() == 1 }, 10*time.Second, 5*time.Millisecond)
	cb.request(ctx, "md/subscribeQuote", 1, `{"symbol":"ESZ6"}`)
	assert.True(t, cb.response(ctx, 1).OK(), "the other socket stays open")
}

func TestRecordsHeartbeatsAndUnparsableFrames(t *testing.T) {
	ctx := testContext(t)
	s := start(t, newTokens("good").Valid)
	c := dial(t, ctx, s)
	c.send(ctx, []byte(tradovate.HeartbeatFrame))
	c.send(ctx, []byte("garbage"))
	c.send(ctx, tradovate.AuthorizeFrame("good"))
	require.True(t, c.response(ctx, 0).OK())

	got := s.Received()
	require.Len(t, got, 3)
	assert.True(t, got[0].Heartbeat)
	assert.ErrorIs(t, got[1].Err, tradovate.ErrMalformedFrame)
	assert.Equal(t, "authorize", got[2].Request.Op)
	assert.Equal(t, 1, got[2].Conn)
}

func TestServerSendsHeartbeats(t *testing.T) {
	ctx := testContext(t)
	s := start(t, newTokens().Valid)
	c := dial(t, ctx, s)
	_, data, err := c.ws.Read(ctx)
	require.NoError(t, err)
	assert.Equal(t, "h", string(data))
}

func TestDropAllAndCloseEndEverySocket(t *testing.T) {
	ctx := testContext(t)
	s := start(t, newTokens("good").Valid)
	c1, c2 := dial(t, ctx, s), dial(t, ctx, s)
	require.Eventually(t, func() bool { return s.Open() == 2 }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, 2, s.DropAll())
	for _, c := range []*client{c1, c2} {
		for {
			if _, _, err := c.ws.Read(ctx); err != nil {
				assert.Equal(t, websocket.StatusCode(-1), websocket.CloseStatus(err), "dropped without a close frame")
				break
			}
		}
	}
	require.Eventually(t, func() bool { return s.Open() == 0 }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, 2, s.Connections())

	c3 := dial(t, ctx, s)
	s.Close()
	for {
		if _, _, err := c3.ws.Read(ctx); err != nil {
			break
		}
	}
	s.Close() // idempotent
	_, _, err := websocket.Dial(ctx, s.URL(), nil)
	assert.Error(t, err)
}
