package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
	"github.com/brokertoken/brokertoken/internal/testutil/tradovatefake"
	"github.com/brokertoken/brokertoken/tradovate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

func TestA401CausesOneInvalidateOneRefreshAndOneRetry(t *testing.T) {
	srv := testutil.Redis(t)
	broker := tradovatefake.New(t, tradovatefake.Options{})
	user := srv.Name("user")
	broker.AddUser(user, "pw")
	api := newBrokerAPI(broker)
	t.Cleanup(api.Close)
	creds, err := tradovate.NewCredentials(tradovate.Credential{Username: user, Password: "pw"})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var out bytes.Buffer
	const workers = 8
	marks := []int{} // index of the first API call after each disruption
	err = run(ctx, &out, config{
		Redis: srv.Client(t), Prefix: srv.Prefix, User: user, Workers: workers,
		Tradovate: tradovate.Options{RESTURL: api.RESTURL(), Method: tradovate.MethodOfficial, Credentials: creds, DeviceID: "test"},
		Disrupt: func(ctx context.Context) error {
			marks = append(marks, len(api.Calls()))
			return webLogins(ctx, api.RESTURL(), creds, user, 2) // closes the service's session
		},
	})
	got := out.String()
	t.Log("\n" + got)
	require.NoError(t, err)
	require.Len(t, marks, 2)

	calls := api.Calls()
	round1, round2, round3 := calls[:marks[0]], calls[marks[0]:marks[1]], calls[marks[1]:]
	require.Len(t, round1, 1)
	assert.Equal(t, 200, round1[0].Status)

	// Round 2, one request: 401 with the dropped token, then one retry with a new one.
	require.Len(t, round2, 2)
	assert.Equal(t, apiCall{Token: round1[0].Token, Status: 401}, round2[0])
	assert.Equal(t, 200, round2[1].Status)
	assert.NotEqual(t, round1[0].Token, round2[1].Token)
	r2 := between(got, "round 1: 1/1", "round 2: 1/1")
	assert.Equal(t, 1, strings.Count(r2, `msg="tokencache: token reported bad; refreshing"`), "one Invalidate")
	assert.Equal(t, 1, strings.Count(r2, `msg="tokencache: token refreshed"`), "one refresh")

	// Round 3, concurrent requests: each is refused at most once, all succeed with the
	// same new token, and the cache logged in once.
	var rejected, ok int
	var third string
	for _, c := range round3 {
		switch c.Status {
		case 401:
			rejected++
			assert.Equal(t, round2[1].Token, c.Token, "only the dropped token is refused")
		case 200:
			ok++
			if third == "" {
				third = c.Token
			}
			assert.Equal(t, third, c.Token)
		}
	}
	assert.Equal(t, workers, ok)
	assert.Positive(t, rejected)
	assert.LessOrEqual(t, rejected, workers, "one retry per request at most")
	assert.NotEqual(t, round2[1].Token, third)
	assert.Equal(t, 1, strings.Count(between(got, "round 2: 1/1", "round 3:"), `msg="tokencache: token refreshed"`))

	assert.Equal(t, 7, broker.Logins(user), "three by the service (first token, one per dropped session), four on the web")
	assert.Contains(t, got, "round 3: 8/8 calls succeeded")
	assert.Contains(t, got, "logins by this service: 3")
	for _, c := range calls {
		assert.NotContains(t, got, c.Token)
	}
}

// between returns the part of s after from and before to.
func between(s, from, to string) string {
	_, after, _ := strings.Cut(s, from)
	before, _, _ := strings.Cut(after, to)
	return before
}

// TestDemo runs what `go run ./examples/trading-service` runs.
func TestDemo(t *testing.T) {
	srv := testutil.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, demo(ctx, &out, srv.Options(), srv.Prefix))
	got := out.String()
	t.Log("\n" + got)
	for _, want := range []string{
		`GET /v1/account/list with token sha256:[0-9a-f]{8}: 200`,
		`round 1: accounts DEMO272045 \(id 1\)`,
		`round 1: 1/1 calls succeeded`,
		`\[elsewhere\] two logins on the web platform`,
		`GET /v1/account/list with token sha256:[0-9a-f]{8}: 401`,
		`msg="tokencache: token reported bad; refreshing" user=APEX_272045 token=eyJhbG…\(\d+\)`,
		`round 2: 1/1 calls succeeded`,
		`round 3: 5/5 calls succeeded`,
		`logins by this service: 3`,
	} {
		assert.Regexp(t, regexp.MustCompile(want), got)
	}
}
