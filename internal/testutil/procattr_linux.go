package testutil

import "syscall"

// sysProcAttr asks the kernel to kill redis-server when the test binary
// dies without running its cleanups (for example on a -timeout panic), so
// no server is left behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
