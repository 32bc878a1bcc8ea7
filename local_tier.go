package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// localTier puts the local disk cache in front of a remote backend: a
// read-through tier. A get is answered from local disk when the entry is
// there, and otherwise fetched from the remote (one request per key however
// many gets ask at once), installed locally and answered from there. A put
// is written locally first, which is all the go command waits for, and then
// handed to the remote (an asyncUploads, which returns at once).
//
// Remote failures are never the build's problem: a failed fetch is a miss
// and a failed upload leaves the entry local. The wrappers below the tier
// count and log them.
type localTier struct {
	local    *DiskBackend
	remote   CacheBackend
	readOnly bool // never put to the remote
	stats    *Stats

	mu      sync.Mutex
	flights map[ActionID]*flight // remote fetches in progress
}

var (
	_ CacheBackend   = (*localTier)(nil)
	_ prefetchTarget = (*localTier)(nil)
	_ flusher        = (*localTier)(nil)
)

// flight is one remote fetch that concurrent gets of its key share.
type flight struct {
	done chan struct{}
	e    Entry
	err  error
	// whole: the entry came in a prefetch manifest or pack, no request of
	// its own: a get that waited for it is a local hit, not a remote one.
	whole bool
}

func newLocalTier(local *DiskBackend, remote CacheBackend, readOnly bool, stats *Stats) *localTier {
	stats.Remote.Store(true)
	return &localTier{local: local, remote: remote, readOnly: readOnly, stats: stats, flights: make(map[ActionID]*flight)}
}

// Get implements CacheBackend.
func (t *localTier) Get(ctx context.Context, actionID ActionID) (Entry, error) {
	e, err := t.local.Get(ctx, actionID)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return e, err
	}
	f, isNew := t.flight(actionID)
	if isNew {
		// Detached from this caller's context: a caller that gives up
		// does not cancel the fetch for the others.
		go t.fetch(context.Background(), actionID, f)
	}
	select {
	case <-f.done:
		if f.err != nil && !(errors.Is(f.err, errNotRecorded) && f.e.DiskPath != "") {
			// Whatever went wrong remotely was counted and logged below;
			// here it is a miss, and keeps its kind.
			return Entry{}, fmt.Errorf("get %x: %w: %w", actionID, ErrNotFound, f.err)
		}
		// Recorded, or only placed (its record could not be written): a
		// hit either way, as such a put is (see Server.handlePut).
		if !f.whole {
			t.stats.RemoteHits.Add(1)
		}
		return f.e, nil
	case <-ctx.Done():
		return Entry{}, ctx.Err()
	}
}

// lastRemoval implements prefetchTarget.
func (t *localTier) lastRemoval() time.Time { return t.local.lastRemoval() }

// prefetchRoom implements prefetchTarget.
func (t *localTier) prefetchRoom() int64 { return t.local.room(prefetchReserve) }

// localEntry implements prefetchTarget: the local cache alone.
func (t *localTier) localEntry(actionID ActionID) (Entry, error) {
	return t.local.getLocal(actionID)
}

// fetchShared implements prefetchTarget: it fetches actionID on the calling
// goroutine and under ctx, unless a fetch of it is already under way, in
// which case it reports fetched false at once. A failed fetch's error is
// the remote's, ErrNotFound included.
func (t *localTier) fetchShared(ctx context.Context, actionID ActionID) (e Entry, fetched bool, err error) {
	f, isNew := t.flight(actionID)
	if !isNew {
		return Entry{}, false, nil
	}
	t.fetch(ctx, actionID, f)
	return f.e, true, f.err
}

// putShared implements prefetchTarget: it stores a body the prefetcher
// holds (from a manifest or a pack) in the local cache, unless a fetch of
// actionID is already under way, in which case it reports stored false at
// once. The body it writes is verified against the output ID (errVerify if
// it does not match); if that output's body is in the cache already, body
// is not needed and not read.
func (t *localTier) putShared(ctx context.Context, actionID ActionID, outputID OutputID, size int64, at time.Time, body io.Reader) (e Entry, stored bool, err error) {
	f, isNew := t.flight(actionID)
	if !isNew {
		return Entry{}, false, nil
	}
	defer t.land(actionID, f)
	f.whole = true
	f.e, f.err = t.local.PutAt(ctx, actionID, outputID, size, at, newVerifyingReader(body, size, outputID))
	return f.e, true, f.err
}

// flight returns the fetch of actionID in progress, or registers a new one
// that the caller must run (isNew).
func (t *localTier) flight(actionID ActionID) (f *flight, isNew bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f, ok := t.flights[actionID]; ok {
		return f, false
	}
	f = &flight{done: make(chan struct{})}
	t.flights[actionID] = f
	return f, true
}

// fetch gets actionID from the remote into the local cache and completes
// f. The remote's file is the tier's (see CacheBackend.Get): install moves
// it into place or removes it.
func (t *localTier) fetch(ctx context.Context, actionID ActionID, f *flight) {
	defer t.land(actionID, f)
	e, err := t.remote.Get(ctx, actionID)
	if err != nil {
		f.err = err // as it is: the prefetcher tells a 404 from a failure
		return
	}
	// A body in place but not recorded comes with its entry (see Get).
	f.e, f.err = t.local.install(actionID, e)
}

// land ends flight f of actionID: the gets waiting for it see its result.
func (t *localTier) land(actionID ActionID, f *flight) {
	t.mu.Lock()
	delete(t.flights, actionID)
	t.mu.Unlock()
	close(f.done)
}

// Put implements CacheBackend: the local write is the put; the remote copy
// follows.
func (t *localTier) Put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	e, err := t.local.Put(ctx, actionID, outputID, size, body)
	if err != nil || t.readOnly {
		return e, err
	}
	f, err := os.Open(e.DiskPath)
	if err != nil {
		// Trimmed or cleared meanwhile: the local put stands.
		return e, nil
	}
	defer f.Close()
	// Failures are counted by the remote's wrappers; the local entry stands.
	t.remote.Put(ctx, actionID, outputID, size, f)
	return e, nil
}

// Flush implements flusher: the puts its uploads hold back go now.
func (t *localTier) Flush(carried func(ActionID) bool) {
	if f, ok := t.remote.(flusher); ok {
		f.Flush(carried)
	}
}

// Close implements CacheBackend: pending uploads get until ctx's deadline.
func (t *localTier) Close(ctx context.Context) error {
	return errors.Join(t.remote.Close(ctx), t.local.Close(ctx))
}
