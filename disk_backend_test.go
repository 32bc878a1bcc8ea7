package main

import (
	"context"
	"errors"
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
	d.createTemp = func(dir, pattern string) (*os.File, error) { return nil, errors.New("disk full") }
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

func TestActionRecordRoundTrip(t *testing.T) {
	e := Entry{OutputID: outputID("x"), Size: 42, Time: time.Unix(1700000000, 123)}
	got, err := parseActionRecord([]byte(formatActionRecord(e)))
	if err != nil || !got.Time.Equal(e.Time) || got.Size != 42 || got.OutputID != e.OutputID {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
}
