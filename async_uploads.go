package main

import (
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
type asyncUploads struct {
	remote   CacheBackend
	spoolDir string
	maxBytes int64 // bound on the bytes queued
	stats    *Stats
	log      *slog.Logger

	queue     chan *upload // pointers: a queue of 1<<16 values would be 5.8 MB to zero at every start
	queued    atomic.Int64 // bytes queued or uploading
	workers   sync.WaitGroup
	ctx       context.Context // uploads run under it; cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
	tooLarge  sync.Once // warned of a body larger than the queue
}

var _ CacheBackend = (*asyncUploads)(nil)

type upload struct {
	actionID ActionID
	outputID OutputID
	size     int64
	path     string // spool file, removed after the upload
}

// errQueueFull is returned by asyncUploads.Put when an upload is dropped.
var errQueueFull = errors.New("upload queue full")

func newAsyncUploads(remote CacheBackend, spoolDir string, parallelism int, maxBytes int64, stats *Stats, log *slog.Logger) *asyncUploads {
	ctx, cancel := context.WithCancel(context.Background())
	a := &asyncUploads{
		remote:   remote,
		spoolDir: spoolDir,
		maxBytes: maxBytes,
		stats:    stats,
		log:      log,
		queue:    make(chan *upload, 1<<16),
		ctx:      ctx,
		cancel:   cancel,
	}
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

// Put implements CacheBackend: it queues the upload and returns. The
// returned Entry has no DiskPath: the body is not stored locally by this
// layer (the local tier above it has it).
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
	path, err := a.spool(body)
	if err != nil {
		a.queued.Add(-size)
		a.stats.UploadsFailed.Add(1)
		return Entry{}, fmt.Errorf("upload %x: %w", actionID[:], err)
	}
	u := &upload{actionID: actionID, outputID: outputID, size: size, path: path}
	select {
	case a.queue <- u:
		return Entry{OutputID: outputID, Size: size}, nil
	default:
		os.Remove(path)
		a.queued.Add(-size)
		a.stats.UploadsDropped.Add(1)
		return Entry{}, fmt.Errorf("upload %x: %w", actionID[:], errQueueFull)
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

func (a *asyncUploads) send(u *upload) {
	defer a.queued.Add(-u.size)
	defer os.Remove(u.path)
	if a.ctx.Err() != nil {
		a.stats.UploadsAbandoned.Add(1)
		return
	}
	f, err := os.Open(u.path)
	if err != nil {
		a.stats.UploadsFailed.Add(1)
		return
	}
	defer f.Close()
	if _, err := a.remote.Put(a.ctx, u.actionID, u.outputID, u.size, f); err != nil {
		if a.ctx.Err() != nil {
			a.stats.UploadsAbandoned.Add(1)
		} else if errKind(err) != KindTooLarge { // that is counted by the remote's wrapper
			a.stats.UploadsFailed.Add(1) // why is counted by the remote's wrapper
		}
		return
	}
	a.stats.UploadsDone.Add(1)
}

// Close implements CacheBackend. It waits for queued uploads until ctx is
// done, then cancels the rest, and closes the remote.
func (a *asyncUploads) Close(ctx context.Context) error {
	a.closeOnce.Do(func() { close(a.queue) })
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
