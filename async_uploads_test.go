package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSpool: a file body is spooled as a hard link (no copy), any other
// body as a copy; either way the spool holds exactly one file per upload
// and the source is untouched.
func TestSpool(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o755); err != nil {
		t.Fatal(err)
	}
	a := &asyncUploads{spoolDir: spoolDir}
	src := filepath.Join(dir, "body")
	if err := os.WriteFile(src, []byte("object file"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	linked, err := a.spool(f)
	if err != nil {
		t.Fatal(err)
	}
	si, _ := os.Stat(src)
	li, err := os.Stat(linked)
	if err != nil || !os.SameFile(si, li) {
		t.Fatalf("spool of a file: %s (%v) is not a link to the body", linked, err)
	}
	copied, err := a.spool(strings.NewReader("from the wire"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(copied); err != nil || string(b) != "from the wire" {
		t.Fatalf("spool of a reader: %q, %v", b, err)
	}
	ents, _ := os.ReadDir(spoolDir)
	if len(ents) != 2 {
		t.Fatalf("spool dir holds %d files, want 2", len(ents))
	}
	if b, _ := os.ReadFile(src); string(b) != "object file" {
		t.Fatalf("source changed: %q", b)
	}
}
