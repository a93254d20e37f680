package procstat

import (
	"runtime"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCPUGrows burns CPU and checks the reading moved forward (never by how much: the
// machine is shared).
func TestCPUGrows(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" && runtime.GOOS != "freebsd" {
		t.Skip("CPU time is not measured on " + runtime.GOOS)
	}
	before := CPU()
	if before <= 0 {
		t.Fatalf("CPU() = %v before any work, want > 0", before)
	}
	x := uint64(1)
	for range 10_000 { // 10^10 steps at most: far beyond any clock tick
		for range 1_000_000 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if CPU() > before {
			return
		}
	}
	t.Fatalf("CPU() still %v after 10^10 steps of work (x=%d)", before, x)
}
