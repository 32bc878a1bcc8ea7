package main

import "syscall"

// freeBytes returns the space free to unprivileged users on the file system
// of dir, or -1 if unknown.
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// syncDisks asks the kernel to write out dirty data and metadata.
func syncDisks() { syscall.Sync() }
