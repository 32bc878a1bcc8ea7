package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

// testManifestStore runs the manifestStore contract against a store:
// manifests listed newest first, packs read back by range, a manifest's
// packs deleted with it.
func testManifestStore(t *testing.T, s manifestStore) {
	ctx := context.Background()
	first := newManifestID(time.Now(), "")
	second := newManifestID(time.Now().Add(time.Second), "")
	pack := []byte("0123456789abcdefghij")
	if err := s.PutPack(ctx, "sc", first, 0, pack); err != nil {
		t.Fatalf("PutPack: %v", err)
	}
	if err := s.PutPack(ctx, "sc", first, 1, []byte("second pack")); err != nil {
		t.Fatalf("PutPack: %v", err)
	}
	for _, id := range []string{first, second} {
		if err := s.PutManifest(ctx, "sc", id, []byte("manifest "+id)); err != nil {
			t.Fatalf("PutManifest: %v", err)
		}
	}
	infos, err := s.ListManifests(ctx, "sc", -1)
	if err != nil || len(infos) != 2 {
		t.Fatalf("ListManifests: %v, %v; want 2", infos, err)
	}
	newest, oldest := infos[0].name, infos[1].name
	if b, err := s.GetManifest(ctx, newest); err != nil || string(b) != "manifest "+second {
		t.Fatalf("GetManifest(newest) = %q, %v", b, err)
	}
	r, err := s.GetPackRange(ctx, oldest, 0, 3, 5)
	if err != nil {
		t.Fatalf("GetPackRange: %v", err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || string(got) != "34567" {
		t.Fatalf("range 3+5 = %q, %v; want 34567", got, err)
	}
	if _, err := s.GetPackRange(ctx, newest, 0, 0, 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("range of a pack never stored: %v, want ErrNotFound", err)
	}
	if err := s.DeleteManifests(ctx, []string{oldest}); err != nil {
		t.Fatalf("DeleteManifests: %v", err)
	}
	for i := range 2 {
		if _, err := s.GetPackRange(ctx, oldest, i, 0, 1); !errors.Is(err, ErrNotFound) {
			t.Fatalf("pack %d of a deleted manifest: %v, want ErrNotFound", i, err)
		}
	}
	if infos, err := s.ListManifests(ctx, "sc", -1); err != nil || len(infos) != 1 || infos[0].name != newest {
		t.Fatalf("after delete: %v, %v", infos, err)
	}
}

func TestManifestStoreConformance(t *testing.T) {
	t.Run("Mem", func(t *testing.T) { testManifestStore(t, newMemBackend(t)) })
	t.Run("Breaker", func(t *testing.T) {
		testManifestStore(t, newBreakerBackend(newMemBackend(t), new(Stats), newWarnings(quietLog), ""))
	})
}

// packRun stores bodies through a prefetcher over remote, as one run of
// the go command would, and closes it: its manifest and packs are stored.
func packRun(t testing.TB, remote *memBackend, bodies map[string]string, order []string) *Stats {
	t.Helper()
	stats := new(Stats)
	p := newPrefetcher(newLocalTier(newTestDisk(t), remote, false, stats), remote, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true}, stats, quietLog)
	p.Started()
	for _, k := range order {
		putString(t, p, k, bodies[k])
		p.Stored(actionID(k))
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return stats
}

// packBodies returns n bodies, in order: most large enough not to ride in
// the manifest, some larger than a pack frame, a few small ones.
func packBodies(n int) (map[string]string, []string) {
	rng := rand.New(rand.NewPCG(1, 2))
	bodies := make(map[string]string)
	var order []string
	for i := range n {
		size := inlineMax + 1 + rng.IntN(200<<10)
		switch {
		case i%10 == 3:
			size = 100 // carried whole
		case i%17 == 5:
			size = packFrameRaw + rng.IntN(1<<20) // a frame of its own
		}
		k := fmt.Sprintf("k%03d", i)
		b := make([]byte, size)
		for j := range b {
			b[j] = byte('a' + (i+j/512)%26) // compressible
		}
		bodies[k] = string(b)
		order = append(order, k)
	}
	return bodies, order
}

// TestPrefetchFromPacks: a run stores packs of what it used; the next run
// with an empty local cache gets every packed entry from a few ranged
// GETs, none by a request of its own, and each lands verified.
func TestPrefetchFromPacks(t *testing.T) {
	mem := newMemBackend(t)
	bodies, order := packBodies(60)
	statsA := packRun(t, mem, bodies, order)
	if statsA.PacksWritten.Load() == 0 || len(mem.packs) == 0 {
		t.Fatalf("run A wrote %d packs", statsA.PacksWritten.Load())
	}

	b, tierB, counting, statsB := freshMachine(t, mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true})
	for _, k := range order {
		e, err := tierB.localEntry(actionID(k))
		if err != nil {
			t.Fatalf("%s not prefetched: %v", k, err)
		}
		checkEntry(t, e, []byte(bodies[k]))
	}
	whole := statsB.PrefetchWhole.Load()
	packed := statsB.PackEntries.Load()
	if whole+packed != int64(len(order)) || counting.gets.Load() != 0 {
		t.Fatalf("%d whole + %d from packs of %d; %d gets of own objects: want all from the manifest and packs, no gets",
			whole, packed, len(order), counting.gets.Load())
	}
	if n := mem.packGets.Load(); n == 0 || n > int64(len(order))/4 {
		t.Fatalf("%d ranged GETs for %d entries", n, packed)
	}
	b.Close(context.Background())
}

// TestPackDamage: packs are only an accelerator: gone, cut short or with
// a corrupt byte, their entries are fetched as their own objects, and
// nothing corrupt lands.
func TestPackDamage(t *testing.T) {
	for _, c := range []struct {
		name   string
		damage func(pack []byte) []byte // nil: the pack is gone
	}{
		{"gone", nil},
		{"truncated", func(p []byte) []byte { return p[:len(p)/2] }},
		{"flipped byte", func(p []byte) []byte { p[len(p)/2] ^= 0x55; return p }},
		{"zeroed", func(p []byte) []byte { return make([]byte, len(p)) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			mem := newMemBackend(t)
			bodies, order := packBodies(40)
			packRun(t, mem, bodies, order)
			mem.mu.Lock()
			for k, p := range mem.packs {
				if c.damage == nil {
					delete(mem.packs, k)
				} else {
					mem.packs[k] = c.damage(bytes.Clone(p))
				}
			}
			mem.mu.Unlock()

			stats := new(Stats)
			tier := newLocalTier(newTestDisk(t), mem, false, stats)
			p := newPrefetcher(tier, mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true}, stats, quietLog)
			p.Started()
			<-p.done
			for _, k := range order {
				e, err := p.Get(context.Background(), actionID(k))
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				checkEntry(t, e, []byte(bodies[k]))
			}
			if stats.PackFallbacks.Load() == 0 {
				t.Errorf("no entry fetched on its own after the pack was damaged")
			}
			p.Close(context.Background())
		})
	}
}

// TestPackRangeBreaksOffMidBody: a range whose answer breaks off in the
// middle of an entry's body falls back to the entry's own object once:
// each packed entry is counted landed from its pack or fetched on its
// own, not both, nor twice, and gives the disk guard back its room once.
func TestPackRangeBreaksOffMidBody(t *testing.T) {
	mem := newMemBackend(t)
	bodies, order := packBodies(40)
	packRun(t, mem, bodies, order)
	packed := 0
	for _, k := range order {
		if len(bodies[k]) > inlineMax {
			packed++
		}
	}
	stats := new(Stats)
	const room = 1 << 40
	tier := fixedRoom{newLocalTier(newTestDisk(t), mem, false, stats), room}
	p := newPrefetcher(tier, &breakingPacks{mem}, prefetchOptions{scope: "job", parallelism: 4, packs: true}, stats, quietLog)
	p.Started()
	<-p.done
	defer p.Close(context.Background())
	var total int64 // every entry lands, whole, from a pack or on its own
	for _, k := range order {
		total += int64(len(bodies[k]))
	}
	if got := p.room.Load(); got != room-total {
		t.Errorf("the disk guard's room after landing %d bytes: %d, want %d", total, got, room-total)
	}
	for _, k := range order {
		e, err := p.Get(context.Background(), actionID(k))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		checkEntry(t, e, []byte(bodies[k]))
	}
	fell, landed := stats.PackFallbacks.Load(), stats.PackEntries.Load()
	if fell == 0 || fell+landed != int64(packed) {
		t.Errorf("%d packed entries: %d landed from packs, %d fetched on their own; want each once", packed, landed, fell)
	}
}

// fixedRoom is a local tier whose file system always has room bytes to
// spare.
type fixedRoom struct {
	*localTier
	room int64
}

func (f fixedRoom) prefetchRoom() int64 { return f.room }

// breakingPacks answers every pack range with its first half, then a
// connection reset.
type breakingPacks struct{ *memBackend }

func (b *breakingPacks) GetPackRange(ctx context.Context, name string, i int, off, n int64) (io.ReadCloser, error) {
	r, err := b.memBackend.GetPackRange(ctx, name, i, off, n)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(io.MultiReader(io.LimitReader(r, n/2), iotest.ErrReader(errors.New("connection reset")))), nil
}

// FuzzPackDamage: whatever bytes a pack holds (a poisoned bucket, a
// broken disk), a fresh machine's every get returns its entry whole, from
// the pack or from the entry's own object, never a corrupt body, and
// nothing panics. The seed is a real pack of one frame (several zstd
// blocks); the fuzzer rewrites its bytes (a shorter input is padded with
// zeros), keeping its length, so that every ranged GET is answered and
// the bytes reach the decoder and the landing. (TestPackDamage damages
// packs of many frames.)
func FuzzPackDamage(f *testing.F) {
	src := newMemBackend(f)
	bodies, order := fuzzPackBodies()
	packRun(f, src, bodies, order)
	if len(src.packs) != 1 {
		f.Fatalf("the seed run wrote %d packs, want 1", len(src.packs))
	}
	var name string
	var seed []byte
	for k, p := range src.packs {
		name, seed = k, p
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, pack []byte) {
		if len(pack) > len(seed) {
			return // only its first len(seed) bytes would count
		}
		mem := newMemBackend(t)
		src.mu.Lock()
		maps.Copy(mem.entries, src.entries)
		maps.Copy(mem.manifests, src.manifests)
		src.mu.Unlock()
		damaged := make([]byte, len(seed))
		copy(damaged, pack)
		mem.packs[name] = damaged

		p, _, _, _ := freshMachine(t, mem, prefetchOptions{scope: "job", parallelism: 4, packs: true})
		defer p.Close(context.Background())
		for _, k := range order {
			e, err := p.Get(context.Background(), actionID(k))
			if err != nil {
				t.Fatalf("%s: %v (its own object is intact)", k, err)
			}
			checkEntry(t, e, []byte(bodies[k]))
		}
	})
}

// fuzzPackBodies returns the bodies of FuzzPackDamage's seed run, in
// order: too large to ride in the manifest, and compressible, so that the
// pack is about a hundred bytes and an input costs a few milliseconds.
func fuzzPackBodies() (map[string]string, []string) {
	bodies := make(map[string]string)
	var order []string
	for i := range 5 {
		k := fmt.Sprintf("f%02d", i)
		word := fmt.Sprintf("entry %02d ", i)
		bodies[k] = strings.Repeat(word, inlineMax/len(word)+1) // just over inlineMax
		order = append(order, k)
	}
	return bodies, order
}

// TestGetWaitsForPackRange: a get of an entry whose pack range is on its
// way waits for the range instead of sending a request of its own.
func TestGetWaitsForPackRange(t *testing.T) {
	mem := newMemBackend(t)
	bodies, order := packBodies(8)
	packRun(t, mem, bodies, order)

	release := make(chan struct{})
	started := make(chan struct{}, 16)
	gated := &gatedPacks{memBackend: mem, started: started, release: release}
	counting := &countingRemote{memBackend: mem}
	stats := new(Stats)
	p := newPrefetcher(newLocalTier(newTestDisk(t), counting, false, stats), gated, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true}, stats, quietLog)
	p.Started()
	<-started // the range is asked for, and held
	k := order[len(order)-1]
	got := make(chan error, 1)
	go func() {
		e, err := p.Get(context.Background(), actionID(k))
		if err == nil && (e.Size != int64(len(bodies[k])) || e.OutputID != outputID(bodies[k])) {
			err = fmt.Errorf("got %+v", e)
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("get returned before its range arrived: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n := counting.gets.Load(); n != 0 {
		t.Fatalf("%d gets of own objects, want 0: the get waited for the range", n)
	}
	p.Close(context.Background())
}

// TestPacksOff: with -prefetch-packs=false a run writes no packs, and a
// fresh one fetches packed entries as their own objects.
func TestPacksOff(t *testing.T) {
	mem := newMemBackend(t)
	bodies, order := packBodies(20)
	packRun(t, mem, bodies, order)
	p, _, counting, stats := freshMachine(t, mem, prefetchOptions{scope: "job", parallelism: 4, upload: true})
	if mem.packGets.Load() != 0 || stats.PackEntries.Load() != 0 || counting.gets.Load() == 0 {
		t.Fatalf("packs off: %d ranges, %d entries from packs, %d own gets", mem.packGets.Load(), stats.PackEntries.Load(), counting.gets.Load())
	}
	p.Close(context.Background())
}

// freshMachine returns a prefetcher of an empty local cache over mem, its
// prefetch done, with the tier, the remote that counts own gets, and the
// stats.
func freshMachine(t *testing.T, mem *memBackend, opts prefetchOptions) (*prefetcher, *localTier, *countingRemote, *Stats) {
	t.Helper()
	counting := &countingRemote{memBackend: mem}
	stats := new(Stats)
	tier := newLocalTier(newTestDisk(t), counting, false, stats)
	p := newPrefetcher(tier, mem, opts, stats, quietLog)
	p.Started()
	<-p.done
	return p, tier, counting, stats
}

// countingRemote is a memBackend that counts gets of entries' own objects.
// TestPacksCoverReadLocations: a pull request's run packs none of the
// entries that its read location's packs hold, however many of that
// location's manifests it read, since its own manifests never push them out
// of the next prefetch's reading.
func TestPacksCoverReadLocations(t *testing.T) {
	mem := newMemBackend(t)
	bodies, order := packBodies(40)
	for i := range manifestsToRead { // main's runs, a quarter of the entries each
		packRun(t, mem, bodies, order[i*10:(i+1)*10])
	}
	pr := &readsFrom{memBackend: mem, read: "job"}
	stats := new(Stats)
	p := newPrefetcher(newLocalTier(newTestDisk(t), pr, false, stats), pr, prefetchOptions{scope: "pr", parallelism: 4, upload: true, packs: true}, stats, quietLog)
	p.Started()
	<-p.done
	var packed []ActionID
	for _, e := range prRun(t, p, mem, order, "a new entry of the pull request, larger than a manifest carries: "+strings.Repeat("x", inlineMax)) {
		if e.packed {
			packed = append(packed, e.id)
		}
	}
	if len(packed) != 1 || packed[0] != actionID("new") {
		t.Fatalf("the pull request packed %d entries; want only its new one (main's %d manifests hold the rest)", len(packed), manifestsToRead)
	}
}

// TestManifestCarriesOnlyWhatIsNew: a pull request's manifest names the
// small entries its base's manifests carry whole without their bodies, and
// carries its own new ones; its next run, on an empty local cache, installs
// both from the manifests, with no request of their own.
func TestManifestCarriesOnlyWhatIsNew(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	base := []string{"b0", "b1", "b2", "b3", "b4"}
	bodies := map[string]string{"new": "the pull request's own"}
	for _, k := range base {
		bodies[k] = "main's " + k
	}
	packRun(t, mem, bodies, base) // main's run: its manifest carries them
	remote := &countingRemote{memBackend: mem}
	pr := &readsFrom{memBackend: mem, read: "job"}
	run := func() (*prefetcher, *localTier) {
		tier := newLocalTier(newTestDisk(t), remote, false, new(Stats))
		p := newPrefetcher(tier, pr, prefetchOptions{scope: "pr", parallelism: 4, upload: true, packs: true}, new(Stats), quietLog)
		p.Started()
		<-p.done
		return p, tier
	}

	p, _ := run()
	carried := make(map[ActionID]bool)
	for _, e := range prRun(t, p, mem, base, bodies["new"]) {
		carried[e.id] = e.inline
	}
	for _, k := range base {
		if v, ok := carried[actionID(k)]; !ok || v {
			t.Errorf("%s: named %v, carried whole %v; want named, not carried (main's manifest carries it)", k, ok, v)
		}
	}
	if !carried[actionID("new")] {
		t.Error("the pull request's new entry is not carried whole")
	}

	p, tier := run()
	defer p.Close(ctx)
	for k, body := range bodies {
		e, err := tier.localEntry(actionID(k))
		if err != nil {
			t.Fatalf("%s not prefetched: %v", k, err)
		}
		checkEntry(t, e, []byte(body))
	}
	if n := remote.gets.Load(); n != 0 {
		t.Errorf("%d gets of entries' own objects; want none: every entry is carried by a manifest read", n)
	}
}

// prRun ends a pull request's run p (scope "pr"): its go command got the
// keys used and stored a "new" entry. It returns the entries of the one
// manifest the run wrote.
func prRun(t *testing.T, p *prefetcher, mem *memBackend, used []string, newBody string) []manifestEntry {
	t.Helper()
	ctx := context.Background()
	for _, k := range used {
		p.Got(actionID(k), true)
	}
	putString(t, p, "new", newBody)
	p.Stored(actionID("new"))
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	infos, _ := mem.ListManifests(ctx, "pr", -1)
	if len(infos) != 1 {
		t.Fatalf("%d manifests of the pull request, want 1", len(infos))
	}
	obj, _ := mem.GetManifest(ctx, infos[0].name)
	return decodeManifest(obj).entries
}

// readsFrom lists, besides a scope's own manifests, those of the scope read
// as a read location's (readOnly).
type readsFrom struct {
	*memBackend
	read string
}

func (r *readsFrom) ListManifests(ctx context.Context, scope string, n int) ([]manifestInfo, error) {
	own, err := r.memBackend.ListManifests(ctx, scope, n)
	if err != nil {
		return nil, err
	}
	theirs, err := r.memBackend.ListManifests(ctx, r.read, n)
	for i := range theirs {
		theirs[i].readOnly = true
	}
	return append(own, theirs...), err
}

type countingRemote struct {
	*memBackend
	gets atomic.Int64
}

func (c *countingRemote) Get(ctx context.Context, actionID ActionID) (Entry, error) {
	c.gets.Add(1)
	return c.memBackend.Get(ctx, actionID)
}

// gatedPacks holds every pack range's answer until release is closed.
type gatedPacks struct {
	*memBackend
	started chan struct{}
	release chan struct{}
}

func (g *gatedPacks) GetPackRange(ctx context.Context, name string, i int, off, n int64) (io.ReadCloser, error) {
	g.started <- struct{}{}
	r, err := g.memBackend.GetPackRange(ctx, name, i, off, n)
	if err != nil {
		return nil, err
	}
	return &gatedReader{r: r, release: g.release}, nil
}

type gatedReader struct {
	r       io.ReadCloser
	release chan struct{}
	once    sync.Once
}

func (g *gatedReader) Read(p []byte) (int, error) {
	g.once.Do(func() { <-g.release })
	return g.r.Read(p)
}

func (g *gatedReader) Close() error { return g.r.Close() }

func TestFlowLimit(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	l := newFlowLimit(16)
	l.now = clock.now
	ctx := context.Background()
	if got := l.limit(); got != 4 {
		t.Fatalf("starting bound %d, want 4 (a quarter of the max)", got)
	}
	for range 4 {
		if err := l.acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if err := l.acquire(short); err == nil {
		t.Fatal("a fifth request in flight with a bound of 4")
	}
	for range 4 { // slow start: one more per fast answer
		l.observe(10*time.Millisecond, false)
		l.release()
	}
	if got := l.limit(); got != 8 {
		t.Fatalf("bound after 4 fast answers in slow start %d, want 8", got)
	}
	l.observe(0, false) // a request that says nothing
	if got := l.limit(); got != 8 {
		t.Fatalf("bound after an answer that says nothing %d, want 8", got)
	}
	l.observe(0, true) // a timeout: halved
	if got := l.limit(); got != 4 {
		t.Fatalf("bound after a timeout %d, want 4", got)
	}
	l.observe(time.Second, false) // slow, but within flowCutEvery: one cut per episode
	if got := l.limit(); got != 4 {
		t.Fatalf("bound after a second slow answer at once %d, want 4", got)
	}
	clock.advance(time.Second)
	l.observe(time.Second, false) // slow (more than 8x the fastest + 500 ms), later
	if got := l.limit(); got != 2 {
		t.Fatalf("bound after a slow answer %d, want 2", got)
	}
	for range 4 { // after slow start: about one more per round
		l.observe(10*time.Millisecond, false)
	}
	if got := l.limit(); got < 3 || got > 4 {
		t.Fatalf("bound after 4 fast answers %d, want 3 or 4", got)
	}
	for range 100 {
		clock.advance(time.Second)
		l.observe(0, true)
	}
	if got := l.limit(); got != 1 {
		t.Fatalf("bound after many timeouts %d, want 1", got)
	}
}

// TestPacksOnlyWhatIsNew: a run whose entries recent packs hold already
// packs only its new ones and refers to the old run's frames for the rest,
// and a fresh run that reads only the new manifest still gets every entry
// from packs (the old run's and the new one's), none by a request of its
// own.
func TestPacksOnlyWhatIsNew(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	bodies, order := packBodies(40)
	packRun(t, mem, bodies, order[:30])

	// Run B: a prefetch of A's manifest, then the 30 old entries used and
	// 10 new ones stored.
	statsB := new(Stats)
	b := newPrefetcher(newLocalTier(newTestDisk(t), mem, false, statsB), mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true}, statsB, quietLog)
	b.Started()
	<-b.done
	for _, k := range order[:30] {
		b.Got(actionID(k), true)
	}
	for _, k := range order[30:] {
		putString(t, b, k, bodies[k])
		b.Stored(actionID(k))
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	infos, _ := mem.ListManifests(ctx, "job", -1)
	obj, _ := mem.GetManifest(ctx, infos[0].name)
	isNew := make(map[ActionID]bool)
	for _, k := range order[30:] {
		isNew[actionID(k)] = true
	}
	var packedNew, packedOld, referred int
	mB := decodeManifest(obj)
	for _, e := range mB.entries {
		switch owner := mB.frames[e.frame].owner; {
		case !e.packed:
		case owner == manifestID(infos[1].name) && !isNew[e.id]:
			referred++
		case owner != "":
			t.Fatalf("a frame of %q", owner)
		case isNew[e.id]:
			packedNew++
		default:
			packedOld++
		}
	}
	if len(infos) != 2 || packedNew != 9 || packedOld != 0 || referred != 27 {
		t.Fatalf("%d manifests; run B packed %d new entries and %d old ones, and referred to %d in run A's packs: want 9 (the tenth rides whole), 0 and 27 (3 ride whole)", len(infos), packedNew, packedOld, referred)
	}
	// The next prefetch reads only B's manifest.
	if err := mem.DeleteManifestsOnly(ctx, infos[1].name); err != nil {
		t.Fatal(err)
	}

	c, tierC, counting, _ := freshMachine(t, mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true})
	for _, k := range order {
		e, err := tierC.localEntry(actionID(k))
		if err != nil {
			t.Fatalf("%s not prefetched: %v", k, err)
		}
		checkEntry(t, e, []byte(bodies[k]))
	}
	if n := counting.gets.Load(); n != 0 {
		t.Fatalf("%d gets of own objects; want every entry from a manifest or a pack", n)
	}
	c.Close(ctx)
}

// TestPlanOrder: a prefetch takes its own location's manifests first (two
// of them interleaved), then the read location's; an entry that its own
// manifest names as an object but the read location's packs hold comes
// from that pack, at its own manifest's place in the order.
func TestPlanOrder(t *testing.T) {
	k := func(names ...string) []manifestEntry {
		var l []manifestEntry
		for _, n := range names {
			l = append(l, manifestEntry{id: actionID(n)})
		}
		return l
	}
	read := manifest{entries: k("x", "y", "z", "b2"), frames: []packFrame{{pack: 0, off: 0, n: 100}}}
	for _, i := range []int{1, 3} { // y and b2 are packed
		read.entries[i].packed, read.entries[i].size = true, 10
	}
	infos := []manifestInfo{{name: "own1"}, {name: "own2"}, {name: "main1", readOnly: true}}
	ms := []manifest{{entries: k("a1", "a2")}, {entries: k("b1", "b2", "b3")}, read}
	objects, ranges := (&prefetcher{opts: prefetchOptions{packs: true}}).plan(infos, ms, indexFrames(infos, ms), make([]bool, len(ms)))
	var got []string
	names := map[ActionID]string{}
	for _, n := range []string{"a1", "a2", "b1", "b2", "b3", "x", "y", "z"} {
		names[actionID(n)] = n
	}
	for _, o := range objects {
		got = append(got, names[o.id])
	}
	if want := "[a1 b1 a2 b3 x z]"; fmt.Sprint(got) != want {
		t.Errorf("objects in order %v, want %s", got, want)
	}
	if len(ranges) != 1 || ranges[0].manifest != "main1" || len(ranges[0].entries) != 2 {
		t.Fatalf("ranges %+v, want main1's one range holding y and b2", ranges)
	}
}

// TestPlanOrderByJob: the manifests of a job are taken in the order its
// go commands wrote them, each job's first ones (interleaved) before any
// job's second: a job's first go command finds what it wants first.
func TestPlanOrderByJob(t *testing.T) {
	var infos []manifestInfo
	var ms []manifest
	add := func(job string, at int, keys ...string) {
		var m manifest
		for _, k := range keys {
			m.entries = append(m.entries, manifestEntry{id: actionID(k)})
		}
		infos = append(infos, manifestInfo{name: "loc/scope/" + newManifestID(time.Unix(0, int64(at)), job)})
		ms = append(ms, m)
	}
	// Newest first, as listed: jobs A and B each ran a build, then a test.
	add("b", 4, "b-test1", "b-test2")
	add("a", 3, "a-test1", "a-test2")
	add("b", 2, "b-build1", "b-build2", "shared")
	add("a", 1, "a-build1", "shared", "a-build2")
	objects, _ := (&prefetcher{}).plan(infos, ms, frameIndex{}, make([]bool, len(ms)))
	names := map[ActionID]string{}
	for _, n := range []string{"a-build1", "a-build2", "a-test1", "a-test2", "b-build1", "b-build2", "b-test1", "b-test2", "shared"} {
		names[actionID(n)] = n
	}
	var got []string
	for _, o := range objects {
		got = append(got, names[o.id])
	}
	if want := "[b-build1 a-build1 b-build2 shared a-build2 b-test1 a-test1 b-test2 a-test2]"; fmt.Sprint(got) != want {
		t.Errorf("objects in order %v, want %s", got, want)
	}
}

// TestPacksReferRecentFrames: jobs of three go commands each (a build, a
// vet, a test: three manifests a job, more than a prefetch reads) pack
// each entry once: every later run refers to the frame that holds it. A
// fresh machine then gets every entry from packs, none on its own.
func TestPacksReferRecentFrames(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	bodies, order := packBodies(60)
	run := func(used []string) manifest {
		t.Helper()
		stats := new(Stats)
		p := newPrefetcher(newLocalTier(newTestDisk(t), mem, false, stats), mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true}, stats, quietLog)
		p.Started()
		<-p.done
		for _, k := range used {
			if _, err := p.Get(ctx, actionID(k)); err == nil {
				p.Got(actionID(k), true)
			} else {
				putString(t, p, k, bodies[k])
				p.Stored(actionID(k))
			}
		}
		if err := p.Close(ctx); err != nil {
			t.Fatal(err)
		}
		infos, _ := mem.ListManifests(ctx, "job", 1)
		obj, _ := mem.GetManifest(ctx, infos[0].name)
		return decodeManifest(obj)
	}
	packedBy := make(map[ActionID]int) // new frames holding each entry
	for job := range 5 {
		extra := order[30+job*5 : 35+job*5] // each job's new entries
		for i, used := range [][]string{order[:20], order[:25], order[5:30]} {
			m := run(append(slices.Clone(used), extra[i:i+2]...))
			for _, e := range m.entries {
				if e.packed && m.frames[e.frame].owner == "" {
					packedBy[e.id]++
				}
			}
		}
	}
	for k, n := range packedBy {
		if n > 1 {
			t.Errorf("an entry packed %d times: %x", n, k[:4])
		}
	}
	p, tier, counting, _ := freshMachine(t, mem, prefetchOptions{scope: "job", parallelism: 4, packs: true})
	defer p.Close(ctx)
	for _, k := range order[:30] {
		if _, err := tier.localEntry(actionID(k)); err != nil {
			t.Fatalf("%s not prefetched: %v", k, err)
		}
	}
	if n := counting.gets.Load(); n != 0 {
		t.Fatalf("%d gets of own objects; want every entry from a manifest or a pack", n)
	}
}

// TestFurtherScopes: a matrix leg with -prefetch-scope=leg,job starts warm
// from the build job's manifests and packs, writes its manifest to its own
// scope only, packs only what the job's packs do not hold, and its next
// run reads both scopes.
func TestFurtherScopes(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	bodies, order := packBodies(40)
	packRun(t, mem, bodies, order[:30]) // the build job, scope "job"
	opts := prefetchOptions{scope: "leg", readScopes: []string{"job"}, parallelism: 4, upload: true, packs: true}

	p, tier, counting, _ := freshMachine(t, mem, opts)
	for _, k := range order[:30] {
		e, err := tier.localEntry(actionID(k))
		if err != nil {
			t.Fatalf("%s, in the job's scope, not prefetched: %v", k, err)
		}
		checkEntry(t, e, []byte(bodies[k]))
	}
	if n := counting.gets.Load(); n != 0 {
		t.Fatalf("%d gets of own objects; want every entry from the job's manifest and packs", n)
	}
	for _, k := range order[10:20] {
		p.Got(actionID(k), true)
	}
	for _, k := range order[30:] { // the leg's own
		putString(t, p, k, bodies[k])
		p.Stored(actionID(k))
	}
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if job, _ := mem.ListManifests(ctx, "job", -1); len(job) != 1 {
		t.Fatalf("%d manifests in the job's scope, want its 1: a further scope is never written", len(job))
	}
	leg, _ := mem.ListManifests(ctx, "leg", -1)
	if len(leg) != 1 {
		t.Fatalf("%d manifests in the leg's scope, want 1", len(leg))
	}
	obj, _ := mem.GetManifest(ctx, leg[0].name)
	m := decodeManifest(obj)
	if len(m.entries) != 20 {
		t.Fatalf("the leg's manifest names %d entries, want the 20 it used", len(m.entries))
	}
	for _, e := range m.entries {
		if e.packed && !slices.Contains(order[30:], keyOf(order, e.id)) {
			t.Errorf("the leg packed %s again: the job's pack holds it", keyOf(order, e.id))
		}
	}

	_, tier2, counting2, _ := freshMachine(t, mem, opts)
	for _, k := range order {
		if _, err := tier2.localEntry(actionID(k)); err != nil {
			t.Fatalf("the leg's second run: %s not prefetched: %v", k, err)
		}
	}
	if n := counting2.gets.Load(); n != 0 {
		t.Fatalf("the leg's second run: %d gets of own objects, want none", n)
	}
}

// keyOf returns the key of order whose action ID is id ("" if none).
func keyOf(order []string, id ActionID) string {
	for _, k := range order {
		if actionID(k) == id {
			return k
		}
	}
	return ""
}

// TestPackBuilderKeepsOrder: frames compressed at once still land in the
// packs in the order their bodies were added, each body in the frame add
// returned; a body that breaks off leaves nothing behind.
func TestPackBuilderKeepsOrder(t *testing.T) {
	var packs [][]byte
	b := packBuilder{compressors: 3, emit: func(i int, data []byte) {
		if i != len(packs) {
			t.Errorf("pack %d emitted as number %d", len(packs), i)
		}
		packs = append(packs, data)
	}}
	rng := rand.New(rand.NewPCG(1, 2))
	var bodies [][]byte
	var frameOf []int
	for i := range 300 {
		body := make([]byte, 1+rng.IntN(400<<10)) // incompressible: several packs
		for j := range body {
			body[j] = byte(rng.Uint32())
		}
		if i%50 == 7 {
			if _, err := b.add(io.LimitReader(bytes.NewReader(body), 10), int64(len(body))); err == nil {
				t.Fatalf("add of a body cut short succeeded")
			}
			continue
		}
		f, err := b.add(bytes.NewReader(body), int64(len(body)))
		if err != nil {
			t.Fatal(err)
		}
		bodies, frameOf = append(bodies, body), append(frameOf, f)
	}
	frames := b.finish()
	if len(packs) < 2 {
		t.Fatalf("%d packs, want several", len(packs))
	}
	decoded := make([][]byte, len(frames))
	for i, f := range frames {
		d := getZstdDecoder(bytes.NewReader(packs[f.pack][f.off : f.off+f.n]))
		out, err := io.ReadAll(d)
		zstdDecoders.Put(d)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		decoded[i] = out
	}
	for i, body := range bodies {
		f := frameOf[i]
		if !bytes.HasPrefix(decoded[f], body) {
			t.Fatalf("body %d is not next in its frame %d", i, f)
		}
		decoded[f] = decoded[f][len(body):]
	}
	for i, rest := range decoded {
		if len(rest) != 0 {
			t.Fatalf("frame %d holds %d bytes beyond its bodies", i, len(rest))
		}
	}
}

// BenchmarkPackBuilder: a run's exit packing 64 MiB of bodies (pieces of
// this test binary, as compressible as a build's outputs), with one
// compressor as before and with one per core.
func BenchmarkPackBuilder(b *testing.B) {
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	src, err := os.ReadFile(exe)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var bodies [][]byte
	for total := 0; total < 64<<20; {
		at := rng.IntN(len(src) - 256<<10)
		body := src[at : at+256<<10]
		bodies = append(bodies, body)
		total += len(body)
	}
	for _, n := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("compressors=%d", n), func(b *testing.B) {
			b.SetBytes(64 << 20)
			for b.Loop() {
				pb := packBuilder{compressors: n, emit: func(int, []byte) {}}
				for _, body := range bodies {
					pb.add(bytes.NewReader(body), int64(len(body)))
				}
				pb.finish()
			}
		})
	}
}

// TestManifestReferringToAFrameNamesEachEntryOnce: run A's inline budget runs
// out, so a small entry q is packed beside a large one r. Run B (an
// ordinary later run of the same scope) uses q and r (and stores one new
// entry): q is small and local, so B's manifest carries it whole, and r is
// in a recent frame of A's, so B's manifest refers to that frame, listing
// all its entries, q among them. B's manifest then names q twice, which
// every reader rejects (parseManifest): the scope's newest manifest is
// unreadable.
func TestManifestReferringToAFrameNamesEachEntryOnce(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	bodies := make(map[string]string)
	var order []string
	for i := range inlineBudget / inlineMax { // exactly the inline budget
		k := fmt.Sprintf("fill%03d", i)
		bodies[k] = strings.Repeat(string(rune('a'+i%26)), inlineMax-1) + k[len(k)-1:]
		order = append(order, k)
	}
	bodies["q"] = strings.Repeat("q", 100)         // small: packed in A (no budget left)
	bodies["r"] = strings.Repeat("r", inlineMax+1) // never inline
	order = append(order, "q", "r")
	packRun(t, mem, bodies, order)

	infos, _ := mem.ListManifests(ctx, "job", -1)
	obj, _ := mem.GetManifest(ctx, infos[0].name)
	mA := decodeManifest(obj)
	for _, e := range mA.entries {
		if e.id == actionID("q") && !e.packed {
			t.Fatalf("setup: q not packed in run A")
		}
	}

	b, _, _, _ := freshMachine(t, mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true})
	for _, k := range []string{"q", "r"} {
		if _, err := b.Get(ctx, actionID(k)); err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		b.Got(actionID(k), true)
	}
	putString(t, b, "s", strings.Repeat("s", inlineMax+5))
	b.Stored(actionID("s"))
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	infos, _ = mem.ListManifests(ctx, "job", -1)
	if len(infos) != 2 {
		t.Fatalf("%d manifests, want 2", len(infos))
	}
	obj, _ = mem.GetManifest(ctx, infos[0].name)
	mB := decodeManifest(obj)
	if mB.entries == nil {
		d := getZstdDecoder(strings.NewReader(string(obj)))
		raw := make([]byte, 1<<20)
		n, _ := d.Read(raw)
		cnt := strings.Count(string(raw[:n]), string(idBytes(actionID("q"))))
		t.Errorf("run B's manifest (%d bytes stored) does not decode: every reader rejects it; it names q %d times", len(obj), cnt)
	}

	// Run C does exactly what B did: B's manifest describes it, so C
	// should write nothing. With B's unreadable, C packs and uploads again.
	c, _, _, statsC := freshMachine(t, mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true})
	for _, k := range []string{"q", "r", "s"} {
		if _, err := c.Get(ctx, actionID(k)); err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		c.Got(actionID(k), true)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if infos, _ = mem.ListManifests(ctx, "job", -1); len(infos) != 2 || statsC.PacksWritten.Load() != 0 {
		t.Errorf("run C, which used just what run B's manifest names, wrote a manifest (%d manifests now, want 2) and %d packs (%d bytes), want none", len(infos), statsC.PacksWritten.Load(), statsC.PackBytesUp.Load())
	}
}

// TestManifestReferringToTwoFramesOfOneEntry: two runs of a scope at once (matrix
// legs sharing it, say) each pack an entry x, beside y and z. The next run
// uses y and z: its manifest refers to both frames, each listed with all
// its entries, so it names x twice, and every reader rejects it.
func TestManifestReferringToTwoFramesOfOneEntry(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	body := func(k string) string { return strings.Repeat(k, inlineMax+1) }
	opts := prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true}
	// Legs A and B start together: neither's prefetch sees the other's
	// manifest.
	statsA, statsB := new(Stats), new(Stats)
	a := newPrefetcher(newLocalTier(newTestDisk(t), mem, false, statsA), mem, opts, statsA, quietLog)
	b := newPrefetcher(newLocalTier(newTestDisk(t), mem, false, statsB), mem, opts, statsB, quietLog)
	a.Started()
	b.Started()
	<-a.done
	<-b.done
	for _, k := range []string{"x", "y"} {
		putString(t, a, k, body(k))
		a.Stored(actionID(k))
	}
	for _, k := range []string{"x", "z"} {
		putString(t, b, k, body(k))
		b.Stored(actionID(k))
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}

	c, _, _, _ := freshMachine(t, mem, opts)
	for _, k := range []string{"y", "z"} {
		if _, err := c.Get(ctx, actionID(k)); err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		c.Got(actionID(k), true)
	}
	putString(t, c, "w", body("w"))
	c.Stored(actionID("w"))
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	infos, _ := mem.ListManifests(ctx, "job", -1)
	if len(infos) != 3 {
		t.Fatalf("%d manifests, want 3", len(infos))
	}
	obj, _ := mem.GetManifest(ctx, infos[0].name)
	if m := decodeManifest(obj); m.entries == nil {
		t.Errorf("run C's manifest does not decode: every reader rejects it")
	}
}
