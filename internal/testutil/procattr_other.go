//go:build !linux

package testutil

import "syscall"

// sysProcAttr returns nil: redis-server stays in the test's process group,
// so a Ctrl-C in the terminal stops it together with the test binary.
func sysProcAttr() *syscall.SysProcAttr {
	return nil
}
