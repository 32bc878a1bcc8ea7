//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package main

import (
	"errors"
	"os"
)

// errLocked is returned by tryLockFile when another holds a conflicting
// lock.
var errLocked = errors.New("locked by another process")

// tryLockFile fails where there is no flock: there are no prefetch claims
// there (see prefetchClaim).
func tryLockFile(f *os.File, shared bool) (unlock func(), err error) {
	return nil, errNoClaims
}
