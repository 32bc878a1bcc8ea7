package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Prefetch hides the remote's latency from a fresh machine.
//
// The go command asks for one entry at a time, with only about as many
// requests in flight as the machine has cores, so a machine with an empty
// local cache pays roughly (entries × round trip) / cores. Instead, each
// server records which action IDs its go command looked up and found, or
// stored (a manifest), and uploads it at exit, unless a manifest it read
// already describes the run (see named). The next server of the same
// scope, right after its capabilities line, downloads the newest manifests,
// installs the small entries they carry whole, and fetches the others into
// the local tier with many requests in flight, while the build is already
// running. A get for an entry being
// prefetched waits for that fetch (the local tier's one-fetch-per-key
// rule); a get for an entry not reached yet is fetched at once.
//
// Manifests live in the bucket next to the entries:
//
//	<prefix>v1/m/<scope>/<unix ns, 19 digits>-<random>   a zstd frame of a manifest
//
// A manifest lists the run's action IDs in the order the run first used
// them, and carries the small entries whole, so that a fresh machine gets
// most entries (by count) in one request instead of one request each:
//
//	"gbcm2\n", then per action ID one record:
//	  'k' <action ID>                                  fetch it from the bucket
//	  'e' <action ID> <output ID> <size, 4 bytes BE> <body>   the entry itself (size <= inlineMax)
//
// Bodies from a manifest are verified against their output ID like any
// other. Manifests of older versions, "gbcm1\n" + 32-byte action IDs, not
// compressed, are read too.
//
// The newest manifestsKept of a scope are kept; older ones are deleted by
// the server that uploads a new one.

const (
	manifestMagicV1   = "gbcm1\n"
	manifestMagic     = "gbcm2\n"
	manifestsToRead   = 4 // newest manifests a prefetch reads
	manifestsKept     = 8 // newest manifests kept per scope
	maxManifestIDs    = 1 << 20
	maxManifestSize   = 64 << 20 // decoded
	inlineMax         = 64 << 10 // largest body a manifest carries
	inlineBudget      = 8 << 20  // body bytes one manifest carries at most
	prefetchCloseWait = 2 * time.Second
	// manifestRefresh: a run whose entries the manifests it read already
	// name writes none, unless the newest of them is older than this, so
	// that a scope's manifests are renewed daily (a lifecycle rule that
	// expires old objects never leaves a busy scope without one).
	manifestRefresh = 24 * time.Hour
)

// manifestsSeen is what a prefetch read: the keys of each manifest it
// listed, and when the newest of them was written.
type manifestsSeen struct {
	keys   []map[[idLen]byte]struct{}
	newest time.Time
}

// manifestEntry is one action ID of a manifest, with its entry if the
// manifest carries it.
type manifestEntry struct {
	id       [idLen]byte
	inline   bool
	outputID [idLen]byte
	body     []byte
}

// keySet is a concurrent set of action IDs that remembers the order in
// which they were first added.
type keySet struct {
	mu    sync.Mutex
	keys  map[[idLen]byte]struct{}
	order [][idLen]byte
}

func newKeySet() *keySet { return &keySet{keys: make(map[[idLen]byte]struct{})} }

func (s *keySet) add(id []byte) {
	if len(id) != idLen {
		return
	}
	k := [idLen]byte(id)
	s.mu.Lock()
	if _, ok := s.keys[k]; !ok {
		s.keys[k] = struct{}{}
		s.order = append(s.order, k)
	}
	s.mu.Unlock()
}

func (s *keySet) has(id [idLen]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.keys[id]
	return ok
}

// list returns the IDs in the order they were first added.
func (s *keySet) list() [][idLen]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.order)
}

// prefetcher runs the prefetch of one server and records its manifest.
type prefetcher struct {
	tier        *localTier
	s3          *S3Backend // manifests are S3 objects
	scope       string
	parallelism int
	upload      bool                                 // write a manifest at exit (not with -read-only)
	healthy     func() bool                          // whether the remote is usable (the breaker is closed)
	observe     func(ctx context.Context, err error) // accounts for a remote request made here
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

func newPrefetcher(tier *localTier, s3b *S3Backend, scope string, parallelism int, upload bool, stats *Stats, log *slog.Logger) *prefetcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &prefetcher{
		tier: tier, s3: s3b, scope: scope, parallelism: max(parallelism, 1), upload: upload, stats: stats, log: log,
		used: newKeySet(), requested: newKeySet(), prefetched: newKeySet(),
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
}

func (p *prefetcher) manifestDir() string {
	return p.s3.prefix + s3LayoutVersion + "/m/" + p.scope + "/"
}

// start begins the prefetch in the background.
func (p *prefetcher) start() {
	go func() {
		defer close(p.done)
		if err := p.run(); err != nil && p.ctx.Err() == nil {
			// Deliberately swallowed: without a prefetch the build just
			// fetches as it goes.
			p.log.Debug("prefetch stopped", "err", err)
		}
	}()
}

// run reads the newest manifests and fetches their entries.
func (p *prefetcher) run() error {
	if p.healthy != nil && !p.healthy() {
		return nil
	}
	keys, err := p.manifestKeys(p.ctx, manifestsToRead)
	p.observed(p.ctx, err)
	if err != nil {
		return err
	}
	// Each manifest lists its entries in the order its run first used
	// them, and the runs of a scope are different go commands (go build,
	// go test, ...) of which this one is not known: interleave them, so
	// that whichever this is, what it wants first is fetched first.
	lists := make([][]manifestEntry, len(keys))
	var mwg sync.WaitGroup
	for i, k := range keys { // at once: each is a round trip
		mwg.Add(1)
		go func() {
			defer mwg.Done()
			b, err := p.s3.getObject(p.ctx, k, 32<<20)
			p.observed(p.ctx, err)
			if err == nil { // else expired or written meanwhile: the others will do
				lists[i] = decodeManifest(b)
			}
		}()
	}
	mwg.Wait()
	p.noteRead(keys, lists)
	var order []*manifestEntry
	byID := make(map[[idLen]byte]*manifestEntry)
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

// noteRead records what the manifests at keys (newest first) named, if
// every one of them was read.
func (p *prefetcher) noteRead(keys []string, lists [][]manifestEntry) {
	r := &manifestsSeen{}
	if len(keys) > 0 {
		name := strings.TrimPrefix(keys[0], p.manifestDir())
		if len(name) < 19 {
			return
		}
		ns, err := strconv.ParseInt(name[:19], 10, 64)
		if err != nil {
			return
		}
		r.newest = time.Unix(0, ns)
	}
	for _, l := range lists {
		if l == nil {
			return // unreadable: this run's manifest is written
		}
		set := make(map[[idLen]byte]struct{}, len(l))
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
	if _, err := p.tier.local.getLocal(m.id[:]); err == nil {
		return
	}
	e, stored, err := p.tier.putShared(p.ctx, m.id[:], m.outputID[:], m.body)
	switch {
	case !stored:
		// A get got there first.
	case err == nil:
		p.prefetched.add(m.id[:])
		p.stats.PrefetchObjects.Add(1)
		p.stats.PrefetchWhole.Add(1)
		p.stats.PrefetchBytes.Add(e.Size)
	case errors.Is(err, errVerify):
		p.stats.VerifyFailures.Add(1)
	}
}

// fetch prefetches one entry unless it is local or already being fetched.
func (p *prefetcher) fetch(id [idLen]byte) {
	if _, err := p.tier.local.getLocal(id[:]); err == nil {
		return
	}
	e, fetched, err := p.tier.fetchShared(p.ctx, id[:])
	switch {
	case !fetched:
		// A get got there first.
	case err == nil:
		p.prefetched.add(id[:])
		p.stats.PrefetchObjects.Add(1)
		p.stats.PrefetchBytes.Add(e.Size)
	case errors.Is(err, ErrNotFound) && p.ctx.Err() == nil:
		p.stats.PrefetchMisses.Add(1)
	}
}

func (p *prefetcher) observed(ctx context.Context, err error) {
	if p.observe != nil {
		p.observe(ctx, err)
	}
}

// stop ends the prefetch (waiting at most prefetchCloseWait for fetches in
// flight) and counts what it fetched in vain.
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

// writeOut uploads this run's manifest, unless the server is read-only,
// nothing was used, or the remote is failing.
func (p *prefetcher) writeOut(ctx context.Context) {
	ids := p.used.list()
	if !p.upload || len(ids) == 0 || (p.healthy != nil && !p.healthy()) || p.named(ids) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, p.s3.timeout)
	defer cancel()
	err := p.writeManifest(ctx, p.manifestEntries(ids))
	p.observed(ctx, err)
	if err != nil {
		// Deliberately swallowed: the next machine just prefetches less.
		p.log.Debug("writing prefetch manifest", "err", err)
	}
}

// named reports whether one of the recent manifests this run read already
// describes it: it names every one of ids, and at most a tenth more. Then a
// manifest of this run would add nothing. (A manifest naming many more, say
// of a cold build that also linked what this run found cached, is replaced
// by this run's, so that the next prefetch fetches less in vain.)
func (p *prefetcher) named(ids [][idLen]byte) bool {
	r := p.seen.Load()
	if r == nil || time.Since(r.newest) > manifestRefresh {
		return false
	}
	distinct := make(map[[idLen]byte]struct{}, len(ids))
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
func (p *prefetcher) manifestEntries(ids [][idLen]byte) []manifestEntry {
	entries := make([]manifestEntry, len(ids))
	budget := int64(inlineBudget)
	for i, id := range ids {
		entries[i].id = id
		e, err := p.tier.local.getLocal(id[:])
		if err != nil || e.Size > inlineMax || e.Size > budget {
			continue
		}
		body, err := os.ReadFile(e.DiskPath)
		if err != nil || int64(len(body)) != e.Size {
			continue // trimmed or replaced meanwhile: fetched on its own
		}
		entries[i].inline, entries[i].outputID, entries[i].body = true, [idLen]byte(e.OutputID), body
		budget -= e.Size
	}
	return entries
}

// writeManifest uploads entries as a new manifest and deletes the oldest
// ones beyond manifestsKept.
func (p *prefetcher) writeManifest(ctx context.Context, entries []manifestEntry) error {
	var frame bytes.Buffer
	if err := zstdTo(&frame, bytes.NewReader(encodeManifest(entries))); err != nil {
		return err
	}
	key := fmt.Sprintf("%s%019d-%s", p.manifestDir(), time.Now().UnixNano(), randomSuffix())
	if err := p.s3.putObject(ctx, key, frame.Bytes()); err != nil {
		return err
	}
	old, err := p.manifestKeys(ctx, -1)
	if err != nil || len(old) <= manifestsKept {
		return err
	}
	var objs []types.ObjectIdentifier
	for _, k := range old[manifestsKept:] {
		objs = append(objs, types.ObjectIdentifier{Key: aws.String(k)})
	}
	_, err = p.s3.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &p.s3.bucket, Delete: &types.Delete{Objects: objs, Quiet: aws.Bool(true)}})
	return err
}

// manifestKeys lists the scope's manifests, newest first, at most n (all if
// n < 0). Listings of directory buckets are unordered: sort by name, which
// starts with the time.
func (p *prefetcher) manifestKeys(ctx context.Context, n int) ([]string, error) {
	var keys []string
	dir := p.manifestDir()
	pages := s3.NewListObjectsV2Paginator(p.s3.client, &s3.ListObjectsV2Input{Bucket: &p.s3.bucket, Prefix: &dir})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	slices.Sort(keys)
	slices.Reverse(keys)
	if n >= 0 && len(keys) > n {
		keys = keys[:n]
	}
	return keys, nil
}

// encodeManifest returns the manifest of entries, before compression.
func encodeManifest(entries []manifestEntry) []byte {
	var b bytes.Buffer
	b.WriteString(manifestMagic)
	for _, m := range entries {
		if !m.inline {
			b.WriteByte('k')
			b.Write(m.id[:])
			continue
		}
		b.WriteByte('e')
		b.Write(m.id[:])
		b.Write(m.outputID[:])
		b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(m.body))))
		b.Write(m.body)
	}
	return b.Bytes()
}

// decodeManifest returns the entries of a manifest object as stored in the
// bucket, none if it is not one.
func decodeManifest(obj []byte) []manifestEntry {
	if bytes.HasPrefix(obj, []byte(manifestMagicV1)) {
		return parseManifest(obj)
	}
	d := getZstdDecoder(bytes.NewReader(obj))
	if d == nil {
		return nil
	}
	defer zstdDecoders.Put(d)
	b, err := io.ReadAll(io.LimitReader(d, maxManifestSize+1))
	if err != nil || len(b) > maxManifestSize {
		return nil
	}
	return parseManifest(b)
}

// parseManifest returns the entries of a decoded manifest (either version),
// none if it is not one. Nothing in it is trusted: a record that does not
// fit rejects the whole manifest.
func parseManifest(b []byte) []manifestEntry {
	if rest, ok := bytes.CutPrefix(b, []byte(manifestMagicV1)); ok {
		if len(rest)%idLen != 0 || len(rest)/idLen > maxManifestIDs {
			return nil
		}
		entries := make([]manifestEntry, 0, len(rest)/idLen)
		for ; len(rest) > 0; rest = rest[idLen:] {
			entries = append(entries, manifestEntry{id: [idLen]byte(rest[:idLen])})
		}
		return entries
	}
	rest, ok := bytes.CutPrefix(b, []byte(manifestMagic))
	if !ok {
		return nil
	}
	var entries []manifestEntry
	for len(rest) > 0 {
		if len(entries) == maxManifestIDs || len(rest) < 1+idLen {
			return nil
		}
		tag := rest[0]
		m := manifestEntry{id: [idLen]byte(rest[1 : 1+idLen])}
		rest = rest[1+idLen:]
		switch tag {
		case 'k':
		case 'e':
			if len(rest) < idLen+4 {
				return nil
			}
			m.inline, m.outputID = true, [idLen]byte(rest[:idLen])
			size := binary.BigEndian.Uint32(rest[idLen:])
			rest = rest[idLen+4:]
			if size > inlineMax || uint64(size) > uint64(len(rest)) {
				return nil
			}
			m.body, rest = rest[:size:size], rest[size:]
		default:
			return nil
		}
		entries = append(entries, m)
	}
	return entries
}

var scopeUnsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// prefetchScope returns the manifest scope: the flag's value made safe for
// a key, or by default one derived from the working directory (the go
// command's, usually the checkout, which CI machines of one job share).
func prefetchScope(flag string) string {
	if flag != "" {
		s := strings.Trim(scopeUnsafe.ReplaceAllString(flag, "_"), "._")
		if len(s) > 100 {
			h := sha256.Sum256([]byte(flag))
			s = s[:80] + "-" + hex.EncodeToString(h[:8])
		}
		if s != "" {
			return s
		}
	}
	wd, _ := os.Getwd()
	h := sha256.Sum256([]byte(wd))
	return "dir-" + hex.EncodeToString(h[:8])
}

var randReader = rand.Reader

func randomSuffix() string {
	var b [6]byte
	if _, err := io.ReadFull(randReader, b[:]); err != nil {
		return "0"
	}
	return hex.EncodeToString(b[:])
}
