package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
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

// blockingRemote is a mock whose puts wait for release (or for their
// context to end), so that uploads pile up in the queue.
func blockingRemote() (*mockBackend, chan struct{}) {
	release := make(chan struct{})
	m := &mockBackend{PutFn: func(ctx context.Context, a ActionID, o OutputID, size int64, body io.Reader) (Entry, error) {
		select {
		case <-release:
			return Entry{OutputID: o, Size: size}, nil
		case <-ctx.Done():
			return Entry{}, ctx.Err()
		}
	}}
	return m, release
}

// TestUploadQueueFullDrops: a put that would overflow the queue's byte
// bound is dropped at once and counted; the queued ones are uploaded when
// the remote answers, and Close waits for them.
func TestUploadQueueFullDrops(t *testing.T) {
	ctx := context.Background()
	remote, release := blockingRemote()
	stats := new(Stats)
	a := newAsyncUploads(remote, t.TempDir(), 1, 10, false, stats, quietLog)
	putString(t, a, "first", "4444")  // the worker takes it and waits
	putString(t, a, "second", "4444") // queued: 8 bytes of 10
	if _, err := a.Put(ctx, actionID("third"), outputID("4444"), 4, strings.NewReader("4444")); !errors.Is(err, errQueueFull) {
		t.Fatalf("put beyond the queue's bound: %v, want errQueueFull", err)
	}
	if _, err := a.Put(ctx, actionID("huge"), outputID("01234567890"), 11, strings.NewReader("01234567890")); !errors.Is(err, errQueueFull) {
		t.Fatalf("put larger than the whole queue: %v, want errQueueFull", err)
	}
	close(release)
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d, dr, tl, f := stats.UploadsDone.Load(), stats.UploadsDropped.Load(), stats.UploadsTooLarge.Load(), stats.UploadsFailed.Load(); d != 2 || dr != 1 || tl != 1 || f != 0 {
		t.Fatalf("done %d, dropped %d, too large %d, failed %d; want 2, 1, 1, 0", d, dr, tl, f)
	}
	if n := remote.calls.Load(); n != 2 {
		t.Fatalf("%d uploads reached the remote, want 2", n)
	}
	assertEmptyDir(t, a.spoolDir)
}

// TestUploadsAbandonedAtClose: uploads still pending when Close's context
// ends are cancelled and counted as abandoned, and Close returns.
func TestUploadsAbandonedAtClose(t *testing.T) {
	remote, _ := blockingRemote()
	stats := new(Stats)
	a := newAsyncUploads(remote, t.TempDir(), 1, 1<<20, false, stats, quietLog)
	putString(t, a, "in flight", "body one")
	putString(t, a, "queued", "body two")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if ab, d := stats.UploadsAbandoned.Load(), stats.UploadsDone.Load(); ab != 2 || d != 0 {
		t.Fatalf("abandoned %d, done %d; want 2, 0", ab, d)
	}
	assertEmptyDir(t, a.spoolDir)
}

// TestUploadCloseDeadlineWithNothingPending: a Close whose deadline has
// passed (-upload-timeout=0) when nothing is left to upload abandons
// nothing and says nothing; with uploads pending, it says so.
func TestUploadCloseDeadlineWithNothingPending(t *testing.T) {
	expired, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	for _, put := range []bool{false, true} {
		var log strings.Builder
		stats := new(Stats)
		a := newAsyncUploads(newMemBackend(t), t.TempDir(), 2, 1<<20, false, stats, slog.New(slog.NewTextHandler(&log, nil)))
		if put {
			putString(t, a, "k", "uploaded before the close")
			for deadline := time.Now().Add(5 * time.Second); stats.UploadsDone.Load() == 0 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		}
		if err := a.Close(expired); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(log.String(), "abandoned") || stats.UploadsAbandoned.Load() != 0 {
			t.Errorf("put=%v: a close with nothing pending: abandoned %d, log:\n%s", put, stats.UploadsAbandoned.Load(), log.String())
		}
	}

	var log strings.Builder
	remote, _ := blockingRemote()
	stats := new(Stats)
	a := newAsyncUploads(remote, t.TempDir(), 1, 1<<20, false, stats, slog.New(slog.NewTextHandler(&log, nil)))
	putString(t, a, "k", "never uploaded")
	a.Close(expired)
	if !strings.Contains(log.String(), "abandoned") || stats.UploadsAbandoned.Load() != 1 {
		t.Errorf("a close with an upload pending: abandoned %d, log:\n%s", stats.UploadsAbandoned.Load(), log.String())
	}
}

// TestUploadFailureCounted: a failed upload is counted; the put that queued
// it had succeeded already.
func TestUploadFailureCounted(t *testing.T) {
	stats := new(Stats)
	remote := failingMock(withKind(KindServer, errors.New("500")))
	a := newAsyncUploads(remote, t.TempDir(), 2, 1<<20, false, stats, quietLog)
	putString(t, a, "k", "body")
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f := stats.UploadsFailed.Load(); f != 1 {
		t.Fatalf("failed %d, want 1", f)
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("%s holds %d files after Close", dir, len(ents))
	}
}

// TestUploadLargerThanQueue: a body larger than the whole upload queue is
// never uploaded; the build log says so once, and the stats count each.
func TestUploadLargerThanQueue(t *testing.T) {
	var log strings.Builder
	stats := new(Stats)
	a := newAsyncUploads(newMemBackend(t), t.TempDir(), 1, 10, false, stats, slog.New(slog.NewTextHandler(&log, nil)))
	for _, k := range []string{"huge1", "huge2"} {
		if _, err := a.Put(t.Context(), actionID(k), outputID("01234567890"), 11, strings.NewReader("01234567890")); !errors.Is(err, errQueueFull) {
			t.Fatalf("put larger than the whole queue: %v", err)
		}
	}
	a.Close(t.Context())
	if n := strings.Count(log.String(), "larger than the upload queue"); n != 1 || stats.UploadsTooLarge.Load() != 2 {
		t.Errorf("%d warnings, %d counted; want 1 and 2; log:\n%s", n, stats.UploadsTooLarge.Load(), log.String())
	}
}

// TestSpoolOfAReusedBodyIsNotStale: a queued upload's spool file
// is a hard link to the local body, so it carries the body's mtime. A body
// put again (another action with the same output) keeps its mtime when that
// is less than usedInterval old, so its spool file can look older than
// staleTempAge minutes after it was made: the next process to open the
// cache directory (or a trim) removes it as a crashed writer's leftover,
// and the queued upload fails.
func TestSpoolOfAReusedBodyIsNotStale(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	disk, err := NewDiskBackend(dir)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var mu sync.Mutex
	uploaded := map[ActionID]string{}
	remote := &mockBackend{PutFn: func(ctx context.Context, a ActionID, o OutputID, size int64, body io.Reader) (Entry, error) {
		<-release
		b, err := io.ReadAll(body)
		if err != nil {
			return Entry{}, err
		}
		mu.Lock()
		uploaded[a] = string(b)
		mu.Unlock()
		return Entry{OutputID: o, Size: size}, nil
	}}
	stats := new(Stats)
	up := newAsyncUploads(remote, disk.tmpDir(), 1, 1<<30, false, stats, quietLog)
	tier := newLocalTier(disk, up, false, stats)

	// An earlier go command of the job stored this output 50 minutes ago.
	body := "an output two actions share"
	first := putString(t, disk, "first", body)
	old := time.Now().Add(-50 * time.Minute)
	if err := os.Chtimes(first.DiskPath, old, old); err != nil {
		t.Fatal(err)
	}

	// This go command: an upload that keeps the one worker busy, then a
	// put of another action with the same output, queued behind it.
	putString(t, tier, "busy", "keeps the worker busy")
	putString(t, tier, "second", body)

	// 11 minutes later, the uploads still queued, another go command of
	// the job starts on the same directory (NewDiskBackend removes stale
	// temps; so does every trim).
	other, err := NewDiskBackend(dir)
	if err != nil {
		t.Fatal(err)
	}
	other.now = func() time.Time { return time.Now().Add(11 * time.Minute) }
	other.removeStaleTemps()

	close(release)
	if err := up.Close(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got, ok := uploaded[actionID("second")]
	mu.Unlock()
	if !ok || got != body {
		t.Errorf("queued upload of %q lost: uploaded=%v (%q); uploads failed=%d, done=%d",
			"second", ok, got, stats.UploadsFailed.Load(), stats.UploadsDone.Load())
	}
}

// TestUploadsCarryEmptyStdout: an entry and its empty output (stdoutKey),
// put one right after the other in either order, as the go command puts a
// compile's and a vet's, go as one upload, and a get of the entry then
// answers the output. An empty put that no entry claims is uploaded on its
// own, once it has waited waitEmpty or at Close, and a newer put of its key
// replaces it.
func TestUploadsCarryEmptyStdout(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	stats := new(Stats)
	a := newAsyncUploads(mem, t.TempDir(), 2, 1<<20, false, stats, quietLog)
	put := func(id ActionID, body string) {
		t.Helper()
		if _, err := a.Put(ctx, id, outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	uploaded := func(entries, objects int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); stats.UploadsDone.Load() < entries && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if d, p := stats.UploadsDone.Load(), mem.puts.Load(); d != entries || p != objects {
			t.Fatalf("%d entries uploaded in %d objects, want %d in %d", d, p, entries, objects)
		}
	}
	compile, vet, noFacts := actionID("compile"), actionID("vet"), actionID("vet without facts")
	put(stdoutKey(compile), "")
	put(compile, "archive")
	put(vet, "facts")
	put(stdoutKey(vet), "")
	put(noFacts, "")
	put(stdoutKey(noFacts), "")
	put(actionID("alone"), "")
	put(actionID("replaced"), "")
	put(actionID("replaced"), "not empty")
	uploaded(8, 5) // "alone" after waitEmpty
	put(actionID("at close"), "")
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	uploaded(9, 6)

	get := func(id ActionID, want string) Entry {
		t.Helper()
		e, err := mem.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		checkEntry(t, e, []byte(want))
		return e
	}
	if _, err := mem.Get(ctx, stdoutKey(compile)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the output before its compile: %v, want ErrNotFound", err)
	}
	for id, body := range map[ActionID]string{compile: "archive", vet: "facts", noFacts: ""} {
		if e, out := get(id, body), get(stdoutKey(id), ""); !out.Time.Equal(e.Time) {
			t.Errorf("the output's time %v, want its entry's %v", out.Time, e.Time)
		}
	}
	get(actionID("alone"), "")
	get(actionID("at close"), "")
	get(actionID("replaced"), "not empty")
	if n := stats.UploadsFailed.Load() + stats.UploadsDropped.Load() + stats.UploadsAbandoned.Load(); n != 0 {
		t.Errorf("%d uploads lost", n)
	}
	assertEmptyDir(t, a.spoolDir)
}

// TestUploadsHeldForFlush: with hold, uploads wait for Flush, which drops
// those that carried reports (their spool files too) and sends the rest;
// past holdRoom (half the queue's bound here) what is held is sent at once
// and later puts are not held.
func TestUploadsHeldForFlush(t *testing.T) {
	ctx := context.Background()
	put := func(a *asyncUploads, key, body string) {
		t.Helper()
		if _, err := a.Put(ctx, actionID(key), outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	waitDone := func(stats *Stats, n int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); stats.UploadsDone.Load() < n && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if d := stats.UploadsDone.Load(); d != n {
			t.Fatalf("%d uploads done, want %d", d, n)
		}
	}

	t.Run("flush", func(t *testing.T) {
		mem, stats := newMemBackend(t), new(Stats)
		a := newAsyncUploads(mem, t.TempDir(), 2, 1<<20, true, stats, quietLog)
		emptyOutput := func(key string) {
			t.Helper()
			if _, err := a.Put(ctx, stdoutKey(actionID(key)), emptyOutputID, 0, strings.NewReader("")); err != nil {
				t.Fatal(err)
			}
		}
		put(a, "carried", "in the manifest")
		put(a, "compile", "in a pack")
		emptyOutput("compile")
		put(a, "compile2", "in a pack, its output not carried")
		emptyOutput("compile2")
		put(a, "not carried", "named only")
		time.Sleep(2 * waitFull)
		if n := mem.puts.Load(); n != 0 {
			t.Fatalf("%d objects uploaded before Flush, want 0", n)
		}
		carried := map[ActionID]bool{actionID("carried"): true, actionID("compile"): true, stdoutKey(actionID("compile")): true, actionID("compile2"): true}
		a.Flush(func(id ActionID) bool { return carried[id] })
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		// compile2 goes with its output, which no manifest carries.
		if d, c := stats.UploadsDone.Load(), stats.UploadsCarried.Load(); d != 3 || c != 3 {
			t.Errorf("uploads done %d, carried %d; want 3 and 3", d, c)
		}
		for _, k := range []string{"not carried", "compile2"} {
			if _, err := mem.Get(ctx, actionID(k)); err != nil {
				t.Error(err)
			}
		}
		for _, k := range []string{"carried", "compile"} {
			if _, err := mem.Get(ctx, actionID(k)); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s, carried: %v, want ErrNotFound", k, err)
			}
		}
		assertEmptyDir(t, a.spoolDir)
	})

	t.Run("past holdRoom", func(t *testing.T) {
		mem, stats := newMemBackend(t), new(Stats)
		a := newAsyncUploads(mem, t.TempDir(), 2, 100, true, stats, quietLog) // holds 50 bytes
		body := strings.Repeat("x", 20)
		put(a, "one", body)
		put(a, "two", body+"2")
		if n := mem.puts.Load(); n != 0 {
			t.Fatalf("%d objects uploaded within holdRoom, want 0", n)
		}
		put(a, "three", body+"3") // past 50 bytes: all go, and later puts wait only waitFull
		waitDone(stats, 3)
		put(a, "four", body+"4")
		waitDone(stats, 4)
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
