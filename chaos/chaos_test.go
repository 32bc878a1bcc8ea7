//go:build linux

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestScheduleCoversEveryKind(t *testing.T) {
	if _, err := schedule(1); err == nil {
		t.Error("schedule(1): want an error")
	}
	for rounds := 2; rounds <= 30; rounds++ {
		plan, err := schedule(rounds)
		if err != nil {
			t.Fatalf("schedule(%d): %v", rounds, err)
		}
		if len(plan) != rounds || !slices.Equal(plan[0], []string{"none"}) {
			t.Fatalf("schedule(%d) = %v: want %d rounds, a warm-up first", rounds, plan, rounds)
		}
		seen := map[string]int{}
		for _, r := range plan[1:] {
			if len(r) == 0 {
				t.Fatalf("schedule(%d) = %v: an empty round", rounds, plan)
			}
			for _, k := range r {
				seen[k]++
			}
		}
		for _, k := range faultKinds {
			if seen[k] == 0 {
				t.Errorf("schedule(%d) = %v: no %s after the warm-up", rounds, plan, k)
			}
		}
	}
}

// writeEntry puts body under outputID's name and a record for actionID
// claiming size bytes.
func writeEntry(t *testing.T, dir, actionID, outputID string, body []byte, size int) {
	t.Helper()
	files := map[string]string{
		filepath.Join(dir, "v1", "o", outputID[:2], outputID): string(body),
		filepath.Join(dir, "v1", "a", actionID[:2], actionID): fmt.Sprintf("%s %d 1700000000000000000\n", outputID, size),
	}
	for p, c := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func id(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestCheckCacheDir(t *testing.T) {
	dir := t.TempDir()
	good := []byte("a good body")
	writeEntry(t, dir, id("action 1"), id(string(good)), good, len(good))
	// Two actions sharing one output.
	writeEntry(t, dir, id("action 2"), id(string(good)), good, len(good))

	c, err := checkCacheDir(dir, bodyMemo{})
	if err != nil {
		t.Fatal(err)
	}
	if c.records != 2 || c.bodies != 1 || len(c.bad) != 0 {
		t.Fatalf("good cache: %+v", c)
	}

	// Leftovers of a killed writer are not entries; a record without its
	// body is a miss.
	os.WriteFile(filepath.Join(dir, "v1", "o", id(string(good))[:2], ".tmp-123"), []byte("partial"), 0o644)
	writeEntry(t, dir, id("action 3"), id("gone"), nil, 4)
	os.Remove(filepath.Join(dir, "v1", "o", id("gone")[:2], id("gone")))
	memo := bodyMemo{}
	if c, err = checkCacheDir(dir, memo); err != nil {
		t.Fatal(err)
	}
	if c.temps != 1 || c.dangling != 1 || len(c.bad) != 0 {
		t.Fatalf("temp file and dangling record: %+v", c)
	}

	// A body that does not hash to its name, a record with the wrong size,
	// a malformed record.
	writeEntry(t, dir, id("action 4"), id("expected"), []byte("something else"), len("something else"))
	writeEntry(t, dir, id("action 5"), id(string(good)), good, len(good)+1)
	p := filepath.Join(dir, "v1", "a", id("action 6")[:2], id("action 6"))
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, []byte("not a record"), 0o644)
	if c, err = checkCacheDir(dir, memo); err != nil {
		t.Fatal(err)
	}
	want := []string{"body's SHA-256", "points to bad body", "record says 12 bytes", "malformed record"}
	if len(c.bad) != len(want) {
		t.Fatalf("bad entries %q, want %d", c.bad, len(want))
	}
	for _, w := range want {
		if !slices.ContainsFunc(c.bad, func(b string) bool { return strings.Contains(b, w) }) {
			t.Errorf("bad entries %q: none says %q", c.bad, w)
		}
	}

	// The memo does not hide a body rewritten in place.
	bp := filepath.Join(dir, "v1", "o", id(string(good))[:2], id(string(good)))
	if err := os.WriteFile(bp, []byte("a bad body!"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err = checkCacheDir(dir, memo); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(c.bad, func(b string) bool { return strings.Contains(b, bp+": body's SHA-256") }) {
		t.Errorf("a body rewritten in place was not caught: %q", c.bad)
	}
}

func TestCounterProblems(t *testing.T) {
	ok := cacheStats{Gets: 10, Hits: 7, Misses: 3, LocalHits: 5, RemoteHits: 2, Puts: 3, UploadsDone: 2, UploadsFailed: 1,
		Remote: true, RemoteErrors: 3, RemoteErrorsByKind: map[string]int64{"timeout": 1, "reset": 2}}
	if p := counterProblems(ok); len(p) != 0 {
		t.Fatalf("consistent stats: %v", p)
	}
	for name, mut := range map[string]func(*cacheStats){
		"gets":    func(s *cacheStats) { s.Gets++ },
		"hits":    func(s *cacheStats) { s.RemoteHits++ },
		"errors":  func(s *cacheStats) { s.RemoteErrors++ },
		"uploads": func(s *cacheStats) { s.UploadsDone-- },
		"remote":  func(s *cacheStats) { s.Remote = false },
	} {
		st := ok
		mut(&st)
		if p := counterProblems(st); len(p) != 1 {
			t.Errorf("%s: problems %v, want one", name, p)
		}
	}
}

func TestWorkloadEdits(t *testing.T) {
	dir := t.TempDir()
	w, err := newWorkload(dir, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	read := func() map[string]string {
		m := map[string]string{}
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				b, _ := os.ReadFile(p)
				m[p] = string(b)
			}
			return nil
		})
		return m
	}
	before := read()
	if n := len(before); n != 1+numPkgs+6+len(commands) {
		t.Fatalf("%d files generated", n)
	}
	for i := 0; i < 20; i++ {
		desc, err := w.edit()
		if err != nil {
			t.Fatal(err)
		}
		after := read()
		changed := 0
		for p, c := range after {
			if before[p] != c {
				changed++
			}
		}
		if changed < 1 || changed > 3 {
			t.Errorf("edit %q changed %d files, want 1 to 3", desc, changed)
		}
		before = after
	}
}
