package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestS3TwoVMs is the product's promise end to end: two CI machines with
// separate, empty local caches share one bucket. VM A builds and tests a
// module; VM B, starting from nothing, then gets almost everything from the
// bucket, reports its tests as cached, and builds the same bytes.
func TestS3TwoVMs(t *testing.T) {
	mod, ref := moduleWithReference(t)
	tg := s3TargetForTest(t)
	args := tg.args()

	a, err := buildAndTestWith(t, mod, t.TempDir(), "vmA", args...)
	if err != nil {
		t.Fatal(err)
	}
	aBuild := a.buildStats(t)
	if aBuild.UploadsDone == 0 || a.stats.UploadsDone == 0 {
		t.Fatalf("VM A uploaded nothing: build %+v, test %+v", aBuild, a.stats)
	}
	if n := aBuild.UploadsFailed + aBuild.UploadsDropped + aBuild.UploadsAbandoned + a.stats.UploadsFailed + a.stats.UploadsDropped + a.stats.UploadsAbandoned; n != 0 {
		t.Fatalf("VM A lost %d uploads", n)
	}

	b, err := buildAndTestWith(t, mod, t.TempDir(), "vmB", args...)
	if err != nil {
		t.Fatal(err)
	}
	// VM B's cache dir started empty, so each local hit is of an entry B
	// itself fetched from the bucket earlier (in go build, for go test):
	// every get that was not one of those must be a remote hit.
	var gets, remoteHits, localHits int64
	for _, st := range []struct {
		name string
		s    StatsSnapshot
	}{{"go build", b.buildStats(t)}, {"go test", b.stats}} {
		s := st.s
		var text bytes.Buffer
		s.WriteText(&text)
		t.Logf("VM B, %s:\n%s", st.name, text.String())
		if s.RemoteHits == 0 || s.RemoteErrors != 0 || s.VerifyFailures != 0 || s.Hits+s.Misses != s.Gets {
			t.Errorf("VM B %s: counters %+v", st.name, s)
		}
		gets, remoteHits, localHits = gets+s.Gets, remoteHits+s.RemoteHits, localHits+s.LocalHits
	}
	if fetched := gets - localHits; float64(remoteHits) < 0.95*float64(fetched) {
		t.Errorf("VM B: %d remote hits of %d gets not already fetched, want at least 95%%", remoteHits, fetched)
	}
	t.Logf("VM B: %d gets, %d remote hits (%.1f%% of the %d not already fetched by B itself), %d local hits of entries B fetched",
		gets, remoteHits, 100*float64(remoteHits)/float64(gets-localHits), gets-localHits, localHits)
	for _, pkg := range []string{"example.com/e2e/b", "example.com/e2e/c"} {
		if !regexp.MustCompile(`ok\s+` + regexp.QuoteMeta(pkg) + `\s+\(cached\)`).MatchString(b.testOut) {
			t.Errorf("VM B's go test did not report %s as (cached):\n%s", pkg, b.testOut)
		}
	}
	if !bytes.Equal(b.binary, a.binary) || !bytes.Equal(b.binary, ref.binary) {
		t.Error("VM B's binary differs from VM A's or from the plain Go cache's")
	}
	// stderr is the user's build log: nothing of ours (or the SDK's) on a
	// healthy run.
	for _, out := range []string{a.buildOut, a.testOut, b.buildOut, b.testOut} {
		if strings.Contains(out, "gobuildcache") || strings.Contains(out, "SDK") || strings.Contains(out, "checksum") {
			t.Errorf("unexpected output in the build log:\n%s", out)
		}
	}
}

// TestS3ReadOnly runs VM B with -read-only: it still gets remote hits, and
// the bucket gains nothing even when the build puts new entries.
func TestS3ReadOnly(t *testing.T) {
	mod, _ := moduleWithReference(t)
	tg := s3TargetForTest(t)
	args := tg.args()
	if _, err := buildAndTestWith(t, mod, t.TempDir(), "writer", args...); err != nil {
		t.Fatal(err)
	}
	c := rawClient(t, tg)
	before := len(listKeys(t, c, tg.Bucket, tg.Prefix))

	// A change the bucket has not seen, so the read-only VM must put.
	os.WriteFile(filepath.Join(mod, "c", "extra.go"), []byte("package c\n\nfunc Extra() int { return 42 }\n"), 0o644)
	r, err := buildAndTestWith(t, mod, t.TempDir(), "readonly", append(args, "-read-only")...)
	if err != nil {
		t.Fatal(err)
	}
	if r.stats.RemoteHits == 0 || r.stats.Puts == 0 {
		t.Fatalf("read-only VM: %+v; want remote hits and local puts", r.stats)
	}
	if r.stats.RemoteBytesUp != 0 || r.stats.UploadsDone != 0 {
		t.Fatalf("read-only VM uploaded: %+v", r.stats)
	}
	if after := len(listKeys(t, c, tg.Bucket, tg.Prefix)); after != before {
		t.Fatalf("bucket went from %d to %d objects under a read-only VM", before, after)
	}
}

// TestCheckCommand runs `gobuildcache check` against the bucket, and
// against a missing one.
func TestCheckCommand(t *testing.T) {
	tg := s3TargetForTest(t)
	bin := gobuildcacheBinary(t)
	out, err := exec.Command(bin, append([]string{"check"}, tg.args()...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "remote cache OK") || !strings.Contains(string(out), "s3:GetObject") {
		t.Fatalf("check: %v\n%s", err, out)
	}
	t.Logf("check:\n%s", out)
	c := rawClient(t, tg)
	if keys := listKeys(t, c, tg.Bucket, tg.Prefix); len(keys) != 0 {
		t.Errorf("check left objects behind: %v", keys)
	}

	bad := tg
	bad.Bucket = "gbc-missing-" + randomHex(4)
	cmd := exec.Command(bin, append([]string{"check"}, bad.args()...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("check of a missing bucket succeeded")
	}
	if msg := stderr.String(); strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "no such bucket") {
		t.Errorf("check of a missing bucket: want one line naming the problem, got %q", msg)
	}
}

// TestClearCommandS3 runs `gobuildcache clear` on S3: the prefix is
// emptied, and an empty prefix is refused.
func TestClearCommandS3(t *testing.T) {
	tg := s3TargetForTest(t)
	bin := gobuildcacheBinary(t)
	b := newTestS3(t, tg)
	for _, k := range []string{"a", "b", "c"} {
		putString(t, b, k, "body of "+k)
	}
	dir := t.TempDir()
	out, err := exec.Command(bin, append([]string{"clear", "-cache-dir=" + dir}, tg.args()...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "3 objects") {
		t.Fatalf("clear: %v\n%s", err, out)
	}
	if keys := listKeys(t, rawClient(t, tg), tg.Bucket, tg.Prefix); len(keys) != 0 {
		t.Errorf("left after clear: %v", keys)
	}
	out, err = exec.Command(bin, append([]string{"clear", "-cache-dir=" + dir}, append(tg.args(), "-s3-prefix=")...)...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-all-prefixes") {
		t.Fatalf("clear with an empty prefix: %v\n%s", err, out)
	}
}
