//go:build !unix

package main

import "io/fs"

// claimOwnDir accepts any directory: outside Unix the default cache
// directory is under the user's own temp dir.
func claimOwnDir(dir string) error { return nil }

// fileReadable: outside Unix, access is the ACLs', not permission bits.
func fileReadable(fi fs.FileInfo) bool { return true }

// sharesBody: no link counts here.
func sharesBody(fi fs.FileInfo) bool { return false }
