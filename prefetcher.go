package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Prefetch hides the remote's latency from a fresh machine.
//
// The go command asks for one entry at a time, with only about as many
// requests in flight as the machine has cores, so a machine with an empty
// local cache pays roughly (entries × round trip) / cores. Instead, each
// server records which action IDs its go command looked up and found, or
// stored, and at exit stores them as a manifest (manifest.go) of its scope,
// unless a manifest it read already describes the run (see named). The next
// server of the same scope, right after its capabilities line, reads the
// newest manifests, installs the small entries they carry whole, and
// fetches the others into the local tier with many requests in flight,
// while the build is already running. A get for an entry being prefetched
// waits for that fetch (the local tier's one-fetch-per-key rule); a get for
// an entry not reached yet is fetched at once.
//
// The newest manifestsKept of a scope are kept; older ones are deleted by
// the server that stores a new one.

const (
	manifestsToRead   = 4 // newest manifests a prefetch reads
	manifestsKept     = 8 // newest manifests kept per scope
	prefetchCloseWait = 2 * time.Second
	// manifestRefresh: a run whose entries the manifests it read already
	// name writes none, unless the newest of them is older than this, so
	// that a scope's manifests are renewed daily (a lifecycle rule that
	// expires old objects never leaves a busy scope without one).
	manifestRefresh = 24 * time.Hour
)

// prefetchTarget is what the prefetcher needs of the local tier.
type prefetchTarget interface {
	// localEntry returns the entry of actionID in the local cache alone
	// (an error wrapping ErrNotFound if it is not there).
	localEntry(actionID ActionID) (Entry, error)
	// fetchShared fetches actionID from the remote into the local cache
	// under ctx, unless a fetch of it is under way already (fetched false).
	fetchShared(ctx context.Context, actionID ActionID) (e Entry, fetched bool, err error)
	// putShared stores a whole entry, verified against outputID, in the
	// local cache, unless a fetch of it is under way already (stored false).
	putShared(ctx context.Context, actionID ActionID, outputID OutputID, body []byte) (e Entry, stored bool, err error)
}

// prefetchTier is the local tier as the prefetcher wraps it.
type prefetchTier interface {
	CacheBackend
	prefetchTarget
}

// prefetcher adds prefetch to the local tier. Gets and puts pass through to
// the tier; the server tells it which entries its go command used (it is
// the server's Observer); Close stops the prefetch, closes the tier (which
// waits for the uploads) and then stores this run's manifest, so that it
// names only entries in the remote. Manifests are read and stored through
// manifests, the remote's manifestStore below the breaker.
type prefetcher struct {
	tier        prefetchTier
	manifests   manifestStore
	scope       string
	parallelism int
	upload      bool // store a manifest at exit (not with -read-only)
	stats       *Stats
	log         *slog.Logger

	used       *keySet                       // looked up and found, or stored: the next manifest
	requested  *keySet                       // every key a get asked for
	prefetched *keySet                       // fetched by the prefetch
	seen       atomic.Pointer[manifestsSeen] // set once every manifest listed is read

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

var (
	_ CacheBackend = (*prefetcher)(nil)
	_ Observer     = (*prefetcher)(nil)
)

func newPrefetcher(tier prefetchTier, manifests manifestStore, scope string, parallelism int, upload bool, stats *Stats, log *slog.Logger) *prefetcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &prefetcher{
		tier: tier, manifests: manifests, scope: scope, parallelism: max(parallelism, 1), upload: upload, stats: stats, log: log,
		used: newKeySet(), requested: newKeySet(), prefetched: newKeySet(),
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
}

// Get implements CacheBackend.
func (p *prefetcher) Get(ctx context.Context, actionID ActionID) (Entry, error) {
	return p.tier.Get(ctx, actionID)
}

// Put implements CacheBackend.
func (p *prefetcher) Put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	return p.tier.Put(ctx, actionID, outputID, size, body)
}

// Close implements CacheBackend: the prefetch stops, the tier closes
// (pending uploads get until ctx's deadline), and then this run's manifest
// is stored.
func (p *prefetcher) Close(ctx context.Context) error {
	p.stop()
	err := p.tier.Close(ctx)
	p.writeOut(ctx)
	return err
}

// Started implements Observer: the prefetch begins, in the background.
func (p *prefetcher) Started() {
	go func() {
		defer close(p.done)
		if err := p.run(); err != nil && p.ctx.Err() == nil {
			// Deliberately swallowed: without a prefetch the build just
			// fetches as it goes.
			p.log.Debug("prefetch stopped", "err", err)
		}
	}()
}

// Got implements Observer.
func (p *prefetcher) Got(actionID ActionID, hit bool) {
	p.requested.add(actionID)
	if hit {
		p.used.add(actionID)
	}
}

// Stored implements Observer.
func (p *prefetcher) Stored(actionID ActionID) { p.used.add(actionID) }

// run reads the newest manifests and fetches their entries.
func (p *prefetcher) run() error {
	infos, err := p.manifests.ListManifests(p.ctx, p.scope, manifestsToRead)
	if err != nil {
		return err
	}
	// Each manifest lists its entries in the order its run first used
	// them, and the runs of a scope are different go commands (go build,
	// go test, ...) of which this one is not known: interleave them, so
	// that whichever this is, what it wants first is fetched first.
	lists := make([][]manifestEntry, len(infos))
	var mwg sync.WaitGroup
	for i, m := range infos { // at once: each is a round trip
		mwg.Add(1)
		go func() {
			defer mwg.Done()
			b, err := p.manifests.GetManifest(p.ctx, m.name)
			if err == nil { // else expired or written meanwhile: the others will do
				lists[i] = decodeManifest(b)
			}
		}()
	}
	mwg.Wait()
	p.noteRead(infos, lists)
	var order []*manifestEntry
	byID := make(map[ActionID]*manifestEntry)
	for i := 0; ; i++ {
		more := false
		for _, l := range lists {
			if i >= len(l) {
				continue
			}
			more = true
			m := &l[i]
			if prev, ok := byID[m.id]; !ok {
				byID[m.id] = m
				order = append(order, m)
			} else if m.inline && !prev.inline {
				*prev = *m // the same key, carried whole
			}
		}
		if !more {
			break
		}
	}
	work := make(chan *manifestEntry)
	var wg sync.WaitGroup
	for range p.parallelism {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				if m.inline {
					p.install(m)
				} else {
					p.fetch(m.id)
				}
			}
		}()
	}
	for _, m := range order {
		select {
		case work <- m:
		case <-p.ctx.Done():
		}
		if p.ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	return nil
}

// manifestsSeen is what a prefetch read: the keys of each manifest it
// listed, and when the newest of them was written.
type manifestsSeen struct {
	keys   []map[ActionID]struct{}
	newest time.Time
}

// noteRead records what the manifests infos (newest first) named, if every
// one of them was read.
func (p *prefetcher) noteRead(infos []manifestInfo, lists [][]manifestEntry) {
	r := &manifestsSeen{}
	if len(infos) > 0 {
		if infos[0].time.IsZero() {
			return
		}
		r.newest = infos[0].time
	}
	for _, l := range lists {
		if l == nil {
			return // unreadable: this run's manifest is written
		}
		set := make(map[ActionID]struct{}, len(l))
		for _, m := range l {
			set[m.id] = struct{}{}
		}
		r.keys = append(r.keys, set)
	}
	p.seen.Store(r)
}

// install stores an entry a manifest carries, unless it is local or being
// fetched already.
func (p *prefetcher) install(m *manifestEntry) {
	if _, err := p.tier.localEntry(m.id); err == nil {
		return
	}
	e, stored, err := p.tier.putShared(p.ctx, m.id, m.outputID, m.body)
	switch {
	case !stored:
		// A get got there first.
	case err == nil:
		p.prefetched.add(m.id)
		p.stats.PrefetchObjects.Add(1)
		p.stats.PrefetchWhole.Add(1)
		p.stats.PrefetchBytes.Add(e.Size)
	case errors.Is(err, errVerify):
		p.stats.VerifyFailures.Add(1)
	}
}

// fetch prefetches one entry unless it is local or already being fetched.
func (p *prefetcher) fetch(id ActionID) {
	if _, err := p.tier.localEntry(id); err == nil {
		return
	}
	e, fetched, err := p.tier.fetchShared(p.ctx, id)
	switch {
	case !fetched:
		// A get got there first.
	case err == nil:
		p.prefetched.add(id)
		p.stats.PrefetchObjects.Add(1)
		p.stats.PrefetchBytes.Add(e.Size)
	case errors.Is(err, ErrNotFound) && p.ctx.Err() == nil:
		p.stats.PrefetchMisses.Add(1)
	}
}

// stop ends the prefetch (waiting at most prefetchCloseWait for fetches in
// flight) and counts what it fetched in vain. The prefetch must have
// started, or never will.
func (p *prefetcher) stop() {
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(prefetchCloseWait):
	}
	var wasted int64
	for _, id := range p.prefetched.list() {
		if !p.requested.has(id) {
			wasted++
		}
	}
	p.stats.PrefetchWasted.Store(wasted)
}

// writeOut stores this run's manifest, unless the server is read-only,
// nothing was used, the remote is failing (the breaker refuses), or a
// manifest read describes the run already.
func (p *prefetcher) writeOut(ctx context.Context) {
	ids := p.used.list()
	if !p.upload || len(ids) == 0 || p.named(ids) {
		return
	}
	if err := p.writeManifest(ctx, p.manifestEntries(ids)); err != nil {
		// Deliberately swallowed: the next machine just prefetches less.
		p.log.Debug("writing prefetch manifest", "err", err)
	}
}

// named reports whether one of the recent manifests this run read already
// describes it: it names every one of ids, and at most a tenth more. Then a
// manifest of this run would add nothing. (A manifest naming many more, say
// of a cold build that also linked what this run found cached, is replaced
// by this run's, so that the next prefetch fetches less in vain.)
func (p *prefetcher) named(ids []ActionID) bool {
	r := p.seen.Load()
	if r == nil || time.Since(r.newest) > manifestRefresh {
		return false
	}
	distinct := make(map[ActionID]struct{}, len(ids))
	for _, id := range ids {
		distinct[id] = struct{}{}
	}
next:
	for _, keys := range r.keys {
		if len(keys) > len(distinct)+len(distinct)/10 {
			continue
		}
		for id := range distinct {
			if _, ok := keys[id]; !ok {
				continue next
			}
		}
		return true
	}
	return false
}

// manifestEntries returns the manifest of ids: the small entries that are
// in the local cache whole (up to inlineBudget bytes of them), the others
// as keys.
func (p *prefetcher) manifestEntries(ids []ActionID) []manifestEntry {
	entries := make([]manifestEntry, len(ids))
	budget := int64(inlineBudget)
	for i, id := range ids {
		entries[i].id = id
		e, err := p.tier.localEntry(id)
		if err != nil || e.Size > inlineMax || e.Size > budget {
			continue
		}
		body, err := os.ReadFile(e.DiskPath)
		if err != nil || int64(len(body)) != e.Size {
			continue // trimmed or replaced meanwhile: fetched on its own
		}
		entries[i].inline, entries[i].outputID, entries[i].body = true, e.OutputID, body
		budget -= e.Size
	}
	return entries
}

// writeManifest stores entries as a new manifest and deletes the oldest
// ones beyond manifestsKept.
func (p *prefetcher) writeManifest(ctx context.Context, entries []manifestEntry) error {
	obj, err := encodeManifestObject(entries)
	if err != nil {
		return err
	}
	if err := p.manifests.PutManifest(ctx, p.scope, obj); err != nil {
		return err
	}
	all, err := p.manifests.ListManifests(ctx, p.scope, -1)
	if err != nil || len(all) <= manifestsKept {
		return err
	}
	var old []string
	for _, m := range all[manifestsKept:] {
		old = append(old, m.name)
	}
	return p.manifests.DeleteManifests(ctx, old)
}

// keySet is a concurrent set of action IDs that remembers the order in
// which they were first added.
type keySet struct {
	mu    sync.Mutex
	keys  map[ActionID]struct{}
	order []ActionID
}

func newKeySet() *keySet { return &keySet{keys: make(map[ActionID]struct{})} }

func (s *keySet) add(id ActionID) {
	s.mu.Lock()
	if _, ok := s.keys[id]; !ok {
		s.keys[id] = struct{}{}
		s.order = append(s.order, id)
	}
	s.mu.Unlock()
}

func (s *keySet) has(id ActionID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.keys[id]
	return ok
}

// list returns the IDs in the order they were first added.
func (s *keySet) list() []ActionID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.order)
}
