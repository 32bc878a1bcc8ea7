package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLoadJobID: the servers on one local cache directory share a job ID
// until it is jobIDLifetime old; without a file, or with one half
// written, a server has an ID of its own.
func TestLoadJobID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "job")
	now := time.Now()
	first := loadJobID(path, now)
	if !jobIDPattern.MatchString(first) || loadJobID(path, now.Add(time.Minute)) != first {
		t.Fatalf("a job's servers: %q, then another", first)
	}
	if next := loadJobID(path, now.Add(jobIDLifetime+time.Minute)); next == first || loadJobID(path, time.Now()) != next {
		t.Errorf("after jobIDLifetime: %q (was %q), want a new one, kept", next, first)
	}
	torn := filepath.Join(t.TempDir(), "job")
	if err := os.WriteFile(torn, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if a, b := loadJobID(torn, time.Now()), loadJobID(torn, time.Now()); a == b || !jobIDPattern.MatchString(a) {
		t.Errorf("a file half written: %q and %q, want an ID of each server's own", a, b)
	}
	if b, _ := os.ReadFile(torn); len(b) != 0 {
		t.Errorf("a file half written was replaced by a reader: %q", b)
	}
	if loadJobID("", now) == loadJobID("", now) {
		t.Error("no file: the same ID twice")
	}
}

// TestChooseManifests: a prefetch reads the newest manifestsToRead of each
// location and scope, and the rest of their jobs and of its own, up to
// manifestsReadMax.
func TestChooseManifests(t *testing.T) {
	const own, a, b = "0000000000aa", "0000000000bb", "0000000000cc"
	var listed []manifestInfo
	tm := time.Now()
	add := func(dir, job string, n int) {
		for range n {
			tm = tm.Add(-time.Second)
			listed = append(listed, manifestInfo{name: dir + "/" + newManifestID(tm, job)})
		}
	}
	count := func(infos []manifestInfo) map[string]int {
		c := make(map[string]int)
		for _, m := range infos {
			c[siblingManifest(m.name, "")+manifestJob(m.name)]++
		}
		return c
	}
	// Newest first: this job's two, job a's six, job b's six; then
	// another location's job a, 20 of them; then a third location's
	// job a's three and job b's eight.
	add("m/s", own, 2)
	add("m/s", a, 6)
	add("m/s", b, 6)
	add("r/s", a, 20)
	add("t/s", a, 3)
	add("t/s", b, 8)
	got := count(chooseManifests(listed, own))
	want := map[string]int{"m/s/" + own: 2, "m/s/" + a: 6, "r/s/" + a: manifestsReadMax, "t/s/" + a: 3, "t/s/" + b: 8}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("chose %v, want %v", got, want)
	}
	// Manifests of no job (each its own, as before jobs were named): the
	// newest manifestsToRead.
	listed = nil
	for range 6 {
		add("m/s", "", 1)
	}
	if n := len(chooseManifests(listed, own)); n != manifestsToRead {
		t.Errorf("manifests of no job: chose %d, want %d", n, manifestsToRead)
	}
}

// TestJobOfManyGoCommands: a CI job of six go commands in one scope, each
// using entries of its own, stores six manifests; the next job's first
// command lands the entries of all six, and none of its commands stores a
// manifest, each finding its run described by the last job's. (Reading
// the newest manifestsToRead alone, every job stored them anew.)
func TestJobOfManyGoCommands(t *testing.T) {
	ctx := context.Background()
	mem := newMemBackend(t)
	const commands = 6
	keys := func(c int) []string {
		var ks []string
		for i := range 20 {
			ks = append(ks, fmt.Sprint("command ", c, " key ", i))
		}
		return ks
	}
	job := func() (firstLanded int) {
		tier := newLocalTier(newTestDisk(t), mem, false, new(Stats))
		jobFile := filepath.Join(t.TempDir(), "job")
		for c := range commands {
			stats := new(Stats)
			p := newPrefetcher(tier, mem, prefetchOptions{scope: "job", parallelism: 4, upload: true, packs: true, job: loadJobID(jobFile, time.Now())}, stats, quietLog)
			p.Started()
			<-p.done
			if c == 0 {
				for d := range commands {
					for _, k := range keys(d) {
						if _, err := tier.localEntry(actionID(k)); err == nil {
							firstLanded++
						}
					}
				}
			}
			for _, k := range keys(c) {
				if _, err := p.Get(ctx, actionID(k)); err == nil {
					p.Got(actionID(k), true)
					continue
				}
				putString(t, p, k, "body of "+k)
				p.Stored(actionID(k))
			}
			if err := p.Close(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return firstLanded
	}
	job()
	if infos, _ := mem.ListManifests(ctx, "job", -1); len(infos) != commands {
		t.Fatalf("the cold job stored %d manifests, want %d", len(infos), commands)
	}
	if landed := job(); landed != commands*20 {
		t.Errorf("the next job's first command landed %d entries, want all %d", landed, commands*20)
	}
	if infos, _ := mem.ListManifests(ctx, "job", -1); len(infos) != commands {
		t.Errorf("after the next job: %d manifests, want the cold job's %d alone", len(infos), commands)
	}
}

// TestJobIDFromTheFuture: a job file whose mtime lies in the future
// (a clock that was wrong once, on a self-hosted runner whose cache
// directory outlives its jobs) is never replaced: every later go command
// on that directory, in every job, shares one job ID for ever, although
// jobIDLifetime is 6 hours. The trim stamp and the miss streak treat a
// future stamp as a clock gone wrong; this file does not.
func TestJobIDFromTheFuture(t *testing.T) {
	path := filepath.Join(t.TempDir(), "job")
	now := time.Now()
	first := loadJobID(path, now)
	future := now.Add(365 * 24 * time.Hour)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	later := now.Add(30 * 24 * time.Hour) // a month on: many jobs later
	if got := loadJobID(path, later); got == first {
		t.Errorf("a month after it was written (mtime a year ahead), the job ID is still %q: one job for ever", got)
	}
}
