package testutil

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// clusterMasters is the number of master nodes Cluster starts.
	clusterMasters = 3
	// clusterCreateTimeout bounds `redis-cli --cluster create`.
	clusterCreateTimeout = 30 * time.Second
	// clusterReadyTimeout bounds the wait for cluster_state:ok on every
	// node and a successful write through a ClusterClient.
	clusterReadyTimeout = 15 * time.Second
	// clusterBusOffset is the default distance between a node's client
	// port and its cluster bus port.
	clusterBusOffset = 10000
)

// ClusterServer is a real 3-master Redis Cluster on loopback, as returned
// by Cluster.
type ClusterServer struct {
	// Prefix is unique per test; tests use it as key namespace and in
	// user names.
	Prefix string

	addrs []string
}

// Cluster starts a real 3-master Redis Cluster on loopback: three
// redis-server processes with cluster mode enabled, each in its own temp
// dir, joined with `redis-cli --cluster create ... --cluster-replicas 0
// --cluster-yes`. It returns once CLUSTER INFO reports cluster_state:ok on
// every node and a ClusterClient can write (bounded; the test fails
// otherwise). The nodes are stopped in t.Cleanup. Cluster skips the test
// (or fails it under EnvRequireReal=1) when redis-server or redis-cli is
// missing.
func Cluster(t testing.TB) *ClusterServer {
	t.Helper()
	bin := lookBinary(t, "redis-server")
	cli := lookBinary(t, "redis-cli")

	// Create every directory first: cleanups run last-in first-out, so the
	// processes are killed before their directories are removed.
	dirs := make([]string, clusterMasters)
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	c := &ClusterServer{Prefix: newPrefix(t)}
	procs := make([]*process, 0, clusterMasters)
	for _, dir := range dirs {
		p, port, err := launch(t, launchSpec{
			bin:      bin,
			dir:      dir,
			pickPort: freeClusterPort,
			args: func(int) []string {
				return []string{
					"--cluster-enabled", "yes",
					"--cluster-config-file", "nodes.conf",
					"--cluster-node-timeout", "2000",
				}
			},
		})
		if err != nil {
			t.Fatalf("testutil: cluster node: %v", err)
		}
		t.Cleanup(p.kill)
		procs = append(procs, p)
		c.addrs = append(c.addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}
	diagnostics := func() string {
		var b strings.Builder
		for i, p := range procs {
			fmt.Fprintf(&b, "\n=== node %s ===%s", c.addrs[i], p.diagnostics())
		}
		return b.String()
	}

	ctx, cancel := context.WithTimeout(context.Background(), clusterCreateTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testutil: redis-cli %s: %v\n%s%s", strings.Join(args, " "), err, out, diagnostics())
	}

	if err := c.waitReady(); err != nil {
		t.Fatalf("testutil: cluster %v did not become ready within %v: %v%s",
			c.addrs, clusterReadyTimeout, err, diagnostics())
	}
	return c
}

// waitReady polls until every node reports cluster_state:ok and a
// ClusterClient can write a key, or clusterReadyTimeout passes.
func (c *ClusterServer) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	for _, addr := range c.addrs {
		node := redis.NewClient(&redis.Options{Addr: addr})
		err := poll(ctx, func() error {
			info, err := node.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return fmt.Errorf("node %s: CLUSTER INFO:\n%s", addr, info)
			}
			return nil
		})
		_ = node.Close()
		if err != nil {
			return err
		}
	}
	client := redis.NewClusterClient(c.Options())
	defer client.Close()
	key := c.Prefix + ":testutil-ready"
	return poll(ctx, func() error {
		if err := client.Set(ctx, key, "1", time.Minute).Err(); err != nil {
			return fmt.Errorf("SET through ClusterClient: %w", err)
		}
		return client.Del(ctx, key).Err()
	})
}

// poll calls f every 50ms until it succeeds or ctx is done, and then
// returns f's last error.
func poll(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freeClusterPort returns a free loopback port P such that the default
// cluster bus port P+10000 is free as well.
func freeClusterPort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testutil: find a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		if port+clusterBusOffset > 65535 {
			_ = l.Close()
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+clusterBusOffset)))
		_ = l.Close()
		if err != nil {
			continue
		}
		_ = bus.Close()
		return port
	}
	t.Fatal("testutil: found no free port P with P+10000 free for the cluster bus")
	return 0
}

// Addrs returns the host:port of every master node.
func (c *ClusterServer) Addrs() []string {
	return append([]string(nil), c.addrs...)
}

// Options returns fresh ClusterOptions listing every node, ready for
// redis.NewClusterClient.
func (c *ClusterServer) Options() *redis.ClusterOptions {
	return &redis.ClusterOptions{Addrs: c.Addrs()}
}

// Client returns a new ClusterClient with its own connection pools, closed
// in t.Cleanup.
func (c *ClusterServer) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	client := redis.NewClusterClient(c.Options())
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// Name returns c.Prefix + "-" + suffix, a user or account name unique to
// this test.
func (c *ClusterServer) Name(suffix string) string {
	return c.Prefix + "-" + suffix
}
