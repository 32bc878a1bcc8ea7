//go:build unix

package main

import (
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"syscall"
)

// claimOwnDir makes dir, the default cache directory, this user's alone: it
// returns an error unless dir is a directory (not a symbolic link) that
// belongs to this process's user and that other users cannot write, and it
// takes group and other users' permissions off it. The default lives in the
// shared temp dir, where any local user could have made it first and could
// then plant entries in it (a record and a body whose SHA-256 matches: a
// compiled package of their making in this user's next build), or point it
// elsewhere with a link. The files in it are as readable as the umask makes
// them (see DiskBackend), so the directory itself keeps them to its user.
func claimOwnDir(dir string) error {
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
	if fi.Mode().Perm()&0o077 != 0 {
		return os.Chmod(dir, fi.Mode().Perm()&0o700)
	}
	return nil
}

// identity is who this process is to the file system.
type identity struct {
	uid, gid uint32
	groups   []uint32 // supplementary groups
}

var processIdentity = sync.OnceValue(func() identity {
	id := identity{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}
	groups, _ := os.Getgroups()
	for _, g := range groups {
		id.groups = append(id.groups, uint32(g))
	}
	return id
})

// canRead reports whether this process may read a file of the given owner,
// group and mode, by the permission bits. In a cache directory that several
// users share, a body another user wrote under a umask of 077 (or with an
// earlier gobuildcache, which wrote every file 0600) is one the go command
// could not open: it is no body, so a get misses and a put replaces it,
// rather than a hit the go command cannot use.
func canRead(uid, gid, mode uint32) bool { return processIdentity().canRead(uid, gid, mode) }

func (id identity) canRead(uid, gid, mode uint32) bool {
	switch {
	case id.uid == 0:
		return true
	case uid == id.uid:
		return mode&0o400 != 0
	case gid == id.gid || slices.Contains(id.groups, gid):
		return mode&0o040 != 0
	}
	return mode&0o004 != 0
}

// fileReadable is canRead for a file's FileInfo.
func fileReadable(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return !ok || canRead(st.Uid, st.Gid, uint32(st.Mode))
}

// sharesBody reports whether fi, a spool file, is a hard link to a body
// still in place: its mtime is the body's, however young the link, and
// removing it frees no space; once the body is trimmed it is removed.
func sharesBody(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink > 1
}
