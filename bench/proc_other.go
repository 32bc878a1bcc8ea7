//go:build !linux

package main

// freeBytes returns -1: unknown here.
func freeBytes(dir string) int64 { return -1 }

// syncDisks does nothing here.
func syncDisks() {}
