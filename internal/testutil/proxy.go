package testutil

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a fault-injecting TCP proxy on loopback, for putting a slow or broken
// network between clients and a server: added latency, cut connections and half-open
// connections (bytes stop flowing, nothing is closed). Create it with NewProxy; its
// methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string

	latency atomic.Int64 // nanoseconds added before forwarding each chunk
	active  atomic.Int64 // open client connections

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	resumed chan struct{} // closed while flowing; open while half-open
	closed  bool
	wg      sync.WaitGroup
}

// NewProxy starts a proxy on a free loopback port forwarding every connection to
// target (host:port). It is closed in t.Cleanup.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testutil: proxy listen: %v", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, resumed: make(chan struct{})}
	close(p.resumed)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's host:port, to give clients instead of the target's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetLatency delays every chunk of data, in both directions, by d (0 removes it).
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

// Cut closes every open connection, as a reset network would. New connections are
// accepted as before.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

// HalfOpen stops (on) or restarts (off) forwarding on every connection, open or new,
// without closing any: a peer that vanished without a FIN, a silent partition. Data
// read meanwhile is held and forwarded, in order, when forwarding restarts, as TCP's
// retransmissions would deliver it after a partition heals.
func (p *Proxy) HalfOpen(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.resumed: // flowing
		if on {
			p.resumed = make(chan struct{})
		}
	default: // half-open
		if !on {
			close(p.resumed)
		}
	}
}

// Conns returns how many client connections are open.
func (p *Proxy) Conns() int {
	return int(p.active.Load())
}

// Close stops the proxy, closes every connection and waits for its goroutines.
// It is idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	_ = p.ln.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	select {
	case <-p.resumed:
	default:
		close(p.resumed)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

// track registers c; it reports false (and closes c) once the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	p.active.Add(1)
	defer p.active.Add(-1)
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	done := make(chan struct{})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(done)
			_ = client.Close()
			_ = server.Close()
		})
	}
	var pumps sync.WaitGroup
	pumps.Add(2)
	go func() { defer pumps.Done(); p.pump(server, client, done, stop) }()
	go func() { defer pumps.Done(); p.pump(client, server, done, stop) }()
	pumps.Wait()
}

// pump copies src to dst, waiting while the proxy is half-open and adding latency.
func (p *Proxy) pump(dst, src net.Conn, done chan struct{}, stop func()) {
	defer stop()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			resumed := p.resumed
			p.mu.Unlock()
			select {
			case <-resumed:
			case <-done:
				return
			}
			if d := time.Duration(p.latency.Load()); d > 0 {
				timer := time.NewTimer(d)
				select {
				case <-timer.C:
				case <-done:
					timer.Stop()
					return
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, reset or closed: stop closes both sides
		}
	}
}
