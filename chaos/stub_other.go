//go:build !linux

// Command chaos is gobuildcache's chaos suite; it needs Linux (it finds
// and kills gobuildcache processes through /proc). See TESTING.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "chaos: the chaos suite runs on Linux only")
	fmt.Println("chaos: FAIL (not Linux)")
	os.Exit(1)
}
