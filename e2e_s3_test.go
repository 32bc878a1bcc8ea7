package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestS3TwoVMs is the product's promise end to end: two CI machines with
// separate, empty local caches share one bucket. VM A builds and tests a
// module; VM B, starting from nothing, then gets almost everything from the
// bucket, reports its tests as cached, and builds the same bytes.
func TestS3TwoVMs(t *testing.T) {
	mod, ref := moduleWithReference(t)
	tg := s3TargetForTest(t)
	// Fetch on demand only; TestS3Prefetch covers prefetch.
	args := append(tg.args(), "-prefetch=false")

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
	// The compiles' empty outputs went along with the compiles: fewer
	// objects than entries. (VM B's hits below show they are found.)
	entries := aBuild.UploadsDone + a.stats.UploadsDone
	objects := len(listKeys(t, rawClient(t, tg), tg.Bucket, tg.Prefix+"v1/a/"))
	t.Logf("VM A: %d entries uploaded in %d objects", entries, objects)
	if int64(objects) >= entries || int64(objects) < entries/2 {
		t.Errorf("VM A: %d entries uploaded in %d objects, want fewer objects, but at least half as many", entries, objects)
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
	args := append(tg.args(), "-prefetch=false")
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
	rb := r.buildStats(t)
	if rb.RemoteHits == 0 || rb.Puts+r.stats.Puts == 0 {
		t.Fatalf("read-only VM: build %+v, test %+v; want remote hits and local puts", rb, r.stats)
	}
	if rb.RemoteBytesUp+r.stats.RemoteBytesUp != 0 || rb.UploadsDone+r.stats.UploadsDone != 0 {
		t.Fatalf("read-only VM uploaded: build %+v, test %+v", rb, r.stats)
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

// TestS3Prefetch: VM A's runs leave manifests in the bucket; VM B of the
// same scope, starting empty, prefetches their entries while it builds, and
// the build is as right as ever.
func TestS3Prefetch(t *testing.T) {
	mod, ref := moduleWithReference(t)
	tg := s3TargetForTest(t)
	args := append(tg.args(), "-prefetch-scope=ci-job/e2e")
	if _, err := buildAndTestWith(t, mod, t.TempDir(), "vmA", args...); err != nil {
		t.Fatal(err)
	}
	rc := rawClient(t, tg)
	manifests := listKeys(t, rc, tg.Bucket, tg.Prefix+"v1/m/ci-job_e2e.")
	if len(manifests) != 2 {
		t.Fatalf("want a manifest from go build and one from go test, got %v", manifests)
	}
	// The manifests carry the small entries whole.
	for _, k := range manifests {
		obj := getObject(t, rc, tg.Bucket, k)
		var keys, whole int
		for _, m := range decodeManifest(obj).entries {
			keys++
			if m.inline {
				whole++
			}
		}
		t.Logf("manifest %s: %d bytes, %d entries, %d of them whole", k, len(obj), keys, whole)
		if keys == 0 || whole == 0 || whole == keys {
			t.Errorf("manifest %s: %d entries, %d whole: want some small entries whole and some large ones not", k, keys, whole)
		}
	}

	b, err := buildAndTestWith(t, mod, t.TempDir(), "vmB", args...)
	if err != nil {
		t.Fatal(err)
	}
	build := b.buildStats(t)
	var text bytes.Buffer
	build.WriteText(&text)
	t.Logf("VM B, go build, prefetching:\n%s", text.String())
	if build.PrefetchObjects == 0 || build.PrefetchMisses != 0 {
		t.Errorf("prefetch: %+v", build)
	}
	for name, s := range map[string]StatsSnapshot{"go build": build, "go test": b.stats} {
		if s.Misses > 2 || s.VerifyFailures != 0 || s.RemoteErrors != 0 || s.Hits+s.Misses != s.Gets {
			t.Errorf("VM B %s: %+v", name, s)
		}
	}
	if !regexp.MustCompile(`ok\s+example\.com/e2e/b\s+\(cached\)`).MatchString(b.testOut) {
		t.Errorf("VM B's go test did not report (cached):\n%s", b.testOut)
	}
	// VM B's go build is what A's was: it writes no manifest. Its go test
	// found its results cached, so it used less than A's (which built the
	// test binaries): it may write a better one. After that a third VM,
	// which B's and A's manifests describe, writes none.
	afterB := listKeys(t, rc, tg.Bucket, tg.Prefix+"v1/m/ci-job_e2e.")
	if len(afterB) > len(manifests)+1 {
		t.Errorf("VM B wrote %d manifests; want at most one, for go test: %v", len(afterB)-len(manifests), afterB)
	}
	if _, err := buildAndTestWith(t, mod, t.TempDir(), "vmD", args...); err != nil {
		t.Fatal(err)
	}
	if afterD := listKeys(t, rc, tg.Bucket, tg.Prefix+"v1/m/ci-job_e2e."); len(afterD) != len(afterB) {
		t.Errorf("VM D wrote a manifest that adds nothing: before %v, after %v", afterB, afterD)
	}
	if !bytes.Equal(b.binary, ref.binary) {
		t.Error("VM B's binary differs from the plain Go cache's")
	}

	// With -prefetch=false nothing is prefetched.
	c, err := buildAndTestWith(t, mod, t.TempDir(), "vmC", append(args, "-prefetch=false")...)
	if err != nil {
		t.Fatal(err)
	}
	if c.buildStats(t).PrefetchObjects != 0 || c.stats.PrefetchObjects != 0 {
		t.Errorf("-prefetch=false prefetched: %+v", c.stats)
	}
}

// readOnlyCredentials returns temporary MinIO credentials whose session
// policy allows reading the bucket and nothing else, as GOBUILDCACHE_AWS_*
// variables: they win over the AWS_* ones (MinIO root, in the
// environment), exactly how CI keeps credentials away from tests.
func readOnlyCredentials(t *testing.T, tg s3Target) []string {
	t.Helper()
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::%[1]s","arn:aws:s3:::%[1]s/*"]}]}`, tg.Bucket)
	return minioCredentials(t, tg, "readonly", policy).env
}

// TestS3ReadOnlyCredentials: a role that may only read builds green with
// remote hits under -read-only; without it, too: its writes are refused,
// counted, and not retried in a storm.
func TestS3ReadOnlyCredentials(t *testing.T) {
	mod, ref := moduleWithReference(t)
	tg := s3TargetForTest(t)
	args := append(tg.args(), "-prefetch=false")
	if _, err := buildAndTestWith(t, mod, t.TempDir(), "writer", args...); err != nil {
		t.Fatal(err)
	}
	ro := readOnlyCredentials(t, tg)

	r, err := buildAndTestEnv(t, mod, t.TempDir(), "ro-flag", ro, append(args, "-read-only")...)
	if err != nil {
		t.Fatal(err)
	}
	if r.buildStats(t).RemoteHits == 0 || r.stats.RemoteErrors != 0 || !bytes.Equal(r.binary, ref.binary) {
		t.Fatalf("read-only role with -read-only: build %+v, test %+v", r.buildStats(t), r.stats)
	}

	// Without -read-only, and with a change, so that there are puts.
	os.WriteFile(filepath.Join(mod, "c", "extra.go"), []byte("package c\n\nfunc Extra() int { return 7 }\n"), 0o644)
	w, err := buildAndTestEnv(t, mod, t.TempDir(), "ro-noflag", ro, args...)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]StatsSnapshot{"go build": w.buildStats(t), "go test": w.stats} {
		t.Logf("read-only role without -read-only, %s: puts %d, remote hits %d, uploads done %d failed %d, remote errors %v, skipped %d",
			name, s.Puts, s.RemoteHits, s.UploadsDone, s.UploadsFailed, s.RemoteErrorsByKind, s.RemoteSkipped)
		if s.UploadsDone != 0 {
			t.Errorf("%s: %d uploads succeeded with read-only credentials", name, s.UploadsDone)
		}
		if s.Puts > 0 && (s.RemoteErrorsByKind["auth"] == 0 || s.RemoteErrorsByKind["auth"] > 2) {
			t.Errorf("%s: %d puts gave %d refused writes; want the first refusal to stop the rest", name, s.Puts, s.RemoteErrorsByKind["auth"])
		}
	}
	if w.buildStats(t).RemoteHits == 0 {
		t.Error("a refused write stopped the reads too")
	}
}

// TestCredentialsNeverLogged runs the server and check with -debug, with
// good and with bad credentials, and looks for the credentials in all they
// print and write.
func TestCredentialsNeverLogged(t *testing.T) {
	tg := s3TargetForTest(t)
	if tg.AccessKey == "" {
		t.Skip("needs MinIO's credentials")
	}
	bin := gobuildcacheBinary(t)
	secrets := []string{tg.AccessKey, tg.SecretKey, "WRONG-SECRET-d41d8cd98f"}
	for _, secret := range []string{tg.SecretKey, secrets[2]} {
		env := []string{"GOBUILDCACHE_AWS_ACCESS_KEY_ID=" + tg.AccessKey, "GOBUILDCACHE_AWS_SECRET_ACCESS_KEY=" + secret, "AWS_EC2_METADATA_DISABLED=true"}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "MINIO_") {
				env = append(env, kv)
			}
		}
		statsFile := filepath.Join(t.TempDir(), "stats.json")
		var all bytes.Buffer
		server := exec.Command(bin, append(tg.args(), "-debug", "-stats", "-stats-json="+statsFile, "-cache-dir="+t.TempDir())...)
		server.Env = env
		server.Stdin = strings.NewReader(putLine(1, actionID("a"), outputID("body"), "body") + getLine(2, actionID("b")) + `{"ID":3,"Command":"close"}` + "\n")
		server.Stdout, server.Stderr = &all, &all
		if err := server.Run(); err != nil {
			t.Fatalf("server: %v\n%s", err, all.String())
		}
		check := exec.Command(bin, append([]string{"check", "-debug"}, tg.args()...)...)
		check.Env = env
		out, _ := check.CombinedOutput()
		all.Write(out)
		js, _ := os.ReadFile(statsFile)
		all.Write(js)
		for _, s := range secrets {
			if strings.Contains(all.String(), s) {
				t.Fatalf("output contains a credential (%.4s...):\n%s", s, all.String())
			}
		}
		if secret != tg.SecretKey && !strings.Contains(all.String(), "auth") {
			t.Errorf("bad credentials were not reported:\n%s", all.String())
		}
	}
}

// TestS3PrefetchPerToolchain: two legs of a matrix that differ only in
// their target (GOAMD64=v1 and v2: every action ID differs, as between Go
// versions) share one -prefetch-scope, as legs of one job name do. Each
// keeps manifests of its own, and a fresh VM of one leg lands none of the
// other's entries, which it could never use.
func TestS3PrefetchPerToolchain(t *testing.T) {
	skipIfShortE2E(t)
	mod := testModule(t)
	tg := s3TargetForTest(t)
	args := append(tg.args(), "-prefetch-scope=ci/matrix")
	leg := func(level, vm string) goRun {
		r, err := buildAndTestEnv(t, mod, t.TempDir(), vm, []string{"GOAMD64=" + level}, args...)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	leg("v1", "v1-cold")
	leg("v2", "v2-cold")

	rc := rawClient(t, tg)
	named := make(map[string]map[ActionID]bool) // by scope: the action IDs its manifests name
	for _, k := range listKeys(t, rc, tg.Bucket, tg.Prefix+"v1/m/ci_matrix.") {
		scope := path.Base(path.Dir(k))
		obj := getObject(t, rc, tg.Bucket, k)
		if named[scope] == nil {
			named[scope] = make(map[ActionID]bool)
		}
		for _, e := range decodeManifest(obj).entries {
			named[scope][e.id] = true
		}
	}
	var v1, v2 string
	for scope := range named {
		switch {
		case strings.HasSuffix(scope, "-amd64-v1"):
			v1 = scope
		case strings.HasSuffix(scope, "-amd64-v2"):
			v2 = scope
		}
	}
	if len(named) != 2 || v1 == "" || v2 == "" || !strings.HasPrefix(v1, "ci_matrix.go1.") {
		t.Fatalf("manifest scopes %v: want ci_matrix.GOVERSION-linux-amd64-v1 and -v2", slices.Collect(maps.Keys(named)))
	}
	var onlyV2 []ActionID
	for id := range named[v2] {
		if !named[v1][id] {
			onlyV2 = append(onlyV2, id)
		}
	}
	if len(onlyV2) == 0 {
		t.Fatal("the v2 leg's manifests name nothing that the v1 leg's do not")
	}

	cacheDir := t.TempDir()
	fresh, err := buildAndTestEnv(t, mod, cacheDir, "v1-fresh", []string{"GOAMD64=v1"}, args...)
	if err != nil {
		t.Fatal(err)
	}
	if b := fresh.buildStats(t); b.PrefetchObjects == 0 || b.Misses > 2 {
		t.Errorf("a fresh VM of the v1 leg, go build: %d prefetched, %d misses; want its own leg's entries prefetched", b.PrefetchObjects, b.Misses)
	}
	d, err := NewDiskBackend(cacheDir)
	if err != nil {
		t.Fatal(err)
	}
	landed := 0
	for _, id := range onlyV2 {
		if _, err := d.Get(context.Background(), id); err == nil {
			landed++
		}
	}
	if landed != 0 {
		t.Errorf("a fresh VM of the v1 leg landed %d of the %d entries only the v2 leg can use", landed, len(onlyV2))
	}
}

// TestS3DefaultScopeIsTheCIJob: on a CI system, the runs of one job share
// a scope by default though each builds in a directory of its own (as a
// GitLab shell runner's slots or Buildkite's agents make them): a fresh VM
// prefetches what the job's last run used. Elsewhere the scope is the
// directory's, and the same fresh VM prefetches nothing.
func TestS3DefaultScopeIsTheCIJob(t *testing.T) {
	skipIfShortE2E(t)
	tg := s3TargetForTest(t)
	job := []string{"GITLAB_CI=true", "CI_PROJECT_PATH=group/api", "CI_JOB_NAME=test 1/2"}
	if _, err := buildAndTestEnv(t, testModule(t), t.TempDir(), "job-cold", job, tg.args()...); err != nil {
		t.Fatal(err)
	}
	rc, manifests := rawClient(t, tg), tg.Prefix+s3LayoutVersion+"/m/"
	if keys := listKeys(t, rc, tg.Bucket, manifests+"gl-group_api-test_1_2.go"); len(keys) == 0 {
		t.Fatalf("no manifest of the job's scope gl-group_api-test_1_2.GOVERSION-...: %q", listKeys(t, rc, tg.Bucket, manifests))
	}
	for _, tc := range []struct {
		vm         string
		env        []string
		prefetched bool
	}{
		{"job-fresh", job, true},
		{"no-job-fresh", nil, false},
	} {
		r, err := buildAndTestEnv(t, testModule(t), t.TempDir(), tc.vm, tc.env, tg.args()...)
		if err != nil {
			t.Fatal(err)
		}
		if n := r.buildStats(t).PrefetchObjects; (n > 0) != tc.prefetched {
			want := "none"
			if tc.prefetched {
				want = "some"
			}
			t.Errorf("%s, in a directory of its own: go build prefetched %d entries, want %s", tc.vm, n, want)
		}
	}
}

// getObject returns the bytes of bucket's object key.
func getObject(t *testing.T, c *s3.Client, bucket, key string) []byte {
	t.Helper()
	out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestS3PrefetchCommand: `gobuildcache prefetch`, run with the servers'
// flags before the first go command, lands what the scope's manifests name;
// the go commands after it find everything local and prefetch nothing, and
// the claim is gone. Against a remote that does not answer it lands
// nothing and still exits 0.
func TestS3PrefetchCommand(t *testing.T) {
	skipIfShortE2E(t)
	mod := testModule(t)
	tg := s3TargetForTest(t)
	args := append(tg.args(), "-prefetch-scope=ci/early")
	if _, err := buildAndTestWith(t, mod, t.TempDir(), "cold", args...); err != nil {
		t.Fatal(err)
	}
	prefetch := func(cacheDir string, args ...string) (string, StatsSnapshot) {
		t.Helper()
		statsFile := filepath.Join(t.TempDir(), "prefetch.json")
		cmd := exec.Command(gobuildcacheBinary(t), append([]string{"prefetch", "-cache-dir=" + cacheDir, "-stats-json=" + statsFile}, args...)...)
		cmd.Dir, cmd.Env = mod, goEnv(t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("gobuildcache prefetch: %v\n%s", err, out)
		}
		var st StatsSnapshot
		if b, err := os.ReadFile(statsFile); err == nil {
			err = json.Unmarshal(b, &st)
		}
		return string(out), st
	}

	cacheDir := t.TempDir()
	out, st := prefetch(cacheDir, args...)
	t.Logf("%s", out)
	if st.PrefetchObjects == 0 || !regexp.MustCompile(`^gobuildcache prefetch: landed [1-9]\d* entries `).MatchString(out) {
		t.Fatalf("prefetch landed nothing: %+v\n%s", st, out)
	}
	if plans, _ := filepath.Glob(filepath.Join(cacheDir, "v1", "prefetch-plan-*")); len(plans) != 0 {
		t.Errorf("plan left after the command: %v", plans)
	}
	locks, _ := filepath.Glob(filepath.Join(cacheDir, "v1", "prefetch-[0-9a-f]*"))
	if len(locks) != 1 || claimHeld(locks[0]) {
		t.Errorf("claim after the command: %v", locks)
	}

	r, err := buildAndTestWith(t, mod, cacheDir, "after-prefetch", args...)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]StatsSnapshot{"go build": r.buildStats(t), "go test": r.stats} {
		if s.PrefetchObjects != 0 || s.RemoteHits != 0 || s.Misses > 2 || s.VerifyFailures != 0 {
			t.Errorf("%s after the prefetch command: %d prefetched, %d remote hits, %d misses; want everything local: %+v", name, s.PrefetchObjects, s.RemoteHits, s.Misses, s)
		}
	}

	down := append(slices.Clone(args), "-s3-endpoint=http://127.0.0.1:1", "-s3-timeout=2s")
	out, st = prefetch(t.TempDir(), down...)
	if st.PrefetchObjects != 0 || !strings.Contains(out, "gobuildcache prefetch: landed 0 entries") {
		t.Errorf("against a remote that does not answer: %+v\n%s", st, out)
	}
}
