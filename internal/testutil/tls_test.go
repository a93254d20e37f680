package testutil

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTLSRedis(t *testing.T) {
	t.Parallel()
	s := TLSRedis(t)
	assert.Equal(t, "brokertoken", s.User)
	assert.Len(t, s.Password, 32)
	assert.Equal(t, s.Prefix+"-alice", s.Name("alice"))

	t.Run("options", func(t *testing.T) {
		ctx := context.Background()
		c := s.Client(t)
		require.NoError(t, c.Ping(ctx).Err())
		key := s.Prefix + ":k"
		require.NoError(t, c.Set(ctx, key, "v", time.Minute).Err())
		got, err := c.Get(ctx, key).Result()
		require.NoError(t, err)
		assert.Equal(t, "v", got)
		who, err := c.Do(ctx, "ACL", "WHOAMI").Text()
		require.NoError(t, err)
		assert.Equal(t, s.User, who)
	})

	t.Run("url and CA file", func(t *testing.T) {
		assert.Equal(t, "rediss://brokertoken:"+s.Password+"@"+s.Addr()+"/0", s.URL())
		opts, err := redis.ParseURL(s.URL())
		require.NoError(t, err)
		caPEM, err := os.ReadFile(s.CAFile())
		require.NoError(t, err)
		roots := x509.NewCertPool()
		require.True(t, roots.AppendCertsFromPEM(caPEM))
		opts.TLSConfig.RootCAs = roots // ServerName is 127.0.0.1: IP SAN
		c := redis.NewClient(opts)
		defer c.Close()
		require.NoError(t, c.Ping(context.Background()).Err())
	})

	for _, tc := range []struct{ name, user, password string }{
		{"wrong password", s.User, "wrong"},
		{"missing password", s.User, ""},
		{"default user without password", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := s.Options()
			opts.Username, opts.Password = tc.user, tc.password
			err := ping(opts)
			require.Error(t, err)
			t.Log(err)
			assert.Regexp(t, "WRONGPASS|NOAUTH", err.Error())
		})
	}

	t.Run("plain connection to TLS port", func(t *testing.T) {
		opts := s.Options()
		opts.TLSConfig = nil
		err := ping(opts)
		require.Error(t, err)
		t.Log(err)
	})

	t.Run("untrusted server", func(t *testing.T) {
		opts := s.Options()
		opts.TLSConfig.RootCAs = x509.NewCertPool()
		err := ping(opts)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "certificate")
	})
}

// ping sends one PING with a fresh client that does not retry.
func ping(opts *redis.Options) error {
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	opts.DialTimeout = 2 * time.Second
	opts.ReadTimeout = 2 * time.Second
	c := redis.NewClient(opts)
	defer c.Close()
	return c.Ping(context.Background()).Err()
}

func TestWriteTLSFiles(t *testing.T) {
	t.Parallel()
	files, roots, err := writeTLSFiles(t.TempDir())
	require.NoError(t, err)
	certPEM, err := os.ReadFile(files.cert)
	require.NoError(t, err)
	cert := parsePEMCert(t, certPEM)
	for _, name := range []string{"localhost", "127.0.0.1"} {
		_, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots})
		assert.NoError(t, err, "verify for %s", name)
	}
	_, err = cert.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: roots})
	assert.Error(t, err)
}

func parsePEMCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	require.NotNil(t, block)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}
