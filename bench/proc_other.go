//go:build !linux

package main

import "os/exec"

// setDeathSignal is a no-op where the kernel cannot kill a child with its
// parent; the benchmark still kills its helpers on every normal exit and on
// SIGINT/SIGTERM.
func setDeathSignal(cmd *exec.Cmd) {}

// freeBytes returns -1: unknown here.
func freeBytes(dir string) int64 { return -1 }

// syncDisks does nothing here.
func syncDisks() {}
