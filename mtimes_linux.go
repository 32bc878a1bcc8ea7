//go:build linux

package main

import (
	"os"
	"syscall"
	"time"
	"unsafe"
)

// lchtimes sets both times of path to t without following a symbolic
// link: utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW), which
// syscall.UtimesNano (flags 0) and os.Chtimes do not offer.
func lchtimes(path string, t time.Time) error {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return &os.PathError{Op: "utimensat", Path: path, Err: err}
	}
	ts := [2]syscall.Timespec{syscall.NsecToTimespec(t.UnixNano()), syscall.NsecToTimespec(t.UnixNano())}
	const atSymlinkNofollow = 0x100 // the same on every Linux architecture
	cwd := -100                     // AT_FDCWD
	_, _, errno := syscall.Syscall6(syscall.SYS_UTIMENSAT, uintptr(cwd), uintptr(unsafe.Pointer(p)),
		uintptr(unsafe.Pointer(&ts[0])), atSymlinkNofollow, 0, 0)
	if errno != 0 {
		return &os.PathError{Op: "utimensat", Path: path, Err: errno}
	}
	return nil
}
