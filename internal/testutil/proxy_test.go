package testutil

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// echoServer echoes every line back, until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, deadline time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	require.NoError(t, c.SetDeadline(start.Add(deadline)))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	assert.Equal(t, "ping\n", line)
	return time.Since(start), nil
}

func TestProxyForwardsAndInjectsFaults(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)

	d, err := roundTrip(t, c, r, time.Second)
	require.NoError(t, err)
	assert.Less(t, d, 100*time.Millisecond)
	assert.Equal(t, 1, p.Conns())

	// Latency: added in each direction.
	p.SetLatency(50 * time.Millisecond)
	d, err = roundTrip(t, c, r, time.Second)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, d, 100*time.Millisecond)
	p.SetLatency(0)

	// Half-open: nothing arrives, nothing is closed; then the held data arrives.
	p.HalfOpen(true)
	_, err = roundTrip(t, c, r, 200*time.Millisecond)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
	assert.Equal(t, 1, p.Conns(), "still open")
	p.HalfOpen(false)
	require.NoError(t, c.SetDeadline(time.Now().Add(time.Second)))
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "ping\n", line, "held data delivered after the partition heals")

	// Cut: the client sees the connection closed; new ones work.
	p.Cut()
	require.NoError(t, c.SetDeadline(time.Now().Add(time.Second)))
	_, err = r.ReadString('\n')
	require.Error(t, err)
	assert.Eventually(t, func() bool { return p.Conns() == 0 }, time.Second, 5*time.Millisecond)

	c2, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c2.Close()
	_, err = roundTrip(t, c2, bufio.NewReader(c2), time.Second)
	require.NoError(t, err)

	// Close is idempotent and ends every connection.
	p.Close()
	p.Close()
	require.NoError(t, c2.SetDeadline(time.Now().Add(time.Second)))
	_, err = c2.Read(make([]byte, 1))
	require.Error(t, err)
}
