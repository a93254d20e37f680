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

func TestQuickstart(t *testing.T) {
	srv := testutil.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, run(ctx, &out, srv.Options(), srv.Prefix), out.String())
	got := out.String()
	t.Log("\n" + got)
	for _, want := range []string{
		`service A: token eyJhbG…\(\d+\) version (\d+), .*\(broker logins so far: 1\)`,
		`service B: token eyJhbG…\(\d+\) version \d+, .*\(broker logins so far: 1\): same token`,
		`service A: token .*\(logins: 1, renewals: 1\)`,
		`service B: told of version \d+ by Watch`,
		`service B: sees the token service A stored after`,
		`done: two services, 1 login, 1 renewal`,
	} {
		assert.Regexp(t, regexp.MustCompile(want), got)
	}
	assert.NotRegexp(t, `eyJhbGciOi[A-Za-z0-9_-]{20,}`, got, "a whole token was printed")
}
