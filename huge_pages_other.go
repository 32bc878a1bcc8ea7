//go:build !linux

package main

// adviseHugePages does nothing here: see huge_pages_linux.go.
func adviseHugePages() {}
