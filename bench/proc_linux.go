package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// freeBytes returns the space free to unprivileged users on the file system
// of dir, or -1 if unknown.
func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// onTmpfs reports whether dir is on tmpfs; known is false if it cannot tell.
func onTmpfs(dir string) (tmpfs, known bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false, false
	}
	const tmpfsMagic = 0x01021994 // TMPFS_MAGIC, linux/magic.h
	return st.Type == tmpfsMagic, true
}

// peakRSS returns the peak resident set size of the exited process ps, in
// MiB.
func peakRSS(ps *os.ProcessState) string {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return "unknown"
	}
	return fmt.Sprintf("%.1f MiB", float64(ru.Maxrss)/1024) // Maxrss is in KiB on Linux
}

// syncDisks asks the kernel to write out dirty data and metadata.
func syncDisks() { syscall.Sync() }

// cpuTime returns the user and system CPU time the processes pids have used
// (0 for one that is gone), from /proc/<pid>/stat in clock ticks of 10 ms.
func cpuTime(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// The command name, in parentheses, may hold spaces: fields count
		// from the last ')'. utime and stime are fields 14 and 15.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b)[i+1:])
		if i < 0 || len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// ioBytes returns the bytes process pid has written with system calls so
// far (wchar in /proc/<pid>/io), or -1 if unknown. For the proxy in front of
// MinIO, bytes moved in either direction are written once.
func ioBytes(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// accessTime returns the last access time of the file info describes.
func accessTime(info os.FileInfo) (time.Time, bool) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(st.Atim.Sec, st.Atim.Nsec), true
}

// removeLater removes dir in a process of its own, at the lowest priority,
// which outlives the benchmark: a full CI replay leaves about 28 GiB in
// half a million files, which take a minute or more to delete, and its
// report is written by then. If that process cannot start, dir is removed
// here, before returning.
func removeLater(dir string) {
	cmd := exec.Command("nice", "-n", "19", "rm", "-rf", "--", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // not stopped with the benchmark's process group
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return
	}
	logf("removing the work directory %s in the background (pid %d)", dir, cmd.Process.Pid)
	cmd.Process.Release()
}
