package toxiproxy

import (
	"os/exec"
	"syscall"
)

// setDeathSignal makes the kernel kill cmd when this program dies, so that
// a server never outlives the program that started it.
func setDeathSignal(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
