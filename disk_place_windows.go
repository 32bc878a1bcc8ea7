package main

import (
	"os"
	"syscall"
)

// renameNoReplace renames from to to unless to exists (then the error is
// fs.ErrExist), in one step: MoveFile without MOVEFILE_REPLACE_EXISTING.
// Unlike a hard link and the removal of from, it never opens the body for
// deletion while someone may hold it open without sharing that (as the go
// command's os.Open does), which would fail their open or the removal.
func renameNoReplace(from, to string) error {
	f, err := syscall.UTF16PtrFromString(from)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	t, err := syscall.UTF16PtrFromString(to)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	if err := syscall.MoveFile(f, t); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
