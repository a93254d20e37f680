package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// defaultDialTimeout is go-redis's, used when the URL sets none.
const defaultDialTimeout = 5 * time.Second

// tlsDialer returns a go-redis Dialer that connects over TLS and shakes hands before
// returning, within timeout (default 5 s), so a failed handshake is reported as one:
// against a server that does not speak TLS, go-redis's own dialer waits for an answer
// that never comes and the caller sees only "context deadline exceeded". conf is not
// modified; without a ServerName each host is verified under the name it is dialled by.
func tlsDialer(conf *tls.Config, timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if timeout <= 0 {
		timeout = defaultDialTimeout
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		d := net.Dialer{KeepAlive: 5 * time.Minute}
		raw, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c := conf
		if c.ServerName == "" {
			c = conf.Clone()
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			c.ServerName = host
		}
		conn := tls.Client(raw, c)
		if err := conn.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, handshakeError(addr, timeout, err)
		}
		return conn, nil
	}
}

// handshakeError says why the TLS handshake with addr failed, in words an operator can
// act on.
func handshakeError(addr string, timeout time.Duration, err error) error {
	var rec tls.RecordHeaderError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var ne net.Error
	switch {
	case errors.As(err, &rec):
		return fmt.Errorf("TLS handshake with %s failed: the server does not speak TLS there (use redis:// for a plain port, or the server's TLS port)", addr)
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("TLS handshake with %s got no answer within %s: the server does not speak TLS there (use redis:// for a plain port, or the server's TLS port)", addr, timeout)
	case errors.As(err, &unknownCA):
		return fmt.Errorf("TLS handshake with %s failed: its certificate is signed by an unknown authority (give the CA with --redis-ca): %w", addr, err)
	case errors.As(err, &hostname), errors.As(err, &invalid):
		return fmt.Errorf("TLS handshake with %s failed: bad certificate: %w", addr, err)
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("TLS handshake with %s failed: the server closed the connection (is it a TLS port? does it accept this client?): %w", addr, err)
	}
	return fmt.Errorf("TLS handshake with %s failed: %w", addr, err)
}

// plainToTLSHint returns a hint for an error from a plain (redis://) connection that a
// TLS-only server closes at the first command, or "".
func plainToTLSHint(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		return " (the server closed the connection: if it wants TLS, use rediss://)"
	}
	return ""
}
