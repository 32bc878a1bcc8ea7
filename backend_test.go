package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// testConformance runs the CacheBackend contract against a backend. Every
// backend and wrapper runs it.
func testConformance(t *testing.T, newBackend func(t *testing.T) CacheBackend) {
	ctx := context.Background()
	put := func(t *testing.T, b CacheBackend, action []byte, body []byte) Entry {
		t.Helper()
		sum := sha256.Sum256(body)
		e, err := b.Put(ctx, action, sum[:], int64(len(body)), newVerifyingReader(bytes.NewReader(body), int64(len(body)), sum[:]))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		if e.DiskPath != "" { // remote backends keep no local copy
			checkEntry(t, e, body)
		}
		return e
	}
	get := func(t *testing.T, b CacheBackend, action []byte, want []byte) {
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
		claimed := sha256.Sum256([]byte("what was claimed"))
		_, err := b.Put(ctx, actionID("bad"), claimed[:], int64(len(body)), newVerifyingReader(bytes.NewReader(body), int64(len(body)), claimed[:]))
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
		sum := sha256.Sum256([]byte("x"))
		if _, err := b.Put(cctx, actionID("c2"), sum[:], 1, strings.NewReader("x")); err == nil {
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
				sum := sha256.Sum256(body)
				if _, err := b.Put(ctx, key, sum[:], int64(len(body)), bytes.NewReader(body)); err != nil {
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
	t.Run("BadIDs", func(t *testing.T) {
		b := newBackend(t)
		for _, id := range [][]byte{nil, []byte("short"), bytes.Repeat([]byte{1}, 33)} {
			if _, err := b.Get(ctx, id); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("Get(%x): %v, want a validation error", id, err)
			}
			sum := sha256.Sum256(nil)
			if _, err := b.Put(ctx, id, sum[:], 0, strings.NewReader("")); err == nil {
				t.Errorf("Put(%x) succeeded", id)
			}
		}
	})
}

// checkEntry checks an entry against the body it must hold.
func checkEntry(t *testing.T, e Entry, body []byte) {
	t.Helper()
	sum := sha256.Sum256(body)
	if !bytes.Equal(e.OutputID, sum[:]) || e.Size != int64(len(body)) {
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
		sum := sha256.Sum256(body)
		if bytes.Equal(e.OutputID, sum[:]) && e.Size == int64(len(body)) && bytes.Equal(got, body) {
			return nil
		}
	}
	return fmt.Errorf("entry (OutputID %x, size %d, %d bytes on disk) matches no body put", e.OutputID, e.Size, len(got))
}

var _ io.Reader = (*verifyingReader)(nil)
