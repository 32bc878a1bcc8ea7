package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3 tests run against a real S3-compatible server. `make test` starts
// MinIO with scripts/minio.sh, which exports S3_ENDPOINT and credentials;
// with TEST_S3_BUCKET set they run against that bucket on AWS S3 (or S3
// Express) instead, each test under its own prefix. Without either they
// skip, unless GOBUILDCACHE_REQUIRE_S3 is set (as `make test` does), in
// which case they fail.

// s3Target is where one test's objects go.
type s3Target struct {
	Bucket    string
	Prefix    string
	Endpoint  string // "" for AWS
	PathStyle bool
	Region    string
	// Root credentials of the MinIO server, "" on AWS.
	AccessKey, SecretKey string
}

// args are the gobuildcache flags that select this target.
func (tg s3Target) args() []string {
	a := []string{"-backend=s3", "-s3-bucket=" + tg.Bucket, "-s3-prefix=" + tg.Prefix}
	if tg.Endpoint != "" {
		a = append(a, "-s3-endpoint="+tg.Endpoint)
	}
	if tg.PathStyle {
		a = append(a, "-s3-path-style")
	}
	if tg.Region != "" {
		a = append(a, "-s3-region="+tg.Region)
	}
	return a
}

func (tg s3Target) options(tempDir string) S3Options {
	return S3Options{
		Bucket: tg.Bucket, Prefix: tg.Prefix, Endpoint: tg.Endpoint, PathStyle: tg.PathStyle, Region: tg.Region,
		Timeout: 30 * time.Second, TempDir: tempDir, Parallelism: 16,
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// s3TargetForTest returns a fresh, empty place in a real S3 for t, or skips.
func s3TargetForTest(t *testing.T) s3Target {
	t.Helper()
	if bucket := os.Getenv("TEST_S3_BUCKET"); bucket != "" {
		return s3Target{
			Bucket:    bucket,
			Prefix:    "gobuildcache-test/" + randomHex(6) + "/",
			Endpoint:  os.Getenv("TEST_S3_ENDPOINT"),
			PathStyle: os.Getenv("TEST_S3_PATH_STYLE") == "true",
			Region:    os.Getenv("AWS_REGION"),
		}
	}
	endpoint := os.Getenv("S3_ENDPOINT")
	if endpoint == "" || os.Getenv("MINIO_ROOT_USER") == "" {
		msg := "no S3 server: run `make test` (scripts/minio.sh starts MinIO) or set TEST_S3_BUCKET and AWS credentials"
		if os.Getenv("GOBUILDCACHE_REQUIRE_S3") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	tg := s3Target{
		Bucket:    "gbc-" + randomHex(6),
		Prefix:    "gobuildcache/",
		Endpoint:  endpoint,
		PathStyle: true,
		Region:    "us-east-1",
		AccessKey: os.Getenv("MINIO_ROOT_USER"),
		SecretKey: os.Getenv("MINIO_ROOT_PASSWORD"),
	}
	createBucket(t, tg)
	return tg
}

// rawClient is a plain SDK client for the target, for tests to look behind
// the backend's back.
func rawClient(t *testing.T, tg s3Target) *s3.Client {
	t.Helper()
	c, err := newS3Client(context.Background(), tg.options(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func createBucket(t *testing.T, tg s3Target) {
	t.Helper()
	_, err := rawClient(t, tg).CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(tg.Bucket)})
	if err != nil {
		t.Fatalf("create bucket %s: %v", tg.Bucket, err)
	}
}

func newTestS3(t *testing.T, tg s3Target) *S3Backend {
	t.Helper()
	b, err := NewS3Backend(context.Background(), tg.options(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

// listKeys returns every key in the bucket under prefix, sorted.
func listKeys(t *testing.T, c *s3.Client, bucket, prefix string) []string {
	t.Helper()
	return slices.Sorted(maps.Keys(objectState(t, c, bucket, prefix)))
}

// newTestStack builds the production stack over an S3 backend:
// localTier{disk, asyncUploads{breakerBackend{s3}}}.
func newTestStack(t *testing.T, remote *S3Backend, stats *Stats) (*localTier, *DiskBackend) {
	t.Helper()
	disk := newTestDisk(t)
	remote.tempDir, remote.tempDirFor = disk.tmpDir(), disk.bodyTempDir
	guarded := newBreakerBackend(remote, stats, newWarnings(quietLog), "")
	async := newAsyncUploads(guarded, disk.tmpDir(), 4, 1<<30, false, stats, quietLog)
	tier := newLocalTier(disk, async, false, stats)
	t.Cleanup(func() { tier.Close(context.Background()) })
	return tier, disk
}

func TestS3Conformance(t *testing.T) {
	tg := s3TargetForTest(t)
	t.Run("S3Backend", func(t *testing.T) {
		testConformance(t, func(t *testing.T) CacheBackend {
			tg := tg
			tg.Prefix += randomHex(4) + "/"
			return newTestS3(t, tg)
		})
	})
	t.Run("S3BackendZstd", func(t *testing.T) {
		testConformance(t, func(t *testing.T) CacheBackend {
			tg := tg
			tg.Prefix += randomHex(4) + "/"
			b := newTestS3(t, tg)
			b.compressMin = 1
			return b
		})
	})
	t.Run("Breaker", func(t *testing.T) {
		testConformance(t, func(t *testing.T) CacheBackend {
			tg := tg
			tg.Prefix += randomHex(4) + "/"
			return newBreakerBackend(newTestS3(t, tg), new(Stats), newWarnings(quietLog), "")
		})
	})
	t.Run("ManifestStore", func(t *testing.T) {
		tg := tg
		tg.Prefix += randomHex(4) + "/"
		testManifestStore(t, newTestS3(t, tg))
	})
	t.Run("LocalTierAsync", func(t *testing.T) {
		testConformance(t, func(t *testing.T) CacheBackend {
			tg := tg
			tg.Prefix += randomHex(4) + "/"
			tier, _ := newTestStack(t, newTestS3(t, tg), new(Stats))
			return tier
		})
	})
}

// TestCacheIntegrationS3 is the seed README's name for the S3 round trip
// through the whole stack: what one machine puts, another with an empty
// local cache gets from the bucket.
func TestCacheIntegrationS3(t *testing.T) {
	tg := s3TargetForTest(t)
	ctx := context.Background()
	statsA, statsB := new(Stats), new(Stats)
	a, _ := newTestStack(t, newTestS3(t, tg), statsA)
	bodies := map[string]string{"k1": "first body", "k2": strings.Repeat("x", 3<<20), "k3": ""}
	for k, body := range bodies {
		putString(t, a, k, body)
	}
	if err := a.Close(ctx); err != nil { // flushes the uploads
		t.Fatal(err)
	}
	if got := statsA.UploadsDone.Load(); got != int64(len(bodies)) {
		t.Fatalf("uploads done %d, want %d", got, len(bodies))
	}
	b, bDisk := newTestStack(t, newTestS3(t, tg), statsB)
	for k, body := range bodies {
		e, err := b.Get(ctx, actionID(k))
		if err != nil {
			t.Fatalf("Get(%s) on a fresh machine: %v", k, err)
		}
		checkEntry(t, e, []byte(body))
		if !strings.HasPrefix(e.DiskPath, bDisk.Dir()) {
			t.Errorf("DiskPath %s is not in the local tier %s", e.DiskPath, bDisk.Dir())
		}
		if mask, ok := umask(t); ok { // as the disk's own (see DiskBackend)
			if fi, err := os.Stat(e.DiskPath); err != nil {
				t.Error(err)
			} else if fi.Mode() != 0o666&^mask {
				t.Errorf("a body from the bucket: mode %v, want %v", fi.Mode(), 0o666&^mask)
			}
		}
	}
	if got := statsB.RemoteHits.Load(); got != int64(len(bodies)) {
		t.Errorf("remote hits %d, want %d", got, len(bodies))
	}
	// Now local: no new remote request.
	before := statsB.RemoteGetLatency.count()
	for k := range bodies {
		if _, err := b.Get(ctx, actionID(k)); err != nil {
			t.Fatal(err)
		}
	}
	if after := statsB.RemoteGetLatency.count(); after != before {
		t.Errorf("local hits made %d remote requests", after-before)
	}
}

func TestLocalTierOneFetchPerKey(t *testing.T) {
	tg := s3TargetForTest(t)
	ctx := context.Background()
	remote := newTestS3(t, tg)
	body := strings.Repeat("shared ", 100000)
	if _, err := remote.Put(ctx, actionID("hot"), outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	counting := &countingBackend{CacheBackend: remote}
	disk := newTestDisk(t)
	remote.tempDir = disk.tmpDir()
	tier := newLocalTier(disk, counting, false, new(Stats))
	errc := make(chan error, 32)
	for range 32 {
		go func() {
			e, err := tier.Get(ctx, actionID("hot"))
			if err == nil && e.Size != int64(len(body)) {
				err = fmt.Errorf("size %d", e.Size)
			}
			errc <- err
		}()
	}
	for range 32 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if n := counting.gets.Load(); n != 1 {
		t.Fatalf("32 concurrent gets of one key made %d remote requests, want 1", n)
	}
}

func TestS3CorruptObjectIsAMiss(t *testing.T) {
	tg := s3TargetForTest(t)
	ctx := context.Background()
	c := rawClient(t, tg)
	remote := newTestS3(t, tg)
	body := "the real body"
	key := remote.loc.actionKey(actionID("k"))
	cases := map[string]*s3.PutObjectInput{
		"same-size garbage": {Body: strings.NewReader("the fake body"), Metadata: map[string]string{metaOutputID: hexID(outputID(body)), metaSize: "13", metaTime: "1", metaEncoding: "identity"}},
		"truncated":         {Body: strings.NewReader("the real"), Metadata: map[string]string{metaOutputID: hexID(outputID(body)), metaSize: "13", metaTime: "1", metaEncoding: "identity"}},
		"bad output id":     {Body: strings.NewReader(body), Metadata: map[string]string{metaOutputID: "zz", metaSize: "13", metaTime: "1", metaEncoding: "identity"}},
		"unknown encoding":  {Body: strings.NewReader(body), Metadata: map[string]string{metaOutputID: hexID(outputID(body)), metaSize: "13", metaTime: "1", metaEncoding: "rot13"}},
		"no metadata":       {Body: strings.NewReader(body)},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			in.Bucket, in.Key = &tg.Bucket, &key
			if _, err := c.PutObject(ctx, in); err != nil {
				t.Fatal(err)
			}
			stats := new(Stats)
			tier, disk := newTestStack(t, remote, stats)
			if _, err := tier.Get(ctx, actionID("k")); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get of a corrupt object: %v, want a miss", err)
			}
			if _, err := disk.Get(ctx, actionID("k")); !errors.Is(err, ErrNotFound) {
				t.Fatal("corrupt object was installed locally")
			}
			if name != "unknown encoding" && stats.VerifyFailures.Load() != 1 {
				t.Errorf("verify failures %d, want 1", stats.VerifyFailures.Load())
			}
			// The next put repairs it.
			putString(t, tier, "k", body)
			tier.Close(ctx)
			e, err := remote.Get(ctx, actionID("k"))
			if err != nil {
				t.Fatalf("after re-upload: %v", err)
			}
			checkEntry(t, e, []byte(body))
		})
	}
}

func TestS3ClearKeepsOtherPrefixes(t *testing.T) {
	tg := s3TargetForTest(t)
	ctx := context.Background()
	c := rawClient(t, tg)
	other := "someone-else/" + randomHex(4) + "/object"
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &tg.Bucket, Key: &other, Body: strings.NewReader("keep me")}); err != nil {
		t.Fatal(err)
	}
	b := newTestS3(t, tg)
	for i := range 25 {
		putString(t, b, fmt.Sprint(i), fmt.Sprint("body ", i))
	}
	n, size, err := b.Clear(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 25 || size == 0 {
		t.Errorf("cleared %d objects, %d bytes; want 25", n, size)
	}
	if keys := listKeys(t, c, tg.Bucket, tg.Prefix); len(keys) != 0 {
		t.Errorf("left under the prefix: %v", keys)
	}
	if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &tg.Bucket, Key: &other}); err != nil {
		t.Errorf("object outside the prefix is gone: %v", err)
	}
	c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &tg.Bucket, Key: &other})
}

// cancelAfter reads a body and cancels its upload once n bytes are read.
type cancelAfter struct {
	*bytes.Reader
	n, read int
	cancel  func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.Reader.Read(p)
	if c.read += n; c.read >= c.n {
		c.cancel()
	}
	return n, err
}

// TestS3PutStopsWhenCancelled: an upload cancelled while the backend
// checks, spools or compresses its body (a close whose deadline passed)
// stops within a few buffers, not after the whole body.
func TestS3PutStopsWhenCancelled(t *testing.T) {
	b := newTestS3(t, s3TargetForTest(t))
	b.compressMin = 1
	body := make([]byte, 64<<20)
	sum := OutputID(sha256.Sum256(body))
	for _, c := range []struct {
		name     string
		seekable bool
		at       int // bytes read when the upload is cancelled
	}{
		{"spooling", false, 1 << 20},
		{"checking", true, 1 << 20},
		{"compressing", true, len(body) + 1<<20}, // the check's pass is whole
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := &cancelAfter{Reader: bytes.NewReader(body), n: c.at, cancel: cancel}
			var in io.Reader = r
			if !c.seekable {
				in = struct{ io.Reader }{r}
			}
			_, err := b.Put(ctx, actionID("cancelled"), sum, int64(len(body)), in)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Put: %v, want it cancelled", err)
			}
			if r.read > c.at+8<<20 {
				t.Errorf("read %d bytes after the cancel at %d", r.read-c.at, c.at)
			}
		})
	}
}

// TestS3GetReservesRoom: a get takes its body's declared size of the local
// disk before it writes a byte, with what other gets are writing; it
// leaves fitsReserve free, and a prefetch's get prefetchReserve.
func TestS3GetReservesRoom(t *testing.T) {
	ctx := context.Background()
	b := &S3Backend{freeBytes: func(string) (int64, error) { return fitsReserve + 100<<20, nil }}
	first, err := b.reserveRoom(ctx, "dir", 60<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.reserveRoom(ctx, "dir", 60<<20); errKind(err) != KindTooLarge || !errors.Is(err, ErrNotFound) {
		t.Fatalf("a second 60 MiB beside the first, with 100 MiB of room: %v, want a miss of kind too_large", err)
	}
	first()
	second, err := b.reserveRoom(ctx, "dir", 60<<20)
	if err != nil {
		t.Fatalf("60 MiB once the first is written: %v", err)
	}
	second()
	if _, err := b.reserveRoom(withSpeculative(ctx), "dir", 60<<20); errKind(err) != KindTooLarge {
		t.Fatalf("a prefetch's 60 MiB with less than prefetchReserve left: %v, want refused", err)
	}
	if b.writing.Load() != 0 {
		t.Errorf("%d bytes still taken", b.writing.Load())
	}
}

// TestS3GetOfAHugeDeclaredSize: an object on MinIO whose metadata declares
// a terabyte, its body a small zstd frame that could decode to all of it,
// is refused before a byte is written: it cannot fill the disk under the
// build.
func TestS3GetOfAHugeDeclaredSize(t *testing.T) {
	tg := s3TargetForTest(t)
	ctx := context.Background()
	b := newTestS3(t, tg)
	frame, _, release, err := b.compress(strings.NewReader("hello"), 5)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	key := b.loc.actionKey(actionID("terabyte"))
	if _, err := rawClient(t, tg).PutObject(ctx, &s3.PutObjectInput{Bucket: &tg.Bucket, Key: &key, Body: frame,
		Metadata: map[string]string{metaOutputID: hexID(outputID("hello")), metaSize: fmt.Sprint(int64(1) << 40), metaTime: "1", metaEncoding: "zstd"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, actionID("terabyte")); errKind(err) != KindTooLarge || !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get: %v, want a miss of kind too_large", err)
	}
	if ents, _ := os.ReadDir(b.tempDir); len(ents) != 0 {
		t.Errorf("the refused get left %d files in its temp dir", len(ents))
	}
}

func TestS3MetadataParsing(t *testing.T) {
	good := map[string]string{metaOutputID: hexID(outputID("x")), metaSize: "1", metaTime: "5", metaEncoding: "identity"}
	if _, _, err := parseS3Metadata(good); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []map[string]string{
		{},
		{metaOutputID: "00", metaSize: "1", metaTime: "5", metaEncoding: "identity"},
		{metaOutputID: good[metaOutputID], metaSize: "-1", metaTime: "5", metaEncoding: "identity"},
		{metaOutputID: good[metaOutputID], metaSize: "9223372036854775807", metaTime: "5", metaEncoding: "zstd"},
		{metaOutputID: good[metaOutputID], metaSize: fmt.Sprint(int64(maxBodySize) + 1), metaTime: "5", metaEncoding: "identity"},
		{metaOutputID: good[metaOutputID], metaSize: "1", metaTime: "x", metaEncoding: "identity"},
		{metaOutputID: good[metaOutputID], metaSize: "1", metaTime: "5", metaEncoding: "brotli"},
	} {
		if _, _, err := parseS3Metadata(bad); err == nil {
			t.Errorf("accepted %v", bad)
		}
	}
}

// TestS3CarriedStdout: a compile put with its empty output is one object,
// which says so in its metadata; a reader answers the output after a get
// of the compile without a request, with the compile's put time, and not
// before one. A compile put alone carries nothing.
func TestS3CarriedStdout(t *testing.T) {
	ctx := context.Background()
	tg := s3TargetForTest(t)
	tg.Prefix += randomHex(4) + "/"
	w := newTestS3(t, tg)
	compile, plain := actionID("compile"), actionID("plain")
	for id, put := range map[ActionID]func(context.Context, ActionID, OutputID, int64, io.Reader) (Entry, error){compile: w.PutWithEmptyStdout, plain: w.Put} {
		if _, err := put(ctx, id, outputID("archive"), 7, strings.NewReader("archive")); err != nil {
			t.Fatal(err)
		}
	}
	c := rawClient(t, tg)
	if keys := listKeys(t, c, tg.Bucket, tg.Prefix); len(keys) != 2 {
		t.Fatalf("objects %q, want the two compiles'", keys)
	}
	for id, want := range map[ActionID]string{compile: stdoutEmpty, plain: ""} {
		key := w.loc.actionKey(id)
		head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &tg.Bucket, Key: &key})
		if err != nil {
			t.Fatal(err)
		}
		if got := head.Metadata[metaStdout]; got != want {
			t.Errorf("%s: %s %q, want %q", key, metaStdout, got, want)
		}
	}

	r := newTestS3(t, tg) // another machine's
	miss := func(id ActionID, what string) {
		t.Helper()
		if _, err := r.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: %v, want ErrNotFound", what, err)
		}
	}
	miss(stdoutKey(compile), "the output before its compile")
	ce, err := r.Get(ctx, compile)
	if err != nil {
		t.Fatal(err)
	}
	checkEntry(t, ce, []byte("archive"))
	out, err := r.Get(ctx, stdoutKey(compile))
	if err != nil {
		t.Fatal(err)
	}
	checkEntry(t, out, nil)
	if !out.Time.Equal(ce.Time) {
		t.Errorf("the output's time %v, want its compile's %v", out.Time, ce.Time)
	}
	miss(stdoutKey(compile), "the output asked again (the local tier holds it now)")
	if _, err := r.Get(ctx, plain); err != nil {
		t.Fatal(err)
	}
	miss(stdoutKey(plain), "the output of a compile put alone")
}

// TestS3CompressionIsReadByAnyReader writes zstd objects and reads them with
// a backend configured not to compress: the encoding is the object's, not
// the reader's. A zstd object that decodes to more than its declared size
// (a decompression bomb) is a verify failure, not a wrong answer.
func TestS3CompressionIsReadByAnyReader(t *testing.T) {
	tg := s3TargetForTest(t)
	ctx := context.Background()
	writer := newTestS3(t, tg)
	writer.compressMin = 1
	body := strings.Repeat("compressible object file contents ", 10000)
	putString(t, writer, "z", body)
	c := rawClient(t, tg)
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &tg.Bucket, Key: aws.String(writer.loc.actionKey(actionID("z")))})
	if err != nil {
		t.Fatal(err)
	}
	if head.Metadata[metaEncoding] != "zstd" || aws.ToInt64(head.ContentLength) >= int64(len(body))/4 {
		t.Fatalf("object stored as %q, %d bytes for a %d-byte body", head.Metadata[metaEncoding], aws.ToInt64(head.ContentLength), len(body))
	}
	reader := newTestS3(t, tg) // compression off
	e, err := reader.Get(ctx, actionID("z"))
	if err != nil {
		t.Fatal(err)
	}
	checkEntry(t, e, []byte(body))

	// A body above compressInMemory is compressed through a temp file.
	big := strings.Repeat("a larger compressible object file ", compressInMemory/30)
	putString(t, writer, "big", big)
	if e, err = reader.Get(ctx, actionID("big")); err != nil {
		t.Fatal(err)
	}
	checkEntry(t, e, []byte(big))

	// Incompressible bodies are stored as they are.
	random := randomHex(20000)
	putString(t, writer, "r", random)
	head, _ = c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &tg.Bucket, Key: aws.String(writer.loc.actionKey(actionID("r")))})
	if head.Metadata[metaEncoding] != "zstd" {
		// hex digits compress by about half: still worth it
		t.Logf("random hex stored as %q", head.Metadata[metaEncoding])
	}

	// A bomb: metadata says 10 bytes, the frame holds a megabyte.
	zf, _, release, err := writer.compress(strings.NewReader(strings.Repeat("A", 1<<20)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	small := "0123456789"
	key := writer.loc.actionKey(actionID("bomb"))
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &tg.Bucket, Key: &key, Body: zf,
		Metadata: map[string]string{metaOutputID: hexID(outputID(small)), metaSize: "10", metaTime: "1", metaEncoding: "zstd"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Get(ctx, actionID("bomb")); !errors.Is(err, errVerify) {
		t.Fatalf("Get of a decompression bomb: %v, want a verify failure", err)
	}

	// A size no body can have (it once overflowed the verifying
	// reader's bound, a panic that ended the build).
	hf, _, hrelease, err := writer.compress(strings.NewReader("hello"), 5)
	if err != nil {
		t.Fatal(err)
	}
	defer hrelease()
	key = writer.loc.actionKey(actionID("huge"))
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &tg.Bucket, Key: &key, Body: hf,
		Metadata: map[string]string{metaOutputID: hexID(outputID("hello")), metaSize: "9223372036854775807", metaTime: "1", metaEncoding: "zstd"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Get(ctx, actionID("huge")); !errors.Is(err, errVerify) {
		t.Fatalf("Get of an object claiming %d bytes: %v, want a verify failure", int64(math.MaxInt64), err)
	}
}

// FuzzS3Metadata: object metadata from the bucket is untrusted; the parser
// must never panic, and what it accepts is well formed.
func FuzzS3Metadata(f *testing.F) {
	f.Add(hexID(outputID("x")), "1", "5", "identity")
	f.Add(hexID(outputID("x")), "-1", "5", "zstd")
	f.Add("zz", "1", "5", "identity")
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, out, size, tm, enc string) {
		e, encoding, err := parseS3Metadata(map[string]string{metaOutputID: out, metaSize: size, metaTime: tm, metaEncoding: enc})
		if err != nil {
			return
		}
		if len(e.OutputID) != idLen || e.Size < 0 || (encoding != "identity" && encoding != "zstd") {
			t.Fatalf("accepted %q %q %q %q as %+v %q", out, size, tm, enc, e, encoding)
		}
	})
}

// TestS3StaleSessionToken: credentials with a session token the server no
// longer accepts (a stale AWS_SESSION_TOKEN beside good keys) are refused
// credentials for reads and writes alike: KindAuth, which turns the remote
// off, not a read denied (a miss asked again for every key) or a refused
// write that leaves reads on.
func TestS3StaleSessionToken(t *testing.T) {
	tg := s3TargetForTest(t)
	opts := tg.options(t.TempDir())
	opts.Credentials = credentials.NewStaticCredentialsProvider(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), "stale-token")
	b, err := NewS3Backend(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	if _, err := b.Get(t.Context(), actionID("k")); errKind(err) != KindAuth {
		t.Errorf("get: %v (kind %v), want auth", err, errKind(err))
	}
	body := "body"
	if _, err := b.Put(t.Context(), actionID("k"), outputID(body), int64(len(body)), strings.NewReader(body)); errKind(err) != KindAuth {
		t.Errorf("put: %v (kind %v), want auth", err, errKind(err))
	}
}

// TestProbeWriteLocationTruncatedEmptyPage: with -s3-read-from, the
// first get lists the write location with MaxKeys=1 and, if the page holds
// no key, takes the write location for empty and stops asking it for the
// rest of the run. AWS: "The response might contain fewer keys but will
// never contain more. If there are additional keys that satisfy the search
// criteria, but these keys were not returned because max-keys was
// exceeded, the response contains <IsTruncated>true</IsTruncated>"
// (ListObjectsV2 MaxKeys); a page of no keys that is truncated says nothing
// about emptiness. Here the write location has entries, the first page is
// empty and truncated, and the server stops reading it.
func TestProbeWriteLocationTruncatedEmptyPage(t *testing.T) {
	listed := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("list-type") == "2" {
			w.Header().Set("Content-Type", "application/xml")
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>w/v1/</Prefix><KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>true</IsTruncated><NextContinuationToken>tok</NextContinuationToken></ListBucketResult>`)
			select {
			case listed <- struct{}{}:
			default:
			}
			return
		}
		writeShimError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
	}))
	defer srv.Close()
	b, err := NewS3Backend(t.Context(), S3Options{
		Bucket: "b", Prefix: "w/", ReadFrom: []s3Location{{bucket: "b", prefix: "r/"}},
		Endpoint: srv.URL, PathStyle: true, Region: "us-east-1", Timeout: 5 * time.Second,
		TempDir: t.TempDir(), Credentials: shimBaseCreds,
	})
	if err != nil {
		t.Fatal(err)
	}
	b.Get(t.Context(), ActionID{1}) // starts the probe
	<-listed
	for range 200 { // the probe's goroutine stores its verdict right after the answer
		if b.writeEmpty.Load() {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if b.writeEmpty.Load() {
		t.Errorf("a truncated page of no keys made the write location count as empty: gets now ask only %v", b.readable(!b.writeEmpty.Load()))
	}
}

// TestDeleteManifestsReportsKeysNotDeleted: DeleteObjects answers 200
// with an <Error> per key it did not delete (AWS: a key the caller may not
// delete, s3:DeleteObject missing, is reported in the 200's body, as
// AccessDenied). DeleteManifests asks for a quiet answer and never looks at
// its errors: the manifest upkeep reports success while nothing was
// deleted, no error is counted, and the manifests pile up.
func TestDeleteManifestsReportsKeysNotDeleted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Query().Get("list-type") == "2":
			w.Header().Set("Content-Type", "application/xml")
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>`)
		case r.Method == http.MethodPost && r.URL.Query().Has("delete"):
			w.Header().Set("Content-Type", "application/xml")
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Error><Key>w/v1/m/s/0000000000000000001-abc</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>`)
		default:
			writeShimError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		}
	}))
	defer srv.Close()
	b, err := NewS3Backend(t.Context(), S3Options{
		Bucket: "b", Prefix: "w/", Endpoint: srv.URL, PathStyle: true, Region: "us-east-1",
		Timeout: 5 * time.Second, TempDir: t.TempDir(), Credentials: shimBaseCreds,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = b.DeleteManifests(t.Context(), []string{"w/v1/m/s/0000000000000000001-abc"})
	if err == nil {
		t.Errorf("DeleteManifests: nil, though S3 answered that the manifest was not deleted (AccessDenied)")
	}
}

// TestDeleteManifestsOver1000: one DeleteObjects takes at most 1000
// keys (AWS DeleteObjects: "you can specify up to 1,000 keys"; MinIO
// enforces it too). DeleteManifests sends every name given, with their
// packs, in one request: once a scope has more than manifestsKept+1000
// manifests (deletes that failed before, see above), the upkeep fails on
// every run and never catches up.
func TestDeleteManifestsOver1000(t *testing.T) {
	tg := s3TargetForTest(t)
	if tg.Endpoint == "" {
		t.Skip("needs the local MinIO")
	}
	b, err := NewS3Backend(t.Context(), tg.options(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 1001)
	for i := range names {
		// Manifests that are not there: DeleteObjects deletes them
		// all the same (a missing key is deleted, for S3).
		names[i] = b.loc.manifestKey("review-scope", newManifestID(time.Unix(0, int64(i+1)), "abc"))
	}
	if err := b.DeleteManifests(t.Context(), names); err != nil {
		t.Errorf("DeleteManifests of %d manifests: %v", len(names), err)
	}
}

// TestDeleteObjectsCarryContentMD5: on MinIO behind a proxy that, as S3's
// documentation says of a general purpose bucket and as S3-compatible
// servers that know no other checksum do, refuses a DeleteObjects without
// a Content-MD5, the manifests' upkeep and clear delete what they should.
// Every DeleteObjects carries a Content-MD5 (which MinIO checks against
// the body) and no x-amz-checksum- header in its place.
func TestDeleteObjectsCarryContentMD5(t *testing.T) {
	tg := s3TargetForTest(t)
	if tg.AccessKey == "" {
		t.Skip("needs the local MinIO")
	}
	ctx := t.Context()
	root := rawClient(t, tg)
	var hashed, refused atomic.Int64
	tg.Endpoint = newS3RuleProxy(t, tg.Endpoint, func(r *http.Request) *s3Refusal {
		if r.Method != http.MethodPost || !r.URL.Query().Has("delete") {
			return nil
		}
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-amz-checksum-") {
				t.Errorf("DeleteObjects with %s: want Content-MD5 in its place", k)
			}
		}
		if r.Header.Get("Content-MD5") == "" {
			refused.Add(1)
			return &s3Refusal{http.StatusBadRequest, "InvalidRequest", "Missing required header for this request: Content-MD5"}
		}
		hashed.Add(1)
		return nil
	})
	b := newTestS3(t, tg)
	var names []string
	for i := range 3 {
		id := newManifestID(time.Unix(int64(i+1), 0), "abc")
		if err := b.PutManifest(ctx, "md5-scope", id, []byte("manifest")); err != nil {
			t.Fatal(err)
		}
		if err := b.PutPack(ctx, "md5-scope", id, 0, []byte("pack")); err != nil {
			t.Fatal(err)
		}
		names = append(names, b.loc.manifestKey("md5-scope", id))
	}
	if _, err := b.Put(ctx, actionID("kept"), outputID("kept"), 4, strings.NewReader("kept")); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteManifests(ctx, names[:2]); err != nil {
		t.Fatalf("DeleteManifests: %v (kind %v)", err, errKind(err))
	}
	if keys := listKeys(t, root, tg.Bucket, tg.Prefix); len(keys) != 3 {
		t.Fatalf("after deleting 2 of 3 manifests and their packs: %d keys left, want 3 (a manifest, its pack, an entry): %v", len(keys), keys)
	}
	out, err := exec.Command(gobuildcacheBinary(t), append([]string{"clear", "-cache-dir=" + t.TempDir()}, tg.args()...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("clear: %v\n%s", err, out)
	}
	if keys := listKeys(t, root, tg.Bucket, tg.Prefix); len(keys) != 0 {
		t.Errorf("left after clear: %v", keys)
	}
	if refused.Load() != 0 || hashed.Load() < 2 {
		t.Errorf("DeleteObjects refused %d, sent with a Content-MD5 %d; want 0 and at least 2 (the upkeep's and clear's)", refused.Load(), hashed.Load())
	}
}

// TestS3GetLocalDiskFailureIsAMiss: a get whose body the local disk cannot
// take (the disk filled up after the room was checked: ENOSPC on a write;
// the process out of file descriptors: EMFILE at the create) is a local
// failure (a miss for the local tier) that says nothing of the remote,
// which answered: through the breaker, no remote error is counted, the
// remote is never turned off, and once the disk takes bodies again the
// next get is a hit.
func TestS3GetLocalDiskFailureIsAMiss(t *testing.T) {
	tg := s3TargetForTest(t)
	ctx := context.Background()
	b := newTestS3(t, tg)
	body := strings.Repeat("a body of some size ", 1000)
	if _, err := b.Put(ctx, actionID("k"), outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	stats := new(Stats)
	marker := filepath.Join(t.TempDir(), "remote-down")
	guarded := newBreakerBackend(b, stats, newWarnings(quietLog), marker)
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full to fill a disk with:", err)
	}
	full := filepath.Join(t.TempDir(), "full")
	for name, create := range map[string]func(dir, pattern string) (*os.File, error){
		"ENOSPC": func(dir, pattern string) (*os.File, error) {
			// Writes to /dev/full fail with ENOSPC; removing the
			// file removes the link.
			if err := os.Symlink("/dev/full", full); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, err
			}
			return os.OpenFile(full, os.O_WRONLY, 0)
		},
		"EMFILE": func(dir, pattern string) (*os.File, error) {
			return nil, &os.PathError{Op: "open", Path: filepath.Join(dir, pattern), Err: syscall.EMFILE}
		},
	} {
		b.createTemp = create
		for i := range 2 * breakerThreshold {
			if _, err := guarded.Get(ctx, actionID("k")); errKind(err) != KindLocal {
				t.Fatalf("%s: get %d: %v (kind %s), want a local failure", name, i, err, errKind(err))
			}
		}
	}
	b.createTemp = createSharedTemp
	e, err := guarded.Get(ctx, actionID("k"))
	if err != nil {
		t.Fatalf("get once the disk takes bodies again: %v", err)
	}
	os.Remove(e.DiskPath)
	snap := stats.Snapshot()
	if snap.BreakerOpenings != 0 || snap.RemoteErrors != 0 {
		t.Errorf("local disk failures: breaker opened %d times, remote errors %v; want none", snap.BreakerOpenings, snap.RemoteErrorsByKind)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("a marker turning the remote off for the job's next go commands was written")
	}
}

// TestS3PutCompressesOnlyWithRoom: a body too large to compress in memory
// is compressed through a temp file only if the local disk has room for
// it beside what the go command's puts leave free; without, or when the
// disk fills up meanwhile (ENOSPC), it is uploaded as it is: the upload
// neither takes the disk's last bytes from the build nor fails, and the
// remote is not turned off for the local disk's state.
func TestS3PutCompressesOnlyWithRoom(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full to fill a disk with:", err)
	}
	tg := s3TargetForTest(t)
	ctx := context.Background()
	b := newTestS3(t, tg)
	b.compressMin = 1
	body := strings.Repeat("compressible ", (compressInMemory+1<<20)/13)
	var frames atomic.Int64
	full := filepath.Join(t.TempDir(), "full")
	b.createTemp = func(dir, pattern string) (*os.File, error) {
		if !strings.HasPrefix(pattern, "s3zst") {
			return createSharedTemp(dir, pattern)
		}
		frames.Add(1)
		// Writes to /dev/full fail with ENOSPC; removing the file
		// removes the link.
		if err := os.Symlink("/dev/full", full); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		return os.OpenFile(full, os.O_WRONLY, 0)
	}
	stats := new(Stats)
	guarded := newBreakerBackend(b, stats, newWarnings(quietLog), filepath.Join(t.TempDir(), "remote-down"))
	put := func(name string) {
		t.Helper()
		if _, err := guarded.Put(ctx, actionID(name), outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
			t.Fatalf("put %s: %v", name, err)
		}
	}
	b.freeBytes = func(string) (int64, error) { return fitsReserve + int64(len(body))/2, nil }
	put("no room")
	if n := frames.Load(); n != 0 {
		t.Errorf("with no room for it, %d temp files made to compress a body into", n)
	}
	b.freeBytes = func(string) (int64, error) { return 1 << 40, nil }
	for i := range 2 * breakerThreshold {
		put(fmt.Sprint("disk full ", i))
	}
	if frames.Load() == 0 {
		t.Error("with room, no body compressed through a temp file")
	}
	if snap := stats.Snapshot(); snap.BreakerOpenings != 0 || snap.RemoteErrors != 0 {
		t.Errorf("breaker opened %d times, remote errors %v; want none", snap.BreakerOpenings, snap.RemoteErrorsByKind)
	}
	for _, name := range []string{"no room", "disk full 0"} {
		e, err := b.Get(ctx, actionID(name))
		if err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		os.Remove(e.DiskPath)
	}
}
