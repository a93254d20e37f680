package testutil

import (
	"context"
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
	var auth []string
	if opts.Password != "" {
		auth = []string{"--requirepass", opts.Password, "--masterauth", opts.Password}
	}

	master := s.startNode(t, auth...)
	replica := s.startNode(t, append([]string{"--replicaof", "127.0.0.1", portOf(master)}, auth...)...)
	ctx, cancel := context.WithTimeout(context.Background(), sentinelReadyTimeout)
	defer cancel()
	if err := waitInfo(ctx, replica, opts.Password, "replication", "master_link_status:up"); err != nil {
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
				return []string{conf, "--port", strconv.Itoa(port)}
			},
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
				return args
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
	p, port, err := launch(t, launchSpec{bin: s.bin, dir: t.TempDir(), args: func(int) []string { return extra }})
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

// sentinelClient returns a client of the sentinel at addr; the caller closes it.
func (s *SentinelServer) sentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: addr, Password: s.SentinelPassword})
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
		c := redis.NewClient(&redis.Options{Addr: master, Password: s.Password})
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
	return &redis.FailoverOptions{MasterName: s.MasterName, SentinelAddrs: s.SentinelAddrs(),
		Password: s.Password, SentinelPassword: s.SentinelPassword}
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

// waitInfo polls INFO section on addr (with password) until it contains want.
func waitInfo(ctx context.Context, addr, password, section, want string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password})
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
