//go:build linux

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// setDeathSignal makes the kernel kill cmd if this program dies, so that
// no server outlives the suite.
func setDeathSignal(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}

// setOwnGroup puts cmd in a process group of its own, so that it and
// everything it starts (compilers, test binaries, gobuildcache) can be
// killed together, and makes its cancellation kill that group.
func setOwnGroup(cmd *exec.Cmd) {
	setDeathSignal(cmd)
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// cacheProcs returns the pids of running gobuildcache processes: those
// whose executable is exe and whose arguments include every one of args.
func cacheProcs(exe string, args ...string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := "/proc/" + e.Name()
		if link, err := os.Readlink(dir + "/exe"); err != nil || link != exe {
			continue
		}
		raw, err := os.ReadFile(dir + "/cmdline")
		if err != nil {
			continue
		}
		have := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		ok := true
		for _, a := range args {
			found := false
			for _, h := range have {
				if h == a {
					found = true
					break
				}
			}
			if !found {
				ok = false
				break
			}
		}
		if ok {
			pids = append(pids, pid)
		}
	}
	return pids
}

// writingTemp reports whether process pid has a temp file of the cache
// open: a file under v1Dir named with tempPrefix (a body or record being
// written, a download being verified) or one in v1Dir/tmp (an upload's
// spool file). That is, whether it is in the middle of a put.
func writingTemp(pid int, v1Dir string) bool {
	fdDir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	prefix := v1Dir + string(filepath.Separator)
	spool := filepath.Join(v1Dir, "tmp") + string(filepath.Separator)
	for _, e := range ents {
		link, err := os.Readlink(fdDir + "/" + e.Name())
		if err != nil || !strings.HasPrefix(link, prefix) {
			continue
		}
		if strings.HasPrefix(link, spool) || strings.HasPrefix(filepath.Base(link), tempPrefix) {
			return true
		}
	}
	return false
}
