package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// breakerBackend adds a circuit breaker to a remote, and is where remote
// failures are accounted for: each is counted by kind (ErrKind, as the
// remote classified it), the first of each kind is logged, and latency and
// bytes moved are recorded. Manifest traffic goes through it too, counted
// the same way; it never probes, and is refused while the breaker is open.
//
// After breakerThreshold failures in a row, after two timeouts, or after one
// failure that retrying cannot fix (ErrKind.fatal: credentials,
// permissions, a missing bucket, a wrong region), the breaker opens: for a cooldown, requests fail at once without
// reaching the remote, so a dead or black-holed endpoint costs a build
// seconds, not a timeout per request. Then one get at a time probes the
// remote, in the background: the get that triggers a probe is answered
// with errBreakerOpen at once and the probe asks the remote for the same
// entry on its own, so a remote that still hangs costs the go command
// nothing (uploads never probe). A probe's success closes the breaker, its
// failure reopens it for twice as long.
//
// Each go command starts its own server, so an open breaker is also written
// to a marker file in the local cache directory, named for the remote: the
// next server on this machine starts with the remote disabled until then (at
// most breakerMarkerMax) instead of paying for the same failure again. A
// server that starts less than breakerSuspectFor after that time starts
// suspecting the remote: its first get probes it in the background and is
// answered as a miss at once, as are gets while the probe is out, so that a
// job's next go command does not wait on the timeouts the last one paid;
// any answer from the remote (a probe's, or the prefetch's listing, which
// goes ahead) ends the suspicion.
type breakerBackend struct {
	remote Remote
	stats  *Stats
	warn   *warnings
	now    func() time.Time
	marker string // path of the marker file; "" for none

	mu       sync.Mutex
	failures int       // in a row
	openTill time.Time // zero when closed
	cooldown time.Duration
	probing  bool
	suspect  bool // the marker's time passed a moment ago: gets probe first
	// probeCtx bounds the background probes; Close cancels it and waits
	// for them. After Close (closed) none starts: a prefetch that
	// outlived its wait may still ask.
	probeCtx    context.Context
	probeCancel context.CancelFunc
	probes      sync.WaitGroup
	closed      bool
	// writesOffTill stops uploads alone: writes were refused (a read-only
	// role without -read-only) while reads may still work.
	writesOffTill time.Time
}

var _ Remote = (*breakerBackend)(nil)

const (
	breakerThreshold   = 3
	breakerTimeouts    = 2 // in a row: one slow answer on a loaded machine is not an outage
	breakerCooldown    = 5 * time.Second
	breakerMaxCooldown = 2 * time.Minute
	// breakerBusyMaxCooldown bounds the pauses for a remote that answers
	// 503 (throttling, or a directory bucket waking up after 90 days
	// unused, which takes minutes): it is asked again this often.
	breakerBusyMaxCooldown = 15 * time.Second
	breakerFatalPause      = 10 * time.Minute
	breakerMarkerMax       = time.Minute
	// breakerSuspectFor: a server that starts less than this after a
	// marker's time starts suspecting the remote.
	breakerSuspectFor = 10 * time.Minute
)

// errBreakerOpen is returned while the breaker keeps requests away.
var errBreakerOpen = errors.New("remote cache disabled after errors")

// errWritesOff is returned for a write after the remote refused one, or
// found the write location's bucket missing: reads go on.
var errWritesOff = errors.New("remote cache writes off: a write was refused, or its bucket is missing")

func newBreakerBackend(remote Remote, stats *Stats, warn *warnings, marker string) *breakerBackend {
	b := &breakerBackend{remote: remote, stats: stats, warn: warn, now: time.Now, marker: marker, cooldown: breakerCooldown}
	b.probeCtx, b.probeCancel = context.WithCancel(context.Background())
	if till, kind, ok := readBreakerMarker(marker); ok {
		now := b.now()
		// A marker is never for longer than breakerMarkerMax: one further
		// ahead (its writer's clock was ahead of this one's, or the file is
		// garbage) would keep the remote off, and every probe with it.
		if limit := now.Add(breakerMarkerMax); till.After(limit) {
			till = limit
		}
		switch {
		case now.Before(till):
			b.openTill = till
			b.warn.once("breaker", fmt.Sprintf("remote cache disabled until %s: another gobuildcache on this cache dir found it failing (%s)", till.Format(time.TimeOnly), kind), nil)
		case now.Sub(till) < breakerSuspectFor:
			b.suspect = true
		}
	}
	return b
}

// readBreakerMarker reads a marker file: "<until, Unix ns> <kind>\n".
func readBreakerMarker(path string) (till time.Time, kind string, ok bool) {
	if path == "" {
		return time.Time{}, "", false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, "", false
	}
	ns, kind, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return time.Time{}, "", false
	}
	return time.Unix(0, n), kind, true
}

// writeBreakerMarker writes the marker file that readBreakerMarker reads.
// It is replaced whole, with the cache directory's mode (replaceFile), so
// that the servers of every user sharing the directory may replace it.
func writeBreakerMarker(path string, till time.Time, kind string) error {
	return replaceFile(path, []byte(fmt.Sprintf("%d %s\n", till.UnixNano(), kind)))
}

// Get implements CacheBackend.
func (b *breakerBackend) Get(ctx context.Context, actionID ActionID) (Entry, error) {
	if a := b.admit(true); a != admitSend {
		if a == admitProbe {
			b.probe(actionID)
		}
		b.stats.RemoteSkipped.Add(1)
		return Entry{}, errBreakerOpen
	}
	return b.get(ctx, actionID)
}

// get sends one get to the remote and accounts for it.
func (b *breakerBackend) get(ctx context.Context, actionID ActionID) (Entry, error) {
	start := b.now()
	e, err := b.remote.Get(ctx, actionID)
	b.stats.RemoteGetLatency.Observe(b.now().Sub(start))
	if err == nil {
		b.stats.RemoteBytesDown.Add(e.Size)
	}
	b.record(ctx, err)
	return e, err
}

// record accounts for the outcome of one request that reached the remote.
func (b *breakerBackend) record(ctx context.Context, err error) {
	switch kind := errKind(err); {
	case err == nil, kind == KindNotFound:
		b.succeeded() // the remote answered
	case kind == KindDenied:
		// Not allowed to read that key (or that read location): a miss,
		// and an answer; the remote works.
		b.stats.RemoteDenied.Add(1)
		b.succeeded()
	case kind == KindLocationGone:
		// One location of several is unusable: the rest of the remote
		// answered and goes on without it.
		b.stats.AddRemoteError(kind.String())
		b.warn.once("location gone", "remote cache cannot use one of its locations (-s3-bucket or -s3-read-from: no such bucket, or another region); it is left out for this run, the others go on", err)
		b.succeeded()
	case kind == KindVerify:
		b.stats.VerifyFailures.Add(1)
		b.warn.once("verify", "a remote object did not match its output ID; treated as a miss", err)
		b.succeeded()
	case kind == KindSlowUpload:
		// The remote was taking the body in: the uplink is slow, not the
		// remote down. Counted; that entry stays local, reads go on.
		b.stats.AddRemoteError(kind.String())
		b.warn.once("slow upload", "an upload was still being sent at its deadline (-s3-timeout plus 1 s per 8 MiB): the uplink is slower than that; such entries stay in the local cache, the remote cache is still read", err)
	case kind == KindTooLarge:
		// A body the local disk has no room for: a miss, and an answer.
		b.stats.AddRemoteError(kind.String())
		b.warn.once("no room", "a remote entry is larger than the local disk has room for; treated as a miss", err)
		b.succeeded()
	case kind == KindLocal:
		// The remote answered; this machine could not keep the body. A
		// miss, counted with the server's errors, not the remote's.
		b.stats.AddError("get")
		b.warn.once("local get", "a remote entry could not be written to the local disk; treated as a miss, the remote cache is still read", err)
		b.succeeded()
	default:
		b.failed(ctx, err, kind)
	}
}

// Put implements CacheBackend.
func (b *breakerBackend) Put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	return b.put(ctx, size, func() (Entry, error) { return b.remote.Put(ctx, actionID, outputID, size, body) })
}

// PutWithEmptyStdout implements Remote as Put does.
func (b *breakerBackend) PutWithEmptyStdout(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	return b.put(ctx, size, func() (Entry, error) { return b.remote.PutWithEmptyStdout(ctx, actionID, outputID, size, body) })
}

// put sends a put of size bytes to the remote, unless the breaker keeps
// writes from it.
func (b *breakerBackend) put(ctx context.Context, size int64, send func() (Entry, error)) (Entry, error) {
	if b.writesOff() {
		return Entry{}, errWritesOff // counted once, as the refusal
	}
	if !b.allow() {
		b.stats.RemoteSkipped.Add(1)
		return Entry{}, errBreakerOpen
	}
	start := b.now()
	e, err := send()
	b.stats.RemotePutLatency.Observe(b.now().Sub(start))
	if err == nil {
		b.stats.RemoteBytesUp.Add(size)
	}
	b.recordWrite(ctx, err)
	return e, err
}

// recordWrite is record for a request that stores something.
func (b *breakerBackend) recordWrite(ctx context.Context, err error) {
	if errKind(err) == KindTooLarge {
		// Refused before sending: says nothing of the remote's health.
		b.stats.UploadsTooLarge.Add(1)
		b.warn.once("too large", "an entry is larger than one S3 upload takes (5 GiB); it stays in the local cache and is not shared", err)
		return
	}
	switch kind := errKind(err); {
	case ctx.Err() != nil, kind != KindWriteRefused && kind != KindLocationGone:
		b.record(ctx, err)
		return
	case kind == KindLocationGone:
		// The write location's bucket is missing and the read locations
		// work: stop writing, keep reading them.
		b.record(ctx, err)
	default:
		// Not allowed to write is not a broken remote: stop writing, keep
		// reading.
		b.stats.AddRemoteError(KindWriteRefused.String())
		b.warn.once("remote write denied", "remote cache refused a write; uploads are off for this run, reads go on (use -read-only for read-only credentials; -s3-sse if a bucket policy requires encryption headers)", err)
	}
	b.mu.Lock()
	b.writesOffTill = b.now().Add(breakerFatalPause)
	b.mu.Unlock()
}

// ListManifests implements manifestStore.
func (b *breakerBackend) ListManifests(ctx context.Context, scope string, n int) ([]manifestInfo, error) {
	if !b.allow() {
		return nil, errBreakerOpen
	}
	infos, err := b.remote.ListManifests(ctx, scope, n)
	b.record(ctx, err)
	if errKind(err) == KindLocationGone {
		err = nil // reported by record: the other locations' manifests go on
	}
	return infos, err
}

// GetManifest implements manifestStore.
func (b *breakerBackend) GetManifest(ctx context.Context, name string) ([]byte, error) {
	if !b.allow() {
		return nil, errBreakerOpen
	}
	data, err := b.remote.GetManifest(ctx, name)
	b.record(ctx, err)
	return data, err
}

// PutManifest implements manifestStore.
func (b *breakerBackend) PutManifest(ctx context.Context, scope, id string, data []byte) error {
	if b.writesOff() {
		return errWritesOff
	}
	if !b.allow() {
		return errBreakerOpen
	}
	err := b.remote.PutManifest(ctx, scope, id, data)
	b.recordWrite(ctx, err)
	return err
}

// PutPack implements manifestStore.
func (b *breakerBackend) PutPack(ctx context.Context, scope, id string, i int, data []byte) error {
	if b.writesOff() {
		return errWritesOff
	}
	if !b.allow() {
		return errBreakerOpen
	}
	err := b.remote.PutPack(ctx, scope, id, i, data)
	b.recordWrite(ctx, err)
	return err
}

// GetPackRange implements manifestStore. Only the request is accounted
// for: a body that breaks off later is the reader's problem (the prefetch
// fetches those entries on their own).
func (b *breakerBackend) GetPackRange(ctx context.Context, name string, i int, off, n int64) (io.ReadCloser, error) {
	if !b.allow() {
		return nil, errBreakerOpen
	}
	r, err := b.remote.GetPackRange(ctx, name, i, off, n)
	b.record(ctx, err)
	return r, err
}

// DeleteManifests implements manifestStore.
func (b *breakerBackend) DeleteManifests(ctx context.Context, names []string) error {
	if b.writesOff() {
		return errWritesOff
	}
	if !b.allow() {
		return errBreakerOpen
	}
	err := b.remote.DeleteManifests(ctx, names)
	b.recordWrite(ctx, err)
	return err
}

// probe gets actionID from the remote in the background, to learn whether
// it answers again; the body, if any, is thrown away. It waits as long for
// an answer as the prefetch's reads do (withProbe). admit has counted it
// in b.probes.
func (b *breakerBackend) probe(actionID ActionID) {
	go func() {
		defer b.probes.Done()
		if e, err := b.get(withProbe(b.probeCtx), actionID); err == nil {
			os.Remove(e.DiskPath) // ours: see CacheBackend.Get
		}
	}()
}

// Close implements CacheBackend. A probe still waiting for the remote is
// canceled: it is of no use to anyone once the go command is done.
func (b *breakerBackend) Close(ctx context.Context) error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.probeCancel()
	b.probes.Wait()
	return b.remote.Close(ctx)
}

func (b *breakerBackend) writesOff() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.now().Before(b.writesOffTill)
}

// admission is what admit decides for one request.
type admission int

const (
	admitSend   admission = iota // the breaker is closed: send it
	admitRefuse                  // the breaker is open, or a probe is out: fail at once
	admitProbe                   // the breaker is open and due a probe, or suspects the remote: send one in the background
)

// admit decides whether a request may go to the remote now. While the
// breaker is open, after the cooldown, one request that may probe at a time
// is told to probe, unless Close has begun; while it suspects the remote,
// too, and requests that never probe are sent. A request allowed or told
// to probe is counted (RemoteRequests).
func (b *breakerBackend) admit(mayProbe bool) admission {
	b.mu.Lock()
	defer b.mu.Unlock()
	a := admitSend
	if open := !b.openTill.IsZero(); open || (b.suspect && mayProbe) {
		if !mayProbe || b.probing || b.closed || (open && b.now().Before(b.openTill)) {
			return admitRefuse
		}
		b.probing = true
		b.probes.Add(1) // under mu: it comes before Close's Wait, or not at all
		a = admitProbe
	}
	b.stats.RemoteRequests.Add(1)
	return a
}

// allow reports whether a request that never probes may go to the remote
// now.
func (b *breakerBackend) allow() bool { return b.admit(false) == admitSend }

func (b *breakerBackend) succeeded() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures = 0
	b.probing = false
	if (b.suspect || !b.openTill.IsZero()) && b.marker != "" {
		os.Remove(b.marker) // the next server need not avoid or suspect it
	}
	b.suspect = false
	if !b.openTill.IsZero() {
		b.openTill = time.Time{}
		b.cooldown = breakerCooldown
		b.warn.log.Info("remote cache reachable again")
	}
}

func (b *breakerBackend) failed(ctx context.Context, err error, kind ErrKind) {
	if ctx.Err() != nil || kind == KindCanceled {
		return // the caller gave up (close timed out): not the remote's fault
	}
	name := kind.String()
	b.stats.AddRemoteError(name)
	if (kind == KindTimeout || kind == KindThrottled) && isSpeculative(ctx) {
		// The prefetch's: counted, and it sends fewer (flowLimit). Not a
		// failure in a row, or eight machines starting at once would turn
		// the remote off for each other.
		return
	}
	switch kind {
	case KindSession:
		// An S3 Express session refused even though it was new: counted,
		// and the next request makes another; never a reason to stop.
		b.warn.once("remote "+name, "remote cache refused a new S3 Express session (is this machine's clock right?)", err)
		b.mu.Lock()
		b.probing = false // a probe's answer: another may be sent
		b.mu.Unlock()
		return
	case KindThrottled:
		b.warn.once("remote "+name, "remote cache is busy (503: slow down, or a directory bucket waking up); backing off for seconds, the build goes on", err)
	default:
		b.warn.once("remote "+name, "remote cache request failed ("+name+"); the build goes on without it", err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	wasProbe := b.probing
	b.probing = false
	var pause time.Duration
	switch {
	case kind.fatal():
		pause = breakerFatalPause
	case wasProbe:
		// A busy remote is asked again within seconds: it is coming back.
		longest := breakerMaxCooldown
		if kind == KindThrottled {
			longest = breakerBusyMaxCooldown
		}
		b.cooldown = min(2*b.cooldown, longest)
		pause = b.cooldown
	case kind == KindTimeout && b.failures >= breakerTimeouts, b.failures >= breakerThreshold:
		pause = b.cooldown
	default:
		return
	}
	b.suspect = false // open now: the cooldown decides
	if b.openTill.IsZero() {
		b.stats.BreakerOpenings.Add(1)
		b.warn.once("breaker", fmt.Sprintf("remote cache disabled for %v after %d failed requests; gets are misses and puts stay local meanwhile", pause, b.failures), err)
	}
	b.openTill = b.now().Add(pause)
	if b.marker != "" {
		till := b.now().Add(min(pause, breakerMarkerMax))
		// Best effort: without it the next server just finds out itself.
		writeBreakerMarker(b.marker, till, name)
	}
}
