package testutil

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// sentinelCount is how many sentinels Sentinel starts; sentinelQuorum of them must
	// agree that the master is down.
	sentinelCount  = 3
	sentinelQuorum = 2
	// sentinelReadyTimeout bounds the wait for the replica to sync and the sentinels to
	// know the replica and each other.
	sentinelReadyTimeout = 30 * time.Second
)

// SentinelOptions are the passwords of a Sentinel setup; empty means none.
type SentinelOptions struct {
	// Password is required by the master and the replica (requirepass), and used by the
	// replica and the sentinels to reach them (masterauth, auth-pass).
	Password string
	// SentinelPassword is required by the sentinels (requirepass), and used by each to
	// reach the others (sentinel-pass).
	SentinelPassword string
	// TLS makes every node and sentinel accept only TLS (a throwaway CA, certificates
	// for 127.0.0.1 and localhost), replication and monitoring included.
	TLS bool
}

// SentinelServer is a real Redis master with one replica, watched by three real
// redis-sentinel processes, all on loopback, as returned by Sentinel.
type SentinelServer struct {
	// Prefix is unique per test; tests use it as key namespace and in user names.
	Prefix string
	// MasterName is the name the sentinels monitor the master under ("mymaster").
	MasterName string
	// Password and SentinelPassword are those of the options.
	Password, SentinelPassword string

	tls    *tls.Config // clients' TLS configuration; nil without TLS
	caFile string
	tlsArg []string // the TLS arguments of every process

	bin       string
	sentinels []string // host:port of each sentinel

	mu    sync.Mutex          // guards nodes
	nodes map[string]*process // data nodes by host:port; killed ones removed
}

// Sentinel starts a master, a replica of it and three sentinels (quorum 2, a node is
// down after 1 s without an answer), with the passwords of opts, and returns once the
// replica has synced and every sentinel knows the replica and the other sentinels.
// Everything is stopped in t.Cleanup. It skips the test (or fails it under
// EnvRequireReal=1) when redis-server or redis-sentinel is missing.
func Sentinel(t testing.TB, opts SentinelOptions) *SentinelServer {
	t.Helper()
	bin := lookBinary(t, "redis-server")
	sentinelBin := lookBinary(t, "redis-sentinel")
	s := &SentinelServer{Prefix: newPrefix(t), MasterName: "mymaster", Password: opts.Password,
		SentinelPassword: opts.SentinelPassword, bin: bin, nodes: map[string]*process{}}
	if opts.TLS {
		files, roots, err := writeTLSFiles(t.TempDir())
		if err != nil {
			t.Fatalf("testutil: generate TLS certificates: %v", err)
		}
		s.caFile = files.ca
		s.tls = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		s.tlsArg = []string{"--tls-cert-file", files.cert, "--tls-key-file", files.key,
			"--tls-ca-cert-file", files.ca, "--tls-auth-clients", "no", "--tls-replication", "yes"}
	}
	var auth []string
	if opts.Password != "" {
		auth = []string{"--requirepass", opts.Password, "--masterauth", opts.Password}
	}

	master := s.startNode(t, auth...)
	replica := s.startNode(t, append([]string{"--replicaof", "127.0.0.1", portOf(master)}, auth...)...)
	ctx, cancel := context.WithTimeout(context.Background(), sentinelReadyTimeout)
	defer cancel()
	if err := s.waitInfo(ctx, replica, "replication", "master_link_status:up"); err != nil {
		t.Fatalf("testutil: replica %s did not sync with %s: %v%s", replica, master, err, s.diagnostics())
	}

	for range sentinelCount {
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(conf, nil, 0o600); err != nil { // sentinel rewrites it
			t.Fatalf("testutil: %v", err)
		}
		p, port, err := launch(t, launchSpec{
			bin: sentinelBin,
			dir: dir,
			portArgs: func(port int) []string {
				return append([]string{conf}, s.portArgs(port)...)
			},
			probe: s.probe,
			args: func(int) []string {
				args := []string{
					"--sentinel", "monitor", s.MasterName, "127.0.0.1", portOf(master), strconv.Itoa(sentinelQuorum),
					"--sentinel", "down-after-milliseconds", s.MasterName, "1000",
					"--sentinel", "failover-timeout", s.MasterName, "10000",
					"--sentinel", "parallel-syncs", s.MasterName, "1",
				}
				if opts.Password != "" {
					args = append(args, "--sentinel", "auth-pass", s.MasterName, opts.Password)
				}
				if opts.SentinelPassword != "" {
					args = append(args, "--requirepass", opts.SentinelPassword, "--sentinel", "sentinel-pass", opts.SentinelPassword)
				}
				return append(args, s.tlsArg...)
			},
		})
		if err != nil {
			t.Fatalf("testutil: sentinel: %v", err)
		}
		t.Cleanup(p.kill)
		s.sentinels = append(s.sentinels, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}

	for _, addr := range s.sentinels {
		sc := s.sentinelClient(addr)
		err := poll(ctx, func() error {
			replicas, err := sc.Replicas(ctx, s.MasterName).Result()
			if err != nil {
				return err
			}
			if len(replicas) != 1 {
				return fmt.Errorf("sentinel %s knows %d replicas, want 1", addr, len(replicas))
			}
			peers, err := sc.Sentinels(ctx, s.MasterName).Result()
			if err != nil {
				return err
			}
			if len(peers) != sentinelCount-1 {
				return fmt.Errorf("sentinel %s knows %d other sentinels, want %d", addr, len(peers), sentinelCount-1)
			}
			return nil
		})
		_ = sc.Close()
		if err != nil {
			t.Fatalf("testutil: sentinels not ready within %s: %v%s", sentinelReadyTimeout, err, s.diagnostics())
		}
	}
	return s
}

// startNode starts a data node with extra arguments and records it.
func (s *SentinelServer) startNode(t testing.TB, extra ...string) string {
	t.Helper()
	p, port, err := launch(t, launchSpec{bin: s.bin, dir: t.TempDir(), portArgs: s.portArgs, probe: s.probe,
		args: func(int) []string { return append(extra, s.tlsArg...) }})
	if err != nil {
		t.Fatalf("testutil: sentinel data node: %v", err)
	}
	t.Cleanup(p.kill)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s.mu.Lock()
	s.nodes[addr] = p
	s.mu.Unlock()
	return addr
}

// portArgs are the listening arguments of a process on port: TLS only, with TLS.
func (s *SentinelServer) portArgs(port int) []string {
	if s.tls != nil {
		return []string{"--port", "0", "--tls-port", strconv.Itoa(port)}
	}
	return []string{"--port", strconv.Itoa(port)}
}

// probe checks that the process at addr answers.
func (s *SentinelServer) probe(ctx context.Context, addr string) error {
	if s.tls == nil {
		return pingPlain(ctx, addr)
	}
	d := tls.Dialer{Config: s.TLSConfig()}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return pingConn(ctx, conn)
}

// TLSConfig returns a fresh client TLS configuration trusting the throwaway CA (each
// host verified under the name it is dialled by); nil without TLS.
func (s *SentinelServer) TLSConfig() *tls.Config {
	if s.tls == nil {
		return nil
	}
	return s.tls.Clone()
}

// CAFile returns the path of the throwaway CA certificate (PEM); "" without TLS.
func (s *SentinelServer) CAFile() string { return s.caFile }

// nodeOptions are the client options of the data node at addr.
func (s *SentinelServer) nodeOptions(addr string) *redis.Options {
	return &redis.Options{Addr: addr, Password: s.Password, TLSConfig: s.hostTLS(addr)}
}

// hostTLS is TLSConfig verifying addr's host; nil without TLS.
func (s *SentinelServer) hostTLS(addr string) *tls.Config {
	c := s.TLSConfig()
	if c != nil {
		c.ServerName, _, _ = net.SplitHostPort(addr)
	}
	return c
}

// sentinelClient returns a client of the sentinel at addr; the caller closes it.
func (s *SentinelServer) sentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: addr, Password: s.SentinelPassword, TLSConfig: s.hostTLS(addr)})
}

// SentinelAddrs returns the host:port of every sentinel.
func (s *SentinelServer) SentinelAddrs() []string { return append([]string(nil), s.sentinels...) }

// MasterAddr returns the master's host:port as the first sentinel that answers names it.
func (s *SentinelServer) MasterAddr(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var last error
	for _, addr := range s.sentinels {
		sc := s.sentinelClient(addr)
		hp, err := sc.GetMasterAddrByName(ctx, s.MasterName).Result()
		_ = sc.Close()
		if err == nil && len(hp) == 2 {
			return net.JoinHostPort(hp[0], hp[1])
		}
		last = err
	}
	t.Fatalf("testutil: no sentinel names the master: %v", last)
	return ""
}

// KillMaster kills the current master's process with SIGKILL (the replica and the
// sentinels keep running) and returns the address it had.
func (s *SentinelServer) KillMaster(t testing.TB) string {
	t.Helper()
	addr := s.MasterAddr(t)
	s.mu.Lock()
	p := s.nodes[addr]
	delete(s.nodes, addr)
	s.mu.Unlock()
	if p == nil {
		t.Fatalf("testutil: the master %s is not a node this Sentinel started", addr)
	}
	p.kill()
	return addr
}

// WaitFailover waits until every sentinel names a master other than old, and that
// master accepts writes; it fails the test after timeout. It returns the new master.
func (s *SentinelServer) WaitFailover(t testing.TB, old string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var master string
	err := poll(ctx, func() error {
		for _, addr := range s.sentinels {
			sc := s.sentinelClient(addr)
			hp, err := sc.GetMasterAddrByName(ctx, s.MasterName).Result()
			_ = sc.Close()
			if err != nil {
				return err
			}
			if got := net.JoinHostPort(hp[0], hp[1]); got == old {
				return fmt.Errorf("sentinel %s still names %s", addr, old)
			} else {
				master = got
			}
		}
		c := redis.NewClient(s.nodeOptions(master))
		defer c.Close()
		return c.Set(ctx, s.Prefix+":testutil-failover", "1", time.Minute).Err()
	})
	if err != nil {
		t.Fatalf("testutil: no failover from %s within %s: %v%s", old, timeout, err, s.diagnostics())
	}
	return master
}

// Options returns fresh failover options for the master, ready for
// redis.NewFailoverClient.
func (s *SentinelServer) Options() *redis.FailoverOptions {
	// go-redis dials the master by the address the sentinels give (127.0.0.1), which the
	// certificate names.
	var conf *tls.Config
	if s.tls != nil {
		conf = s.TLSConfig()
		conf.ServerName = "127.0.0.1"
	}
	return &redis.FailoverOptions{MasterName: s.MasterName, SentinelAddrs: s.SentinelAddrs(),
		Password: s.Password, SentinelPassword: s.SentinelPassword, TLSConfig: conf}
}

// Client returns a new failover client for the master, closed in t.Cleanup.
func (s *SentinelServer) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(s.Options())
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Name returns s.Prefix + "-" + suffix, a user or account name unique to this test.
func (s *SentinelServer) Name(suffix string) string { return s.Prefix + "-" + suffix }

// diagnostics returns the last log lines of the data nodes still running.
func (s *SentinelServer) diagnostics() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for addr, p := range s.nodes {
		fmt.Fprintf(&b, "\n=== node %s ===%s", addr, p.diagnostics())
	}
	return b.String()
}

// portOf returns the port of host:port.
func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// waitInfo polls INFO section on the data node at addr until it contains want.
func (s *SentinelServer) waitInfo(ctx context.Context, addr, section, want string) error {
	c := redis.NewClient(s.nodeOptions(addr))
	defer c.Close()
	return poll(ctx, func() error {
		info, err := c.Info(ctx, section).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, want) {
			return fmt.Errorf("INFO %s has no %q", section, want)
		}
		return nil
	})
}
