//go:build linux

package main

import (
	"syscall"
	"time"
)

// lchtimes sets both times of path to t without following a symbolic
// link: utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW), which
// syscall.UtimesNano (flags 0) and os.Chtimes do not offer.
func lchtimes(path string, t time.Time) error {
	ts := [2]syscall.Timespec{syscall.NsecToTimespec(t.UnixNano()), syscall.NsecToTimespec(t.UnixNano())}
	const atSymlinkNofollow = 0x100 // the same on every Linux architecture
	return utimensat(path, &ts, atSymlinkNofollow)
}
