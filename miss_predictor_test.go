package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// TestPredictMisses: once the remote has missed missStreak keys in a row
// that no manifest names, such keys are answered from the local cache
// alone, but probes, one in missProbe growing to one in missProbeMax; a
// probe that hits ends the streak. Keys a
// manifest names, and entries in the local cache, are never predicted.
// failingRemote is a memBackend whose gets fail with err while it is set.
type failingRemote struct {
	*memBackend
	err  atomic.Pointer[error]
	gets atomic.Int64
}

func (r *failingRemote) Get(ctx context.Context, id ActionID) (Entry, error) {
	r.gets.Add(1)
	if err := r.err.Load(); err != nil {
		return Entry{}, *err
	}
	return r.memBackend.Get(ctx, id)
}

// TestMissStreakIgnoresRemoteFailures: lookups of unnamed keys that fail
// (the remote timed out, or the breaker kept them away) are not misses:
// once the remote answers again, the keys it holds are asked for, not
// predicted missing. Before, the local tier's "not found" around every
// failure made any missStreak failures a streak.
func TestMissStreakIgnoresRemoteFailures(t *testing.T) {
	ctx := context.Background()
	for name, failure := range map[string]error{
		"timeout":      withKind(KindTimeout, fmt.Errorf("get: %w", context.DeadlineExceeded)),
		"breaker open": errBreakerOpen,
	} {
		t.Run(name, func(t *testing.T) {
			mem := newMemBackend(t)
			packRun(t, mem, map[string]string{"named": "an entry a manifest names"}, []string{"named"})
			remote := &failingRemote{memBackend: mem}
			stats := new(Stats)
			p := newPrefetcher(newLocalTier(newTestDisk(t), remote, false, stats), mem, prefetchOptions{scope: "job", parallelism: 4, predictMisses: true}, stats, quietLog)
			p.Started()
			<-p.done
			defer p.Close(ctx)
			remote.err.Store(&failure)
			for i := range 2 * missStreak {
				p.Get(ctx, actionID(fmt.Sprint("failed", i)))
			}
			remote.err.Store(nil)
			for i := range missProbe {
				putString(t, mem, fmt.Sprint("there", i), "stored by another machine")
			}
			before := remote.gets.Load()
			for i := range missProbe {
				if _, err := p.Get(ctx, actionID(fmt.Sprint("there", i))); err != nil {
					t.Errorf("there%d: %v", i, err)
				}
			}
			if n := remote.gets.Load() - before; n != missProbe || stats.LookupsSkipped.Load() != 0 {
				t.Errorf("after %d failed lookups, %d of %d lookups asked the remote, %d were predicted misses", 2*missStreak, n, missProbe, stats.LookupsSkipped.Load())
			}
		})
	}
}

func TestPredictMisses(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	packRun(t, mem, map[string]string{"named": "an entry a manifest names"}, []string{"named"})
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("predict=%v", on), func(t *testing.T) {
			p, _, counting, stats := freshMachine(t, mem, prefetchOptions{scope: "job", parallelism: 4, predictMisses: on})
			defer p.Close(ctx)
			get := func(key string) error {
				_, err := p.Get(ctx, actionID(key))
				if err != nil && !errors.Is(err, ErrNotFound) {
					t.Fatalf("get %s: %v", key, err)
				}
				return err
			}
			for i := range missStreak {
				if get(fmt.Sprint("new", i)) == nil {
					t.Fatalf("new%d: a hit; want a miss", i)
				}
			}
			asked := counting.gets.Load()
			if asked != missStreak {
				t.Fatalf("%d remote lookups for %d unnamed keys; want one each", asked, missStreak)
			}
			// The streak is long enough: of the next missProbe unnamed keys,
			// with predictions one asks the remote.
			for i := range missProbe {
				putString(t, mem, fmt.Sprint("other", i), "stored by another machine")
			}
			hits := 0
			for i := range missProbe {
				if get(fmt.Sprint("other", i)) == nil {
					hits++
				}
			}
			if on && (hits != 1 || stats.LookupsSkipped.Load() != missProbe-1) {
				t.Fatalf("predicting: %d of %d hits, %d lookups skipped; want 1 (the probe) and %d", hits, missProbe, stats.LookupsSkipped.Load(), missProbe-1)
			}
			if !on && (hits != missProbe || stats.LookupsSkipped.Load() != 0) {
				t.Fatalf("not predicting: %d of %d hits, %d skipped; want every one, none", hits, missProbe, stats.LookupsSkipped.Load())
			}
			// The probe's hit ended the streak: unnamed keys are asked again.
			putString(t, mem, "after", "stored by another machine")
			if get("after") != nil {
				t.Fatal("after a probe hit: a miss; want the remote asked")
			}
			// Probes that miss grow apart: one in missProbe, twice
			// that, ..., at most one in missProbeMax.
			if on {
				for i := range missStreak {
					get(fmt.Sprint("again", i))
				}
				before := counting.gets.Load()
				var gaps []int
				last := 0
				for i := range 200 {
					get(fmt.Sprint("gap", i))
					if n := counting.gets.Load(); n != before {
						before = n
						gaps = append(gaps, i+1-last)
						last = i + 1
					}
				}
				want := []int{missProbe, 2 * missProbe, 4 * missProbe, missProbeMax, missProbeMax}
				if len(gaps) < len(want) || !slices.Equal(gaps[:len(want)], want) {
					t.Fatalf("lookups per probe %v; want %v, then %d", gaps, want, missProbeMax)
				}
			}
			// A named key is asked whatever the streak, a local entry served.
			for i := range missStreak + missProbe {
				get(fmt.Sprint("more", i))
			}
			if get("named") != nil {
				t.Fatal("a key a manifest names: a miss")
			}
			putString(t, p, "local", "in the local cache")
			if get("local") != nil {
				t.Fatal("a local entry: a miss")
			}
		})
	}
}

// TestMissStreakCarriesOver: a server saves what its miss predictor
// learned at Close, and the next server on the same local cache (the next
// go command of a CI job) predicts from its first unnamed key, unless the
// saved state is older than missStateTTL. A server that looked up no
// unnamed key leaves the saved state as it was.
func TestMissStreakCarriesOver(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	packRun(t, mem, map[string]string{"named": "an entry a manifest names"}, []string{"named"})
	state := filepath.Join(t.TempDir(), "miss-streak")
	opts := prefetchOptions{scope: "job", parallelism: 4, predictMisses: true, missState: state}
	lookup := func(p *prefetcher, keys ...string) {
		for _, k := range keys {
			if _, err := p.Get(ctx, actionID(k)); !errors.Is(err, ErrNotFound) {
				t.Fatalf("get %s: %v; want a miss", k, err)
			}
		}
	}
	unnamed := func(prefix string, n int) []string {
		var keys []string
		for i := range n {
			keys = append(keys, fmt.Sprint(prefix, i))
		}
		return keys
	}

	first, _, _, _ := freshMachine(t, mem, opts)
	lookup(first, unnamed("build", missStreak)...)
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(state)
	if err != nil {
		t.Fatalf("no state saved: %v", err)
	}

	next, _, counting, stats := freshMachine(t, mem, opts)
	lookup(next, unnamed("vet", missProbe)...)
	if asked := counting.gets.Load(); asked != 1 || stats.LookupsSkipped.Load() != missProbe-1 {
		t.Errorf("next server, %d unnamed keys: %d asked, %d skipped; want 1 (the probe) and %d", missProbe, asked, stats.LookupsSkipped.Load(), missProbe-1)
	}

	os.WriteFile(state, saved, 0o644)
	idle, _, _, _ := freshMachine(t, mem, opts)
	if _, err := idle.Get(ctx, actionID("named")); err != nil {
		t.Fatalf("get named: %v", err)
	}
	if err := idle.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(state); string(b) != string(saved) {
		t.Errorf("a server that looked up no unnamed key rewrote the state: %q; was %q", b, saved)
	}

	stale := fmt.Sprintf("%d %d %d\n", time.Now().Add(-missStateTTL-time.Minute).UnixNano(), missStreak, missProbeMax)
	for _, bad := range []string{stale, "garbage\n", "1 -5 0\n"} {
		os.WriteFile(state, []byte(bad), 0o644)
		fresh, _, counting, _ := freshMachine(t, mem, opts)
		lookup(fresh, unnamed("test", missProbe)...)
		if asked := counting.gets.Load(); asked != missProbe {
			t.Errorf("state %q: %d of %d unnamed keys asked; want every one (a fresh streak)", bad, asked, missProbe)
		}
		fresh.Close(ctx)
	}
}
