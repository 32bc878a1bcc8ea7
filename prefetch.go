package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
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
// stored (a manifest), and uploads it at exit. The next server of the same
// scope, right after its capabilities line, downloads the newest manifests
// and fetches their entries into the local tier with many requests in
// flight, while the build is already running. A get for an entry being
// prefetched waits for that fetch (the local tier's one-fetch-per-key
// rule); a get for an entry not reached yet is fetched at once.
//
// Manifests live in the bucket next to the entries:
//
//	<prefix>v1/m/<scope>/<unix ns, 19 digits>-<random>   "gbcm1\n" + 32-byte action IDs,
//	                                                      in the order the run first used them
//
// The newest manifestsKept of a scope are kept; older ones are deleted by
// the server that uploads a new one.

const (
	manifestMagic     = "gbcm1\n"
	manifestsRead     = 4 // newest manifests a prefetch reads
	manifestsKept     = 8 // newest manifests kept per scope
	maxManifestIDs    = 1 << 20
	prefetchCloseWait = 2 * time.Second
)

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

	used       *keySet // looked up and found, or stored: the next manifest
	requested  *keySet // every key a get asked for
	prefetched *keySet // fetched by the prefetch

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
	keys, err := p.manifestKeys(p.ctx, manifestsRead)
	p.observed(p.ctx, err)
	if err != nil {
		return err
	}
	// Each manifest lists its entries in the order its run first used
	// them, and the runs of a scope are different go commands (go build,
	// go test, ...) of which this one is not known: interleave them, so
	// that whichever this is, what it wants first is fetched first.
	lists := make([][][idLen]byte, len(keys))
	var mwg sync.WaitGroup
	for i, k := range keys { // at once: each is a round trip
		mwg.Add(1)
		go func() {
			defer mwg.Done()
			b, err := p.s3.getObject(p.ctx, k, 32<<20)
			p.observed(p.ctx, err)
			if err == nil { // else expired or written meanwhile: the others will do
				lists[i] = parseManifest(b)
			}
		}()
	}
	mwg.Wait()
	ids := newKeySet()
	for i := 0; ; i++ {
		more := false
		for _, l := range lists {
			if i < len(l) {
				ids.add(l[i][:])
				more = true
			}
		}
		if !more {
			break
		}
	}
	work := make(chan [idLen]byte)
	var wg sync.WaitGroup
	for range p.parallelism {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				p.fetch(id)
			}
		}()
	}
	for _, id := range ids.list() {
		select {
		case work <- id:
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
	if !p.upload || len(ids) == 0 || (p.healthy != nil && !p.healthy()) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, p.s3.timeout)
	defer cancel()
	err := p.writeManifest(ctx, ids)
	p.observed(ctx, err)
	if err != nil {
		// Deliberately swallowed: the next machine just prefetches less.
		p.log.Debug("writing prefetch manifest", "err", err)
	}
}

// writeManifest uploads ids as a new manifest and deletes the oldest ones
// beyond manifestsKept.
func (p *prefetcher) writeManifest(ctx context.Context, ids [][idLen]byte) error {
	var buf bytes.Buffer
	buf.WriteString(manifestMagic)
	for _, id := range ids {
		buf.Write(id[:])
	}
	key := fmt.Sprintf("%s%019d-%s", p.manifestDir(), time.Now().UnixNano(), randomSuffix())
	if err := p.s3.putObject(ctx, key, buf.Bytes()); err != nil {
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

// parseManifest returns the action IDs of a manifest, none if it is not
// one.
func parseManifest(b []byte) [][idLen]byte {
	rest, ok := bytes.CutPrefix(b, []byte(manifestMagic))
	if !ok || len(rest)%idLen != 0 || len(rest)/idLen > maxManifestIDs {
		return nil
	}
	ids := make([][idLen]byte, 0, len(rest)/idLen)
	for ; len(rest) > 0; rest = rest[idLen:] {
		ids = append(ids, [idLen]byte(rest[:idLen]))
	}
	return ids
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
