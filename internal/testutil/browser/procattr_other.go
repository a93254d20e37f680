//go:build !linux

package browser

import "syscall"

// sysProcAttr starts Chromium in a process group of its own, so Close can end its
// helpers too.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
