//go:build !linux

package main

import (
	"os"
	"time"
)

// freeBytes returns -1: unknown here.
func freeBytes(dir string) int64 { return -1 }

// onTmpfs is not known here.
func onTmpfs(dir string) (tmpfs, known bool) { return false, false }

// syncDisks does nothing here.
func syncDisks() {}

// cpuTime returns 0: unknown here.
func cpuTime(pids []int) time.Duration { return 0 }

// peakRSS returns "unknown": not measured here.
func peakRSS(ps *os.ProcessState) string { return "unknown" }

// ioBytes returns -1: unknown here.
func ioBytes(pid int) int64 { return -1 }

// accessTime is not known here.
func accessTime(info os.FileInfo) (time.Time, bool) { return time.Time{}, false }

// removeLater removes dir, here before returning.
func removeLater(dir string) { os.RemoveAll(dir) }
