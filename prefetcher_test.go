package main

import (
	"fmt"
	"testing"
	"time"
)

// TestManifestNotRewritten: a run that one of the manifests it read
// already describes (all its entries, and at most a tenth more) writes no
// manifest, unless a manifest could not be read or the newest is more than
// a day old.
func TestManifestNotRewritten(t *testing.T) {
	p := &prefetcher{scope: "job"}
	a, b, c := actionID("a"), actionID("b"), actionID("c")
	name := func(age time.Duration) manifestInfo {
		return manifestInfo{name: fmt.Sprint(age), time: time.Now().Add(-age)}
	}
	lists := [][]manifestEntry{{{id: a}}, {{id: b}}}
	if p.named([]ActionID{a}) {
		t.Fatal("named before any manifest was read")
	}
	lists = [][]manifestEntry{{{id: a}, {id: b}}, {{id: c}}}
	p.noteRead([]manifestInfo{name(time.Hour), name(2 * time.Hour)}, lists)
	if !p.named([]ActionID{b, a, b}) || !p.named([]ActionID{c}) {
		t.Error("the entries of a manifest read: not named")
	}
	if p.named([]ActionID{a}) {
		t.Error("a manifest naming twice what the run used: named")
	}
	if p.named([]ActionID{a, c}) {
		t.Error("entries of two manifests: named")
	}

	p = &prefetcher{scope: "job"}
	p.noteRead([]manifestInfo{name(25 * time.Hour)}, lists[:1])
	if p.named([]ActionID{a}) {
		t.Error("newest manifest a day old: named (not renewed)")
	}
	p = &prefetcher{scope: "job"}
	p.noteRead([]manifestInfo{name(time.Hour), name(2 * time.Hour)}, [][]manifestEntry{{{id: a}}, nil})
	if p.named([]ActionID{a}) {
		t.Error("a manifest unreadable: named")
	}
}
