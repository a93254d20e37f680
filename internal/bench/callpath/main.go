// Command callpath measures how much of tokencache one cold Cache.Token call passes
// through: the functions and files of the package that run for it, including the
// background work it causes (the lease's release, the announcement's echo). Build it
// with coverage of the package and run it; it needs redis-server on PATH:
//
//	go build -cover -covermode=atomic -coverpkg=./tokencache -o /tmp/callpath ./internal/bench/callpath
//	/tmp/callpath            # prints the functions, then the counts
//
// It starts its own redis-server on a free port, makes a writing cache with an
// in-process broker, clears the coverage counters, asks for one cold token, waits for
// the background work to end, and writes the counters of just that.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime/coverage"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/brokertoken/brokertoken/tokencache"
)

type broker struct{}

func (broker) Login(context.Context, string) (*tokencache.Token, error) {
	return &tokencache.Token{AccessToken: "cold-token", Expiry: time.Now().Add(time.Hour)}, nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "callpath:", err)
		os.Exit(1)
	}
}

func run() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	dir, err := os.MkdirTemp("", "callpath")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port)})
	defer rdb.Close()
	ctx := context.Background()
	for deadline := time.Now().Add(10 * time.Second); rdb.Ping(ctx).Err() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on port %d did not answer", port)
		}
	}
	c, err := tokencache.New(tokencache.Options{Redis: rdb, Authenticator: broker{}})
	if err != nil {
		return err
	}
	defer c.Close()
	time.Sleep(200 * time.Millisecond) // subscribed; New's own work done

	counters := dir + "/cover"
	if err := os.Mkdir(counters, 0o700); err != nil {
		return err
	}
	if err := coverage.WriteMetaDir(counters); err != nil {
		return err
	}
	if err := coverage.ClearCounters(); err != nil {
		return err
	}
	if _, err := c.Token(ctx, "U"); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // the lease's release, the echo of the announcement
	if err := coverage.WriteCountersDir(counters); err != nil {
		return err
	}
	out, err := exec.Command("go", "tool", "covdata", "func", "-i="+counters).Output()
	if err != nil {
		return fmt.Errorf("go tool covdata: %w", err)
	}
	var funcs []string
	files := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] == "total" || f[2] == "0.0%" || !strings.Contains(f[0], "/tokencache/") {
			continue
		}
		file := f[0][strings.LastIndex(f[0], "/")+1 : strings.Index(f[0], ":")]
		files[file] = true
		funcs = append(funcs, file+" "+f[1])
	}
	sort.Strings(funcs)
	for _, f := range funcs {
		fmt.Println(f)
	}
	fmt.Printf("one cold Token: %d functions in %d files of tokencache\n", len(funcs), len(files))
	return nil
}
