//go:build !linux

package main

import (
	"fmt"
	"io"
	"os"
)

// readSmallFile reads a file of fewer than len(buf) bytes into buf.
func readSmallFile(path string, buf []byte) (int, error) {
	f, err := os.Open(path)
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

// statSize returns the size of the regular file at path, or ok false if
// there is none.
func statSize(path string) (size int64, ok bool) {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return 0, false
	}
	return fi.Size(), true
}
