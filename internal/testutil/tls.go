package testutil

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// tlsUser is the ACL user TLSRedis creates.
const tlsUser = "brokertoken"

// TLSServer is a real redis-server that accepts only TLS connections, as
// returned by TLSRedis.
type TLSServer struct {
	// Prefix is unique per test; tests use it as key namespace and in
	// user names.
	Prefix string
	// User is the ACL user ("brokertoken") with all permissions.
	User string
	// Password is User's random password.
	Password string

	addr   string
	caFile string
	roots  *x509.CertPool
}

// TLSRedis starts a real redis-server that accepts only TLS, with a
// throwaway CA and server certificate (SAN IP 127.0.0.1 and DNS localhost)
// written to t.TempDir(). The default user keeps working but gets a random
// password (--requirepass); the ACL user "brokertoken" gets its own random
// password and "on >PASSWORD ~* &* +@all". The server is stopped in
// t.Cleanup. TLSRedis skips the test (or fails it under EnvRequireReal=1)
// when redis-server is missing or was built without TLS support.
func TLSRedis(t testing.TB) *TLSServer {
	t.Helper()
	bin := lookBinary(t, "redis-server")
	dir := t.TempDir()
	files, roots, err := writeTLSFiles(dir)
	if err != nil {
		t.Fatalf("testutil: generate TLS certificates: %v", err)
	}
	s := &TLSServer{
		Prefix:   newPrefix(t),
		User:     tlsUser,
		Password: randomSecret(t),
		caFile:   files.ca,
		roots:    roots,
	}
	defaultPassword := randomSecret(t)
	p, port, err := launch(t, launchSpec{
		bin: bin,
		dir: dir,
		portArgs: func(port int) []string {
			return []string{"--port", "0", "--tls-port", strconv.Itoa(port)}
		},
		args: func(int) []string {
			return []string{
				"--tls-cert-file", files.cert,
				"--tls-key-file", files.key,
				"--tls-ca-cert-file", files.ca,
				"--tls-auth-clients", "no",
				"--requirepass", defaultPassword,
				// Each ACL rule is its own argument: redis-server quotes
				// every command-line argument separately.
				"--user", tlsUser, "on", ">" + s.Password, "~*", "&*", "+@all",
			}
		},
		probe: func(ctx context.Context, addr string) error {
			d := tls.Dialer{Config: s.TLSConfig()}
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			return pingConn(ctx, conn)
		},
	})
	if err != nil {
		var se *startError
		if errors.As(err, &se) && strings.Contains(strings.ToLower(se.output), "tls") &&
			!strings.Contains(se.output, "already in use") {
			skipOrFail(t, "redis-server at %s failed to start with TLS arguments; "+
				"it was probably built without TLS support: %v", bin, err)
		}
		t.Fatalf("testutil: %v", err)
	}
	t.Cleanup(p.kill)
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	return s
}

// Addr returns the server's host:port.
func (s *TLSServer) Addr() string { return s.addr }

// TLSConfig returns a fresh client TLS configuration that trusts only the
// throwaway CA and verifies the server as "localhost".
func (s *TLSServer) TLSConfig() *tls.Config {
	return &tls.Config{
		RootCAs:    s.roots,
		ServerName: "localhost",
		MinVersion: tls.VersionTLS12,
	}
}

// Options returns fresh client options with Addr, Username, Password and
// TLSConfig set, ready for redis.NewClient.
func (s *TLSServer) Options() *redis.Options {
	return &redis.Options{
		Addr:      s.addr,
		Username:  s.User,
		Password:  s.Password,
		TLSConfig: s.TLSConfig(),
	}
}

// Client returns a new client authenticated as User over TLS, with its own
// connection pool, closed in t.Cleanup.
func (s *TLSServer) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(s.Options())
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// URL returns "rediss://brokertoken:PASSWORD@127.0.0.1:PORT/0". Clients
// must trust CAFile to connect.
func (s *TLSServer) URL() string {
	u := url.URL{
		Scheme: "rediss",
		User:   url.UserPassword(s.User, s.Password),
		Host:   s.addr,
		Path:   "/0",
	}
	return u.String()
}

// CAFile returns the path of the throwaway CA certificate (PEM).
func (s *TLSServer) CAFile() string { return s.caFile }

// Name returns s.Prefix + "-" + suffix, a user or account name unique to
// this test.
func (s *TLSServer) Name(suffix string) string {
	return s.Prefix + "-" + suffix
}

// tlsFiles are the PEM files TLSRedis hands to redis-server.
type tlsFiles struct {
	ca, cert, key string
}

// writeTLSFiles generates a throwaway CA and a server certificate for
// 127.0.0.1 and localhost signed by it, writes ca.crt, server.crt and
// server.key into dir, and returns their paths and a pool holding the CA.
func writeTLSFiles(dir string) (tlsFiles, *x509.CertPool, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tlsFiles{}, nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "brokertoken test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tlsFiles{}, nil, fmt.Errorf("CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tlsFiles{}, nil, err
	}

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tlsFiles{}, nil, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return tlsFiles{}, nil, fmt.Errorf("server certificate: %w", err)
	}
	srvKeyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return tlsFiles{}, nil, err
	}

	files := tlsFiles{
		ca:   filepath.Join(dir, "ca.crt"),
		cert: filepath.Join(dir, "server.crt"),
		key:  filepath.Join(dir, "server.key"),
	}
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{
		{files.ca, "CERTIFICATE", caDER},
		{files.cert, "CERTIFICATE", srvDER},
		{files.key, "PRIVATE KEY", srvKeyDER},
	} {
		data := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(f.path, data, 0o600); err != nil {
			return tlsFiles{}, nil, err
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	return files, roots, nil
}
