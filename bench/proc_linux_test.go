package main

import (
	"crypto/sha256"
	"os"
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
