//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package main

import (
	"errors"
	"os"
	"syscall"
)

// errLocked is returned by tryLockFile when another holds a conflicting
// lock.
var errLocked = errors.New("locked by another process")

// tryLockFile takes a flock on f, shared or exclusive, without waiting;
// unlock releases it (closing f would too).
func tryLockFile(f *os.File, shared bool) (unlock func(), err error) {
	fd := int(f.Fd())
	how := syscall.LOCK_EX
	if shared {
		how = syscall.LOCK_SH
	}
	for {
		err = syscall.Flock(fd, how|syscall.LOCK_NB)
		if err != syscall.EINTR {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return nil, errLocked
	}
	if err != nil {
		return nil, err
	}
	return func() { syscall.Flock(fd, syscall.LOCK_UN) }, nil
}
