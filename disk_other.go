//go:build !linux

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// readSmallFile reads a file of fewer than len(buf) bytes into buf.
// On Windows it retries an open refused while the file is being replaced.
func readSmallFile(path string, buf []byte) (int, error) {
	var f *os.File
	err := retrySharing(func() (err error) {
		f, err = os.Open(path)
		return err
	})
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := io.ReadFull(f, buf)
	switch {
	case err == io.ErrUnexpectedEOF || err == io.EOF:
		return n, nil
	case err != nil:
		return 0, err
	default:
		return 0, fmt.Errorf("%s: %w", path, errTooLarge)
	}
}

// statBody returns the size and modification time of the regular file at
// path, or ok false if there is none, or none this user can read.
func statBody(path string) (size int64, mtime time.Time, ok bool) {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || !fileReadable(fi) {
		return 0, time.Time{}, false
	}
	return fi.Size(), fi.ModTime(), true
}

// freeBytes is unknown here: the write itself will fail if the disk is full.
func freeBytes(dir string) (int64, error) { return 1 << 62, nil }

// createTempFile is createSharedTemp.
func createTempFile(dir, pattern string) (tempFile, error) {
	f, err := createSharedTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// touchNow would set path's times to "now" with write access alone, where
// explicit times need the file's owner; without golang.org/x/sys there is
// no portable call for it, so outside Linux another user's body is not
// refreshed by this user's use (see touchIfStale).
func touchNow(path string) error { return errors.ErrUnsupported }
