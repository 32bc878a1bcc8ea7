package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDiskDamageIsAMiss(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name   string
		damage func(d *DiskBackend, e Entry)
	}{
		{"body removed", func(d *DiskBackend, e Entry) { os.Remove(e.DiskPath) }},
		{"body truncated", func(d *DiskBackend, e Entry) { os.Truncate(e.DiskPath, 3) }},
		{"body grown", func(d *DiskBackend, e Entry) { os.WriteFile(e.DiskPath, []byte("much longer than before"), 0o644) }},
		{"record garbage", func(d *DiskBackend, e Entry) { os.WriteFile(d.actionPath(actionID("k")), []byte("garbage\n"), 0o644) }},
		{"record truncated", func(d *DiskBackend, e Entry) {
			p := d.actionPath(actionID("k"))
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:20], 0o644)
		}},
		{"record too large", func(d *DiskBackend, e Entry) {
			os.WriteFile(d.actionPath(actionID("k")), []byte(strings.Repeat("f", 500)), 0o644)
		}},
		{"body is a directory", func(d *DiskBackend, e Entry) { os.Remove(e.DiskPath); os.Mkdir(e.DiskPath, 0o755) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newTestDisk(t)
			e := putString(t, d, "k", "the body")
			tc.damage(d, e)
			if _, err := d.Get(ctx, actionID("k")); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get after damage: %v, want a miss", err)
			}
			// A new put repairs the entry.
			putString(t, d, "k", "the body")
			if _, err := d.Get(ctx, actionID("k")); err != nil {
				t.Fatalf("Get after repair: %v", err)
			}
		})
	}
}

func TestDiskSharedByTwoBackends(t *testing.T) {
	dir := t.TempDir()
	a, _ := NewDiskBackend(dir)
	b, _ := NewDiskBackend(dir)
	putString(t, a, "k", "from a")
	e, err := b.Get(context.Background(), actionID("k"))
	if err != nil {
		t.Fatal(err)
	}
	checkEntry(t, e, []byte("from a"))
}

func TestDiskFailedWriteLeavesNothing(t *testing.T) {
	d := newTestDisk(t)
	d.createTemp = func(dir, pattern string) (tempFile, error) { return nil, errors.New("disk full") }
	body := "body"
	_, err := d.Put(context.Background(), actionID("k"), outputID(body), 4, strings.NewReader(body))
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Put: %v, want the temp-file error", err)
	}
	if _, err := d.Get(context.Background(), actionID("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get: %v, want miss", err)
	}
}

func TestDiskStaleTempsRemoved(t *testing.T) {
	dir := t.TempDir()
	d, _ := NewDiskBackend(dir)
	stale := filepath.Join(d.tmpDir(), "put-stale")
	fresh := filepath.Join(d.tmpDir(), "put-fresh")
	os.WriteFile(stale, []byte("x"), 0o644)
	os.WriteFile(fresh, []byte("x"), 0o644)
	old := time.Now().Add(-2 * staleTempAge)
	os.Chtimes(stale, old, old)
	NewDiskBackend(dir)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Error("stale temp file survived")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("fresh temp file (a live writer's) was removed")
	}
}

func TestDiskClear(t *testing.T) {
	ctx := context.Background()
	d := newTestDisk(t)
	putString(t, d, "a", "aaaa")
	putString(t, d, "b", "bbbbbbbb")
	putString(t, d, "c", "aaaa") // shares a's body
	n, size, err := d.Clear(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("cleared %d entries, want 3", n)
	}
	if size < 12 {
		t.Errorf("cleared %d bytes, want at least the 12 of the bodies", size)
	}
	for _, k := range []string{"a", "b", "c"} {
		if _, err := d.Get(ctx, actionID(k)); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%s) after clear: %v", k, err)
		}
	}
	// Still usable.
	putString(t, d, "a", "again")
	if _, err := d.Get(ctx, actionID("a")); err != nil {
		t.Fatal(err)
	}
}

// TestClearDuringAPut: a clear (another process's `gobuildcache clear`)
// while a server writes a put's body leaves the put's temp file, so that
// the put succeeds: before, it failed, and the go command with it. Temp
// files older than staleTempAge (a crashed writer's) are removed.
func TestClearDuringAPut(t *testing.T) {
	d := newTestDisk(t)
	ts := startTestServer(t, d)
	ts.read(t)
	body := strings.Repeat("x", 3<<20)
	line := putLine(1, actionID("1"), outputID(body), body)
	io.WriteString(ts.in, line[:len(line)/2])
	dir := filepath.Dir(d.outputPath(outputID(body)))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			break // the put's temp file
		}
		if time.Now().After(deadline) {
			t.Fatal("the put wrote no temp file")
		}
	}
	stale := filepath.Join(d.tmpDir(), "left-by-a-crash")
	if err := os.WriteFile(stale, []byte("x"), 0o666); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-staleTempAge - time.Minute)
	os.Chtimes(stale, old, old)
	other, err := NewDiskBackend(d.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.Clear(context.Background()); err != nil {
		t.Fatal(err)
	}
	io.WriteString(ts.in, line[len(line)/2:])
	r, _ := ts.read(t)
	stored(body)(t, r)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("a stale temp file survived the clear: %v", err)
	}
}

// TestStoppedClearNotesWhatItRemoved: a clear interrupted midway (^C)
// after it removed entries notes the removal, as a whole one does, so
// that no server believes what was recorded of the cache's contents
// before it (landedManifests). See TestStoppedTrimNotesWhatItRemoved.
func TestStoppedClearNotesWhatItRemoved(t *testing.T) {
	d := newTestDisk(t)
	var records []string
	for i := range 4 {
		putString(t, d, fmt.Sprint("k", i), fmt.Sprintf("body %d", i))
		records = append(records, d.actionPath(actionID(fmt.Sprint("k", i))))
	}
	before := time.Now()
	entries, _, err := d.Clear(stopAfterRemoval{context.Background(), records})
	if err == nil || entries == 0 {
		t.Fatalf("clear: %d entries, %v; want it stopped after it removed one", entries, err)
	}
	if removed := d.lastRemoval(); removed.Before(before) {
		t.Errorf("a clear stopped after it removed %d entries: last removal %v, before it", entries, removed)
	}
}

func TestActionRecordRoundTrip(t *testing.T) {
	e := Entry{OutputID: outputID("x"), Size: 42, Time: time.Unix(1700000000, 123)}
	got, err := parseActionRecord([]byte(formatActionRecord(e)))
	if err != nil || !got.Time.Equal(e.Time) || got.Size != 42 || got.OutputID != e.OutputID {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}

// TestDiskNeverReplacesABody: a body in place stays the same file whatever
// is put after it (on Windows a file another process holds open cannot be
// renamed over or removed), also when two writers place one at once; only
// a damaged one (wrong size, not a file) is replaced.
func TestDiskNeverReplacesABody(t *testing.T) {
	ctx := context.Background()
	d := newTestDisk(t)
	first := putString(t, d, "k1", "the body")
	held, err := os.Open(first.DiskPath) // as the go command would
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	before, _ := held.Stat()
	same := func(what string) {
		t.Helper()
		fi, err := os.Stat(first.DiskPath)
		if err != nil || !os.SameFile(before, fi) {
			t.Errorf("%s: the body in place was replaced (%v)", what, err)
		}
	}

	putString(t, d, "k2", "the body")
	same("a put of the same output")

	// Two writers that both found no body: the second keeps the first's.
	tmp := filepath.Join(filepath.Dir(first.DiskPath), tempPrefix+"second")
	if err := os.WriteFile(tmp, []byte("the body"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.placeBody(tmp, first.DiskPath, int64(len("the body"))); err != nil {
		t.Fatal(err)
	}
	same("a second writer's placeBody")
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the second writer's temp file is left: %v", err)
	}

	// What a remote get fetched, installed when the body is in place.
	tmp2 := filepath.Join(d.bodyTempDir(first.OutputID), tempPrefix+"fetched")
	os.WriteFile(tmp2, []byte("the body"), 0o644)
	if _, err := d.install(actionID("k3"), Entry{OutputID: first.OutputID, Size: first.Size, Time: time.Now(), DiskPath: tmp2}); err != nil {
		t.Fatal(err)
	}
	same("an install of the same output")

	for _, k := range []string{"k1", "k2", "k3"} {
		e, err := d.Get(ctx, actionID(k))
		if err != nil || e.DiskPath != first.DiskPath {
			t.Errorf("get %s: %+v, %v", k, e, err)
		}
	}
	if b, _ := io.ReadAll(held); string(b) != "the body" {
		t.Errorf("the held body reads %q", b)
	}

	// Damage is replaced: a body of the wrong size, a directory.
	for name, damage := range map[string]func(p string){
		"wrong size": func(p string) { os.WriteFile(p, []byte("short"), 0o644) },
		"directory":  func(p string) { os.Mkdir(p, 0o755) },
	} {
		d := newTestDisk(t)
		p := d.outputPath(outputID("other body"))
		os.MkdirAll(filepath.Dir(p), 0o755)
		damage(p)
		e := putString(t, d, "k", "other body")
		if b, err := os.ReadFile(e.DiskPath); err != nil || string(b) != "other body" {
			t.Errorf("%s: body %q, %v", name, b, err)
		}
	}
}

// TestStaleStateTempsRemoved: state files of v1 (removed, trim.txt,
// landed-*, miss-streak-*, remote-down-*, prefetch-plan-*) are written as a
// temp file in v1 itself and renamed; a writer killed between the two
// leaves the temp file there. Nothing ever removes it: stale temps are
// looked for only in v1/tmp and the fan-out directories, and Clear only
// walks a, o and tmp.
func TestStaleStateTempsRemoved(t *testing.T) {
	_, d, clock := newTrimDisks(t)
	// What replaceFile (landed-<h>) and writeFile (removed) leave behind
	// when killed between their create and rename.
	left := []string{
		filepath.Join(d.dir, tempPrefix+"landed-0123456789abcdef-12345"),
		filepath.Join(d.dir, tempPrefix+"6789"),
	}
	for _, p := range left {
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		setMtime(t, clock, p, 30*day)
	}
	// Something to trim, so that the trim does all it does.
	e := putString(t, d, "old", "old body")
	setMtime(t, clock, e.DiskPath, 30*day)
	trimOK(t, d, defaultTrimOptions(1))
	if _, _, err := d.Clear(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := NewDiskBackend(d.root); err != nil {
		t.Fatal(err)
	}
	for _, p := range left {
		if exists(p) {
			t.Errorf("a killed writer's temp file, a month old, survives trim, clear and open: %s", filepath.Base(p))
		}
	}
}
