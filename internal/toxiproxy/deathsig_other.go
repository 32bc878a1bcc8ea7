//go:build !linux

package toxiproxy

import "os/exec"

// setDeathSignal is a no-op where the kernel cannot kill a child with its
// parent; callers stop their server on every normal exit.
func setDeathSignal(cmd *exec.Cmd) {}
