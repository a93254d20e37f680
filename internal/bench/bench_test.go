package main

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
)

// TestQuick runs the whole harness in its tiny mode: real worker processes, a real
// redis-server and a real 3-master cluster, and checks the counts (never timings: the
// machines are shared).
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server processes and builds the worker")
	}
	cfg := defaultConfig(true)
	res, err := runAll(cfg)
	if errors.Is(err, errNoRedis) {
		if os.Getenv("BROKERTOKEN_REQUIRE_REAL_REDIS") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	printTable(&buf, res.rows)
	t.Log("\n" + buf.String())
	for _, item := range []string{"1", "2", "3", "3b", "4", "5", "6", "7", "8/3", "8/3b", "8/4", "8/5"} {
		found := false
		for _, r := range res.rows {
			found = found || r.item == item
		}
		if !found {
			t.Errorf("no row for item %s", item)
		}
	}
	for _, item := range []string{"5 ref", "8/5 ref"} { // the start and the fan-out floors
		n := 0
		for _, r := range res.rows {
			if r.item == item {
				n++
			}
		}
		if n != 2 {
			t.Errorf("%d rows for %s, want 2", n, item)
		}
	}
	if len(res.herds) != 4 {
		t.Fatalf("%d herd rounds, want 4", len(res.herds))
	}
	for i, h := range res.herds {
		if h.logins != 1 || h.errors != 0 || h.callers != cfg.procs*cfg.goroutines {
			t.Errorf("herd round %d: %d logins, %d errors, %d callers; want 1, 0, %d",
				i, h.logins, h.errors, h.callers, cfg.procs*cfg.goroutines)
		}
	}
	if !strings.Contains(buf.String(), "| 8/5 |") {
		t.Error("table lacks the cluster rows")
	}
}
