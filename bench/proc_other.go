//go:build !linux

package main

import "os/exec"

// setDeathSignal is a no-op where the kernel cannot kill a child with its
// parent; the benchmark still kills its helpers on every normal exit and on
// SIGINT/SIGTERM.
func setDeathSignal(cmd *exec.Cmd) {}
