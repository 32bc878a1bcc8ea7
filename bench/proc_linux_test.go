package main

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCPUTime: the CPU time of this process, read from /proc, grows while
// it computes; a process that is gone counts nothing.
func TestCPUTime(t *testing.T) {
	self := []int{os.Getpid()}
	start := cpuTime(self)
	h := sha256.New()
	buf := make([]byte, 1<<20)
	deadline := time.Now().Add(10 * time.Second)
	for cpuTime(self) <= start {
		if time.Now().After(deadline) {
			t.Fatalf("cpuTime stayed at %v while this test hashed for 10 s", start)
		}
		h.Write(buf)
	}
	if got := cpuTime([]int{-1}); got != 0 {
		t.Errorf("cpuTime of no process: %v, want 0", got)
	}
}

// TestRemoveLater: a work directory handed to removeLater, files and
// subdirectories, is gone soon after, removed by a process of its own.
func TestRemoveLater(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "work")
	for _, sub := range []string{"a", "b/c"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, sub, "f"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	removeLater(dir)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Lstat(dir); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there 30 s after removeLater", dir)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
