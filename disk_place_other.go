//go:build !windows

package main

import "os"

// renameNoReplace renames from to to unless to exists (then the error is
// fs.ErrExist), in one step: a hard link, then the removal of from. (Linux
// has renameat2 with RENAME_NOREPLACE, but not every file system supports
// it, nor does package syscall.)
func renameNoReplace(from, to string) error {
	if err := os.Link(from, to); err != nil {
		return err
	}
	os.Remove(from) // a leftover temp file is removed once stale
	return nil
}
