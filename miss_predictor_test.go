package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestPredictMisses: once the remote has missed missStreak keys in a row
// that no manifest names, such keys are answered from the local cache
// alone, but probes, one in missProbe growing to one in missProbeMax; a
// probe that hits ends the streak. Keys a
// manifest names, and entries in the local cache, are never predicted.
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
