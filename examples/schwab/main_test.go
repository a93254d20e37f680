package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/brokertoken/brokertoken/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions()...) }

func TestSchwabDemo(t *testing.T) {
	srv := testutil.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, srv.Options(), srv.Prefix), out.String())
	got := out.String()
	t.Log("\n" + got)
	for _, want := range []string{
		`service: no token yet \(true\); a human authorizes at http://127\.0\.0\.1:\d+/schwab/login`,
		`human: authorizes the app -> HTTP 200`,
		`service: GET /trader/v1/accounts/accountNumbers with token .{6}…\(43\) -> HTTP 200 \[12345678\]`,
		`status: active, generation [4-9], [3-8] refreshes, refresh token expires in 168h0m0s`,
		`done: 1 authorization, [3-8] refreshes at Schwab \(0 reused\), \d+ API calls, 0 refused`,
	} {
		assert.Regexp(t, regexp.MustCompile(want), got)
	}
	assert.NotContains(t, got, demoAppSecret)
	assert.NotRegexp(t, `[A-Za-z0-9_-]{40}`, got, "a whole token was printed")
}
