//go:build linux

package main

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// thpOff reports whether this system never gives a program transparent
// huge pages, whatever it advises.
func thpOff() bool {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	return err != nil || strings.Contains(string(mode), "[never]")
}

// TestAdviseHugePages checks that the advice lands: after it, the process
// has a mapping of about hugePageHeapBytes that may take huge pages.
func TestAdviseHugePages(t *testing.T) {
	if thpOff() {
		t.Skip("transparent huge pages are off on this system")
	}
	adviseHugePages()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	var size, largest uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) > 0 && strings.Contains(fields[0], "-"):
			lo, hi, _ := strings.Cut(fields[0], "-")
			l, _ := strconv.ParseUint(lo, 16, 64)
			h, _ := strconv.ParseUint(hi, 16, 64)
			size = h - l
		case len(fields) == 2 && fields[0] == "THPeligible:" && fields[1] == "1":
			largest = max(largest, size)
		}
	}
	if want := uint64(hugePageHeapBytes - 4<<20); largest < want {
		t.Fatalf("largest mapping eligible for huge pages: %d bytes, want at least %d", largest, want)
	}
}

// TestNoBallastUnderAddressSpaceLimit: adviseHugePages allocates its
// ballast only where the address space is unlimited. Under any limit
// (ulimit -v), even one no process can reach, it allocates nothing: the
// ballast could be what exhausts a limit the go command itself runs under.
func TestNoBallastUnderAddressSpaceLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &orig); err != nil {
		t.Fatal(err)
	}
	if orig.Cur != ^uint64(0) {
		t.Skipf("this test runs under a limit on address space (%d bytes)", orig.Cur)
	}
	allocated := func() uint64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		before := m.TotalAlloc
		adviseHugePages()
		runtime.ReadMemStats(&m)
		return m.TotalAlloc - before
	}
	if got := allocated(); got < hugePageHeapBytes {
		t.Fatalf("without a limit: adviseHugePages allocated %d bytes, want the %d-byte ballast", got, hugePageHeapBytes)
	}
	limited := orig
	limited.Cur = 1 << 62 // finite, and beyond any process's address space
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, &limited); err != nil {
		t.Fatal(err)
	}
	got := allocated()
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, &orig); err != nil {
		t.Fatal(err)
	}
	if got >= hugePageHeapBytes {
		t.Fatalf("under a limit on address space: adviseHugePages allocated %d bytes, want no ballast", got)
	}
}

// BenchmarkFreshHeap measures what the advice is for: a fresh process
// growing its heap to 64 MiB (as a fresh VM's first server does), with and
// without it. Each op is a child process; faults/op are the child's.
func BenchmarkFreshHeap(b *testing.B) {
	if mode := os.Getenv("GOBUILDCACHE_TEST_FRESH_HEAP"); mode != "" {
		b.Skip("child")
	}
	if thpOff() {
		b.Skip("transparent huge pages are off on this system")
	}
	for _, mode := range []string{"plain", "advised"} {
		b.Run(mode, func(b *testing.B) {
			var faults int64
			for b.Loop() {
				cmd := exec.Command(os.Args[0], "-test.run=^TestFreshHeapChild$", "-test.count=1")
				cmd.Env = append(os.Environ(), "GOBUILDCACHE_TEST_FRESH_HEAP="+mode)
				if out, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("child: %v\n%s", err, out)
				}
				faults += int64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Minflt)
			}
			b.ReportMetric(float64(faults)/float64(b.N), "faults/op")
		})
	}
}

// TestFreshHeapChild is BenchmarkFreshHeap's child; alone, it does nothing.
func TestFreshHeapChild(t *testing.T) {
	mode := os.Getenv("GOBUILDCACHE_TEST_FRESH_HEAP")
	if mode == "" {
		return
	}
	if mode == "advised" {
		adviseHugePages()
	}
	var keep [][]byte
	for range 64 {
		keep = append(keep, make([]byte, 1<<20))
	}
	for _, b := range keep {
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
	}
}
