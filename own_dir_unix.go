//go:build unix

package main

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// checkOwnDir returns an error unless dir is a directory (not a symbolic
// link) that belongs to this process's user and that other users cannot
// write. The default cache directory lives in the shared temp dir, where
// any local user could have made it first and could then plant entries in
// it (a record and a body whose SHA-256 matches: a compiled package of their
// making in this user's next build), or point it elsewhere with a link.
func checkOwnDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s is a symbolic link", dir)
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case fi.Mode().Perm()&0o002 != 0:
		return fmt.Errorf("%s is writable by every user", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to another user (uid %d), who could plant entries in it", dir, st.Uid)
	}
	return nil
}
