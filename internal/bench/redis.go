package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisSet is the redis-server processes behind one Redis: one node or a 3-master cluster.
type redisSet struct {
	addrs []string
	procs []*exec.Cmd
}

// errNoRedis means redis-server or redis-cli is not installed.
var errNoRedis = errors.New("redis-server/redis-cli not found in PATH")

// freePortPair returns a loopback port p such that p and p+10000 (a cluster bus port)
// are both free now.
func freePortPair() (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if p+10000 > 65535 {
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		if err != nil {
			continue
		}
		_ = l2.Close()
		return p, nil
	}
	return 0, errors.New("no free port pair")
}

// startRedis starts one redis-server (cluster=false) or a 3-master cluster in dir.
func startRedis(dir string, cluster bool) (*redisSet, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errNoRedis
	}
	n := 1
	if cluster {
		n = 3
	}
	rs := &redisSet{}
	for i := range n {
		port, err := freePortPair()
		if err != nil {
			rs.stop()
			return nil, err
		}
		d := filepath.Join(dir, fmt.Sprintf("redis-%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			rs.stop()
			return nil, err
		}
		args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", d,
			"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
			"--logfile", filepath.Join(d, "redis.log")}
		if cluster {
			args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", "2000")
		}
		cmd := exec.Command(bin, args...)
		if err := cmd.Start(); err != nil {
			rs.stop()
			return nil, err
		}
		rs.procs = append(rs.procs, cmd)
		rs.addrs = append(rs.addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, a := range rs.addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		err := poll(ctx, func() error { return c.Ping(ctx).Err() })
		_ = c.Close()
		if err != nil {
			rs.stop()
			return nil, fmt.Errorf("redis %s: %w", a, err)
		}
	}
	if !cluster {
		return rs, nil
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		rs.stop()
		return nil, errNoRedis
	}
	args := append([]string{"--cluster", "create"}, rs.addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		rs.stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range rs.addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		err := poll(ctx, func() error {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") {
				return errors.New("cluster_state not ok")
			}
			return nil
		})
		_ = c.Close()
		if err != nil {
			rs.stop()
			return nil, fmt.Errorf("cluster node %s: %w", a, err)
		}
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rs.addrs})
	defer cc.Close()
	err = poll(ctx, func() error {
		for i := range 16 {
			if err := cc.Set(ctx, fmt.Sprintf("bench-ready-%d", i), "1", time.Minute).Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		rs.stop()
		return nil, fmt.Errorf("cluster not writable: %w", err)
	}
	return rs, nil
}

// client returns a new client for the set: a ClusterClient for a cluster.
func (rs *redisSet) client() redis.UniversalClient {
	if len(rs.addrs) > 1 {
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: rs.addrs})
	}
	return redis.NewClient(&redis.Options{Addr: rs.addrs[0]})
}

// stop kills every process and waits for it.
func (rs *redisSet) stop() {
	for _, p := range rs.procs {
		_ = p.Process.Kill()
		_ = p.Wait()
	}
	rs.procs = nil
}

func poll(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
