//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package main

import (
	"errors"
	"io/fs"
	"os"
	"time"
)

// lockFile takes a lock on f where there is no flock: a lock file beside
// it, created exclusively; unlock removes it. After 5 s of waiting (a lock
// file left by a killed process) it goes ahead without the lock: a summary
// row is never worth a stuck build.
func lockFile(f *os.File) (unlock func(), err error) {
	lock := f.Name() + ".lock"
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := os.OpenFile(lock, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			l.Close()
			return func() { os.Remove(lock) }, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		if time.Now().After(deadline) {
			return func() {}, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
}
