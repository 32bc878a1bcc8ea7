package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestManifestNotRewritten: a run that one of the manifests it read
// already describes (all its entries but one in a hundred, and at most a
// tenth more) writes no
// manifest, unless a manifest could not be read or the newest is more than
// a day old.
func TestManifestNotRewritten(t *testing.T) {
	p := &prefetcher{opts: prefetchOptions{scope: "job"}}
	a, b, c := actionID("a"), actionID("b"), actionID("c")
	name := func(age time.Duration) manifestInfo {
		return manifestInfo{name: fmt.Sprint(age), time: time.Now().Add(-age)}
	}
	lists := []manifest{{entries: []manifestEntry{{id: a}}}, {entries: []manifestEntry{{id: b}}}}
	if p.named([]ActionID{a}) {
		t.Fatal("named before any manifest was read")
	}
	lists = []manifest{{entries: []manifestEntry{{id: a}, {id: b}}}, {entries: []manifestEntry{{id: c}}}}
	infos := []manifestInfo{name(time.Hour), name(2 * time.Hour)}
	p.noteRead(infos, infos, lists, frameIndex{})
	if !p.named([]ActionID{b, a, b}) || !p.named([]ActionID{c}) {
		t.Error("the entries of a manifest read: not named")
	}
	if p.named([]ActionID{a}) {
		t.Error("a manifest naming twice what the run used: named")
	}
	if p.named([]ActionID{a, c}) {
		t.Error("entries of two manifests: named")
	}

	// One key in a hundred may be new (a test never cached, say); two are
	// too many.
	var many []manifestEntry
	var run []ActionID
	for i := range 200 {
		many = append(many, manifestEntry{id: actionID(fmt.Sprint("k", i))})
		run = append(run, actionID(fmt.Sprint("k", i)))
	}
	p = &prefetcher{opts: prefetchOptions{scope: "job"}}
	infos = []manifestInfo{name(time.Hour)}
	p.noteRead(infos, infos, []manifest{{entries: many}}, frameIndex{})
	if !p.named(append(run[:199:199], actionID("new"))) || !p.named(append(run[:198:198], actionID("new1"), actionID("new2"))) {
		t.Error("a run one key in a hundred of which is new: not named")
	}
	if p.named(append(run[:197:197], actionID("new1"), actionID("new2"), actionID("new3"))) {
		t.Error("a run three keys in 200 of which are new: named")
	}

	p = &prefetcher{opts: prefetchOptions{scope: "job"}}
	infos = []manifestInfo{name(25 * time.Hour)}
	p.noteRead(infos, infos, lists[:1], frameIndex{})
	if p.named([]ActionID{a}) {
		t.Error("newest manifest a day old: named (not renewed)")
	}
	p = &prefetcher{opts: prefetchOptions{scope: "job"}}
	infos = []manifestInfo{name(time.Hour), name(2 * time.Hour)}
	p.noteRead(infos, infos, []manifest{{entries: []manifestEntry{{id: a}}}, {}}, frameIndex{})
	if p.named([]ActionID{a}) {
		t.Error("a manifest unreadable: named")
	}
}

// TestPrefetchFromManifest: a run stores a manifest of what it used at
// Close; the next run of the scope, with an empty local cache, installs
// the small entries the manifest carries whole and fetches the large one,
// all before its go command asks.
func TestPrefetchFromManifest(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	large := strings.Repeat("L", inlineMax+1)

	statsA := new(Stats)
	a := newPrefetcher(newLocalTier(newTestDisk(t), mem, false, statsA), mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true}, statsA, quietLog)
	a.Started()
	for k, body := range map[string]string{"small": "small body", "empty": "", "large": large} {
		putString(t, a, k, body)
		a.Stored(actionID(k))
	}
	a.Got(actionID("never put"), false)
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	infos, _ := mem.ListManifests(ctx, "job", -1)
	if len(infos) != 1 {
		t.Fatalf("%d manifests stored, want 1", len(infos))
	}

	statsB := new(Stats)
	tierB := newLocalTier(newTestDisk(t), mem, false, statsB)
	b := newPrefetcher(tierB, mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true}, statsB, quietLog)
	b.Started()
	<-b.done
	for k, body := range map[string]string{"small": "small body", "empty": "", "large": large} {
		e, err := tierB.localEntry(actionID(k))
		if err != nil {
			t.Fatalf("%s not prefetched: %v", k, err)
		}
		checkEntry(t, e, []byte(body))
		b.Got(actionID(k), true)
	}
	if o, w := statsB.PrefetchObjects.Load(), statsB.PrefetchWhole.Load(); o != 3 || w != 2 {
		t.Fatalf("prefetched %d objects, %d whole; want 3, 2", o, w)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// B used what the manifest it read names: it stores none.
	if infos, _ := mem.ListManifests(ctx, "job", -1); len(infos) != 1 || statsB.PrefetchWasted.Load() != 0 {
		t.Fatalf("after B: %d manifests, %d wasted; want 1, 0", len(infos), statsB.PrefetchWasted.Load())
	}
}

// storeRun is a run of scope that stored bodies under their keys' action
// IDs and, at Close, its manifest and packs in mem.
func storeRun(t *testing.T, mem *memBackend, scope string, bodies map[string]string) {
	t.Helper()
	stats := new(Stats)
	a := newPrefetcher(newLocalTier(newTestDisk(t), mem, false, stats), mem, prefetchOptions{scope: scope, parallelism: 4, upload: true, packs: true}, stats, quietLog)
	a.Started()
	for k, body := range bodies {
		putString(t, a, k, body)
		a.Stored(actionID(k))
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestPrefetchKeepsNewestManifests: storing a manifest deletes the oldest
// beyond manifestsKept.
func TestPrefetchKeepsNewestManifests(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	for i := range manifestsKept + 3 {
		p := newPrefetcher(newLocalTier(newTestDisk(t), mem, false, new(Stats)), mem, prefetchOptions{scope: "job", parallelism: 1, upload: true, packs: true}, new(Stats), quietLog)
		if err := p.writeManifest(ctx, newManifestID(time.Now(), ""), manifest{entries: []manifestEntry{{id: actionID(fmt.Sprint(i))}}}); err != nil {
			t.Fatal(err)
		}
	}
	infos, _ := mem.ListManifests(ctx, "job", -1)
	if len(infos) != manifestsKept {
		t.Fatalf("%d manifests kept, want %d", len(infos), manifestsKept)
	}
	newest, _ := mem.GetManifest(ctx, infos[0].name)
	if got := decodeManifest(newest).entries; len(got) != 1 || got[0].id != actionID(fmt.Sprint(manifestsKept+2)) {
		t.Fatalf("newest manifest holds %+v", got)
	}

	// A run whose listing at the start shows room skips the listing after
	// its write; one whose listing is full trims.
	for _, tc := range []struct {
		scope string
		room  bool
	}{{"job", false}, {"other", true}} {
		p := newPrefetcher(newLocalTier(newTestDisk(t), mem, false, new(Stats)), mem, prefetchOptions{scope: tc.scope, parallelism: 1, upload: true, packs: true}, new(Stats), quietLog)
		if err := p.run(); err != nil {
			t.Fatal(err)
		}
		if p.roomListed.Load() != tc.room {
			t.Errorf("scope %q: room listed %v, want %v", tc.scope, p.roomListed.Load(), tc.room)
		}
		if err := p.writeManifest(ctx, newManifestID(time.Now(), ""), manifest{entries: []manifestEntry{{id: actionID("new")}}}); err != nil {
			t.Fatal(err)
		}
	}
	if infos, _ := mem.ListManifests(ctx, "job", -1); len(infos) != manifestsKept {
		t.Errorf("after a run on a full scope: %d manifests kept, want %d", len(infos), manifestsKept)
	}
}

// TestBreakerGuardsManifests: manifest traffic goes through the breaker:
// its failures open it, and while it is open the prefetcher reaches
// nothing.
func TestBreakerGuardsManifests(t *testing.T) {
	ctx := context.Background()
	remote := newScriptedRemote(errRefused)
	b, _, stats := newTestBreaker(remote, "")
	for range breakerThreshold {
		b.ListManifests(ctx, "job", 1)
	}
	if stats.Snapshot().RemoteErrorsByKind["refused"] != breakerThreshold {
		t.Fatalf("stats %+v", stats.Snapshot())
	}
	before := remote.count()
	p := newPrefetcher(newLocalTier(newTestDisk(t), b, false, new(Stats)), b, prefetchOptions{scope: "job", parallelism: 1, upload: true, packs: true}, new(Stats), quietLog)
	p.Started()
	putString(t, p, "k", "body")
	p.Stored(actionID("k"))
	p.Close(ctx)
	if n := remote.count() - before; n != 0 {
		t.Fatalf("%d requests reached a remote behind an open breaker", n)
	}
}

// TestPrefetchLeavesRoom: a prefetch lands entries only while their file
// system keeps prefetchReserve free; what it leaves out the go command's
// gets fetch, and the prefetch is not recorded as landed in full.
func TestPrefetchLeavesRoom(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	bodies := map[string]string{}
	for i := range 6 {
		bodies[fmt.Sprint("large", i)] = strings.Repeat(fmt.Sprint(i), inlineMax+1) // packed
		bodies[fmt.Sprint("small", i)] = strings.Repeat(fmt.Sprint(i), 1000)        // carried whole
	}
	storeRun(t, mem, "job", bodies)

	// Room for two large bodies and a few small ones.
	const room = 2*(inlineMax+1) + 3500
	disk := newTestDisk(t)
	disk.freeBytes = func(string) (int64, error) { return prefetchReserve + room, nil }
	statsB := new(Stats)
	tierB := newLocalTier(disk, mem, false, statsB)
	b := newPrefetcher(tierB, mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true, landed: filepath.Join(t.TempDir(), "landed")}, statsB, quietLog)
	b.Started()
	<-b.done
	if got := statsB.PrefetchBytes.Load(); got > room || got == 0 {
		t.Errorf("prefetched %d bytes with room for %d", got, room)
	}
	if b.landedRead.Load() != nil {
		t.Error("a prefetch that left entries out is recorded as landed in full")
	}
	for k, body := range bodies {
		e, err := b.Get(ctx, actionID(k))
		if err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		checkEntry(t, e, []byte(body))
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLandedEntryKeepsItsManifestsTime: the go command ignores a cached
// test result whose entry Time is before its last `go clean -testcache`. A
// fetched entry keeps the time it was put; one landed by the prefetch is
// recorded as put when its manifest was written, not when it landed, so
// that a clean on a fresh machine, after the run that stored the result,
// expires it either way.
func TestLandedEntryKeepsItsManifestsTime(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	storeRun(t, mem, "job", map[string]string{"testresult": "ok  \texample.com/m\t0.01s\n"})
	clean := time.Now() // go clean -testcache
	infos, err := mem.ListManifests(ctx, "job", -1)
	if err != nil || len(infos) != 1 || infos[0].time.IsZero() {
		t.Fatalf("manifests %v (%v), want one with its time", infos, err)
	}

	stats := new(Stats)
	tier := newLocalTier(newTestDisk(t), mem, false, stats)
	p := newPrefetcher(tier, mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true}, stats, quietLog)
	p.Started()
	<-p.done
	e, err := tier.localEntry(actionID("testresult"))
	if err != nil {
		t.Fatalf("not prefetched: %v", err)
	}
	p.Got(actionID("testresult"), true)
	p.Close(ctx)
	if e.Time.After(infos[0].time) || !e.Time.Before(clean) {
		t.Errorf("landed entry's Time %v; want its manifest's, %v, before the clean at %v", e.Time, infos[0].time, clean)
	}
}

// TestCloseSendsHeldPutsFirst: at Close, the puts that the tier's uploads
// hold back to pair them are sent before this run's manifest is written,
// not after it: they are on their way beside it.
func TestCloseSendsHeldPutsFirst(t *testing.T) {
	mem := newMemBackend(t)
	stats := new(Stats)
	disk := newTestDisk(t)
	uploads := newAsyncUploads(mem, disk.tmpDir(), 2, 1<<20, false, stats, quietLog)
	held := -1 // uploads still held when the manifest was written
	store := &watchedManifests{memBackend: mem, onPut: func() {
		uploads.mu.Lock()
		held = len(uploads.waiting[0]) + len(uploads.waiting[1])
		uploads.mu.Unlock()
	}}
	p := newPrefetcher(newLocalTier(disk, uploads, false, stats), store, prefetchOptions{scope: "job", parallelism: 4, upload: true}, stats, quietLog)
	p.Started()
	for _, k := range []string{"entry", "empty"} { // the empty one is held for waitEmpty
		putString(t, p, k, strings.TrimPrefix(k, "empty"))
		p.Stored(actionID(k))
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if held != 0 {
		t.Fatalf("%d uploads held when the manifest was written, want 0 (-1: none written)", held)
	}
	if n := stats.UploadsDone.Load(); n != 2 {
		t.Fatalf("%d uploads done, want 2", n)
	}
}

// watchedManifests calls onPut as a manifest is stored.
type watchedManifests struct {
	*memBackend
	onPut func()
}

func (w *watchedManifests) PutManifest(ctx context.Context, scope, id string, data []byte) error {
	w.onPut()
	return w.memBackend.PutManifest(ctx, scope, id, data)
}

// TestPullRequestSharesThroughPacks: with carry (a pull request's run), the
// puts wait for Close and go out in this run's packs and manifest, not an
// object each; what those do not carry (an entry too large to pack) is
// uploaded on its own, and a later run of the location that prefetches
// lands every entry. Without a manifest (its write failed) every put is
// uploaded on its own.
func TestPullRequestSharesThroughPacks(t *testing.T) {
	bodies := map[string]string{
		"small":   "a small entry, carried whole by the manifest",
		"large":   strings.Repeat("a larger entry, carried in a pack. ", 3000), // over inlineMax
		"huge":    strings.Repeat("h", packEntryMax+1),                         // too large to pack
		"compile": "a compile's output, put with its empty stdout",
	}
	putRun := func(t *testing.T, mem *memBackend, store manifestStore) *Stats {
		stats := new(Stats)
		disk := newTestDisk(t)
		uploads := newAsyncUploads(mem, disk.tmpDir(), 2, 1<<30, true, stats, quietLog)
		p := newPrefetcher(newLocalTier(disk, uploads, false, stats), store, prefetchOptions{scope: "pr", parallelism: 4, upload: true, packs: true, carry: true}, stats, quietLog)
		p.Started()
		for _, k := range []string{"small", "large", "huge", "compile"} {
			putString(t, p, k, bodies[k])
			p.Stored(actionID(k))
		}
		out := stdoutKey(actionID("compile"))
		if _, err := p.Put(context.Background(), out, emptyOutputID, 0, strings.NewReader("")); err != nil {
			t.Fatal(err)
		}
		p.Stored(out)
		if _, err := mem.Get(context.Background(), actionID("small")); !errors.Is(err, ErrNotFound) {
			t.Errorf("an entry uploaded before Close: %v", err)
		}
		if err := p.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		return stats
	}

	t.Run("packs", func(t *testing.T) {
		mem := newMemBackend(t)
		stats := putRun(t, mem, mem)
		if n := mem.puts.Load(); n != 1 {
			t.Errorf("%d objects uploaded, want 1 (the entry too large to pack)", n)
		}
		if _, err := mem.Get(context.Background(), actionID("huge")); err != nil {
			t.Errorf("the entry too large to pack: %v", err)
		}
		if d, c := stats.UploadsDone.Load(), stats.UploadsCarried.Load(); d != 1 || c != 4 {
			t.Errorf("uploads done %d, carried %d; want 1 and 4 (small, large, compile with its output)", d, c)
		}
		// A later run of the pull request lands them from the manifest and pack.
		later := new(Stats)
		tier := newLocalTier(newTestDisk(t), mem, false, later)
		p := newPrefetcher(tier, mem, prefetchOptions{scope: "pr", parallelism: 4, packs: true}, later, quietLog)
		p.Started()
		<-p.done
		for _, k := range []string{"small", "large", "compile"} {
			if e, err := tier.localEntry(actionID(k)); err != nil || e.OutputID != outputID(bodies[k]) {
				t.Errorf("%s not landed by the next run: %+v, %v", k, e, err)
			}
		}
		if _, err := tier.localEntry(stdoutKey(actionID("compile"))); err != nil {
			t.Errorf("the empty output not landed by the next run: %v", err)
		}
		p.Close(context.Background())
	})

	t.Run("no manifest", func(t *testing.T) {
		mem := newMemBackend(t)
		stats := putRun(t, mem, failingManifests{mem})
		if d, c := stats.UploadsDone.Load(), stats.UploadsCarried.Load(); d != 5 || c != 0 {
			t.Errorf("uploads done %d, carried %d; want 5 and 0", d, c)
		}
		for _, k := range []string{"small", "large", "huge", "compile"} {
			if _, err := mem.Get(context.Background(), actionID(k)); err != nil {
				t.Errorf("%s: %v", k, err)
			}
		}
	})
}

// TestGetInstallsCarriedEntry: a get of an entry that a manifest carries
// whole is installed from the manifest at once, while the prefetch's own
// installing has not reached it: it needs no object of its own, which a
// pull request's entries do not have (Config.sharesThroughPacks).
func TestGetInstallsCarriedEntry(t *testing.T) {
	ctx := context.Background()
	bodies := map[string]string{"first": "the first entry", "second": "the second entry"}
	mem := newMemBackend(t)
	storeRun(t, mem, "pr", bodies)
	mem.mu.Lock()
	clear(mem.entries) // the manifest carries them, and nothing else
	mem.mu.Unlock()

	stats := new(Stats)
	tier := &stalledPrefetch{localTier: newLocalTier(newTestDisk(t), mem, false, stats), release: make(chan struct{})}
	p := newPrefetcher(tier, mem, prefetchOptions{scope: "pr", parallelism: 4, packs: true}, stats, quietLog)
	p.Started()
	planned := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.whole) == len(bodies)
	}
	for deadline := time.Now().Add(10 * time.Second); !planned(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the prefetch planned no entries carried whole in 10s")
		}
	}
	for _, k := range []string{"second", "first"} {
		e, err := p.Get(ctx, actionID(k))
		if err != nil {
			t.Fatalf("get %s while the prefetch's installing stalls: %v", k, err)
		}
		checkEntry(t, e, []byte(bodies[k]))
	}
	close(tier.release)
	<-p.done
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if h := stats.RemoteHits.Load(); h != 0 {
		t.Errorf("%d remote hits, want 0", h)
	}
}

// stalledPrefetch holds the prefetch's own installs (speculative) until
// release is closed.
type stalledPrefetch struct {
	*localTier
	release chan struct{}
}

func (s *stalledPrefetch) putShared(ctx context.Context, actionID ActionID, outputID OutputID, size int64, at time.Time, body io.Reader) (Entry, bool, error) {
	if isSpeculative(ctx) {
		select {
		case <-s.release:
		case <-ctx.Done():
			return Entry{}, false, ctx.Err()
		}
	}
	return s.localTier.putShared(ctx, actionID, outputID, size, at, body)
}

// failingManifests refuses to store a manifest.
type failingManifests struct{ *memBackend }

func (f failingManifests) PutManifest(ctx context.Context, scope, id string, data []byte) error {
	return fmt.Errorf("put manifest %s: %w", id, errors.New("refused"))
}
