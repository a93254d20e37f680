package testutil

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRedis(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := Redis(t)
	t.Logf("kind %s at %s", s.Kind, s.Addr())
	assert.Contains(t, []string{kindExternal, kindRedisServer, kindMiniredis}, s.Kind)
	assert.Regexp(t, regexp.MustCompile(`^bt-TestRedis-[0-9a-f]{8}$`), s.Prefix)

	c1, c2 := s.Client(t), s.Client(t)
	key := s.Key("greeting")
	require.NoError(t, c1.Set(ctx, key, "hello", time.Minute).Err())
	got, err := c2.Get(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, "hello", got)

	other := Redis(t)
	assert.NotEqual(t, s.Prefix, other.Prefix)
}

func TestServerKeyAndName(t *testing.T) {
	t.Parallel()
	s := &Server{Prefix: "bt-x-0123abcd"}
	assert.Equal(t, "bt-x-0123abcd:token:alice", s.Key("token", "alice"))
	assert.Equal(t, "bt-x-0123abcd-alice", s.Name("alice"))
}

func TestPrefixSanitized(t *testing.T) {
	t.Parallel()
	t.Run("sub test/with {odd} chars#1", func(t *testing.T) {
		p := newPrefix(t)
		assert.Regexp(t, regexp.MustCompile(`^bt-[A-Za-z0-9_-]{1,40}-[0-9a-f]{8}$`), p)
	})
}

func TestChooseBackend(t *testing.T) {
	t.Parallel()
	notFound := errors.New(`exec: "redis-server": executable file not found in $PATH`)
	tests := []struct {
		name        string
		redisURL    string
		lookPathErr error
		requireReal string
		want        string
		wantErr     bool
	}{
		{"url wins over binary", "redis://127.0.0.1:6379/0", nil, "", kindExternal, false},
		{"url wins without binary", "redis://127.0.0.1:6379/0", notFound, "1", kindExternal, false},
		{"binary", "", nil, "", kindRedisServer, false},
		{"binary under require real", "", nil, "1", kindRedisServer, false},
		{"miniredis fallback", "", notFound, "", kindMiniredis, false},
		{"miniredis fallback with other value", "", notFound, "0", kindMiniredis, false},
		{"require real forbids miniredis", "", notFound, "1", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chooseBackend(tt.redisURL, tt.lookPathErr, tt.requireReal)
			if tt.wantErr {
				require.Error(t, err)
				assert.Contains(t, err.Error(), EnvRequireReal)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestSkipOrFail is not parallel: it sets EnvRequireReal with t.Setenv.
func TestSkipOrFail(t *testing.T) {
	t.Setenv(EnvRequireReal, "")
	r := runRecorded(t, func(tb testing.TB) { skipOrFail(tb, "no %s", "binary") })
	assert.True(t, r.skipped)
	assert.False(t, r.failed)
	assert.Equal(t, "testutil: no binary", r.msg)

	t.Setenv(EnvRequireReal, "1")
	r = runRecorded(t, func(tb testing.TB) { skipOrFail(tb, "no %s", "binary") })
	assert.False(t, r.skipped)
	assert.True(t, r.failed)
	assert.Contains(t, r.msg, "no binary")
	assert.Contains(t, r.msg, EnvRequireReal)
}

func TestExternal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := StartRedis(t)
	ext := newExternal(t, "redis://"+srv.Addr()+"/0")
	assert.Equal(t, kindExternal, ext.Kind)
	assert.Equal(t, srv.Addr(), ext.Addr())
	assert.NotEqual(t, srv.Prefix, ext.Prefix)

	key := ext.Key("k")
	require.NoError(t, ext.Client(t).Set(ctx, key, "v", time.Minute).Err())
	got, err := srv.Client(t).Get(ctx, key).Result()
	require.NoError(t, err)
	assert.Equal(t, "v", got)
}

// TestRedisUsesRedisURL is not parallel: it sets REDIS_URL with t.Setenv.
func TestRedisUsesRedisURL(t *testing.T) {
	srv := StartRedis(t)
	t.Setenv(envRedisURL, "redis://"+srv.Addr()+"/0")
	s := Redis(t)
	assert.Equal(t, kindExternal, s.Kind)
	assert.Equal(t, srv.Addr(), s.Addr())
	require.NoError(t, s.Client(t).Ping(context.Background()).Err())
}

// TestExternalStopStart is not parallel: it sets EnvRequireReal with
// t.Setenv.
func TestExternalStopStart(t *testing.T) {
	srv := StartRedis(t)
	ext := newExternal(t, "redis://"+srv.Addr()+"/0")
	for _, env := range []string{"", "1"} {
		t.Setenv(EnvRequireReal, env)
		for name, f := range map[string]func(testing.TB){"Stop": ext.Stop, "Start": ext.Start} {
			r := runRecorded(t, f)
			assert.Equal(t, env == "", r.skipped, "%s skipped with %s=%q", name, EnvRequireReal, env)
			assert.Equal(t, env == "1", r.failed, "%s failed with %s=%q", name, EnvRequireReal, env)
			assert.Contains(t, r.msg, "StartRedis")
		}
	}
	// The external server must still be up: Stop did nothing.
	require.NoError(t, srv.Client(t).Ping(context.Background()).Err())
}

func TestStartRedisArgs(t *testing.T) {
	t.Parallel()
	s := StartRedis(t, "--maxmemory", "1mb")
	assert.Equal(t, kindRedisServer, s.Kind)
	got, err := s.Client(t).ConfigGet(context.Background(), "maxmemory").Result()
	require.NoError(t, err)
	assert.Equal(t, "1048576", got["maxmemory"])
}

func TestFreePort(t *testing.T) {
	t.Parallel()
	port := FreePort(t)
	require.Greater(t, port, 0)
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "redis://u:xxxxx@h:1/0", redactURL("redis://u:secret@h:1/0"))
	assert.Equal(t, "redis://:xxxxx@h:1/0", redactURL("redis://:secret@h:1/0"))
	assert.Equal(t, "redis://h:1/0", redactURL("redis://h:1/0"))
}

// TestOptionsFresh checks that Options returns a new copy each call.
func TestOptionsFresh(t *testing.T) {
	t.Parallel()
	s := &Server{opts: &redis.Options{Addr: "127.0.0.1:1"}}
	o := s.Options()
	o.Addr = "changed"
	assert.Equal(t, "127.0.0.1:1", s.Options().Addr)
}
