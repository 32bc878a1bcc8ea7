package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConformance runs the CacheBackend contract over every backend and
// wrapper that needs no server; TestS3Conformance runs it over S3Backend
// and the stack over it.
func TestConformance(t *testing.T) {
	newTier := func(t *testing.T, remote CacheBackend) *localTier {
		tier := newLocalTier(newTestDisk(t), remote, false, new(Stats))
		t.Cleanup(func() { tier.Close(context.Background()) })
		return tier
	}
	for _, c := range []struct {
		name string
		new  func(t *testing.T) CacheBackend
	}{
		{"Disk", func(t *testing.T) CacheBackend { return newTestDisk(t) }},
		{"Mem", func(t *testing.T) CacheBackend { return newMemBackend(t) }},
		{"Breaker", func(t *testing.T) CacheBackend {
			return newBreakerBackend(newMemBackend(t), new(Stats), newWarnings(quietLog), "")
		}},
		{"AsyncUploads", func(t *testing.T) CacheBackend {
			a := newAsyncUploads(newMemBackend(t), t.TempDir(), 4, 1<<30, false, new(Stats), quietLog)
			t.Cleanup(func() { a.Close(context.Background()) })
			return newDrainedUploads(a)
		}},
		{"AsyncUploadsHolding", func(t *testing.T) CacheBackend {
			a := newAsyncUploads(newMemBackend(t), t.TempDir(), 4, 1<<30, true, new(Stats), quietLog)
			t.Cleanup(func() { a.Close(context.Background()) })
			return newDrainedUploads(a)
		}},
		{"LocalTier", func(t *testing.T) CacheBackend { return newTier(t, newMemBackend(t)) }},
		{"LocalTierStack", func(t *testing.T) CacheBackend {
			// The production stack over mem: localTier{disk, asyncUploads{breakerBackend{mem}}}.
			disk := newTestDisk(t)
			stats := new(Stats)
			breaker := newBreakerBackend(newMemBackend(t), stats, newWarnings(quietLog), "")
			tier := newLocalTier(disk, newAsyncUploads(breaker, disk.tmpDir(), 4, 1<<30, false, stats, quietLog), false, stats)
			t.Cleanup(func() { tier.Close(context.Background()) })
			return tier
		}},
		{"Prefetcher", func(t *testing.T) CacheBackend {
			mem := newMemBackend(t)
			p := newPrefetcher(newTier(t, mem), mem, prefetchOptions{scope: "scope", parallelism: 4, upload: true, packs: true}, new(Stats), quietLog)
			p.Started()
			t.Cleanup(func() { p.Close(context.Background()) })
			return p
		}},
		{"PrefetcherCarrying", func(t *testing.T) CacheBackend {
			// A pull request's stack: its uploads held for its packs and manifest.
			mem, disk, stats := newMemBackend(t), newTestDisk(t), new(Stats)
			tier := newLocalTier(disk, newAsyncUploads(mem, disk.tmpDir(), 4, 1<<30, true, stats, quietLog), false, stats)
			p := newPrefetcher(tier, mem, prefetchOptions{scope: "scope", parallelism: 4, upload: true, packs: true, carry: true}, stats, quietLog)
			p.Started()
			t.Cleanup(func() { p.Close(context.Background()) })
			return p
		}},
	} {
		t.Run(c.name, func(t *testing.T) { testConformance(t, c.new) })
	}
}

// testConformance runs the CacheBackend contract against a backend.
func testConformance(t *testing.T, newBackend func(t *testing.T) CacheBackend) {
	ctx := context.Background()
	put := func(t *testing.T, b CacheBackend, action ActionID, body []byte) Entry {
		t.Helper()
		sum := OutputID(sha256.Sum256(body))
		e, err := b.Put(ctx, action, sum, int64(len(body)), newVerifyingReader(bytes.NewReader(body), int64(len(body)), sum))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		if e.DiskPath != "" { // remote backends keep no local copy
			checkEntry(t, e, body)
		}
		return e
	}
	get := func(t *testing.T, b CacheBackend, action ActionID, want []byte) {
		t.Helper()
		e, err := b.Get(ctx, action)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		checkEntry(t, e, want)
	}

	t.Run("RoundTrip", func(t *testing.T) {
		b := newBackend(t)
		before := time.Now().Add(-time.Minute)
		put(t, b, actionID("rt"), []byte("round trip"))
		e, err := b.Get(ctx, actionID("rt"))
		if err != nil {
			t.Fatal(err)
		}
		checkEntry(t, e, []byte("round trip"))
		if e.Time.Before(before) || e.Time.After(time.Now().Add(time.Minute)) {
			t.Errorf("Time %v is not the put time", e.Time)
		}
	})
	t.Run("Miss", func(t *testing.T) {
		b := newBackend(t)
		_, err := b.Get(ctx, actionID("never put"))
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of a missing key: %v, want ErrNotFound", err)
		}
	})
	t.Run("Overwrite", func(t *testing.T) {
		b := newBackend(t)
		put(t, b, actionID("ow"), []byte("first"))
		put(t, b, actionID("ow"), []byte("second, longer"))
		get(t, b, actionID("ow"), []byte("second, longer"))
	})
	t.Run("ZeroLength", func(t *testing.T) {
		b := newBackend(t)
		put(t, b, actionID("empty"), nil)
		get(t, b, actionID("empty"), nil)
	})
	t.Run("SharedOutput", func(t *testing.T) {
		b := newBackend(t)
		put(t, b, actionID("s1"), []byte("same"))
		put(t, b, actionID("s2"), []byte("same"))
		get(t, b, actionID("s1"), []byte("same"))
		get(t, b, actionID("s2"), []byte("same"))
	})
	t.Run("Large", func(t *testing.T) {
		if testing.Short() {
			t.Skip("64 MiB object skipped in -short")
		}
		b := newBackend(t)
		body := make([]byte, 64<<20)
		rand.NewChaCha8([32]byte{1}).Read(body)
		put(t, b, actionID("large"), body)
		get(t, b, actionID("large"), body)
	})
	t.Run("BadBodyNotStored", func(t *testing.T) {
		b := newBackend(t)
		body := []byte("what was sent")
		claimed := outputID("what was claimed")
		_, err := b.Put(ctx, actionID("bad"), claimed, int64(len(body)), newVerifyingReader(bytes.NewReader(body), int64(len(body)), claimed))
		if !errors.Is(err, errVerify) {
			t.Fatalf("Put of a mismatched body: %v, want errVerify", err)
		}
		if _, err := b.Get(ctx, actionID("bad")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after failed Put: %v, want ErrNotFound", err)
		}
	})
	t.Run("CancelledContext", func(t *testing.T) {
		b := newBackend(t)
		put(t, b, actionID("c"), []byte("stored before"))
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := b.Get(cctx, actionID("c")); err == nil {
			t.Error("Get with a cancelled context succeeded")
		}
		if _, err := b.Put(cctx, actionID("c2"), outputID("x"), 1, strings.NewReader("x")); err == nil {
			t.Error("Put with a cancelled context succeeded")
		}
		// Nothing already stored is lost.
		get(t, b, actionID("c"), []byte("stored before"))
	})
	t.Run("ConcurrentOneKey", func(t *testing.T) {
		b := newBackend(t)
		key := actionID("hot")
		bodies := [][]byte{[]byte("version a"), []byte("version b, different length"), nil}
		var wg sync.WaitGroup
		errc := make(chan error, 64)
		for i := 0; i < 16; i++ {
			wg.Add(2)
			go func() {
				defer wg.Done()
				body := bodies[i%len(bodies)]
				if _, err := b.Put(ctx, key, outputID(string(body)), int64(len(body)), bytes.NewReader(body)); err != nil {
					errc <- fmt.Errorf("put: %w", err)
				}
			}()
			go func() {
				defer wg.Done()
				e, err := b.Get(ctx, key)
				if errors.Is(err, ErrNotFound) {
					return
				}
				if err != nil {
					errc <- fmt.Errorf("get: %w", err)
					return
				}
				if err := entryMatchesOneOf(e, bodies); err != nil {
					errc <- err
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}
		e, err := b.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := entryMatchesOneOf(e, bodies); err != nil {
			t.Fatal(err)
		}
	})
}

// checkEntry checks an entry against the body it must hold.
func checkEntry(t *testing.T, e Entry, body []byte) {
	t.Helper()
	sum := OutputID(sha256.Sum256(body))
	if e.OutputID != sum || e.Size != int64(len(body)) {
		t.Fatalf("entry has OutputID %x size %d, want %x size %d", e.OutputID, e.Size, sum, len(body))
	}
	got, err := os.ReadFile(e.DiskPath)
	if err != nil {
		t.Fatalf("DiskPath: %v", err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("DiskPath %s holds %d bytes that differ from the body", e.DiskPath, len(got))
	}
}

func entryMatchesOneOf(e Entry, bodies [][]byte) error {
	got, err := os.ReadFile(e.DiskPath)
	if err != nil {
		return err
	}
	for _, body := range bodies {
		if e.OutputID == outputID(string(body)) && e.Size == int64(len(body)) && bytes.Equal(got, body) {
			return nil
		}
	}
	return fmt.Errorf("entry (OutputID %x, size %d, %d bytes on disk) matches no body put", e.OutputID, e.Size, len(got))
}

var _ io.Reader = (*verifyingReader)(nil)

// TestVerifyingReaderDeclaredSizes: a declared size no body can have (a
// remote's metadata may say anything) is a verify failure, never a panic.
func TestVerifyingReaderDeclaredSizes(t *testing.T) {
	for _, size := range []int64{math.MaxInt64, math.MaxInt64 - 1, math.MinInt64, -1, 0, 3, 4, 5} {
		_, err := io.ReadAll(newVerifyingReader(strings.NewReader("body"), size, outputID("body")))
		if ok := size == 4; (err == nil) != ok || (err != nil && !errors.Is(err, errVerify)) {
			t.Errorf("size %d: %v", size, err)
		}
	}
}
