package testutil

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// busyPort listens on a free loopback port for the rest of the test and
// returns it.
func busyPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func TestLaunchRetriesOnBusyPort(t *testing.T) {
	t.Parallel()
	bin := lookBinary(t, "redis-server")
	busy := busyPort(t)
	var picks atomic.Int32
	p, port, err := launch(t, launchSpec{
		bin: bin,
		dir: t.TempDir(),
		pickPort: func(t testing.TB) int {
			if picks.Add(1) == 1 {
				return busy
			}
			return FreePort(t)
		},
	})
	require.NoError(t, err)
	t.Cleanup(p.kill)
	assert.NotEqual(t, busy, port)
	assert.EqualValues(t, 2, picks.Load())
}

func TestLaunchFixedBusyPortFails(t *testing.T) {
	t.Parallel()
	bin := lookBinary(t, "redis-server")
	busy := busyPort(t)
	_, _, err := launch(t, launchSpec{bin: bin, dir: t.TempDir(), port: busy})
	require.Error(t, err)
	var se *startError
	require.True(t, errors.As(err, &se))
	assert.Contains(t, se.output, "already in use")
	assert.Contains(t, err.Error(), "exited during startup")
	assert.Contains(t, err.Error(), "--- last lines of", "the message includes the server's log")
}

// TestTLSRedisWithoutTLSSupport is not parallel: it replaces PATH with
// t.Setenv so that TLSRedis finds a fake redis-server that fails like a
// build without TLS support.
func TestTLSRedisWithoutTLSSupport(t *testing.T) {
	dir := t.TempDir()
	fake := "#!/bin/sh\n" +
		"echo '*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***' >&2\n" +
		"echo \">>> 'tls-port \\\"6380\\\"'\" >&2\n" +
		"echo 'Bad directive or wrong number of arguments' >&2\n" +
		"exit 1\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "redis-server"), []byte(fake), 0o755))
	t.Setenv("PATH", dir)

	t.Setenv(EnvRequireReal, "")
	r := runRecorded(t, func(tb testing.TB) { TLSRedis(tb) })
	assert.True(t, r.skipped, "skipped")
	assert.Contains(t, r.msg, "built without TLS support")
	assert.Contains(t, r.msg, "Bad directive", "the message includes the server's stderr")

	t.Setenv(EnvRequireReal, "1")
	r = runRecorded(t, func(tb testing.TB) { TLSRedis(tb) })
	assert.True(t, r.failed, "failed")
	assert.Contains(t, r.msg, "Bad directive")
}
