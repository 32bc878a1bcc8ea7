//go:build linux

package main

import (
	"io"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// On Linux the hit path's reading of a small cached record (open, read,
// close) is made of raw system calls. A raw call skips the scheduler's
// bookkeeping around a syscall, which on an otherwise idle process means
// waking the runtime's monitor thread once per call: between requests this
// server is idle, so that was most of the cost of a hit.
// BenchmarkReadRecord measures it against os.ReadFile.
//
// The price: the scheduler does not know the thread is in the kernel, so
// while the call blocks, its P runs nothing else. On a local disk with the
// record in the page cache that is microseconds. On a slow file system (a
// network or FUSE mount, a disk under heavy writeback) an open or read that
// takes milliseconds stalls every goroutine queued on that P for as long,
// and with GOMAXPROCS=1 the whole server: there, the plain os.ReadFile of
// disk_other.go would be the better choice.

// readSmallFile reads a file of fewer than len(buf) bytes into buf with one
// open, one read and one close.
func readSmallFile(path string, buf []byte) (int, error) {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return 0, err
	}
	fd, _, errno := syscall.RawSyscall6(syscall.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(p)), syscall.O_RDONLY|syscall.O_CLOEXEC, 0, 0, 0)
	if errno != 0 {
		return 0, &os.PathError{Op: "open", Path: path, Err: errno}
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
	syscall.RawSyscall(syscall.SYS_CLOSE, fd, 0, 0)
	if errno != 0 {
		return 0, &os.PathError{Op: "read", Path: path, Err: errno}
	}
	if int(n) == len(buf) {
		return 0, &os.PathError{Op: "read", Path: path, Err: errTooLarge}
	}
	return int(n), nil
}

// statBody returns the size and modification time of the regular file at
// path, or ok false if there is none, or none this user can read (see
// canRead): the hit path learns from the one stat whether a body's "last
// used" mtime needs a refresh. (syscall.Stat, not a raw call: the stat
// system call's number differs between architectures.)
func statBody(path string) (size int64, mtime time.Time, ok bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG || !canRead(st.Uid, st.Gid, st.Mode) {
		return 0, time.Time{}, false
	}
	sec, nsec := st.Mtim.Unix()
	return st.Size, time.Unix(sec, nsec), true
}

var atFDCWD = uintptr(^uintptr(99)) // AT_FDCWD, -100

// createTempFile creates a new file in dir (see createNew), for writing
// only. A fresh machine's prefetch lands thousands of small entries, two
// temp files each: an *os.File costs each of them three more system calls
// (making the descriptor non-blocking, offering it to the network poller,
// which refuses a regular file, and making it blocking again) and a
// finalizer. A bare descriptor skips them; BenchmarkPutSmall measures it
// against os.CreateTemp. Its writes block their thread, as a regular
// file's do anyway.
func createTempFile(dir, pattern string) (tempFile, error) {
	return createNew(dir, pattern, func(name string) (tempFile, error) {
		fd, err := syscall.Open(name, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o666)
		if err != nil {
			return nil, &os.PathError{Op: "createtemp", Path: name, Err: err}
		}
		return &fdFile{fd: fd, name: name}, nil
	})
}

// fdFile is a file being written through its bare descriptor.
type fdFile struct {
	fd   int
	name string
}

func (f *fdFile) Name() string { return f.name }

func (f *fdFile) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := syscall.Write(f.fd, p[written:])
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return written, &os.PathError{Op: "write", Path: f.name, Err: err}
		case n == 0:
			return written, io.ErrShortWrite
		}
		written += n
	}
	return written, nil
}

func (f *fdFile) Close() error {
	if err := syscall.Close(f.fd); err != nil {
		return &os.PathError{Op: "close", Path: f.name, Err: err}
	}
	return nil
}

// freeBytes returns the bytes available to us on the file system holding
// dir.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// touchNow sets path's times to the kernel's "now": utimensat with no
// times, which any user who may write the file may do, where explicit
// times (os.Chtimes) need its owner. In a directory shared through a
// group, another user's body is refreshed this way.
func touchNow(path string) error { return utimensat(path, nil, 0) }

// utimensat is the system call for path (relative to the working
// directory): times nil sets both to now, as any writer may; explicit
// times need the owner. syscall.UtimesNano offers neither nil nor flags.
func utimensat(path string, times *[2]syscall.Timespec, flags uintptr) error {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return &os.PathError{Op: "utimensat", Path: path, Err: err}
	}
	if _, _, errno := syscall.Syscall6(syscall.SYS_UTIMENSAT, atFDCWD, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(times)), flags, 0, 0); errno != 0 {
		return &os.PathError{Op: "utimensat", Path: path, Err: errno}
	}
	return nil
}
