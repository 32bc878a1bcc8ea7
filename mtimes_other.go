//go:build !linux

package main

import (
	"os"
	"time"
)

// lchtimes sets both times of path to t, but not through a symbolic link:
// outside Linux (without golang.org/x/sys) a link's own times are left
// alone and errSymlinkTimes says so.
func lchtimes(path string, t time.Time) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return errSymlinkTimes
	}
	return os.Chtimes(path, t, t)
}
