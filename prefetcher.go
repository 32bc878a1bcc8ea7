package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
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
// with packs (pack.go) of their bodies, unless a manifest it read already
// describes the run (see named). The next server of the same scope, right
// after its capabilities line, reads the newest manifests and, while the
// build is already running, installs the small entries they carry whole,
// streams the packs with a few ranged GETs at a time in first-use order
// (each entry landing in the local tier as its bytes arrive, verified), and
// fetches the remaining entries one object each, many at once. Requests in
// flight adapt to the remote (flowLimit).
//
// A job's later servers on the same local cache find those entries landed
// already: they list the manifests, take the ones landed from the local
// record (landedManifests) instead of fetching them, and prefetch nothing
// for them.
//
// `gobuildcache prefetch`, started at the job's start, runs the same
// prefetch before the first go command does, with nothing to serve, and
// holds a claim on the local cache meanwhile (prefetchClaim). A server that
// starts while it runs waits for its end before prefetching (and then finds
// its manifests landed), and a get of an entry it announced waits for that
// entry to land.
//
// A get for an entry being fetched waits for that fetch (the local tier's
// one-fetch-per-key rule); a get for an entry a manifest carries whole is
// installed from it at once; a get for an entry whose pack range is on its
// way waits for the range, which is a few round trips at most; a get for
// an entry not reached yet is fetched at once, on its own. The entries
// carried whole are installed by one goroutine, in first-use order: that
// is local work alone, and several at once made no build faster.
//
// The newest manifestsKept of a scope are kept; older ones, with their
// packs, are deleted by the server that stores a new one.

const (
	manifestsToRead   = 4  // newest manifests a prefetch reads, of each location
	manifestsReadMax  = 12 // manifests a prefetch reads, of each location, with their jobs' (chooseManifests)
	manifestsKept     = 32 // newest manifests kept per scope
	packRangesAtOnce  = 4  // ranged GETs of packs in flight, at most
	packUploadsAtOnce = 2  // pack uploads in flight at exit
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
	// putShared stores an entry's body of size bytes, verified against
	// outputID, in the local cache with put time at (the zero time: now),
	// unless a fetch of it is under way already (stored false). It need
	// not read all of body.
	putShared(ctx context.Context, actionID ActionID, outputID OutputID, size int64, at time.Time, body io.Reader) (e Entry, stored bool, err error)
	// lastRemoval returns when entries were last removed from the local
	// cache (trimmed or cleared), or the zero time if never.
	lastRemoval() time.Time
	// prefetchRoom returns how many bytes a prefetch may land now: the
	// free space of the local cache's file system less prefetchReserve.
	prefetchRoom() int64
}

// prefetchReserve is the free space a prefetch leaves on the local cache's
// file system for the build's own work (and the entries it asks for): a
// prefetch is a guess, and must never be what fills the disk.
const prefetchReserve = 1 << 30

// prefetchTier is the local tier as the prefetcher wraps it.
type prefetchTier interface {
	CacheBackend
	prefetchTarget
	flusher
}

// prefetcher adds prefetch to the local tier. Gets and puts pass through to
// the tier (a get waits first for an entry whose pack range is on its way);
// the server tells it which entries its go command used (it is the
// server's Observer); Close stops the prefetch, stores this run's packs
// and manifest, and then closes the tier (which waits for the entries'
// uploads): the manifest goes out while those are still on their way, so
// a machine that reads it at once may miss an entry it names on its own
// (one counted prefetch miss); the packs are stored before it. Manifests
// and packs are read and stored through manifests, the remote's
// manifestStore below the breaker, which the tier closes last.
type prefetcher struct {
	tier      prefetchTier
	manifests manifestStore
	opts      prefetchOptions
	stats     *Stats
	log       *slog.Logger

	used       *keySet                       // looked up and found, or stored: the next manifest
	requested  *keySet                       // every key a get asked for
	prefetched *keySet                       // fetched by the prefetch
	seen       atomic.Pointer[manifestsSeen] // set once every manifest listed is read

	objects *flowLimit // requests for entries' own objects in flight
	ranges  *flowLimit // ranged GETs of packs in flight

	mu      sync.Mutex
	landing map[ActionID]chan struct{}  // entries whose pack range is on its way; closed once landed or given up
	whole   map[ActionID]*manifestEntry // entries carried whole, planned and not installed yet

	misses missPredictor

	// other: the claim of a prefetch command landing into the same local
	// cache, watched from Started on (nil if none was held then).
	other atomic.Pointer[claimWatch]

	// roomListed: the listing at the start showed fewer than manifestsKept
	// manifests of this location and scope, so this run's manifest needs
	// no trimming (one written meanwhile by another run is trimmed by a
	// later run, whose listing then shows it).
	roomListed atomic.Bool
	// ownListed: the name of a manifest of this location and scope that
	// the listing showed (nil if none), whose sibling this run's is.
	ownListed atomic.Pointer[string]
	// landedRead: the manifests read whose entries are now local, by
	// name: set once the prefetch has fetched all they name, or failed to
	// only for entries the remote does not have.
	landedRead atomic.Pointer[map[string]manifest]
	// incomplete: an entry was not landed for a reason other than the
	// remote not having it (so landedRead stays unset).
	incomplete atomic.Bool
	// room: how many more bytes this prefetch may land (see take).
	room   atomic.Int64
	noRoom sync.Once
	// began: when the server began, before the prefetch found any entry
	// local, and before its go command used any.
	began time.Time

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// prefetchOptions are the prefetcher's settings.
type prefetchOptions struct {
	scope       string   // of the manifests read and written
	readScopes  []string // further scopes whose manifests are read, never written
	parallelism int      // requests for entries' own objects in flight, at most
	upload      bool     // store a manifest at exit (not with -read-only)
	packs       bool     // read and write packs (-prefetch-packs)
	// carry: the tier's uploads hold this run's puts until Close, which
	// drops those that its packs and manifest carry (a pull request's run:
	// Config.sharesThroughPacks).
	carry bool
	// predictMisses: answer keys that no manifest names from the local
	// cache alone while the remote keeps missing them (missPredictor,
	// -predict-misses).
	predictMisses bool
	// missState: the file where the miss predictor's state is kept from
	// one server to the next ("" for none; see missPredictor).
	missState string
	// landed: the file where the manifests whose entries are in the local
	// cache are recorded ("" for none; see landedManifests).
	landed string
	// job: the job this server runs in (loadJobID), whose ID ends the ID
	// of the manifest it writes ("" for one of its own).
	job string
	// claimLock, claimPlan: the files of the prefetch command's claim on
	// the local cache (prefetchClaim), which a server watches ("" for
	// none).
	claimLock, claimPlan string
	// claim: held by the prefetch command, whose prefetch announces its
	// plan there; nil in a server.
	claim *prefetchClaim
}

var (
	_ CacheBackend = (*prefetcher)(nil)
	_ Observer     = (*prefetcher)(nil)
)

func newPrefetcher(tier prefetchTier, manifests manifestStore, opts prefetchOptions, stats *Stats, log *slog.Logger) *prefetcher {
	ctx, cancel := context.WithCancel(withSpeculative(context.Background()))
	opts.parallelism = max(opts.parallelism, 1)
	p := &prefetcher{
		tier: tier, manifests: manifests, opts: opts, stats: stats, log: log,
		used: newKeySet(), requested: newKeySet(), prefetched: newKeySet(),
		objects: newFlowLimit(opts.parallelism), ranges: newFlowLimit(min(opts.parallelism, packRangesAtOnce)),
		landing: make(map[ActionID]chan struct{}),
		whole:   make(map[ActionID]*manifestEntry),
		began:   time.Now(),
		ctx:     ctx, cancel: cancel, done: make(chan struct{}),
	}
	if opts.predictMisses {
		p.misses.load(opts.missState, time.Now())
	}
	return p
}

// Get implements CacheBackend. An entry that a manifest carries whole is
// installed from it at once, if the prefetch has not yet: it may have no
// object of its own (a pull request's: see Config.sharesThroughPacks). An
// entry whose pack range is on its way is waited for: the range is nearer
// than a request of its own. A key that no manifest names may be answered
// from the local cache alone (see missPredictor).
func (p *prefetcher) Get(ctx context.Context, actionID ActionID) (Entry, error) {
	if w := p.other.Load(); w != nil {
		w.awaitEntry(ctx, actionID, p.isLocal)
	}
	p.mu.Lock()
	wait := p.landing[actionID]
	whole := p.whole[actionID]
	p.mu.Unlock()
	if whole != nil {
		p.install(ctx, whole) // now, not when the prefetch reaches it
	}
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return Entry{}, ctx.Err()
		}
	}
	if !p.opts.predictMisses || !p.unnamed(actionID) {
		return p.tier.Get(ctx, actionID)
	}
	if e, err := p.tier.localEntry(actionID); err == nil {
		return e, nil
	}
	if !p.misses.ask() {
		p.stats.LookupsSkipped.Add(1)
		return Entry{}, fmt.Errorf("get %x: predicted miss: %w", actionID, ErrNotFound)
	}
	e, err := p.tier.Get(ctx, actionID)
	if err == nil || remoteAnsweredMiss(err) {
		p.misses.observe(err == nil)
	}
	return e, err
}

// remoteAnsweredMiss reports whether err, a miss of the local tier, is the
// remote's own answer that it holds no such key (or may not be read
// there), not a failure to ask it: a timeout, a refused connection, the
// breaker keeping requests away say nothing of what the remote holds, and
// a streak of them must not turn lookups off once it answers again.
func remoteAnsweredMiss(err error) bool {
	k := errKind(err)
	return (k == KindNotFound || k == KindDenied) && !errors.Is(err, errBreakerOpen)
}

// isLocal reports whether actionID is in the local cache.
func (p *prefetcher) isLocal(actionID ActionID) bool {
	_, err := p.tier.localEntry(actionID)
	return err == nil
}

// unnamed reports whether no manifest the prefetch read names actionID
// (false until every manifest it listed is read).
func (p *prefetcher) unnamed(actionID ActionID) bool {
	r := p.seen.Load()
	if r == nil {
		return false
	}
	for _, keys := range r.keys {
		if _, ok := keys[actionID]; ok {
			return false
		}
	}
	return true
}

// Put implements CacheBackend.
func (p *prefetcher) Put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	return p.tier.Put(ctx, actionID, outputID, size, body)
}

// Close implements CacheBackend: the prefetch stops, this run's packs and
// manifest are stored, and the tier closes (pending uploads get until
// ctx's deadline). The puts the tier's uploads hold back go first, so
// that they are on their way beside the packs and manifest, not after;
// with carry they go after, but those the packs and manifest carry.
func (p *prefetcher) Close(ctx context.Context) error {
	if !p.opts.carry {
		p.tier.Flush(nil)
	}
	p.stop()
	if err := p.misses.save(p.opts.missState, time.Now()); err != nil {
		// Deliberately swallowed: the next server learns the streak anew.
		p.log.Debug("miss predictor", "err", err)
	}
	name, m := p.writeOut(ctx)
	if p.opts.carry {
		p.tier.Flush(m.carried())
	}
	if err := p.recordLanded(name, m); err != nil {
		// Deliberately swallowed: the next server reads the manifests anew.
		p.log.Debug("recording landed manifests", "err", err)
	}
	return p.tier.Close(ctx)
}

// Started implements Observer: the prefetch begins, in the background
// (after the prefetch command's, if one is landing: see run).
func (p *prefetcher) Started() {
	if p.opts.claim == nil && p.opts.claimLock != "" {
		if w := watchPrefetchClaim(p.ctx, p.opts.claimLock, p.opts.claimPlan); w != nil {
			p.other.Store(w)
		}
	}
	go func() {
		defer close(p.done)
		if err := p.run(); err != nil && p.ctx.Err() == nil {
			// Deliberately swallowed: without a prefetch the build just
			// fetches as it goes.
			p.log.Debug("prefetch stopped", "err", err)
		}
	}()
}

// land runs the prefetch in the foreground, as the prefetch command does,
// until it is done or ctx ends, then closes the prefetcher (which records
// the manifests it landed in full).
func (p *prefetcher) land(ctx context.Context) error {
	p.Started()
	select {
	case <-p.done:
	case <-ctx.Done():
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), prefetchCloseWait)
	defer cancel()
	return p.Close(closeCtx)
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

// run reads the newest manifests and fetches their entries, but for those
// of manifests whose entries are local already (landedManifests). In a
// server that watches a prefetch command's claim, it starts once the claim
// ends (or stalls); in the prefetch command, it announces its plan.
func (p *prefetcher) run() error {
	if w := p.other.Load(); w != nil {
		p.log.Debug("prefetch: waiting for the prefetch command's landing")
		w.wait(p.ctx)
	}
	listed, err := p.list()
	if err != nil {
		return err
	}
	p.log.Debug("prefetch: manifests listed", "scope", p.opts.scope, "further", p.opts.readScopes, "listed", len(listed))
	own := 0
	for _, m := range listed {
		if !m.readOnly {
			if own == 0 {
				p.ownListed.Store(&m.name)
			}
			own++
		}
	}
	p.roomListed.Store(own < manifestsKept)
	infos := chooseManifests(listed, p.opts.job)
	ms := make([]manifest, len(infos))
	landed := make([]bool, len(infos))
	known := loadLandedManifests(p.opts.landed, time.Now(), p.tier.lastRemoval())
	atOnce(len(infos), func(i int) { // each is a round trip
		if ms[i], landed[i] = known.get(infos[i].name); landed[i] {
			return
		}
		b, err := p.manifests.GetManifest(p.ctx, infos[i].name)
		if err == nil { // else expired or written meanwhile: the others will do
			ms[i] = decodeManifest(b)
			ms[i].stampWritten(infos[i].time)
		}
	})
	var idx frameIndex // none without packs
	if p.opts.packs {
		idx = indexFrames(infos, ms)
	}
	p.noteRead(listed, infos, ms, idx)
	objects, ranges := p.plan(infos, ms, idx, landed)
	if p.opts.claim != nil {
		if err := p.opts.claim.announce(plannedIDs(objects, ranges)); err != nil {
			// Deliberately swallowed: the servers fetch what they need
			// themselves, as without a claim.
			p.log.Debug("prefetch: announcing the plan", "err", err)
		}
	}

	var whole, fetched []*manifestEntry
	for _, m := range objects {
		if m.inline {
			whole = append(whole, m)
		} else {
			fetched = append(fetched, m)
		}
	}
	p.mu.Lock()
	for _, m := range whole {
		p.whole[m.id] = m
	}
	p.mu.Unlock()

	p.room.Store(p.tier.prefetchRoom())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		p.each(p.ranges, len(ranges), func(i int) { p.fetchRange(ranges[i]) })
	}()
	go func() {
		defer wg.Done()
		for _, m := range whole {
			if p.ctx.Err() != nil {
				break
			}
			if p.take(int64(len(m.body))) {
				p.install(p.ctx, m)
			}
			p.mu.Lock()
			delete(p.whole, m.id)
			p.mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		p.each(p.objects, len(fetched), func(i int) {
			if p.take(1) { // a byte: fetch takes its size once known
				p.objects.observe(p.fetch(fetched[i].id))
			}
		})
	}()
	wg.Wait()
	if p.ctx.Err() == nil && !p.incomplete.Load() {
		read := make(map[string]manifest)
		for i, m := range ms {
			if m.entries != nil {
				read[infos[i].name] = withoutBodies(m) // kept until Close
			}
		}
		p.landedRead.Store(&read)
	}
	return nil
}

// recordLanded adds to the record of manifests whose entries are local
// (landedManifests) those the prefetch read and landed in full, and the
// manifest m this run wrote as name ("" if none); none if a trim or clear
// (another process's) removed entries since the server began: what it
// found local, landed, took for local from the record or used may be gone.
func (p *prefetcher) recordLanded(name string, m manifest) error {
	now := time.Now()
	removed := p.tier.lastRemoval()
	if removed.After(p.began) {
		return nil
	}
	known := loadLandedManifests(p.opts.landed, now, removed)
	added := false
	if read := p.landedRead.Load(); read != nil {
		for n, m := range *read {
			if !known.has(n) {
				known.add(n, m, now)
				added = true
			}
		}
	}
	if name != "" {
		known.add(name, m, now)
		added = true
	}
	if !added {
		return nil
	}
	return known.save(p.opts.landed)
}

// list lists the manifests of the prefetch's scope, each location's
// newest manifestsKept, then those of its further scopes (readScopes),
// each location's newest manifestsToRead, marked readOnly: this server
// never writes or deletes them. A further scope that cannot be listed is
// left out.
func (p *prefetcher) list() ([]manifestInfo, error) {
	scopes := append([]string{p.opts.scope}, p.opts.readScopes...)
	lists := make([][]manifestInfo, len(scopes))
	errs := make([]error, len(scopes))
	atOnce(len(scopes), func(i int) { // each is a round trip
		n := manifestsKept
		if i > 0 {
			n = manifestsToRead
		}
		lists[i], errs[i] = p.manifests.ListManifests(p.ctx, scopes[i], n)
	})
	if errs[0] != nil {
		return nil, errs[0]
	}
	listed := lists[0]
	for i, l := range lists[1:] {
		if errs[i+1] != nil {
			// Deliberately swallowed: the scope's own manifests will do.
			p.log.Debug("prefetch: cannot list a further scope", "scope", scopes[i+1], "err", errs[i+1])
			continue
		}
		for _, m := range l {
			m.readOnly = true
			listed = append(listed, m)
		}
	}
	return listed, nil
}

// chooseManifests returns the manifests a prefetch reads, of those listed
// (each location's and scope's newest first): of each location and scope,
// the newest manifestsToRead, and the others of their jobs (manifestJob)
// and of this server's own job, up to manifestsReadMax in all. A job of
// more go commands than manifestsToRead in one scope so has all its
// manifests read by the next, each of whose go commands then finds its
// run described and writes none; read by the newest alone, each would
// write one anew in every job, pushing the others out of the newest.
func chooseManifests(listed []manifestInfo, job string) []manifestInfo {
	jobs := make(map[string]map[string]bool) // by location and scope: the jobs read
	seen := make(map[string]int)
	for _, m := range listed {
		dir := siblingManifest(m.name, "")
		if jobs[dir] == nil {
			jobs[dir] = map[string]bool{job: true}
		}
		if seen[dir] < manifestsToRead {
			seen[dir]++
			jobs[dir][manifestJob(m.name)] = true
		}
	}
	var infos []manifestInfo
	chosen := make(map[string]int)
	for _, m := range listed {
		dir := siblingManifest(m.name, "")
		if chosen[dir] < manifestsToRead || chosen[dir] < manifestsReadMax && jobs[dir][manifestJob(m.name)] {
			chosen[dir]++
			infos = append(infos, m)
		}
	}
	return infos
}

// plan orders the work of a prefetch: the entries to install or fetch on
// their own, and the pack ranges to read, each in the order of first use.
// Each manifest lists its entries in the order its run first used them,
// and the runs of a scope are different go commands (go build, go test,
// ...) of which this one is not known. A job runs its go commands in the
// same order every time, and each lands what the prefetch brings before
// it exits for the next: so the manifests are taken in their job's order
// (jobStages), the first go command's of each job first, and those of one
// stage interleaved, so that whichever this is, what it wants first comes
// first; this location's manifests before the readOnly ones (of the
// locations and further scopes it reads). An entry is taken where the
// first manifest that names it puts it: whole if one carries it whole,
// else from a pack frame if one names it (any manifest's: a run packs
// only what recent packs do not hold), else as its own object. A frame is
// read once, however many manifests name it (idx: the frames of ms, none
// without packs); one none of whose entries is taken from it is not read.
// The entries of manifests already landed (landed[j]) are not taken.
func (p *prefetcher) plan(infos []manifestInfo, ms []manifest, idx frameIndex, landed []bool) (objects []*manifestEntry, ranges []*packRange) {
	packedIn := make(map[ActionID]*plannedFrame) // the first frame holding each
	for i := range ms {
		for j := range ms[i].entries {
			if e := &ms[i].entries[j]; packedIn[e.id] == nil {
				packedIn[e.id] = idx.frame(i, e)
			}
		}
	}
	// Own manifests first: a read location's (-s3-read-from) or a further
	// scope's describe other branches' or jobs' runs, less likely to be
	// this one's.
	var own, read []int
	for j := range ms {
		if landed[j] {
			continue
		}
		if infos[j].readOnly {
			read = append(read, j)
		} else {
			own = append(own, j)
		}
	}
	asObject := make(map[ActionID]*manifestEntry)
	inFrame := make(map[ActionID]bool)
	queued := make(map[*plannedFrame]bool)
	var wanted []*plannedFrame
	take := func(j int, m *manifestEntry) {
		if prev, ok := asObject[m.id]; ok {
			if m.inline && !prev.inline {
				*prev = *m // the same key, carried whole
			}
			return
		}
		f := idx.frame(j, m)
		if f == nil && !m.inline {
			f = packedIn[m.id] // another manifest's frame holds it (see writePacks)
		}
		switch {
		case m.inline || (f == nil && !inFrame[m.id]):
			// An entry carried whole is installed whole, even if a frame
			// holds it too.
			asObject[m.id] = m
			objects = append(objects, m)
		case f != nil && !inFrame[m.id]:
			inFrame[m.id] = true
			if !queued[f] {
				queued[f] = true
				wanted = append(wanted, f)
			}
		}
	}
	for _, group := range [][]int{own, read} {
		for _, stage := range jobStages(infos, group) {
			for i := 0; ; i++ {
				more := false
				for _, j := range stage {
					if i < len(ms[j].entries) {
						more = true
						take(j, &ms[j].entries[i])
					}
				}
				if !more {
					break
				}
			}
		}
	}
	return objects, planRanges(wanted)
}

// jobStages splits the manifests group (indexes into infos) into stages:
// stage k holds each job's k-th manifest, in the order written (its go
// commands' order), of each location and scope; each stage keeps group's
// order.
func jobStages(infos []manifestInfo, group []int) [][]int {
	byJob := make(map[string][]string) // the IDs of each job's manifests
	jobOf := func(j int) string { return siblingManifest(infos[j].name, manifestJob(infos[j].name)) }
	for _, j := range group {
		byJob[jobOf(j)] = append(byJob[jobOf(j)], manifestID(infos[j].name))
	}
	var stages [][]int
	for _, j := range group {
		ids := byJob[jobOf(j)]
		k := 0 // manifests of the job written before this one
		for _, id := range ids {
			if id < manifestID(infos[j].name) {
				k++
			}
		}
		for len(stages) <= k {
			stages = append(stages, nil)
		}
		stages[k] = append(stages[k], j)
	}
	return stages
}

// plannedIDs returns the entries of a plan.
func plannedIDs(objects []*manifestEntry, ranges []*packRange) []ActionID {
	ids := make([]ActionID, 0, len(objects))
	for _, m := range objects {
		ids = append(ids, m.id)
	}
	for _, r := range ranges {
		for _, m := range r.entries {
			ids = append(ids, m.id)
		}
	}
	return ids
}

// atOnce calls do(0), ..., do(n-1), all at once, and returns when every
// call has.
func atOnce(n int, do func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			do(i)
		}()
	}
	wg.Wait()
}

// each calls do(0), ..., do(n-1), in order, with as many calls at once as
// limit allows, until the prefetch stops. do tells limit what it observed.
func (p *prefetcher) each(limit *flowLimit, n int, do func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		if limit.acquire(p.ctx) != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer limit.release()
			do(i)
		}()
	}
	wg.Wait()
}

// manifestsSeen is what a prefetch read: the keys of each manifest it
// read, when the newest of them was written, and what their packs hold
// that this run's packs need not hold again.
type manifestsSeen struct {
	keys   []map[ActionID]struct{}
	newest time.Time
	cover  packCover
}

// packCover is what the packs of the manifests a run read hold, as its own
// packs may use it (see writePacks).
type packCover struct {
	// elsewhere: entries that the packs of readOnly manifests (of read
	// locations and further scopes) hold. This run's manifest names them
	// as objects: the next prefetch of this scope reads those manifests
	// too (this run's manifest never pushes them out of its reading) and
	// takes them from their packs.
	elsewhere map[ActionID]bool
	// frames: entries that frames of this location's packs hold, owned by
	// one of its newest packCovering manifests. This run's manifest refers
	// to those frames.
	frames map[ActionID]*plannedFrame
	// whole: entries that readOnly manifests carry whole. This run's
	// manifest names them without their bodies, as it does the elsewhere
	// ones, and the next prefetch installs them from those manifests: a
	// pull request's manifest carries only what its base's do not, so it
	// is encoded and stored in a fraction of the time, at the exit of each
	// of its go commands.
	whole map[ActionID]bool
}

// packCovering: a run refers to frames of packs that belong to the newest
// packCovering manifests of its location (listed, whether read or not),
// and packs the entries of older ones again. A manifest a prefetch reads
// is among the newest manifestsReadMax, so the packs it refers to belong
// to the newest packCovering+manifestsReadMax, which are still kept, with
// room for manifestsToRead written meanwhile.
const packCovering = manifestsKept - manifestsReadMax - manifestsToRead

// noteRead records what the manifests infos (the newest of those listed,
// read into ms, their frames idx) named, if every one of them was read.
func (p *prefetcher) noteRead(listed, infos []manifestInfo, ms []manifest, idx frameIndex) {
	r := &manifestsSeen{cover: packCover{elsewhere: make(map[ActionID]bool), frames: make(map[ActionID]*plannedFrame), whole: make(map[ActionID]bool)}}
	for _, m := range infos {
		if m.time.IsZero() {
			return
		}
		if m.time.After(r.newest) {
			r.newest = m.time
		}
	}
	for _, m := range ms {
		if m.entries == nil {
			return // unreadable: this run's manifest is written
		}
		r.keys = append(r.keys, m.keySet())
	}
	age := make(map[string]int) // of this location's manifests, by ID: 0 the newest
	for _, m := range listed {
		if !m.readOnly {
			age[manifestID(m.name)] = len(age)
		}
	}
	for i, m := range ms {
		for j := range m.entries {
			e := &m.entries[j]
			if e.inline && infos[i].readOnly {
				r.cover.whole[e.id] = true
			}
			f := idx.frame(i, e)
			switch {
			case f == nil || r.cover.frames[e.id] != nil:
			case infos[i].readOnly:
				r.cover.elsewhere[e.id] = true
			default:
				if a, ok := age[manifestID(f.key.manifest)]; ok && a < packCovering {
					r.cover.frames[e.id] = f
				}
			}
		}
	}
	p.seen.Store(r)
}

// take reserves size bytes of the room the prefetch has to land entries
// in, and reports whether there was room (fetch takes an entry's size
// itself once it knows it). Without, the entry is not landed (the go
// command's get fetches it if it asks) and the prefetch is incomplete; the
// first time is logged.
func (p *prefetcher) take(size int64) bool {
	if p.room.Add(-size) >= 0 {
		return true
	}
	p.room.Add(size)
	p.incomplete.Store(true)
	p.noRoom.Do(func() {
		// Deliberately swallowed: the build fetches what it asks for.
		p.log.Warn("prefetch stops landing entries: it leaves the local cache's file system 1 GiB free for the build, which fetches what it asks for")
	})
	return false
}

// install stores an entry a manifest carries, under ctx, unless it is
// local or being fetched already.
func (p *prefetcher) install(ctx context.Context, m *manifestEntry) {
	if _, err := p.tier.localEntry(m.id); err == nil {
		return
	}
	size := int64(len(m.body))
	e, stored, err := p.tier.putShared(ctx, m.id, m.outputID, size, m.written, bytes.NewReader(m.body))
	switch {
	case !stored:
		// A get got there first.
	case err == nil:
		p.prefetched.add(m.id)
		p.stats.PrefetchObjects.Add(1)
		p.stats.PrefetchWhole.Add(1)
		p.stats.PrefetchBytes.Add(e.Size)
	default:
		p.incomplete.Store(true)
		if errors.Is(err, errVerify) {
			p.stats.VerifyFailures.Add(1)
		}
	}
}

// fetch prefetches one entry unless it is local or already being fetched.
// It returns how long the request took and whether it failed for overload
// (for flowLimit.observe; 0 and false if it says nothing of the remote).
func (p *prefetcher) fetch(id ActionID) (took time.Duration, overloaded bool) {
	if _, err := p.tier.localEntry(id); err == nil {
		return 0, false
	}
	start := time.Now()
	e, fetched, err := p.tier.fetchShared(p.ctx, id)
	switch {
	case !fetched:
		// A get got there first.
		return 0, false
	case err == nil:
		p.room.Add(-e.Size)
		p.prefetched.add(id)
		p.stats.PrefetchObjects.Add(1)
		p.stats.PrefetchBytes.Add(e.Size)
	case errors.Is(err, ErrNotFound) && p.ctx.Err() == nil:
		p.stats.PrefetchMisses.Add(1)
	case overloadedBy(err):
		p.incomplete.Store(true)
		return time.Since(start), true
	case p.ctx.Err() != nil || !errors.Is(err, ErrNotFound):
		p.incomplete.Store(true)
		return 0, false // says nothing of the remote's load
	}
	return time.Since(start), false
}

// overloadedBy reports whether err says the remote is overloaded: a
// timeout, or a request to slow down.
func overloadedBy(err error) bool {
	k := errKind(err)
	return k == KindTimeout || k == KindThrottled
}

// fetchRange reads one range of a pack and lands its entries in the local
// tier as they arrive; gets of them wait meanwhile (see Get). Entries it
// does not land (the range failed, broke off, or a body did not verify)
// are fetched on their own. How long the range took to begin tells
// p.ranges how the remote is doing.
func (p *prefetcher) fetchRange(r *packRange) {
	var todo []*manifestEntry
	p.mu.Lock()
	for _, e := range r.entries {
		if _, ok := p.landing[e.id]; ok {
			continue
		}
		if _, err := p.tier.localEntry(e.id); err == nil || !p.take(e.size) {
			continue
		}
		p.landing[e.id] = make(chan struct{})
		todo = append(todo, e)
	}
	p.mu.Unlock()
	done := func(e *manifestEntry) {
		p.mu.Lock()
		if w, ok := p.landing[e.id]; ok {
			close(w)
			delete(p.landing, e.id)
		}
		p.mu.Unlock()
	}
	var left []*manifestEntry // not landed: fetched on their own
	defer func() {
		for _, e := range todo {
			done(e) // any the range did not reach
		}
		for _, e := range left {
			p.room.Add(e.size) // fetch takes it again
		}
		p.fetchAlone(left)
	}()
	if len(todo) == 0 {
		return
	}
	start := time.Now()
	p.stats.PackRanges.Add(1)
	body, err := p.manifests.GetPackRange(p.ctx, r.manifest, r.pack, r.off, r.n)
	switch {
	case err == nil:
		p.ranges.observe(time.Since(start), false)
	case overloadedBy(err):
		p.ranges.observe(time.Since(start), true)
	}
	if err != nil {
		left = todo
		return
	}
	defer body.Close()
	mine := make(map[*manifestEntry]bool, len(todo))
	for _, e := range todo {
		mine[e] = true
	}
	unreached, err := readPackRange(r, body, func(e *manifestEntry, body io.Reader) {
		if !mine[e] {
			return
		}
		mine[e] = false // seen to here, even if the range breaks off in its body
		if !p.landFromPack(e, body) {
			left = append(left, e)
		}
		done(e)
	})
	if err != nil {
		p.log.Debug("pack range broke off; its entries are fetched on their own", "pack", r.pack, "manifest", r.manifest, "err", err)
		for _, e := range unreached {
			if mine[e] {
				left = append(left, e)
			}
		}
		if overloadedBy(err) {
			p.ranges.observe(0, true)
		}
	}
}

// landFromPack stores an entry's body from a pack, unless it is local or
// being fetched already. It reports false if the body did not verify, or
// did not arrive whole.
func (p *prefetcher) landFromPack(m *manifestEntry, body io.Reader) bool {
	if _, err := p.tier.localEntry(m.id); err == nil {
		return true
	}
	e, stored, err := p.tier.putShared(p.ctx, m.id, m.outputID, m.size, m.written, body)
	switch {
	case !stored:
		return true // a get got there first
	case err == nil:
		p.prefetched.add(m.id)
		p.stats.PrefetchObjects.Add(1)
		p.stats.PackEntries.Add(1)
		p.stats.PrefetchBytes.Add(e.Size)
		p.stats.RemoteBytesDown.Add(e.Size)
		return true
	case errors.Is(err, errVerify):
		p.stats.VerifyFailures.Add(1)
	}
	return false
}

// fetchAlone fetches entries a pack did not deliver as their own objects,
// within the objects' flow limit.
func (p *prefetcher) fetchAlone(entries []*manifestEntry) {
	if len(entries) == 0 || p.ctx.Err() != nil {
		return
	}
	p.stats.PackFallbacks.Add(int64(len(entries)))
	p.each(p.objects, len(entries), func(i int) { p.objects.observe(p.fetch(entries[i].id)) })
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
	p.stats.PrefetchInFlight.Store(int64(p.objects.limit()))
}

// writeOut stores this run's packs and manifest, unless the server is
// read-only, nothing was used, the remote is failing (the breaker refuses),
// or a manifest read describes the run already. It returns the manifest
// stored (empty if none) and its name as ListManifests would return it (""
// if none was stored, or if the listing showed no sibling to name it by).
func (p *prefetcher) writeOut(ctx context.Context) (name string, m manifest) {
	ids := p.used.list()
	if !p.opts.upload || len(ids) == 0 || p.named(ids) {
		return "", manifest{}
	}
	var cover packCover
	if r := p.seen.Load(); r != nil {
		cover = r.cover
	}
	m = manifest{entries: p.manifestEntries(ids, cover)}
	id := newManifestID(time.Now(), p.opts.job)
	if p.opts.packs && p.stats.UploadsDropped.Load() == 0 {
		// (Not when uploads were dropped for a full queue: the remote is
		// behind already.)
		m = p.writePacks(ctx, id, m.entries, cover)
	}
	if err := p.writeManifest(ctx, id, m); err != nil {
		// Deliberately swallowed: the next machine just prefetches less.
		p.log.Debug("writing prefetch manifest", "err", err)
		return "", manifest{}
	}
	if sibling := p.ownListed.Load(); sibling != nil {
		return siblingManifest(*sibling, id), m
	}
	return "", m
}

// named reports whether one of the recent manifests this run read already
// describes it: it names all of ids but at most one in a hundred, and at
// most a tenth more. Then a manifest of this run would add next to
// nothing. The few keys it may leave out are mostly new in every run
// (those of a test the go command never caches, say), so writing a
// manifest for them, on the go command's exit, would buy nothing; the
// entries of an edit that small are fetched on their own if a later run
// wants them. (A manifest naming many more, say of a cold build that also
// linked what this run found cached, is replaced by this run's, so that
// the next prefetch fetches less in vain.)
func (p *prefetcher) named(ids []ActionID) bool {
	r := p.seen.Load()
	if r == nil || time.Since(r.newest) > manifestRefresh {
		return false
	}
	distinct := make(map[ActionID]struct{}, len(ids))
	for _, id := range ids {
		distinct[id] = struct{}{}
	}
	slack := len(distinct) / 100 // keys a manifest may leave out
next:
	for _, keys := range r.keys {
		if len(keys) > len(distinct)+len(distinct)/10 {
			continue
		}
		unnamed := 0
		for id := range distinct {
			if _, ok := keys[id]; !ok {
				if unnamed++; unnamed > slack {
					continue next
				}
			}
		}
		return true
	}
	return false
}

// manifestEntries returns the manifest of ids: the small entries that are
// in the local cache whole (up to inlineBudget bytes of them), unless a
// readOnly manifest carries them whole (cover.whole), the others as keys.
func (p *prefetcher) manifestEntries(ids []ActionID, cover packCover) []manifestEntry {
	entries := make([]manifestEntry, len(ids))
	budget := int64(inlineBudget)
	for i, id := range ids {
		entries[i].id = id
		if cover.whole[id] {
			continue
		}
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

// writePacks stores the packs of entries that the manifest does not carry
// whole, that no recent pack holds already (cover) and that are in the
// local cache (up to packRunMax bytes of them, in order), and returns the
// manifest of entries: each entry a recent frame of this location holds is
// named in that frame (referred to, not packed again), each newly packed
// one in its frame of the new packs, the rest as they are. A frame's
// entries are listed together, in its order, where the first of them was
// used. The packs are stored as they fill, packUploadsAtOnce at a time;
// the entries of a pack that failed to store are named as objects.
func (p *prefetcher) writePacks(ctx context.Context, id string, entries []manifestEntry, cover packCover) manifest {
	type upload struct {
		i    int
		data []byte
	}
	uploads := make(chan upload, 1)
	var mu sync.Mutex
	failed := make(map[int]bool)
	var wg sync.WaitGroup
	for range packUploadsAtOnce {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range uploads {
				err := p.manifests.PutPack(ctx, p.opts.scope, id, u.i, u.data)
				if err == nil {
					p.stats.PacksWritten.Add(1)
					p.stats.PackBytesUp.Add(int64(len(u.data)))
					continue
				}
				// Deliberately swallowed: its entries are named without it.
				p.log.Debug("writing prefetch pack", "pack", u.i, "err", err)
				mu.Lock()
				failed[u.i] = true
				mu.Unlock()
			}
		}()
	}
	b := packBuilder{
		emit:        func(i int, data []byte) { uploads <- upload{i, data} },
		compressors: runtime.GOMAXPROCS(0),
	}
	var total int64
	for i := range entries {
		m := &entries[i]
		if m.inline || cover.whole[m.id] || cover.elsewhere[m.id] || cover.frames[m.id] != nil || ctx.Err() != nil {
			continue
		}
		e, err := p.tier.localEntry(m.id)
		if err != nil || e.Size == 0 || e.Size > packEntryMax || total+e.Size > packRunMax {
			continue
		}
		frame, err := addFile(&b, e)
		if err != nil {
			continue // trimmed or replaced meanwhile: fetched on its own
		}
		total += e.Size
		m.packed, m.outputID, m.size, m.frame = true, e.OutputID, e.Size, frame
	}
	newFrames := b.finish()
	close(uploads)
	wg.Wait()

	var out manifest
	byFrame := make(map[int][]manifestEntry) // the new frames' entries
	for _, m := range entries {
		if m.packed {
			byFrame[m.frame] = append(byFrame[m.frame], m)
		}
	}
	listed := make(map[int]bool)             // new frames named
	referred := make(map[*plannedFrame]bool) // recent frames named, or found to hold an ID named already
	named := make(map[ActionID]bool)         // IDs the manifest lists so far
	addFrame := func(f packFrame, fes []manifestEntry) {
		for _, e := range fes {
			e.packed, e.frame = true, len(out.frames)
			named[e.id] = true
			out.entries = append(out.entries, e)
		}
		out.frames = append(out.frames, f)
	}
	for _, m := range entries {
		if named[m.id] {
			continue // listed with a frame that holds it
		}
		cf := cover.frames[m.id]
		switch {
		case m.packed && (m.frame >= len(newFrames) || failed[newFrames[m.frame].pack]):
			m.packed = false
			named[m.id] = true
			out.entries = append(out.entries, m)
		case m.packed:
			if !listed[m.frame] {
				listed[m.frame] = true
				addFrame(newFrames[m.frame], byFrame[m.frame])
			}
		case cf != nil && !referred[cf]:
			// Looked at once: named only grows, so a frame that holds
			// an ID named already always will, and its entries are
			// listed as they are (default).
			referred[cf] = true
			if !slices.ContainsFunc(cf.entries, func(e *manifestEntry) bool { return named[e.id] }) {
				fes := make([]manifestEntry, len(cf.entries))
				for k, e := range cf.entries {
					fes[k] = *e
				}
				addFrame(cf.ref(), fes)
				break
			}
			fallthrough
		default:
			named[m.id] = true
			out.entries = append(out.entries, m)
		}
	}
	return out
}

// addFile adds the body of the local entry e to b and returns its frame.
// It fails if the file is gone or is not e.Size bytes long.
func addFile(b *packBuilder, e Entry) (int, error) {
	f, err := os.Open(e.DiskPath)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() != e.Size {
		return 0, fmt.Errorf("pack %s: not a body of %d bytes", e.DiskPath, e.Size)
	}
	return b.add(f, e.Size)
}

// writeManifest stores m as the new manifest id and deletes the oldest
// ones beyond manifestsKept, with their packs, unless the listing at the
// start showed room for it (a round trip saved on the go command's exit).
func (p *prefetcher) writeManifest(ctx context.Context, id string, m manifest) error {
	obj, err := encodeManifestObject(m)
	if err != nil {
		return err
	}
	if err := p.manifests.PutManifest(ctx, p.opts.scope, id, obj); err != nil {
		return err
	}
	if p.roomListed.Load() {
		return nil
	}
	all, err := p.manifests.ListManifests(ctx, p.opts.scope, -1)
	if err != nil {
		return err
	}
	// Only this server's own (the write location's), newest first.
	all = slices.DeleteFunc(all, func(m manifestInfo) bool { return m.readOnly })
	if len(all) <= manifestsKept {
		return nil
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
