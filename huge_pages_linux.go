//go:build linux

package main

import (
	"runtime"
	"syscall"
	"unsafe"
)

// hugePageHeapBytes is how much of the heap's address space adviseHugePages
// marks for transparent huge pages: more than a server's heap at its peak
// (a fresh VM's first server, landing a job's manifests and packs, reaches
// about 75 MB). Address space only: nothing is touched.
const hugePageHeapBytes = 128 << 20

// adviseHugePages asks the kernel to back the heap the server is about to
// grow into with transparent huge pages, where the system leaves that to the
// program (/sys/kernel/mm/transparent_hugepage/enabled is "madvise", as on
// Ubuntu's kernels and the benchmark's VMs; where it is "always" the heap
// has them already). The Go runtime maps its heap without the advice, so
// each 4 KiB page of it costs a page fault on first use, and a fault costs
// 10-17 us on a virtual machine (one 2 MiB fault replaces 512 of them). In
// a pull request's job of the CI replay, the first server took about 12,000
// faults and each later one about 5,700; advised, 2,000-2,200 and
// 1,700-2,100. See bench-results/HISTORY.md, "Huge pages for the heap".
//
// How: a ballast allocation makes the runtime map the address range without
// touching it; the advice marks that range; the ballast is freed, and the
// heap's later growth reuses the range. Where the advice is refused (THP off
// or "never", an old kernel), or not given (a limit on address space),
// nothing changes: it is an optimization only.
func adviseHugePages() {
	// Under a limit on address space (ulimit -v), the ballast could be what
	// exhausts it, where the go command itself runs fine: no advice there.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &lim); err != nil || lim.Cur != ^uint64(0) {
		return
	}
	ballast := make([]byte, hugePageHeapBytes)
	const huge = 2 << 20
	base := uintptr(unsafe.Pointer(unsafe.SliceData(ballast)))
	start := (base + huge - 1) &^ (huge - 1)
	end := (base + hugePageHeapBytes) &^ (huge - 1)
	// The error is deliberately ignored: without the advice the heap is
	// only as it would have been.
	syscall.Syscall(syscall.SYS_MADVISE, start, end-start, syscall.MADV_HUGEPAGE)
	runtime.KeepAlive(ballast)
	runtime.GC() // frees the ballast
}
