// Command bench is brokertoken's performance harness (issue 7): it starts its own
// redis-server (and a 3-master Redis Cluster), builds the helper process
// internal/bench/worker, runs every measurement against a baseline taken in the same
// run, and prints one table.
//
//	go run ./internal/bench            # full run (about a minute)
//	go run ./internal/bench -quick     # small smoke run
//
// Needs redis-server and redis-cli in PATH and the go tool (to build the worker).
package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	quick := flag.Bool("quick", false, "tiny run (smoke test)")
	cluster := flag.Bool("cluster", true, "also run items 3-5 on a 3-master Redis Cluster (item 8)")
	procs := flag.Int("procs", 0, "herd: worker processes (default 20, quick 2)")
	gor := flag.Int("goroutines", 0, "herd: goroutines per process (default 50, quick 5)")
	changes := flag.Int("changes", 0, "invalidation: token changes (default 2000, quick 20)")
	flag.Parse()
	cfg := defaultConfig(*quick)
	cfg.cluster = *cluster
	if *procs > 0 {
		cfg.procs = *procs
	}
	if *gor > 0 {
		cfg.goroutines = *gor
	}
	if *changes > 0 {
		cfg.changes = *changes
	}
	cfg.log = os.Stderr
	start := time.Now()
	res, err := runAll(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	printTable(os.Stdout, res.rows)
	fmt.Println()
	for _, h := range res.herds {
		fmt.Printf("- herd %s: %s\n", h.name, h.breakdown)
	}
	fmt.Fprintf(os.Stderr, "bench: done in %v\n", time.Since(start).Round(time.Second))
}
