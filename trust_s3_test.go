package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

// Trust boundaries, on MinIO, which enforces IAM policies: a pull
// request's job writes its own location and reads the trusted one, and its
// credentials cannot change the trusted one, whatever it tries.
//
// The layout of these tests, in one bucket:
//
//	root/main/    written by "main" (pushes to the protected branch)
//	root/pr-7/    written by "pr" (a pull request), which reads all of root/
//
// and "ro", which may read root/ and write nothing.

// trustPolicy is the session policy of a role that may read everything
// under root/ and, if writes is not "", write under root/<writes>/: the
// policy the README recommends for a standard bucket.
func trustPolicy(bucket, writes string) string {
	statements := []string{
		fmt.Sprintf(`{"Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::%s/root/*"]}`, bucket),
		fmt.Sprintf(`{"Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::%s"],"Condition":{"StringLike":{"s3:prefix":["root/","root/*"]}}}`, bucket),
	}
	if writes != "" {
		statements = append(statements, fmt.Sprintf(`{"Effect":"Allow","Action":["s3:PutObject","s3:DeleteObject"],"Resource":["arn:aws:s3:::%s/root/%s/*"]}`, bucket, writes))
	}
	return `{"Version":"2012-10-17","Statement":[` + strings.Join(statements, ",") + `]}`
}

// minioRole is a set of temporary MinIO credentials.
type minioRole struct {
	name  string
	env   []string // GOBUILDCACHE_AWS_* variables for the binary
	tg    s3Target // the target, but with these credentials in its client
	creds aws.Credentials
}

// client is a raw SDK client signed with the role's credentials.
func (r minioRole) client(t *testing.T) *s3.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.StaticCredentialsProvider{Value: r.creds}))
	if err != nil {
		t.Fatal(err)
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(r.tg.Endpoint)
		o.UsePathStyle = true
	})
}

// minioCredentials makes temporary credentials with MinIO's STS
// AssumeRole and an inline session policy: they may do what the root user
// and policy both allow, so exactly what policy allows.
func minioCredentials(t *testing.T, tg s3Target, name, policy string) minioRole {
	t.Helper()
	if tg.AccessKey == "" {
		t.Skip("roles with policies are made on MinIO only")
	}
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(tg.AccessKey, tg.SecretKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	c := sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = aws.String(tg.Endpoint) })
	out, err := c.AssumeRole(context.Background(), &sts.AssumeRoleInput{
		RoleArn: aws.String("arn:minio:iam:::role/gobuildcache-test"), RoleSessionName: aws.String(name),
		Policy: &policy, DurationSeconds: aws.Int32(3600),
	})
	if err != nil {
		t.Fatalf("assume role %s: %v", name, err)
	}
	cr := out.Credentials
	r := minioRole{name: name, tg: tg, creds: aws.Credentials{
		AccessKeyID: aws.ToString(cr.AccessKeyId), SecretAccessKey: aws.ToString(cr.SecretAccessKey), SessionToken: aws.ToString(cr.SessionToken),
	}}
	// The prefixed variables win over the AWS_* ones (MinIO root, in the
	// environment): exactly how CI keeps credentials away from tests.
	r.env = []string{
		"GOBUILDCACHE_AWS_ACCESS_KEY_ID=" + r.creds.AccessKeyID,
		"GOBUILDCACHE_AWS_SECRET_ACCESS_KEY=" + r.creds.SecretAccessKey,
		"GOBUILDCACHE_AWS_SESSION_TOKEN=" + r.creds.SessionToken,
	}
	return r
}

// trustFixture is the bucket and the three roles.
type trustFixture struct {
	tg           s3Target
	main, pr, ro minioRole
	root         *s3.Client // MinIO's root user, to look behind everyone's back
}

func newTrustFixture(t *testing.T) trustFixture {
	t.Helper()
	tg := s3TargetForTest(t)
	return trustFixture{
		tg:   tg,
		main: minioCredentials(t, tg, "main", trustPolicy(tg.Bucket, "main")),
		pr:   minioCredentials(t, tg, "pr", trustPolicy(tg.Bucket, "pr-7")),
		ro:   minioCredentials(t, tg, "ro", trustPolicy(tg.Bucket, "")),
		root: rawClient(t, tg),
	}
}

// mainArgs are the flags of a job on the protected branch; prArgs those of
// pull request 7's job.
func (f trustFixture) mainArgs() []string {
	return append(f.tg.args(), "-s3-prefix=root/main/", "-prefetch-scope=ci/e2e")
}

func (f trustFixture) prArgs() []string {
	return append(f.tg.args(), "-s3-prefix=root/pr-7/", "-s3-read-from=s3://"+f.tg.Bucket+"/root/main/", "-prefetch-scope=ci/e2e")
}

// objectState is every object under a prefix: key -> ETag and time.
func objectState(t *testing.T, c *s3.Client, bucket, prefix string) map[string]string {
	t.Helper()
	state := make(map[string]string)
	pages := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	for pages.HasMorePages() {
		page, err := pages.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			state[aws.ToString(o.Key)] = aws.ToString(o.ETag) + " " + aws.ToTime(o.LastModified).Format(time.RFC3339Nano) + " " + strconv.FormatInt(aws.ToInt64(o.Size), 10)
		}
	}
	return state
}

// diffState lists what changed between two objectStates.
func diffState(before, after map[string]string) []string {
	var d []string
	for k, v := range before {
		if w, ok := after[k]; !ok {
			d = append(d, "removed "+k)
		} else if w != v {
			d = append(d, fmt.Sprintf("changed %s: %s -> %s", k, v, w))
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			d = append(d, "added "+k)
		}
	}
	slices.Sort(d)
	return d
}

// hitRate sums the gets and hits of a VM's go build and go test.
func hitRate(t *testing.T, r goRun) (gets, hits int64) {
	b := r.buildStats(t)
	return b.Gets + r.stats.Gets, b.Hits + r.stats.Hits
}

// TestTrust runs the layout the README recommends under the real go
// command, on one bucket that main's VM fills first: a pull request's VM
// (PullRequest), a read-only role without -read-only (ReadOnlyRole), and a
// read location the credentials may not read (DeniedReadLocation).
func TestTrust(t *testing.T) {
	mod, ref := moduleWithReference(t)
	f := newTrustFixture(t)
	m, err := buildAndTestEnv(t, mod, t.TempDir(), "main", f.main.env, f.mainArgs()...)
	if err != nil {
		t.Fatal(err)
	}
	if mb := m.buildStats(t); mb.UploadsDone == 0 || mb.UploadsFailed+m.stats.UploadsFailed != 0 {
		t.Fatalf("main VM: build %+v, test %+v", mb, m.stats)
	}
	t.Run("PullRequest", func(t *testing.T) { trustPullRequest(t, f, mod, ref) })
	t.Run("ReadOnlyRole", func(t *testing.T) { trustReadOnlyRole(t, f, mod) })
	t.Run("DeniedReadLocation", func(t *testing.T) { trustDeniedReadLocation(t, f, mod, ref) })
}

// trustPullRequest: a fresh PR VM builds the same bytes from main's
// location with almost only hits and writes only its own location; a
// hostile program with the pull request's credentials cannot change a
// single object of main's; and main's next build is byte-identical to a
// clean one.
func trustPullRequest(t *testing.T, f trustFixture, mod string, ref goRun) {
	before := objectState(t, f.root, f.tg.Bucket, "root/main/")
	everything := objectState(t, f.root, f.tg.Bucket, "")
	t.Logf("main VM wrote %d objects under root/main/", len(before))

	// A fresh PR VM, the same code: main's entries, byte for byte.
	p, err := buildAndTestEnv(t, mod, t.TempDir(), "pr", f.pr.env, f.prArgs()...)
	if err != nil {
		t.Fatal(err)
	}
	gets, hits := hitRate(t, p)
	pb := p.buildStats(t)
	t.Logf("fresh PR VM: %d gets, %d hits (%.1f%%); go build: %d remote hits, %d prefetched (%d whole); go test: %d remote hits, %d prefetched",
		gets, hits, 100*float64(hits)/float64(gets), pb.RemoteHits, pb.PrefetchObjects, pb.PrefetchWhole, p.stats.RemoteHits, p.stats.PrefetchObjects)
	if float64(hits) < 0.95*float64(gets) {
		t.Errorf("fresh PR VM: %d hits of %d gets, want at least 95%%", hits, gets)
	}
	if pb.PrefetchObjects == 0 {
		t.Error("the PR VM's first run prefetched nothing of what main used")
	}
	for name, s := range map[string]StatsSnapshot{"go build": pb, "go test": p.stats} {
		if s.RemoteErrors != 0 || s.RemoteSkipped != 0 || s.VerifyFailures != 0 {
			t.Errorf("PR VM %s: %+v", name, s)
		}
	}
	if !bytes.Equal(p.binary, ref.binary) {
		t.Error("the PR VM's binary differs from a clean build's")
	}
	if !regexp.MustCompile(`ok\s+example\.com/e2e/b\s+\(cached\)`).MatchString(p.testOut) {
		t.Errorf("the PR VM's go test did not report (cached):\n%s", p.testOut)
	}

	// A PR VM with a change: it shares what it built, only under
	// root/pr-7/, and in its packs and manifests rather than an object
	// per entry (Config.sharesThroughPacks).
	extra := filepath.Join(mod, "c", "extra.go")
	os.WriteFile(extra, []byte("package c\n\nfunc Extra() int { return 7 }\n"), 0o644)
	p2, err := buildAndTestEnv(t, mod, t.TempDir(), "pr-change", f.pr.env, f.prArgs()...)
	if err != nil {
		t.Fatal(err)
	}
	b2 := p2.buildStats(t)
	if b2.UploadsCarried+p2.stats.UploadsCarried == 0 || b2.UploadsFailed+p2.stats.UploadsFailed+b2.UploadsDropped+p2.stats.UploadsDropped != 0 {
		t.Errorf("PR VM with a change: build %+v, test %+v; want uploads carried by its packs and manifests, none failed", b2, p2.stats)
	}
	// The pull request's next push, the same code on a fresh VM, finds
	// what that VM built in its packs and manifests.
	p3, err := buildAndTestEnv(t, mod, t.TempDir(), "pr-change-again", f.pr.env, f.prArgs()...)
	os.Remove(extra)
	if err != nil {
		t.Fatal(err)
	}
	g3, h3 := hitRate(t, p3)
	t.Logf("PR VM with a change: %d entries uploaded, %d carried by its packs and manifests; the next push's VM: %d hits of %d gets",
		b2.UploadsDone+p2.stats.UploadsDone, b2.UploadsCarried+p2.stats.UploadsCarried, h3, g3)
	if float64(h3) < 0.95*float64(g3) {
		t.Errorf("the pull request's next push: %d hits of %d gets, want at least 95%%", h3, g3)
	}
	var prKeys int
	for _, d := range diffState(everything, objectState(t, f.root, f.tg.Bucket, "")) {
		if !strings.HasPrefix(d, "added root/pr-7/") {
			t.Errorf("a PR VM changed the bucket outside root/pr-7/: %s", d)
		}
		prKeys++
	}
	t.Logf("the PR VMs added %d objects, all under root/pr-7/", prKeys)
	if prKeys == 0 {
		t.Error("the PR VMs wrote nothing under root/pr-7/")
	}

	// The hostile program.
	report := hostileOverwrite(t, f)
	for _, line := range report {
		t.Log(line)
	}

	after := objectState(t, f.root, f.tg.Bucket, "root/main/")
	if d := diffState(before, after); len(d) != 0 {
		t.Errorf("root/main/ changed:\n%s", strings.Join(d, "\n"))
	} else {
		t.Logf("nothing under root/main/ changed: %d keys, each with the ETag, time and size it had before the PR VMs and the hostile program ran", len(after))
	}

	// Main's next build, on a fresh VM, is a clean build's.
	m2, err := buildAndTestEnv(t, mod, t.TempDir(), "main-after", f.main.env, f.mainArgs()...)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m2.binary, ref.binary) {
		t.Error("main's build after the hostile program differs from a clean build")
	}
	if g, h := hitRate(t, m2); float64(h) < 0.95*float64(g) {
		t.Errorf("main's build after the hostile program: %d hits of %d gets", h, g)
	}
	t.Log("main's next build on a fresh VM is byte-identical to a clean build")
}

// hostileOverwrite is a program with the pull request's credentials that
// tries every way it has to replace main's entries with bodies of its own,
// each with a matching OutputID (so that no SHA-256 check could tell), and
// to plant a manifest in main's location. Every attempt must be refused;
// the same writes under the PR's own location must succeed (so that the
// refusals are the policy's, not broken credentials). It returns its
// report.
func hostileOverwrite(t *testing.T, f trustFixture) []string {
	t.Helper()
	ctx := context.Background()
	c := f.pr.client(t)
	bucket := f.tg.Bucket
	entries := objectState(t, f.root, bucket, "root/main/"+s3LayoutVersion+"/a/")
	if len(entries) == 0 {
		t.Fatal("no entries under root/main/ to attack")
	}
	refused := make(map[string]int) // attempt -> refusals
	tried := make(map[string]int)
	try := func(what string, err error) {
		tried[what]++
		var api smithy.APIError
		if errors.As(err, &api) && api.ErrorCode() == "AccessDenied" {
			refused[what]++
			return
		}
		t.Errorf("hostile %s: want AccessDenied, got %v", what, err)
	}
	for key := range entries {
		// What a poisoned entry looks like: another body, its true SHA-256
		// as the output ID, metadata just like gobuildcache writes.
		evil := []byte("package evil // planted by a pull request for " + key)
		sum := sha256.Sum256(evil)
		meta := map[string]string{
			metaOutputID: hex.EncodeToString(sum[:]),
			metaSize:     strconv.Itoa(len(evil)),
			metaTime:     strconv.FormatInt(time.Now().UnixNano(), 10),
			metaEncoding: "identity",
		}
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String(key), Body: bytes.NewReader(evil), Metadata: meta})
		try("PutObject", err)
		// The same body under the PR's own location is allowed...
		own := strings.Replace(key, "root/main/", "root/pr-7/hostile/", 1)
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String(own), Body: bytes.NewReader(evil), Metadata: meta}); err != nil {
			t.Fatalf("the PR's credentials cannot write their own location: %v", err)
		}
		// ...and copying it over main's is not.
		_, err = c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: &bucket, Key: aws.String(key), CopySource: aws.String(bucket + "/" + own)})
		try("CopyObject", err)
		_, err = c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &bucket, Key: aws.String(key)})
		try("CreateMultipartUpload", err)
		_, err = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &bucket, Key: aws.String(key)})
		try("DeleteObject", err)
	}
	// A manifest that would make main's next VMs (go commands of this
	// test's toolchain) prefetch the planted entries.
	scope, _ := prefetchScopes("ci/e2e", toolchainTag(os.Getenv), "")
	manifest := fmt.Sprintf("root/main/%s/m/%s/%019d-hostile", s3LayoutVersion, scope, time.Now().UnixNano())
	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: aws.String(manifest), Body: strings.NewReader("gbcm2\n")})
	try("PutObject manifest", err)

	var report []string
	report = append(report, fmt.Sprintf("hostile program with the pr credentials, against %d entries under root/main/ (each with a body of its own and a matching OutputID):", len(entries)))
	for _, what := range []string{"PutObject", "CopyObject", "CreateMultipartUpload", "DeleteObject", "PutObject manifest"} {
		report = append(report, fmt.Sprintf("  %-22s refused %d of %d (AccessDenied)", what, refused[what], tried[what]))
	}
	report = append(report, fmt.Sprintf("  the same %d bodies under root/pr-7/hostile/: written", len(entries)))
	return report
}

// trustReadOnlyRole: credentials that may only read, used without
// -read-only. The first refused write stops uploads and nothing else: no
// breaker, no marker, no manifest; the next go command on the same cache
// dir starts with the remote on and gets hits from it.
func trustReadOnlyRole(t *testing.T, f trustFixture, mod string) {
	before := objectState(t, f.root, f.tg.Bucket, "")

	// A change no location has seen, so that the go command puts, and the
	// uploads are refused.
	extra := filepath.Join(mod, "c", "extra.go")
	os.WriteFile(extra, []byte("package c\n\nfunc Extra() int { return 8 }\n"), 0o644)
	defer os.Remove(extra)
	// A scope of its own: no manifest names what it needs, so both go
	// commands fetch from the remote themselves, and a manifest upload is
	// due at each exit.
	cacheDir := t.TempDir()
	r, err := buildAndTestEnv(t, mod, cacheDir, "ro", f.ro.env, append(f.prArgs(), "-prefetch-scope=ci/ro")...)
	if err != nil {
		t.Fatal(err)
	}
	build, test := r.buildStats(t), r.stats
	for name, s := range map[string]StatsSnapshot{"go build": build, "go test": test} {
		t.Logf("read-only role without -read-only, %s: gets %d, hits %d (remote %d, prefetched %d), puts %d, uploads done %d failed %d, remote errors %v, skipped %d",
			name, s.Gets, s.Hits, s.RemoteHits, s.PrefetchObjects, s.Puts, s.UploadsDone, s.UploadsFailed, s.RemoteErrorsByKind, s.RemoteSkipped)
		if s.UploadsDone != 0 {
			t.Errorf("%s: %d uploads succeeded with read-only credentials", name, s.UploadsDone)
		}
		if s.Puts > 0 && (s.RemoteErrorsByKind["auth"] == 0 || s.RemoteErrorsByKind["auth"] > 2) {
			t.Errorf("%s: %d puts gave %d refused writes; want the first refusal to stop the rest", name, s.Puts, s.RemoteErrorsByKind["auth"])
		}
	}
	if build.Puts == 0 || build.RemoteHits == 0 {
		t.Errorf("go build: %+v; want puts, and hits from main's location", build)
	}
	// The next go command, on the same cache dir: the remote is on.
	if test.RemoteSkipped != 0 || test.RemoteHits+test.PrefetchObjects == 0 || test.Puts == 0 {
		t.Errorf("go test after a refused write: remote_skipped %d, remote hits %d, prefetched %d; want 0 skipped and hits",
			test.RemoteSkipped, test.RemoteHits, test.PrefetchObjects)
	}
	if markers, _ := filepath.Glob(filepath.Join(cacheDir, "*breaker*")); len(markers) != 0 {
		t.Errorf("a refused write left a breaker marker: %v", markers)
	}
	if d := diffState(before, objectState(t, f.root, f.tg.Bucket, "")); len(d) != 0 {
		t.Errorf("the bucket changed under read-only credentials: %v", d)
	}
	if !regexp.MustCompile(`ok\s+example\.com/e2e/b\s+\(cached\)`).MatchString(r.testOut) {
		t.Errorf("go test did not report b as (cached):\n%s", r.testOut)
	}
}

// trustDeniedReadLocation: a read location the credentials may not read
// answers 403 to every request; each is that key's miss, the breaker stays
// closed, and the next location serves the build.
func trustDeniedReadLocation(t *testing.T, f trustFixture, mod string, ref goRun) {
	args := append(f.tg.args(), "-s3-prefix=root/pr-7/", "-prefetch-scope=ci/e2e",
		"-s3-read-from=s3://"+f.tg.Bucket+"/secret/,s3://"+f.tg.Bucket+"/root/main/")
	p, err := buildAndTestEnv(t, mod, t.TempDir(), "pr-denied", f.pr.env, args...)
	if err != nil {
		t.Fatal(err)
	}
	gets, hits := hitRate(t, p)
	t.Logf("PR VM reading a denied location before main's: %d gets, %d hits; build %+v", gets, hits, p.buildStats(t))
	if float64(hits) < 0.95*float64(gets) {
		t.Errorf("%d hits of %d gets, want at least 95%%", hits, gets)
	}
	if p.buildStats(t).PrefetchObjects == 0 {
		t.Error("the denied location's manifests stopped the prefetch of main's")
	}
	for name, s := range map[string]StatsSnapshot{"go build": p.buildStats(t), "go test": p.stats} {
		if s.RemoteSkipped != 0 || s.RemoteErrorsByKind["auth"] != 0 {
			t.Errorf("%s: a denied read location turned the remote off or counted as auth failures: %+v", name, s)
		}
	}
	if !bytes.Equal(p.binary, ref.binary) {
		t.Error("binary differs from a clean build's")
	}
}

// runCheckAs runs `gobuildcache check` with a role's credentials.
func runCheckAs(t *testing.T, r minioRole, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(gobuildcacheBinary(t), append([]string{"check"}, args...)...)
	cmd.Env = append(os.Environ(), r.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestTrustCheck: check tells a correct pull-request setup from a
// dangerous one, and a read-only job's check writes nothing and passes.
func TestTrustCheck(t *testing.T) {
	f := newTrustFixture(t)
	mainLoc := "s3://" + f.tg.Bucket + "/root/main/"

	// The PR's credentials: main's location refuses them, as it should.
	out, err := runCheckAs(t, f.pr, f.prArgs()...)
	t.Logf("check, pr credentials:\n%s", out)
	if err != nil || !strings.Contains(out, "as expected") || !strings.Contains(out, mainLoc) || strings.Contains(out, "DANGER") {
		t.Errorf("check with the pr credentials: %v\n%s", err, out)
	}

	// Read-only credentials in a read-only job: reads work, nothing is
	// written, exit 0.
	out, err = runCheckAs(t, f.ro, append(f.prArgs(), "-read-only")...)
	t.Logf("check, ro credentials, -read-only:\n%s", out)
	if err != nil || !strings.Contains(out, "as expected") || strings.Contains(out, "DANGER") {
		t.Errorf("check of a read-only job: %v\n%s", err, out)
	}
	// The same without -read-only: the refused write is reported, and is
	// no failure.
	out, err = runCheckAs(t, f.ro, f.prArgs()...)
	t.Logf("check, ro credentials, without -read-only:\n%s", out)
	if err != nil || !strings.Contains(out, "refused") {
		t.Errorf("check with read-only credentials: %v\n%s", err, out)
	}

	// Credentials that can write main's location while it is a read
	// location: DANGER, and a non-zero exit.
	out, err = runCheckAs(t, f.main, f.prArgs()...)
	t.Logf("check, main credentials with root/main/ as a read location:\n%s", out)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(out, "DANGER: these credentials can write "+mainLoc) {
		t.Errorf("check with credentials that can write a read location: %v\n%s", err, out)
	}

	if left := objectState(t, f.root, f.tg.Bucket, ""); len(left) != 0 {
		t.Errorf("check left objects behind: %v", left)
	}

	// The GitHub Action with check: true fails the step on DANGER.
	for _, kv := range f.main.env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	err, out, _ = runActionSetup(t, t.TempDir(), map[string]string{"S3_BUCKET": f.tg.Bucket, "S3_PREFIX": "root/pr-7/", "S3_READ_FROM": mainLoc,
		"S3_ENDPOINT": f.tg.Endpoint, "S3_PATH_STYLE": "true", "AWS_REGION": "us-east-1", "CHECK": "true", "MTIMES": "false"})
	if err == nil || !strings.Contains(out, "::error::DANGER: these credentials can write "+mainLoc) {
		t.Errorf("the action's check with credentials that can write a read location: %v\n%s", err, out)
	}
}

// TestTrustCheckEncryptionRequired: a bucket whose policy denies every
// upload that does not ask for SSE-S3 (the usual "deny unencrypted uploads"
// statement, which -s3-sse exists for) refuses check's probe of a read
// location when the probe asks for none, whatever the credentials may
// write. A pull request's read-only job (-read-only: no -s3-sse, it
// writes nothing) whose role can in fact write main's location, as any of
// its programs can with the header, must not be told "as expected".
func TestTrustCheckEncryptionRequired(t *testing.T) {
	tg := s3TargetForTest(t)
	if tg.AccessKey != "" && os.Getenv("MINIO_KMS_KEY_ID") == "" {
		t.Skip("this MinIO has no KMS key for SSE-S3: start it with scripts/minio.sh")
	}
	// Writes anywhere in the bucket, with the header: main's location too.
	role := minioCredentials(t, tg, "pr-sse", encryptionPolicy(tg.Bucket, types.ServerSideEncryptionAes256))
	mainLoc := "s3://" + tg.Bucket + "/root/main/"
	args := append(tg.args(), "-s3-prefix=root/pr-7/", "-s3-read-from="+mainLoc)
	for _, extra := range [][]string{{"-read-only"}, nil} {
		out, err := runCheckAs(t, role, append(args, extra...)...)
		t.Logf("check %v:\n%s", extra, out)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(out, "DANGER: these credentials can write "+mainLoc) {
			t.Errorf("check %v with credentials that can write a read location with SSE-S3: %v; want DANGER and exit 1", extra, err)
		}
	}
	if left := listKeys(t, rawClient(t, tg), tg.Bucket, "root/"); len(left) != 0 {
		t.Errorf("check left objects behind: %v", left)
	}
}

// TestS3ReadLocations is S3Backend with read locations, on MinIO without
// the go command: the first location in order that has an entry answers;
// a location that refuses reads is a miss; manifests are listed in every
// location, the write location's first, and only the write location's can
// be deleted; clear empties the write location alone.
func TestS3ReadLocations(t *testing.T) {
	f := newTrustFixture(t)
	ctx := context.Background()
	loc := func(p string) s3Location { return s3Location{bucket: f.tg.Bucket, prefix: p} }
	backend := func(t *testing.T, r minioRole, write string, reads ...s3Location) *S3Backend {
		t.Helper()
		o := f.tg.options(t.TempDir())
		o.Prefix, o.ReadFrom = write, reads
		o.Credentials = credentials.NewStaticCredentialsProvider(r.creds.AccessKeyID, r.creds.SecretAccessKey, r.creds.SessionToken)
		b, err := NewS3Backend(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	put := func(b *S3Backend, key, body string) {
		t.Helper()
		if _, err := b.Put(ctx, actionID(key), outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	mainB := backend(t, f.main, "root/main/")
	put(mainB, "both", "main's body of both")
	put(mainB, "main-only", "main's body")
	prB := backend(t, f.pr, "root/pr-7/", loc("secret/"), loc("root/main/"))
	put(prB, "both", "pr's body of both")
	put(prB, "pr-only", "pr's body")
	f.root.PutObject(ctx, &s3.PutObjectInput{Bucket: &f.tg.Bucket, Key: aws.String(loc("secret/").actionKey(actionID("main-only"))), Body: strings.NewReader("x")})

	for key, want := range map[string]string{"both": "pr's body of both", "main-only": "main's body", "pr-only": "pr's body"} {
		e, err := prB.Get(ctx, actionID(key))
		if err != nil {
			t.Fatalf("get %s: %v", key, err)
		}
		if got, _ := os.ReadFile(e.DiskPath); string(got) != want {
			t.Errorf("get %s: %q, want %q (the first location in order that has it)", key, got, want)
		}
	}
	if _, err := prB.Get(ctx, actionID("nowhere")); !errors.Is(err, ErrNotFound) {
		t.Errorf("get of a key no location has: %v, want a miss", err)
	}
	// A write location found empty is not asked again; one that holds
	// anything is.
	fresh := backend(t, f.pr, "root/pr-8/", loc("root/main/"))
	if e, err := fresh.Get(ctx, actionID("main-only")); err != nil {
		t.Fatalf("get through a fresh PR's backend: %v", err)
	} else {
		os.Remove(e.DiskPath)
	}
	for deadline := time.Now().Add(10 * time.Second); !fresh.writeEmpty.Load() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if !fresh.writeEmpty.Load() || prB.writeEmpty.Load() {
		t.Errorf("write location found empty: fresh %v, pr-7 %v; want true, false", fresh.writeEmpty.Load(), prB.writeEmpty.Load())
	}
	if e, err := fresh.Get(ctx, actionID("main-only")); err != nil {
		t.Errorf("get after the write location was found empty: %v", err)
	} else if got, _ := os.ReadFile(e.DiskPath); string(got) != "main's body" {
		t.Errorf("get after the write location was found empty: %q", got)
	}

	// A location that refuses the pr credentials: a miss, and says so.
	onlySecret := backend(t, f.pr, "secret/")
	if _, err := onlySecret.Get(ctx, actionID("main-only")); !errors.Is(err, ErrNotFound) || errKind(err) != KindDenied {
		t.Errorf("get from a location the credentials may not read: %v (kind %v), want a miss of kind denied", err, errKind(err))
	}

	// Manifests: every location's, the write location's first.
	if err := mainB.PutManifest(ctx, "scope", newManifestID(time.Now(), ""), []byte("main manifest")); err != nil {
		t.Fatal(err)
	}
	if err := prB.PutManifest(ctx, "scope", newManifestID(time.Now(), ""), []byte("pr manifest")); err != nil {
		t.Fatal(err)
	}
	infos, err := prB.ListManifests(ctx, "scope", 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0].readOnly || !infos[1].readOnly || !strings.HasPrefix(infos[1].name, "s3://"+f.tg.Bucket+"/root/main/") {
		t.Fatalf("manifests: %+v; want pr-7's, then main's", infos)
	}
	for i, want := range []string{"pr manifest", "main manifest"} {
		if data, err := prB.GetManifest(ctx, infos[i].name); err != nil || string(data) != want {
			t.Errorf("manifest %s: %q, %v", infos[i].name, data, err)
		}
	}
	if err := prB.DeleteManifests(ctx, []string{infos[1].name}); err == nil {
		t.Error("deleted a manifest of a read location")
	}
	if _, err := prB.GetManifest(ctx, "s3://"+f.tg.Bucket+"/elsewhere/v1/m/scope/x"); err == nil {
		t.Error("read a manifest outside every location")
	}

	// clear, with main's location as a read location, clears pr-7 alone
	// (with the root user's credentials, which could clear anything).
	mainBefore := objectState(t, f.root, f.tg.Bucket, "root/main/")
	out, err := exec.Command(gobuildcacheBinary(t), append([]string{"clear", "-remote-only"},
		append(f.tg.args(), "-s3-prefix=root/pr-7/", "-s3-read-from=s3://"+f.tg.Bucket+"/root/main/")...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("clear: %v\n%s", err, out)
	}
	if left := objectState(t, f.root, f.tg.Bucket, "root/pr-7/"); len(left) != 0 {
		t.Errorf("clear left %d objects in the write location", len(left))
	}
	if d := diffState(mainBefore, objectState(t, f.root, f.tg.Bucket, "root/main/")); len(d) != 0 {
		t.Errorf("clear changed a read location: %v", d)
	}
}

// TestS3MissingBucketOfOneLocation is a pull request's remote, on MinIO,
// with one location in a bucket that does not exist (a typo) and main's
// location to read: that location is left out with one error of its own
// kind, and the rest of the remote goes on, where a missing bucket would
// otherwise turn off the whole remote, writes included, for ten minutes.
// A missing read location's bucket: main's manifests are listed and its
// entries read, the pull request's own location written, the missing bucket
// asked no more. A missing write location's bucket: main's location is
// still read (manifests and entries), writes stop after the first. With no
// read location, a missing bucket stays no_bucket.
func TestS3MissingBucketOfOneLocation(t *testing.T) {
	tg := s3TargetForTest(t)
	ctx := context.Background()
	backend := func(bucket, write string, reads ...s3Location) *S3Backend {
		t.Helper()
		o := tg.options(t.TempDir())
		o.Bucket, o.Prefix, o.ReadFrom = bucket, tg.Prefix+write, reads
		b, err := NewS3Backend(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	put := func(b CacheBackend, key, body string) error {
		_, err := b.Put(ctx, actionID(key), outputID(body), int64(len(body)), strings.NewReader(body))
		return err
	}
	mainLoc := s3Location{bucket: tg.Bucket, prefix: tg.Prefix + "main/"}
	missing := tg.Bucket + "-typo-" + randomHex(3)
	typo := s3Location{bucket: missing, prefix: "main/"}
	mainB := backend(tg.Bucket, "main/")
	if err := put(mainB, "main's", "main's body"); err != nil {
		t.Fatal(err)
	}
	if err := mainB.PutManifest(ctx, "scope", newManifestID(time.Now(), ""), []byte("main manifest")); err != nil {
		t.Fatal(err)
	}
	// readsMain checks that pr lists main's manifest and reads its entry
	// and misses another.
	readsMain := func(t *testing.T, pr *breakerBackend) {
		t.Helper()
		infos, err := pr.ListManifests(ctx, "scope", 4)
		if err != nil || len(infos) != 1 || !strings.HasPrefix(infos[0].name, "s3://"+tg.Bucket+"/"+mainLoc.prefix) {
			t.Fatalf("manifests with a missing bucket: %+v, %v; want main's, no error", infos, err)
		}
		e, err := pr.Get(ctx, actionID("main's"))
		if err != nil {
			t.Fatalf("get of main's entry: %v", err)
		}
		os.Remove(e.DiskPath)
		if _, err := pr.Get(ctx, actionID("nowhere")); !errors.Is(err, ErrNotFound) {
			t.Errorf("get of a key no location has: %v, want a miss", err)
		}
	}
	// wantGone checks that the breaker never opened and that the only
	// remote errors were n of kind location_gone: requests that found the
	// missing bucket.
	wantGone := func(t *testing.T, stats *Stats, n int64) {
		t.Helper()
		snap := stats.Snapshot()
		if snap.BreakerOpenings != 0 || snap.RemoteErrors != n || snap.RemoteErrorsByKind["location_gone"] != n {
			t.Errorf("breaker opened %d times, remote errors %d %v; want 0 and %d location_gone", snap.BreakerOpenings, snap.RemoteErrors, snap.RemoteErrorsByKind, n)
		}
	}

	t.Run("read location", func(t *testing.T) {
		s3b := backend(tg.Bucket, "pr-7/", typo, mainLoc)
		stats := new(Stats)
		pr := newBreakerBackend(s3b, stats, newWarnings(quietLog), "")
		readsMain(t, pr)
		if gone := []bool{s3b.gone[0].Load(), s3b.gone[1].Load(), s3b.gone[2].Load()}; !slices.Equal(gone, []bool{false, true, false}) {
			t.Errorf("locations gone: %v; want the missing bucket's alone", gone)
		}
		if err := put(pr, "pr's", "pr's body"); err != nil {
			t.Errorf("put to the pull request's own location: %v", err)
		}
		wantGone(t, stats, 1) // the listing
		// A get that finds the missing bucket first (no listing before
		// it) is a miss of that kind, naming the location.
		fresh := backend(tg.Bucket, "pr-8/", typo, mainLoc)
		if _, err := fresh.Get(ctx, actionID("nowhere")); errKind(err) != KindLocationGone || !strings.Contains(err.Error(), typo.String()) {
			t.Errorf("get with a missing read location: %v (kind %v), want kind location_gone naming %s", err, errKind(err), typo)
		}
		// check still fails on it, in one line naming the flag.
		cmd := exec.Command(gobuildcacheBinary(t), append([]string{"check"}, append(tg.args(), "-s3-prefix="+tg.Prefix+"pr-11/", "-s3-read-from="+typo.String()+","+mainLoc.String())...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err == nil || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), "check -s3-read-from") {
			t.Errorf("check with a missing read location: %v, stderr %q; want one line naming -s3-read-from", err, stderr.String())
		}
	})

	t.Run("write location", func(t *testing.T) {
		s3b := backend(missing, "pr-9/", mainLoc)
		stats := new(Stats)
		pr := newBreakerBackend(s3b, stats, newWarnings(quietLog), "")
		readsMain(t, pr)
		if !s3b.gone[0].Load() || s3b.gone[1].Load() {
			t.Errorf("locations gone: %v, %v; want the write location's alone", s3b.gone[0].Load(), s3b.gone[1].Load())
		}
		for i := range 3 {
			if err := put(pr, "pr's", "pr's body"); err == nil || (i > 0 && !errors.Is(err, errWritesOff)) {
				t.Errorf("put %d to a missing write location's bucket: %v; want an error, then writes off", i, err)
			}
		}
		if err := pr.PutManifest(ctx, "scope", newManifestID(time.Now(), ""), []byte("pr manifest")); !errors.Is(err, errWritesOff) {
			t.Errorf("manifest put with writes off: %v", err)
		}
		readsMain(t, pr)
		wantGone(t, stats, 2) // the listing and the first put
	})

	t.Run("one location", func(t *testing.T) {
		only := backend(missing, "pr-10/")
		if _, err := only.ListManifests(ctx, "scope", 4); errKind(err) != KindNoBucket {
			t.Errorf("listing a missing bucket with no read location: %v (kind %v), want no_bucket", err, errKind(err))
		}
		if err := put(only, "k", "body"); errKind(err) != KindNoBucket {
			t.Errorf("put to a missing bucket with no read location: %v (kind %v), want no_bucket", err, errKind(err))
		}
	})
}

// TestS3ExpressTrustedBucket is the README's S3 Express layout through the
// SDK's session code and the strict shim: a trusted directory bucket on
// which the pull request's credentials may create ReadOnly sessions only,
// and a second directory bucket they write. The PR's server reads the
// trusted bucket's entries and manifests with ReadOnly sessions (it asks
// for them: even where the policy would allow ReadWrite, it gets none),
// writes its own bucket, and one session per bucket serves all requests; a
// write to the trusted bucket with its credentials is refused; check says
// "as expected", and DANGER once the policy lets the credentials write.
func TestS3ExpressTrustedBucket(t *testing.T) {
	tg := s3TargetForTest(t)
	if tg.AccessKey == "" {
		t.Skip("needs the local MinIO and its root credentials behind the S3 Express shim")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	const baseKey, baseSecret = "BASEKEY", "BASESECRET"
	prBucket := "pr" + randomHex(4) + "--use1-az4--x-s3"
	mainBucket := "main" + randomHex(4) + "--use1-az4--x-s3"
	shim := startExpressShim(t, tg, prBucket, baseKey, baseSecret)
	shim.addBucket(t, mainBucket, modeReadOnly)
	setModes := func(modes ...string) { shim.setBucketModes(mainBucket, modes...) }
	// sessions counts the sessions issued, by bucket and mode.
	sessions := func() map[string]int {
		shim.mu.Lock()
		defer shim.mu.Unlock()
		n := map[string]int{}
		for _, s := range shim.sessions {
			n[strings.SplitN(s.bucket, "--", 2)[0][:2]+" "+s.mode]++
		}
		return n
	}

	// Main's entries and a manifest, written as main's job would (here
	// straight into the MinIO bucket behind the trusted bucket).
	mainTarget := tg
	mainTarget.Bucket, mainTarget.Prefix = shim.minioBucket(mainBucket), "gobuildcache/main/"
	mainB := newTestS3(t, mainTarget)
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for _, k := range keys {
		body := "main's body of " + k
		if _, err := mainB.Put(ctx, actionID(k), outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := mainB.PutManifest(ctx, "scope", newManifestID(time.Now(), ""), []byte("main's manifest")); err != nil {
		t.Fatal(err)
	}
	mainBefore := objectState(t, rawClient(t, mainTarget), mainTarget.Bucket, "")

	cfg := &Config{
		Backend: "s3", S3Bucket: prBucket, S3Prefix: "gobuildcache/pr/7/",
		S3ReadFrom: s3Locations{{bucket: mainBucket, prefix: "gobuildcache/main/"}},
		S3Endpoint: shim.URL(), S3PathStyle: true, S3Region: "us-east-1", S3Timeout: 30 * time.Second, UploadWorkers: 16,
		awsCreds: aws.Credentials{AccessKeyID: baseKey, SecretAccessKey: baseSecret},
	}
	pr, err := newS3FromConfig(ctx, cfg, t.TempDir(), nil, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close(ctx)

	// Even where the policy would allow ReadWrite, the trusted bucket is
	// read with ReadOnly sessions.
	setModes(modeReadWrite, modeReadOnly)
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Add(1)
		go func() { // at once: one session per bucket serves them all
			defer wg.Done()
			e, err := pr.Get(ctx, actionID(k))
			if err != nil {
				t.Errorf("get %s from the trusted bucket: %v", k, err)
				return
			}
			if got, _ := os.ReadFile(e.DiskPath); string(got) != "main's body of "+k {
				t.Errorf("get %s: %q", k, got)
			}
		}()
	}
	wg.Wait()
	if _, err := pr.Put(ctx, actionID("pr"), outputID("pr's body"), 9, strings.NewReader("pr's body")); err != nil {
		t.Fatalf("put to the PR's own bucket: %v", err)
	}
	infos, err := pr.ListManifests(ctx, "scope", 4)
	if err != nil || len(infos) != 1 || !infos[0].readOnly {
		t.Fatalf("manifests: %+v, %v; want main's", infos, err)
	}
	if data, err := pr.GetManifest(ctx, infos[0].name); err != nil || string(data) != "main's manifest" {
		t.Fatalf("main's manifest: %q, %v", data, err)
	}
	got := sessions()
	t.Logf("sessions by bucket and mode: %v; shim: %s", got, shim.summary())
	if got["ma ReadOnly"] != 1 || got["ma ReadWrite"] != 0 || got["pr ReadWrite"] != 1 {
		t.Errorf("sessions %v: want one ReadOnly session for the trusted bucket, none ReadWrite, and one ReadWrite for the PR's", got)
	}

	// The policy of the README: ReadOnly sessions only on the trusted
	// bucket. A write there with the PR's credentials is refused.
	setModes(modeReadOnly)
	lc := *cfg
	lc.S3Bucket, lc.S3Prefix, lc.S3ReadFrom = mainBucket, "gobuildcache/main/", nil
	hostile, err := newS3FromConfig(ctx, &lc, t.TempDir(), nil, quietLog)
	if err != nil {
		t.Fatal(err)
	}
	defer hostile.Close(ctx)
	evil := "planted by a pull request"
	_, err = hostile.Put(ctx, actionID("a"), outputID(evil), int64(len(evil)), strings.NewReader(evil))
	if errKind(err) != KindWriteRefused {
		t.Errorf("a write to the trusted bucket with the PR's credentials: %v, want it refused", err)
	}
	t.Logf("hostile write to the trusted directory bucket: %v", err)
	if d := diffState(mainBefore, objectState(t, rawClient(t, mainTarget), mainTarget.Bucket, "")); len(d) != 0 {
		t.Errorf("the trusted bucket changed: %v", d)
	}

	// check: as expected; then, with a policy that lets these credentials
	// write the trusted bucket, DANGER.
	args := []string{"check", "-backend=s3", "-s3-bucket=" + prBucket, "-s3-prefix=gobuildcache/pr/7/",
		"-s3-read-from=s3://" + mainBucket + "/gobuildcache/main/", "-s3-endpoint=" + shim.URL(), "-s3-path-style", "-s3-region=us-east-1"}
	env := append(os.Environ(), "GOBUILDCACHE_AWS_ACCESS_KEY_ID="+baseKey, "GOBUILDCACHE_AWS_SECRET_ACCESS_KEY="+baseSecret)
	check := exec.CommandContext(ctx, gobuildcacheBinary(t), args...)
	check.Env = env
	out, err := check.CombinedOutput()
	t.Logf("check, ReadOnly sessions only on the trusted bucket:\n%s", out)
	if err != nil || !strings.Contains(string(out), "as expected") {
		t.Errorf("check: %v", err)
	}
	setModes(modeReadWrite, modeReadOnly)
	check = exec.CommandContext(ctx, gobuildcacheBinary(t), args...)
	check.Env = env
	out, err = check.CombinedOutput()
	t.Logf("check, ReadWrite sessions allowed on the trusted bucket:\n%s", out)
	if err == nil || !strings.Contains(string(out), "DANGER: these credentials can write s3://"+mainBucket+"/gobuildcache/main/") {
		t.Errorf("check of a trusted bucket these credentials can write: %v", err)
	}
	if v := shim.violations.Load(); v != 0 {
		t.Errorf("%d requests broke the shim's rules: %v", v, shim.problemList())
	}
}
