package browser

import "syscall"

// sysProcAttr starts Chromium in a process group of its own (so Close can end its
// helpers too), killed by the kernel if the test binary dies without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
