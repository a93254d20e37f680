package tradovatews_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/brokertoken/brokertoken/internal/tradovatews"
	"github.com/brokertoken/brokertoken/tradovate"
)

func TestRequestFrameRoundTrips(t *testing.T) {
	for _, r := range []tradovatews.Request{
		{Op: "authorize", ID: 0, Body: "token"},
		{Op: "md/subscribeQuote", ID: 1, Body: `{"symbol":"ESZ6"}`},
		{Op: "md/getChart", ID: 42, Query: "a=b", Body: "{\n\"multi\": \"line\"\n}"},
		{Op: "user/syncrequest", ID: 9, Body: ""},
	} {
		b, err := tradovate.RequestFrame(r.Op, r.ID, r.Query, r.Body)
		require.NoError(t, err)
		got, err := tradovatews.ParseRequest(b)
		require.NoError(t, err)
		assert.Equal(t, r, got)
	}
	b, err := tradovate.RequestFrame("md/subscribeQuote", 1, "", `{"symbol":"ESZ6"}`)
	require.NoError(t, err)
	assert.Equal(t, "md/subscribeQuote\n1\n\n{\"symbol\":\"ESZ6\"}", string(b))
}

func TestParseRequestRejectsMalformedRequests(t *testing.T) {
	for _, in := range []string{``, `[]`, "authorize\n0\n", "\n0\n\nx", "op\nx\n\n", "op\n-1\n\n", "op\n01\n\n", "op\n+1\n\n", "op\r\n1\n\n"} {
		_, err := tradovatews.ParseRequest([]byte(in))
		assert.ErrorIs(t, err, tradovate.ErrMalformedFrame, "%q", in)
	}
}

func TestAuthorizeFrame(t *testing.T) {
	b := tradovate.AuthorizeFrame("md-token")
	assert.Equal(t, "authorize\n0\n\nmd-token", string(b))
	r, err := tradovatews.ParseRequest(b)
	require.NoError(t, err)
	assert.Equal(t, tradovatews.Request{Op: "authorize", Body: "md-token"}, r)
}

func TestRequestStringRedactsTheAuthorizeToken(t *testing.T) {
	token := "eyJraWQiOiI0IiwiYWxnIjoiRWREU0EifQ.eyJzdWIiOiIzODY1NjUxIn0.signature"
	r, err := tradovatews.ParseRequest(tradovate.AuthorizeFrame(token))
	require.NoError(t, err)
	assert.NotContains(t, r.String(), token)
	assert.NotContains(t, fmt.Sprint(r), "signature")
}

func TestDataFrameAndCloseFrameParseBack(t *testing.T) {
	msgs := []tradovate.Message{
		{Status: 200, ID: 0},
		{Status: 401, ID: 3, Data: json.RawMessage(`"Invalid access token"`)},
		{Event: "md", Data: json.RawMessage(`{"quotes":[{"contractId":1}]}`)},
	}
	b, err := tradovatews.DataFrame(msgs...)
	require.NoError(t, err)
	assert.Equal(t, `a[{"s":200,"i":0},{"s":401,"i":3,"d":"Invalid access token"},{"e":"md","d":{"quotes":[{"contractId":1}]}}]`, string(b))
	f, err := tradovate.ParseFrame(b)
	require.NoError(t, err)
	assert.Equal(t, msgs, f.Messages)

	empty, err := tradovatews.DataFrame()
	require.NoError(t, err)
	assert.Equal(t, "a[]", string(empty))

	_, err = tradovatews.DataFrame(tradovate.Message{Status: 200, Data: json.RawMessage(`{`)})
	assert.Error(t, err)

	f, err = tradovate.ParseFrame(tradovatews.CloseFrame(1008, `token "revoked"`))
	require.NoError(t, err)
	assert.Equal(t, tradovate.Frame{Type: tradovate.FrameClose, CloseCode: 1008, CloseReason: `token "revoked"`}, f)
}
