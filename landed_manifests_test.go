package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPrefetchSkipsLandedManifests: a later server on the same local cache
// (the next go command of a job) takes the manifests that an earlier one
// landed in full, or wrote, from the local record instead of fetching them
// again, prefetches nothing for them, and still knows what they name (it
// writes no manifest that one of them describes). Clearing the local
// cache forgets the record.
func TestPrefetchSkipsLandedManifests(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	bodies := map[string]string{"small": "small body", "large": strings.Repeat("L", inlineMax+1), "packed": strings.Repeat("P", 2*inlineMax)}
	run := func(disk *DiskBackend, use map[string]string) (*prefetcher, *Stats) {
		t.Helper()
		stats := new(Stats)
		tier := newLocalTier(disk, mem, false, stats)
		p := newPrefetcher(tier, mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true, landed: disk.remoteFile("landed", "mem")}, stats, quietLog)
		p.Started()
		<-p.done
		for k, body := range use {
			if e, err := p.Get(ctx, actionID(k)); err == nil {
				checkEntry(t, e, []byte(body))
				p.Got(actionID(k), true)
				continue
			}
			putString(t, p, k, body)
			p.Stored(actionID(k))
		}
		if err := p.Close(ctx); err != nil {
			t.Fatal(err)
		}
		return p, stats
	}
	manifests := func() int {
		infos, _ := mem.ListManifests(ctx, "job", -1)
		return len(infos)
	}

	run(newTestDisk(t), bodies) // the cold job: writes the first manifest
	vm := newTestDisk(t)
	_, first := run(vm, bodies) // a fresh VM's first go command: lands it all
	if first.PrefetchObjects.Load() != 3 || mem.manGets.Load() != 1 {
		t.Fatalf("first go command: prefetched %d, read %d manifests; want 3, 1", first.PrefetchObjects.Load(), mem.manGets.Load())
	}
	packGets := mem.packGets.Load()
	_, later := run(vm, bodies) // its next go command
	if mem.manGets.Load() != 1 || mem.packGets.Load() != packGets || later.PrefetchObjects.Load() != 0 || later.RemoteHits.Load() != 0 {
		t.Fatalf("later go command: read %d manifests, %d pack ranges, prefetched %d, %d from the remote; want 1, %d, 0, 0",
			mem.manGets.Load(), mem.packGets.Load(), later.PrefetchObjects.Load(), later.RemoteHits.Load(), packGets)
	}
	if n := manifests(); n != 1 {
		t.Fatalf("%d manifests after runs the first describes, want 1", n)
	}

	// A run that used more writes a manifest, and records it: the next go
	// command reads neither.
	more := map[string]string{"small": "small body", "new": "new body"}
	run(vm, more)
	if n := manifests(); n != 2 {
		t.Fatalf("%d manifests after a run that used more, want 2", n)
	}
	run(vm, more)
	if mem.manGets.Load() != 1 || manifests() != 2 {
		t.Fatalf("after the run that wrote one: read %d manifests, %d stored; want 1, 2", mem.manGets.Load(), manifests())
	}

	// Cleared, the VM reads both again and prefetches what they name.
	if _, _, err := vm.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	_, cleared := run(vm, more)
	if mem.manGets.Load() != 3 || cleared.PrefetchObjects.Load() == 0 {
		t.Fatalf("after clear: read %d manifests in all, prefetched %d; want 3, some", mem.manGets.Load(), cleared.PrefetchObjects.Load())
	}
}

// TestLandedManifestsFile: the record keeps manifests without their bodies
// and forgets those older than landedTTL, or than the local cache's last
// removal of entries; a file that does not parse is an empty record.
func TestLandedManifestsFile(t *testing.T) {
	path := newTestDisk(t).remoteFile("landed", "mem")
	now := time.Now()
	l := loadLandedManifests(path, now, time.Time{})
	m := manifest{entries: []manifestEntry{{id: actionID("k")}, {id: actionID("e"), inline: true, outputID: outputID("body"), body: []byte("body")}}}
	l.add("job/old", m, now.Add(-landedTTL-time.Minute))
	l.add("job/new", m, now)
	if err := l.save(path); err != nil {
		t.Fatal(err)
	}
	if m.entries[1].body == nil {
		t.Fatal("add changed the manifest it was given")
	}
	got := loadLandedManifests(path, now, time.Time{})
	if _, ok := got.get("job/old"); ok {
		t.Error("a manifest recorded over landedTTL ago: kept")
	}
	nm, ok := got.get("job/new")
	if !ok || len(nm.entries) != 2 || nm.entries[0].id != actionID("k") || !nm.entries[1].inline || nm.entries[1].outputID != outputID("body") || len(nm.entries[1].body) != 0 {
		t.Fatalf("recorded manifest read back as %+v", nm)
	}
	if got := loadLandedManifests(path, now, now.Add(-time.Nanosecond)); len(got.byName) != 1 {
		t.Errorf("entries removed just before the newer one was recorded: %d manifests believed, want 1", len(got.byName))
	}
	if got := loadLandedManifests(path, now, now); len(got.byName) != 0 {
		t.Errorf("entries removed after both were recorded: %d manifests believed, want 0", len(got.byName))
	}

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A manifest that does not parse is as good as absent; the others
	// stand, and are written back as they were read.
	corrupt := bytes.Replace(b, []byte(manifestMagic), []byte("gbcm0\n"), 1)
	if err := os.WriteFile(path, corrupt, 0o644); err != nil {
		t.Fatal(err)
	}
	l = loadLandedManifests(path, now, time.Time{})
	l.add("job/newer", m, now.Add(time.Second))
	if err := l.save(path); err != nil {
		t.Fatal(err)
	}
	got = loadLandedManifests(path, now.Add(time.Second), time.Time{})
	if _, ok := got.get("job/new"); ok || !got.has("job/new") {
		t.Error("a recorded manifest that does not parse: got, or not kept")
	}
	if nm, ok := got.get("job/newer"); !ok || len(nm.entries) != 2 {
		t.Errorf("the manifest added beside one that does not parse: %+v, %v", nm, ok)
	}

	for _, bad := range [][]byte{b[:len(b)-1], b[:len(landedMagic)+3], append([]byte("gbcl0\n"), b[len(landedMagic):]...)} {
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if got := loadLandedManifests(path, now, time.Time{}); len(got.byName) != 0 {
			t.Errorf("a file of %d bytes that does not parse: %d manifests", len(bad), len(got.byName))
		}
	}
}

// TestLandedManifestTrimmedMeanwhile: a server that took a manifest as
// landed from the record, while another process's trim removed entries it
// names, does not record it again at its close: the next go command
// prefetches what the trim removed instead of taking it for local.
func TestLandedManifestTrimmedMeanwhile(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	bodies := map[string]string{"a": strings.Repeat("A", inlineMax+1), "b": strings.Repeat("B", inlineMax+2)}
	storeRun(t, mem, "job", bodies)
	vm := newTestDisk(t)
	start := func() (*prefetcher, *Stats) {
		stats := new(Stats)
		p := newPrefetcher(newLocalTier(vm, mem, false, stats), mem, prefetchOptions{scope: "job", parallelism: 4, packs: true, landed: vm.remoteFile("landed", "mem")}, stats, quietLog)
		p.Started()
		<-p.done
		return p, stats
	}
	first, stats := start() // lands the manifest, and records it
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := stats.PrefetchObjects.Load(); n != 2 {
		t.Fatalf("first go command prefetched %d, want 2", n)
	}

	second, stats := start() // takes it from the record
	if n := stats.PrefetchObjects.Load(); n != 0 {
		t.Fatalf("second go command prefetched %d, want 0", n)
	}
	// Meanwhile another process sharing the directory trims it under size
	// pressure: the bodies were last used hours ago.
	old := time.Now().Add(-3 * time.Hour)
	if err := filepath.WalkDir(filepath.Join(vm.Dir(), "v1", "o"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			err = os.Chtimes(path, old, old)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	other, err := NewDiskBackend(vm.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if res, err := other.Trim(ctx, defaultTrimOptions(1)); err != nil || res.Bodies != 2 {
		t.Fatalf("trim: %v, %v", res, err)
	}
	if err := second.Close(ctx); err != nil {
		t.Fatal(err)
	}

	third, stats := start()
	defer third.Close(ctx)
	if n := stats.PrefetchObjects.Load(); n != 2 {
		t.Errorf("after the trim, the next go command prefetched %d entries, want 2: the manifest was recorded as landed again", n)
	}
}
