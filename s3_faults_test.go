package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/richardartoul/gobuildcache/internal/cachefmt"
)

// TestS3Faults runs the real binary under the real go command with the S3
// endpoint behind a fault-injecting reverse proxy (faultProxy, on
// 127.0.0.1), and checks that a failing remote cache never fails a build,
// never changes what it produces, never floods its log and, when the
// endpoint is dead, barely slows it down.
//
// It builds a small module with the plain Go cache for reference, warms a
// fresh bucket through the proxy (go build, go test), and then, for each
// fault mode, does the same go build and go test as a "fresh VM" would:
// empty -cache-dir, empty GOCACHE, the proxy in that mode:
//
//	pass     requests forwarded unchanged: everything is a remote hit
//	refuse   the proxy's listener is closed: connections refused (dead endpoint)
//	500      every request answered 500 InternalError
//	503      every request answered 503 SlowDown (throttling)
//	stall    requests accepted and never answered (black hole)
//	reset    object downloads cut off mid-body (headers and half the body sent)
//	corrupt  object downloads with bytes flipped, same length
//
// For each it checks that
//   - both commands succeed and the binary is byte-identical to the reference;
//   - the -stats-json counters add up (hits+misses == gets, uploads accounted
//     for) and fit the mode: pass is all remote hits and no errors; the
//     failing modes count remote errors of the fitting kind, serve no remote
//     hit and (where every request fails) open the circuit breaker; every
//     corrupted body is counted as a verify failure and never served;
//   - each command's stderr holds at most a few gobuildcache lines;
//   - for refuse and stall ("a dead endpoint costs the whole build seconds,
//     not minutes"), the fresh-VM build+test takes less than 10 s longer
//     than the same build+test on the disk backend, measured right before
//     (over budget, both are measured again, up to three rounds, and the
//     best of each compared, so that a busy machine does not decide).
//
// What a black hole costs by design: the go command's first gets come one
// at a time, each waits attemptStart for a first byte and as long again
// for its retry, and the breaker opens after two such timeouts in a row
// (breakerBackend): about 4 s in go build; go test then starts with the
// breaker's marker and answers at once. On the slower 2-core VM kind (AMD
// EPYC, 2026-12-03) six rounds took 5.0-6.8 s extra, as designed, and the
// old budget of 5 s failed; the budget is 10 s.
func TestS3Faults(t *testing.T) {
	skipIfShortE2E(t)
	tg := s3TargetForTest(t)
	if tg.Endpoint == "" || !tg.PathStyle {
		t.Skip("the fault proxy needs an S3 endpoint URL with path-style addressing (MinIO)")
	}
	bin := gobuildcacheBinary(t)
	proxy := newFaultProxy(t, tg.Endpoint)
	// The later -s3-endpoint wins: the proxy's.
	s3Args := append(tg.args(), "-s3-endpoint="+proxy.URL())
	mod := faultsModule(t)

	// The reference: the plain Go cache.
	refExe := filepath.Join(t.TempDir(), "app-ref")
	if _, stderr, err := faultsGo(mod, goEnv(t.TempDir()), "build", "-o", refExe, "./cmd/app"); err != nil {
		t.Fatalf("reference go build: %v\n%s", err, stderr)
	}
	ref, err := os.ReadFile(refExe)
	if err != nil {
		t.Fatal(err)
	}

	// Warm the bucket through the proxy.
	proxy.setMode(t, faultPass)
	before := proxy.snapshot()
	warm := faultsVM(t, bin, mod, s3Args, "warm")
	seen := proxy.snapshot().sub(before)
	if !warm.green {
		t.Fatalf("warm-up build through the proxy failed: %v", warm.err)
	}
	if !bytes.Equal(warm.binary, ref) {
		t.Errorf("warm-up: binary differs from the plain Go cache's")
	}
	wt := warm.total()
	faultsCheckCounters(t, "warm-up go build", warm.build)
	faultsCheckCounters(t, "warm-up go test", warm.test)
	faultsCheckLog(t, "warm-up", warm)
	if wt.Puts == 0 || wt.UploadsDone != wt.Puts || wt.RemoteBytesUp == 0 {
		t.Errorf("warm-up: %d puts, %d uploads done (%d bytes): want every put uploaded", wt.Puts, wt.UploadsDone, wt.RemoteBytesUp)
	}
	if wt.RemoteErrors != 0 || wt.UploadsFailed+wt.UploadsDropped+wt.UploadsAbandoned != 0 {
		t.Errorf("warm-up: remote errors %v, uploads failed %d, dropped %d, abandoned %d; want none",
			wt.RemoteErrorsByKind, wt.UploadsFailed, wt.UploadsDropped, wt.UploadsAbandoned)
	}
	if seen.requests == 0 {
		t.Errorf("warm-up: the proxy saw no request")
	}
	t.Logf("warm-up: green, %d gets, %d puts, %d uploads done (%s up), proxy saw %d requests, %.1fs",
		wt.Gets, wt.Puts, wt.UploadsDone, formatBytes(wt.RemoteBytesUp), seen.requests, warm.dur.Seconds())

	var summary []string
	for _, mode := range []faultMode{faultPass, faultRefuse, fault500, fault503, faultStall, faultReset, faultCorrupt} {
		t.Run(mode.String(), func(t *testing.T) {
			timed := mode == faultRefuse || mode == faultStall
			run := func(round int) (faultsRun, faultCounts) {
				proxy.setMode(t, mode)
				defer proxy.setMode(t, faultPass)
				before := proxy.snapshot()
				r := faultsVM(t, bin, mod, s3Args, fmt.Sprint(mode, "-", round))
				return r, proxy.snapshot().sub(before)
			}
			var baseline time.Duration
			if timed {
				// The same fresh-VM build+test on the disk backend, right
				// before.
				disk := faultsVM(t, bin, mod, []string{"-backend=disk"}, "disk-"+mode.String())
				if !disk.green {
					t.Fatalf("disk-backend baseline failed: %v", disk.err)
				}
				baseline = disk.dur
			}
			r, seen := run(1)
			tot := r.total()
			line := fmt.Sprintf("mode=%-7s green=%-5v gets=%d hits=%d remote_hits=%d remote_errors=%d (%s) verify_failures=%d skipped=%d requests_sent=%d proxy_requests=%d %.1fs",
				mode, r.green, tot.Gets, tot.Hits, tot.RemoteHits, tot.RemoteErrors, kindSummary(tot.RemoteErrorsByKind),
				tot.VerifyFailures, tot.RemoteSkipped, tot.RemoteRequests, seen.requests, r.dur.Seconds())
			defer func() {
				t.Log(line)
				summary = append(summary, line)
			}()

			// 1. Green, and the very same binary.
			if !r.green {
				t.Fatalf("a failing remote failed the build: %v", r.err)
			}
			if !bytes.Equal(r.binary, ref) {
				t.Errorf("binary differs from the one built with the plain Go cache")
			}
			// 2. Counters add up and fit the mode.
			faultsCheckCounters(t, "go build", r.build)
			faultsCheckCounters(t, "go test", r.test)
			faultsCheckMode(t, mode, r, seen)
			// 3. The log stays short.
			faultsCheckLog(t, mode.String(), r)
			// 4. A dead endpoint costs the whole build+test seconds, not
			// minutes: less than 10 s (see the doc comment).
			if !timed {
				return
			}
			const budget = 10 * time.Second
			bestDisk, bestFault := baseline, r.dur
			t.Logf("timing round 1: %s %.2fs, disk backend %.2fs, extra %+.2fs", mode, r.dur.Seconds(), baseline.Seconds(), (r.dur - baseline).Seconds())
			// A busy machine makes single timings noisy: over budget,
			// measure both again and compare the best of each.
			for round := 2; bestFault-bestDisk >= budget && round <= 3; round++ {
				disk := faultsVM(t, bin, mod, []string{"-backend=disk"}, fmt.Sprint("disk-", mode, "-", round))
				again, _ := run(round)
				if !disk.green || !again.green {
					t.Fatalf("timing round %d: disk: %v; %s: %v", round, disk.err, mode, again.err)
				}
				if !bytes.Equal(again.binary, ref) {
					t.Errorf("timing round %d: binary differs from the one built with the plain Go cache", round)
				}
				t.Logf("timing round %d: %s %.2fs, disk backend %.2fs, extra %+.2fs", round, mode, again.dur.Seconds(), disk.dur.Seconds(), (again.dur - disk.dur).Seconds())
				bestDisk, bestFault = min(bestDisk, disk.dur), min(bestFault, again.dur)
			}
			extra := bestFault - bestDisk
			line += fmt.Sprintf(" (best: %s %.1fs, disk %.1fs, extra %+.1fs)", mode, bestFault.Seconds(), bestDisk.Seconds(), extra.Seconds())
			if extra >= budget {
				t.Errorf("with the endpoint in %s mode, a fresh-VM go build + go test took %.1fs, %.1fs more than on the disk backend (%.1fs; best of each); want less than %v extra",
					mode, bestFault.Seconds(), extra.Seconds(), bestDisk.Seconds(), budget)
			}
		})
	}
	t.Logf("summary:\n\t%s", strings.Join(summary, "\n\t"))
}

// faultsCheckMode checks the counters of a fresh-VM run against what its
// fault mode should produce.
func faultsCheckMode(t *testing.T, mode faultMode, r faultsRun, seen faultCounts) {
	t.Helper()
	tot := r.total()
	// Remote error kinds each mode may produce; the first is the one
	// expected.
	allowed := map[faultMode][]string{
		faultRefuse: {"refused", "reset", "network"},
		fault500:    {"server"},
		fault503:    {"throttle"},
		faultStall:  {"timeout"},
		faultReset:  {"reset"},
	}[mode]
	for kind, n := range tot.RemoteErrorsByKind {
		if !slices.Contains(allowed, kind) {
			t.Errorf("%d remote errors of kind %q; in %s mode want only %v", n, kind, mode, allowed)
		}
	}
	if mode != faultCorrupt && tot.VerifyFailures != 0 {
		t.Errorf("%d verify failures in %s mode, want 0", tot.VerifyFailures, mode)
	}
	switch mode {
	case faultPass:
		if r.build.RemoteHits == 0 || tot.RemoteHits == 0 || tot.RemoteBytesDown == 0 {
			t.Errorf("remote hits: go build %d, go test %d (%d bytes down); want remote hits", r.build.RemoteHits, r.test.RemoteHits, tot.RemoteBytesDown)
		}
		if tot.RemoteErrors != 0 || tot.RemoteSkipped != 0 {
			t.Errorf("remote errors %v, skipped %d; want none", tot.RemoteErrorsByKind, tot.RemoteSkipped)
		}
		// go build -o looks up its link action, which the go command
		// never stores (a warm local rebuild misses it too): allow that.
		if r.build.Misses > 2 || r.test.Misses != 0 {
			t.Errorf("go build: %d misses, go test: %d misses; a warm bucket should answer every get", r.build.Misses, r.test.Misses)
		}
		if tot.PackEntries == 0 {
			t.Errorf("no entry came from a pack: the warm-up's packs were not read")
		}
		if !regexp.MustCompile(`(?m)^ok\s+example\.com/faults/b\s+\(cached\)`).MatchString(r.testOut) {
			t.Errorf("go test on a fresh VM over a warm bucket did not report (cached):\n%s", r.testOut)
		}
	case faultRefuse, fault500, fault503, faultStall:
		if tot.RemoteErrors == 0 || (mode != faultRefuse && tot.RemoteErrorsByKind[allowed[0]] == 0) {
			t.Errorf("remote errors %v; want errors of kind %q", tot.RemoteErrorsByKind, allowed[0])
		}
		if tot.RemoteHits != 0 || tot.RemoteBytesDown != 0 {
			t.Errorf("%d remote hits (%d bytes) from an endpoint that answers nothing", tot.RemoteHits, tot.RemoteBytesDown)
		}
		if tot.UploadsDone != 0 {
			t.Errorf("%d uploads done to an endpoint that takes none", tot.UploadsDone)
		}
		for name, s := range map[string]StatsSnapshot{"go build": r.build, "go test": r.test} {
			// Every remote request fails: with enough misses the
			// breaker must have opened and kept requests away.
			if s.Misses >= 2*breakerThreshold && s.RemoteSkipped == 0 {
				t.Errorf("%s: %d misses, %d remote errors, none skipped: the circuit breaker never opened", name, s.Misses, s.RemoteErrors)
			}
		}
		// Every request the endpoint saw is an attempt (at most 3 each) of
		// a request the breaker let through and counted: no hidden retry
		// storm. Not of a counted error: a request whose caller gave up
		// (a pack range no longer needed, a prefetch at exit) is no
		// failure of the remote's, and is not counted as one.
		if seen.requests > 3*tot.RemoteRequests {
			t.Errorf("the proxy saw %d requests for %d requests sent (%d remote errors): more than 3 attempts each", seen.requests, tot.RemoteRequests, tot.RemoteErrors)
		}
		if tot.RemoteErrors > tot.RemoteRequests {
			t.Errorf("%d remote errors counted for %d requests sent", tot.RemoteErrors, tot.RemoteRequests)
		}
		if mode == faultRefuse && seen.requests != 0 {
			t.Errorf("the refusing proxy saw %d requests", seen.requests)
		}
		if mode != faultRefuse && seen.requests == 0 {
			t.Errorf("the proxy saw no request")
		}
	case faultReset, faultCorrupt:
		if seen.damaged == 0 {
			t.Errorf("the proxy damaged no object download (of %d requests): the fault was never exercised", seen.requests)
		}
		// Only empty objects pass the proxy undamaged; of a pack range cut
		// off, the entries before the cut land (each verified), and a
		// corrupted one delivers nothing (its first byte is flipped).
		if tot.RemoteHits > seen.untouched || (tot.RemoteBytesDown != 0 && (mode == faultCorrupt || tot.PackEntries == 0)) {
			t.Errorf("%d remote hits (%d bytes, %d entries from packs) but only %d (empty) object downloads passed undamaged",
				tot.RemoteHits, tot.RemoteBytesDown, tot.PackEntries, seen.untouched)
		}
		if mode == faultReset {
			if tot.RemoteErrorsByKind["reset"] == 0 {
				t.Errorf("remote errors %v; want errors of kind \"reset\"", tot.RemoteErrorsByKind)
			}
			break
		}
		// Every corrupted object is one verify failure; a corrupted pack
		// range is one at most (a flipped byte in its frame header fails
		// the decoding before any body is checked).
		if objects := seen.damaged - seen.packs; tot.VerifyFailures < objects || tot.VerifyFailures > seen.damaged {
			t.Errorf("verify failures %d, the proxy corrupted %d object downloads and %d pack ranges: want every object caught", tot.VerifyFailures, objects, seen.packs)
		}
		if tot.RemoteErrors != 0 {
			t.Errorf("remote errors %v: a corrupt body is a verify failure, not a remote error", tot.RemoteErrorsByKind)
		}
	}
}

// faultsCheckCounters checks that one command's counters add up.
func faultsCheckCounters(t *testing.T, name string, s StatsSnapshot) {
	t.Helper()
	if !s.Remote {
		t.Errorf("%s: stats say no remote was configured", name)
	}
	if s.Gets == 0 {
		t.Errorf("%s: no gets counted", name)
	}
	if s.Hits+s.Misses != s.Gets {
		t.Errorf("%s: hits %d + misses %d != gets %d", name, s.Hits, s.Misses, s.Gets)
	}
	if s.LocalHits < 0 || s.RemoteHits < 0 || s.LocalHits+s.RemoteHits != s.Hits {
		t.Errorf("%s: local hits %d + remote hits %d != hits %d", name, s.LocalHits, s.RemoteHits, s.Hits)
	}
	var kinds int64
	for _, n := range s.RemoteErrorsByKind {
		kinds += n
	}
	if kinds != s.RemoteErrors {
		t.Errorf("%s: remote errors %d, by kind %v", name, s.RemoteErrors, s.RemoteErrorsByKind)
	}
	// Every put stored locally is handed to the uploader, which does,
	// fails, drops or abandons it.
	uploads := s.UploadsDone + s.UploadsFailed + s.UploadsDropped + s.UploadsAbandoned
	if uploads > s.Puts || len(s.Errors) == 0 && uploads != s.Puts {
		t.Errorf("%s: %d puts (errors %v) but uploads done %d + failed %d + dropped %d + abandoned %d = %d",
			name, s.Puts, s.Errors, s.UploadsDone, s.UploadsFailed, s.UploadsDropped, s.UploadsAbandoned, uploads)
	}
	if s.UploadsDone == 0 && s.RemoteBytesUp != 0 {
		t.Errorf("%s: %d bytes up without an upload done", name, s.RemoteBytesUp)
	}
	// Bytes come down for gets that waited on a fetch (remote hits) or
	// for the prefetch, whose entries are then local hits.
	if s.RemoteHits == 0 && s.PrefetchObjects == 0 && s.RemoteBytesDown != 0 {
		t.Errorf("%s: %d bytes down without a remote hit or a prefetch", name, s.RemoteBytesDown)
	}
	if len(s.Errors) != 0 {
		t.Errorf("%s: server errors %v: a failing remote must only ever be a miss", name, s.Errors)
	}
}

// faultsCheckLog checks that gobuildcache kept each command's stderr short.
func faultsCheckLog(t *testing.T, name string, r faultsRun) {
	t.Helper()
	for cmd, stderr := range map[string]string{"go build": r.buildStderr, "go test": r.testStderr} {
		var lines []string
		for line := range strings.Lines(stderr) {
			if strings.Contains(line, "gobuildcache") {
				lines = append(lines, strings.TrimSpace(line))
			}
		}
		if len(lines) > 0 {
			t.Logf("%s: %s stderr, %d gobuildcache lines:\n\t%s", name, cmd, len(lines), strings.Join(lines, "\n\t"))
		}
		if len(lines) > 10 {
			t.Errorf("%s: %s stderr has %d gobuildcache lines, want at most 10", name, cmd, len(lines))
		}
	}
}

// faultsModule writes a small module with few imports, so that a cold
// build is quick: a has none, b imports a and strings and has a test,
// cmd/app imports b.
func faultsModule(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":          "module example.com/faults\n\ngo 1.22\n",
		"a/a.go":          "package a\n\nfunc A() int { return 40 }\n",
		"b/b.go":          "package b\n\nimport (\n\t\"strings\"\n\n\t\"example.com/faults/a\"\n)\n\nfunc B() string { return strings.Repeat(\"b\", a.A()+2) }\n",
		"b/b_test.go":     "package b\n\nimport \"testing\"\n\nfunc TestB(t *testing.T) {\n\tif len(B()) != 42 {\n\t\tt.Fatal(B())\n\t}\n}\n",
		"cmd/app/main.go": "package main\n\nimport \"example.com/faults/b\"\n\nfunc main() { println(b.B()) }\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// faultsRun is one fresh-VM go build and go test.
type faultsRun struct {
	green                   bool
	err                     error // why not green
	binary                  []byte
	build, test             StatsSnapshot
	buildStderr, testStderr string
	testOut                 string
	dur                     time.Duration // build and test
}

// total adds up the counters of the two commands.
func (r faultsRun) total() StatsSnapshot {
	a, b := r.build, r.test
	s := StatsSnapshot{cachefmt.Stats{
		Gets: a.Gets + b.Gets, Hits: a.Hits + b.Hits, Misses: a.Misses + b.Misses,
		LocalHits: a.LocalHits + b.LocalHits, RemoteHits: a.RemoteHits + b.RemoteHits, Puts: a.Puts + b.Puts,
		RemoteErrors: a.RemoteErrors + b.RemoteErrors, RemoteSkipped: a.RemoteSkipped + b.RemoteSkipped,
		VerifyFailures: a.VerifyFailures + b.VerifyFailures, RemoteBytesDown: a.RemoteBytesDown + b.RemoteBytesDown,
		RemoteBytesUp: a.RemoteBytesUp + b.RemoteBytesUp, UploadsDone: a.UploadsDone + b.UploadsDone,
		UploadsFailed: a.UploadsFailed + b.UploadsFailed, UploadsDropped: a.UploadsDropped + b.UploadsDropped,
		UploadsAbandoned:   a.UploadsAbandoned + b.UploadsAbandoned,
		PackEntries:        a.PackEntries + b.PackEntries,
		RemoteRequests:     a.RemoteRequests + b.RemoteRequests,
		Errors:             maps.Clone(a.Errors),
		RemoteErrorsByKind: maps.Clone(a.RemoteErrorsByKind),
	}}
	if s.Errors == nil {
		s.Errors = map[string]int64{}
	}
	if s.RemoteErrorsByKind == nil {
		s.RemoteErrorsByKind = map[string]int64{}
	}
	for k, v := range b.Errors {
		s.Errors[k] += v
	}
	for k, v := range b.RemoteErrorsByKind {
		s.RemoteErrorsByKind[k] += v
	}
	return s
}

// faultsVM runs go build and go test in mod as a fresh VM would: an empty
// GOCACHE, and gobuildcache with gcArgs over an empty -cache-dir, each go
// command with its own -stats-json.
func faultsVM(t *testing.T, bin, mod string, gcArgs []string, tag string) faultsRun {
	t.Helper()
	var r faultsRun
	gocache, cacheDir, tmp := t.TempDir(), t.TempDir(), t.TempDir()
	prog := func(stats string) string {
		args := append([]string{bin}, gcArgs...)
		args = append(args, "-cache-dir="+cacheDir, "-stats-json="+stats)
		return "GOCACHEPROG=" + strings.Join(args, " ")
	}
	exe := filepath.Join(tmp, "app-"+tag)
	buildStats, testStats := filepath.Join(tmp, "build.json"), filepath.Join(tmp, "test.json")

	start := time.Now()
	_, stderr, err := faultsGo(mod, goEnv(gocache, prog(buildStats)), "build", "-o", exe, "./cmd/app")
	r.buildStderr = stderr
	if err != nil {
		r.err = fmt.Errorf("go build (%s): %v\n%s", tag, err, stderr)
		r.dur = time.Since(start)
		return r
	}
	stdout, stderr, err := faultsGo(mod, goEnv(gocache, prog(testStats)), "test", "./...")
	r.dur = time.Since(start)
	r.testOut, r.testStderr = stdout, stderr
	if err != nil {
		r.err = fmt.Errorf("go test (%s): %v\n%s%s", tag, err, stdout, stderr)
		return r
	}
	if r.binary, err = os.ReadFile(exe); err != nil {
		r.err = err
		return r
	}
	for path, s := range map[string]*StatsSnapshot{buildStats: &r.build, testStats: &r.test} {
		b, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(b, s)
		}
		if err != nil {
			r.err = fmt.Errorf("stats (%s): %v", tag, err)
			return r
		}
	}
	r.green = true
	return r
}

// faultsGo runs one go command, bounded in time.
func faultsGo(dir string, env []string, args ...string) (stdout, stderr string, err error) {
	const limit = 3 * time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir, cmd.Env = dir, env
	// gobuildcache inherits stderr: do not wait for it forever if the go
	// command is killed.
	cmd.WaitDelay = 10 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %v: %v", limit, err)
	}
	return out.String(), errb.String(), err
}
