//go:build linux || darwin || freebsd

// Package procstat reads this process's resource use, for benchmarks that report CPU
// time beside wall-clock time.
package procstat

import (
	"syscall"
	"time"
)

// CPU returns the CPU time this process has used (user and system, all threads).
func CPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
