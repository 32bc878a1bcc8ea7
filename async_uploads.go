package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// asyncUploads makes puts to a remote backend asynchronous: Put queues the
// upload and returns at once; a fixed number of workers send queued uploads
// to the remote in the background.
//
// The queue is bounded by the bytes it holds. A put that would overflow it
// is dropped and counted, never waited for: the build must not wait on the
// network. Close waits for the queue to drain until its context ends, then
// cancels what is left and counts it as abandoned.
//
// Put reads body only before it returns, as the interface asks: it takes
// its own copy to upload from. When body is a file (the local tier hands
// over its cached file) the copy is a hard link, which costs nothing; other
// bodies are copied to a spool file.
//
// An upload waits a moment before it is queued (waitFull, an empty one
// waitEmpty), so that an entry and its output (stdoutKey), when that is
// empty, go as one request (Remote.PutWithEmptyStdout) instead of two. The
// go command puts a compile's output just before the compile's entry and a
// vet's just after its facts, for nearly every package, and nearly always
// empty. A newer put of a waiting empty entry's key replaces it. Close
// queues whatever waits.
//
// With hold (a pull request's run: see Flush), uploads of at most
// packEntryMax bytes wait instead for Flush, up to holdRoom bytes of them:
// the run's packs and manifest, stored at its exit, carry nearly all of
// them, and Flush drops those. A run that puts more sends what it holds
// and uploads as it goes.
type asyncUploads struct {
	remote   Remote
	spoolDir string
	maxBytes int64 // bound on the bytes queued
	stats    *Stats
	log      *slog.Logger

	// The uploads that wait: see waitFull.
	mu        sync.Mutex
	hold      bool      // uploads wait for Flush (see above); false once holdRoom is passed
	holdRoom  int64     // holdMax, or half the queue's bound if that is less
	held      []*upload // uploads waiting for Flush, in order of put
	heldBytes int64
	waiting   [2][]*upload         // [0] non-empty, [1] empty: each in order of put
	parents   map[ActionID]*upload // waiting uploads, by their stdoutKey
	outputs   map[ActionID]*upload // waiting empty uploads that carry nothing, by their key
	timer     *time.Timer          // queues the uploads that are due
	wakeAt    time.Time            // when timer fires; zero if it is not set
	closed    bool                 // Close has closed queue

	queue     chan *upload // pointers: a queue of 1<<16 values would be 5.8 MB to zero at every start
	queued    atomic.Int64 // bytes waiting, queued or uploading
	workers   sync.WaitGroup
	ctx       context.Context // uploads run under it; cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
	tooLarge  sync.Once // warned of a body larger than the queue
}

var (
	_ CacheBackend = (*asyncUploads)(nil)
	_ flusher      = (*asyncUploads)(nil)
)

// flusher is a backend that holds puts back (asyncUploads).
type flusher interface {
	// Flush sends on at once every put held back, but those that carried
	// reports true of (nil: none), which this run's prefetch manifest or
	// packs carry already: the go command will put nothing more. Later
	// puts wait a moment as usual, never for another Flush.
	Flush(carried func(ActionID) bool)
}

type upload struct {
	actionID ActionID
	outputID OutputID
	size     int64
	path     string    // spool file, removed after the upload; "" for an empty body
	due      time.Time // when it stops waiting
	stdout   ActionID  // stdoutKey(actionID), the key of its output
	// emptyStdout: the entry of stdoutKey(actionID), empty, goes along.
	emptyStdout bool
	// merged: an empty upload that went along with its parent's, or that
	// a newer put of its key replaced: it is not sent.
	merged bool
}

// entries returns the entries u stores: its own, and its empty output's
// if that goes along.
func (u *upload) entries() int64 {
	if u.emptyStdout {
		return 2
	}
	return 1
}

// How long an upload waits for the put of its output (waitFull) or, if it
// is empty, for the put of the entry whose output it is (waitEmpty). The go
// command puts a vet's output right after its facts, and a compile's entry
// once it has rewritten the build ID in the compiled file: milliseconds
// apart.
const (
	waitFull  = 100 * time.Millisecond
	waitEmpty = time.Second
)

// holdMax bounds the bytes of uploads held for Flush (a quarter of the
// queue's default bound): a pull request that builds more than this is
// nearly a cold build, whose uploads had better go as it builds.
const holdMax = 256 << 20

// errQueueFull is returned by asyncUploads.Put when an upload is dropped.
var errQueueFull = errors.New("upload queue full")

func newAsyncUploads(remote Remote, spoolDir string, parallelism int, maxBytes int64, hold bool, stats *Stats, log *slog.Logger) *asyncUploads {
	ctx, cancel := context.WithCancel(context.Background())
	a := &asyncUploads{
		remote:   remote,
		spoolDir: spoolDir,
		maxBytes: maxBytes,
		hold:     hold,
		holdRoom: min(holdMax, maxBytes/2),
		stats:    stats,
		log:      log,
		parents:  make(map[ActionID]*upload),
		outputs:  make(map[ActionID]*upload),
		queue:    make(chan *upload, 1<<16),
		ctx:      ctx,
		cancel:   cancel,
	}
	a.timer = time.AfterFunc(time.Hour, func() { a.queueWaiting(false) })
	a.timer.Stop()
	for range max(parallelism, 1) {
		a.workers.Add(1)
		go a.work()
	}
	return a
}

// Get implements CacheBackend: gets go straight to the remote.
func (a *asyncUploads) Get(ctx context.Context, actionID ActionID) (Entry, error) {
	return a.remote.Get(ctx, actionID)
}

// Put implements CacheBackend: it takes a copy of the body to upload and
// returns. The returned Entry has no DiskPath: the body is not stored
// locally by this layer (the local tier above it has it).
func (a *asyncUploads) Put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	if size > a.maxBytes {
		// It could never be queued: say so once, in the build log.
		a.stats.UploadsTooLarge.Add(1)
		a.tooLarge.Do(func() {
			a.log.Warn(fmt.Sprintf("an entry of %s is larger than the upload queue (%s, -upload-queue-size): it stays in the local cache and is not shared; further ones are counted (uploads too large)", formatBytes(size), formatBytes(a.maxBytes)))
		})
		return Entry{}, fmt.Errorf("upload %x: %w: %d bytes, more than the queue holds", actionID[:], errQueueFull, size)
	}
	if a.queued.Add(size) > a.maxBytes && size > 0 {
		a.queued.Add(-size)
		a.stats.UploadsDropped.Add(1)
		return Entry{}, fmt.Errorf("upload %x: %w", actionID[:], errQueueFull)
	}
	u := &upload{actionID: actionID, outputID: outputID, size: size}
	var err error
	if size == 0 {
		// Nothing to copy; only checked, as a copy would be.
		_, err = io.Copy(io.Discard, newVerifyingReader(body, 0, outputID))
	} else {
		u.path, err = a.spool(body)
	}
	if err != nil {
		a.queued.Add(-size)
		a.stats.UploadsFailed.Add(1)
		return Entry{}, fmt.Errorf("upload %x: %w", actionID[:], err)
	}
	a.wait(u)
	return Entry{OutputID: outputID, Size: size}, nil
}

// wait adds u to the waiting uploads, or merges it with one: an empty
// upload into the waiting one whose output it is (its parent), or the
// waiting empty output of u into u. An upload that carries its output is
// never merged into another: it is sent.
func (a *asyncUploads) wait(u *upload) {
	now := time.Now()
	u.stdout = stdoutKey(u.actionID)
	a.mu.Lock()
	defer a.mu.Unlock()
	if old := a.outputs[u.actionID]; old != nil {
		a.merge(old) // replaced by this put
	}
	if p := a.parents[u.actionID]; p != nil && u.size == 0 {
		p.emptyStdout = true
		delete(a.parents, u.actionID)
		if a.outputs[p.actionID] == p {
			delete(a.outputs, p.actionID)
		}
		return
	}
	if out := a.outputs[u.stdout]; out != nil {
		a.merge(out)
		u.emptyStdout = true
	} else {
		a.parents[u.stdout] = u
	}
	i := 0
	if u.size == 0 && !u.emptyStdout { // it may be an output: wait for its parent
		i = 1
		a.outputs[u.actionID] = u
	}
	if a.hold && u.size <= packEntryMax {
		if a.heldBytes+u.size <= a.holdRoom {
			a.held = append(a.held, u)
			a.heldBytes += u.size
			return
		}
		a.hold = false // too much to hold: send it all and go on as usual
		a.queueHeld(nil)
	}
	u.due = now.Add([2]time.Duration{waitFull, waitEmpty}[i])
	a.waiting[i] = append(a.waiting[i], u)
	if a.wakeAt.IsZero() || u.due.Before(a.wakeAt) {
		a.wakeAt = u.due
		a.timer.Reset(u.due.Sub(now))
	}
}

// merge marks the waiting empty upload u as not to be sent and forgets it.
func (a *asyncUploads) merge(u *upload) {
	u.merged = true
	a.forget(u)
}

// forget removes u from the indexes of waiting uploads.
func (a *asyncUploads) forget(u *upload) {
	if a.parents[u.stdout] == u {
		delete(a.parents, u.stdout)
	}
	if a.outputs[u.actionID] == u {
		delete(a.outputs, u.actionID)
	}
}

// queueWaiting queues the waiting uploads that are due, all of them if
// all, and sets the timer for the next one. Merged ones are dropped.
func (a *asyncUploads) queueWaiting(all bool) {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	if all {
		a.queueHeld(nil)
	}
	a.wakeAt = time.Time{}
	var next time.Time
	for i, w := range a.waiting {
		n := 0
		for ; n < len(w) && (all || !w[n].due.After(now)); n++ {
			if u := w[n]; !u.merged {
				a.forget(u)
				a.enqueue(u)
			}
		}
		clear(w[:n])
		a.waiting[i] = w[n:]
		if n < len(w) && (next.IsZero() || w[n].due.Before(next)) {
			next = w[n].due
		}
	}
	if !next.IsZero() {
		a.wakeAt = next
		a.timer.Reset(next.Sub(now))
	}
}

// queueHeld queues the uploads held for Flush, but those that carried
// reports true of (and of the empty output that goes with one), which it
// counts as carried and drops. Merged ones are dropped too. The caller
// holds a.mu.
func (a *asyncUploads) queueHeld(carried func(ActionID) bool) {
	for _, u := range a.held {
		if u.merged {
			continue
		}
		a.forget(u)
		if carried == nil || !carried(u.actionID) || (u.emptyStdout && !carried(u.stdout)) {
			a.enqueue(u)
			continue
		}
		a.discard(u)
		a.stats.UploadsCarried.Add(u.entries())
	}
	clear(a.held)
	a.held, a.heldBytes = a.held[:0], 0
}

// Flush implements flusher: every waiting upload is queued now, but held
// ones that carried reports true of, which are dropped. Later puts are not
// held.
func (a *asyncUploads) Flush(carried func(ActionID) bool) {
	a.mu.Lock()
	if !a.closed {
		a.queueHeld(carried)
	}
	a.hold = false
	a.mu.Unlock()
	a.queueWaiting(true)
}

// discard removes u's spool file and releases its bytes from the queue's
// bound: it will not be sent.
func (a *asyncUploads) discard(u *upload) {
	if u.path != "" {
		os.Remove(u.path)
	}
	a.queued.Add(-u.size)
}

// enqueue queues u, or drops it if the queue is full.
func (a *asyncUploads) enqueue(u *upload) {
	select {
	case a.queue <- u:
	default:
		a.discard(u)
		a.stats.UploadsDropped.Add(1)
	}
}

// spool makes a private copy of body in the spool directory: a hard link
// to it if it is a file, else a copy. The link is made straight under a
// random name: a temp file made only to reserve the name would cost a
// create and a delete per put (and on ext4 without a journal each recent
// deletion slows every later file creation, the compiler's too).
func (a *asyncUploads) spool(body io.Reader) (string, error) {
	if src, ok := body.(*os.File); ok {
		for range 3 { // a name taken already is next to impossible
			path := filepath.Join(a.spoolDir, "upload-"+randomSuffix())
			err := os.Link(src.Name(), path)
			if err == nil {
				return path, nil
			}
			if !errors.Is(err, fs.ErrExist) {
				break // no hard links here: copy
			}
		}
	}
	f, err := os.CreateTemp(a.spoolDir, "upload-*")
	if err != nil {
		return "", err
	}
	path := f.Name()
	_, err = copyBuffered(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", err
	}
	return path, nil
}

func (a *asyncUploads) work() {
	defer a.workers.Done()
	for u := range a.queue {
		a.send(u)
	}
}

// send uploads u. An upload that carries an empty stdout entry counts as
// two, as they were put.
func (a *asyncUploads) send(u *upload) {
	defer a.queued.Add(-u.size)
	entries := u.entries()
	if a.ctx.Err() != nil {
		a.stats.UploadsAbandoned.Add(entries)
		if u.path != "" {
			os.Remove(u.path)
		}
		return
	}
	var body io.Reader = bytes.NewReader(nil)
	if u.path != "" {
		defer os.Remove(u.path)
		f, err := os.Open(u.path)
		if err != nil {
			a.stats.UploadsFailed.Add(entries)
			return
		}
		defer f.Close()
		body = f
	}
	put := a.remote.Put
	if u.emptyStdout {
		put = a.remote.PutWithEmptyStdout
	}
	if _, err := put(a.ctx, u.actionID, u.outputID, u.size, body); err != nil {
		if a.ctx.Err() != nil {
			a.stats.UploadsAbandoned.Add(entries)
		} else if errKind(err) != KindTooLarge { // that is counted by the remote's wrapper
			a.stats.UploadsFailed.Add(entries) // why is counted by the remote's wrapper
		}
		return
	}
	a.stats.UploadsDone.Add(entries)
}

// Close implements CacheBackend. It waits for queued uploads until ctx is
// done, then cancels the rest, and closes the remote.
func (a *asyncUploads) Close(ctx context.Context) error {
	a.closeOnce.Do(func() {
		a.timer.Stop()
		a.queueWaiting(true)
		a.mu.Lock()
		a.closed = true
		close(a.queue)
		a.mu.Unlock()
	})
	done := make(chan struct{})
	go func() {
		a.workers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		pending := len(a.queue)
		a.cancel()
		<-done
		// Deliberately swallowed: the build is done and the entries are
		// in the local cache; only sharing them was cut short. Said only
		// if it was: a deadline that ends with nothing left to upload
		// (-upload-timeout=0) gave nothing up.
		if abandoned := a.stats.UploadsAbandoned.Load(); abandoned > 0 {
			a.log.Warn("upload timeout reached; abandoned pending uploads", "pending", pending, "abandoned", abandoned)
		}
	}
	a.cancel()
	return a.remote.Close(ctx)
}
