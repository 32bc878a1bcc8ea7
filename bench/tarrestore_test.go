package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnpackTarZstVerifies: packFiles keeps only the files asked for, and
// unpackTarZst with verify lands a GOCACHE whose output files match their
// names, and refuses one whose body does not.
func TestUnpackTarZstVerifies(t *testing.T) {
	body := []byte("an output of the go command")
	sum := sha256.Sum256(body)
	good := filepath.Join("0a", hex.EncodeToString(sum[:])+"-d")
	bad := filepath.Join("0b", strings.Repeat("0", 64)+"-d")
	src := t.TempDir()
	for name, b := range map[string][]byte{good: body, bad: body, filepath.Join("0a", "x-a"): []byte("action")} {
		os.MkdirAll(filepath.Join(src, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	unpack := func(keep func(string) bool) error {
		archive := filepath.Join(t.TempDir(), "a.tar.zst")
		if _, err := packFiles(src, archive, keep); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(archive)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		return unpackTarZst(f, t.TempDir(), true)
	}
	if err := unpack(func(rel string) bool { return rel != bad }); err != nil {
		t.Errorf("without the bad body: %v", err)
	}
	if err := unpack(nil); err == nil || !strings.Contains(err.Error(), "does not match its name") {
		t.Errorf("with the bad body: %v, want a mismatch", err)
	}
}
