package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/logging"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// The tests here run the S3 backend, and the real binary under the go
// command, against S3 Express One Zone directory buckets
// ("gbc<random>--use1-az4--x-s3"), so that the real SDK takes its
// directory-bucket code path, with MinIO storing the objects. MinIO does not
// speak that path (it has no CreateSession and rejects credential scopes for
// service "s3express"), so a test-only shim (expressShim, on 127.0.0.1) sits
// between the SDK and MinIO, as strict as the service in what a cache relies
// on: sessions that expire (three seconds in most tests here), the service's
// error codes for expired and invalid sessions, refused, missing and slow
// CreateSessions, ReadOnly sessions, per-bucket session policies, signing
// regions, listings in random order and the listing parameters a directory
// bucket rejects, and 503s.
//
// What they do NOT cover (real S3 Express differs):
//   - Transport: S3 Express accepts HTTPS only. Over HTTPS the SDK does not
//     hash the payload (UNSIGNED-PAYLOAD, or aws-chunked bodies with
//     checksum trailers when request checksums are WhenSupported); here the
//     SDK talks plain http and sends hex SHA-256 payload hashes, which the
//     shim passes on to MinIO.
//   - Endpoints: real directory buckets resolve to virtual-hosted zonal
//     endpoints (https://<bucket>.s3express-<az>.<region>.amazonaws.com);
//     here the endpoint is an IP, so the SDK uses path style.
//   - Authorisation: the shim accepts one fixed base key and a per-bucket
//     set of session modes; there is no IAM policy language.
//   - Storage limits beyond the listing rules (at most 1000 keys per
//     DeleteObjects, object size) are whatever MinIO does.

// TestS3ExpressDirectoryBucket covers the SDK's session path and the
// backend contract on a directory bucket:
//   - The SDK recognises the --x-s3 name even with a custom endpoint, and
//     gets sessions from gobuildcache's provider (expressSessions), which
//     calls CreateSession (GET /<bucket>?session) signed with the base
//     credentials (checked by the shim: full SigV4, service s3express) and
//     shares one session between all requests: a client makes one
//     CreateSession for 1010 concurrent puts and a Clear.
//   - Every data request the backend makes (PutObject, GetObject,
//     ListObjectsV2, DeleteObjects) is SigV4-signed for s3express with a
//     session key the shim issued, carries that session's
//     X-Amz-S3session-Token, and is addressed to the session's bucket. The
//     shim recomputes each signature; any miss is counted and fails the test.
//     ShimRejects checks that these checks bite: requests signed with the
//     base credentials (session auth disabled) or with a forged session
//     are refused.
//   - The backend contract (testConformance, 64 MiB object included), with
//     three-second sessions, and S3Backend.Clear (paged ListObjectsV2 over
//     more than 1000 keys, shuffled, quiet DeleteObjects) work on such a
//     bucket; a plain MinIO client then finds nothing left under the
//     prefix, and a sibling prefix untouched.
func TestS3ExpressDirectoryBucket(t *testing.T) {
	tg := s3TargetForTest(t)
	if tg.AccessKey == "" {
		t.Skip("needs the local MinIO (scripts/minio.sh) and its root credentials behind the S3 Express shim; TEST_S3_BUCKET names a real bucket")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	express := "gbc" + randomHex(5) + "--use1-az4--x-s3"
	shim := startExpressShim(t, tg, express, shimBaseKey, shimBaseSecret)

	var clients atomic.Int64
	newBackend := func(t *testing.T, prefix string) *S3Backend {
		t.Helper()
		b, err := NewS3Backend(ctx, S3Options{
			Bucket:      express,
			Prefix:      prefix,
			Endpoint:    shim.URL(),
			PathStyle:   true,
			Region:      "us-east-1",
			Timeout:     30 * time.Second,
			TempDir:     t.TempDir(),
			Parallelism: 16,
			Credentials: shimBaseCreds, // the SDK's base credentials: only the shim knows them
		})
		if err != nil {
			t.Fatal(err)
		}
		clients.Add(1)
		t.Cleanup(func() { b.Close(context.Background()) })
		return b
	}

	// The shim's checks must bite: requests signed with the base
	// credentials, or with a session the shim never issued, are refused.
	// A second shim keeps these deliberate violations out of the counts
	// checked below.
	t.Run("ShimRejects", func(t *testing.T) {
		other := startExpressShim(t, tg, express, shimBaseKey, shimBaseSecret)
		base := credentials.NewStaticCredentialsProvider(shimBaseKey, shimBaseSecret, "")
		forged := shimFixedExpressCreds{AccessKeyID: "SESSFORGED", SecretAccessKey: "forged", SessionToken: "forged", CanExpire: true, Expires: time.Now().Add(time.Hour)}
		for name, opt := range map[string]func(*s3.Options){
			"base credentials": func(o *s3.Options) { o.DisableS3ExpressSessionAuth = aws.Bool(true) },
			"forged session":   func(o *s3.Options) { o.ExpressCredentials = forged },
		} {
			c := s3.New(s3.Options{Region: shimRegion, BaseEndpoint: aws.String(other.URL()), UsePathStyle: true, Credentials: base, Logger: logging.Nop{}, RetryMaxAttempts: 1}, opt)
			_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(express), Key: aws.String("gobuildcache/rejected"), Body: strings.NewReader("x")})
			var re *awshttp.ResponseError
			if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusForbidden {
				t.Errorf("PutObject with %s: %v, want 403 from the shim", name, err)
			}
		}
		if v, cs := other.violations.Load(), other.createSessions.Load(); v != 2 || cs != 0 {
			t.Errorf("shim counted %d violations and %d CreateSession calls, want 2 and 0; violations:\n%s", v, cs, strings.Join(other.problemList(), "\n"))
		}
	})

	t.Run("Conformance", func(t *testing.T) {
		shim.setSessionLife(3 * time.Second)
		defer shim.setSessionLife(5 * time.Minute)
		testConformance(t, func(t *testing.T) CacheBackend {
			return newBackend(t, "gobuildcache/"+randomHex(6)+"/")
		})
	})

	t.Run("Clear", func(t *testing.T) {
		const entries = 1010 // more than one ListObjectsV2 page
		prefix := "gobuildcache/" + randomHex(6) + "/"
		raw := rawClient(t, tg) // plain MinIO client, on the mapped bucket
		sibling := strings.TrimSuffix(prefix, "/") + "-sibling/keep"
		if _, err := raw.PutObject(ctx, &s3.PutObjectInput{Bucket: &tg.Bucket, Key: &sibling, Body: strings.NewReader("keep me")}); err != nil {
			t.Fatal(err)
		}
		// One put first, alone: it makes the client's one CreateSession.
		// After that the cached session must serve everything, the
		// concurrent puts and Clear included.
		sessionsBefore := shim.createSessions.Load()
		b := newBackend(t, prefix)
		first := "clear body first"
		if _, err := b.Put(ctx, actionID("clear-first"), outputID(first), int64(len(first)), strings.NewReader(first)); err != nil {
			t.Fatal(err)
		}
		if n := shim.createSessions.Load() - sessionsBefore; n != 1 {
			t.Fatalf("first request of a new client made %d CreateSession calls, want 1", n)
		}
		var total atomic.Int64
		total.Add(int64(len(first)))
		work := make(chan int)
		errc := make(chan error, entries)
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					body := fmt.Sprint("clear body ", i)
					total.Add(int64(len(body)))
					if _, err := b.Put(ctx, actionID(fmt.Sprint("clear", i)), outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
						errc <- err
					}
				}
			}()
		}
		for i := range entries {
			work <- i
		}
		close(work)
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatal(err)
		}
		if keys := listKeys(t, raw, tg.Bucket, prefix); len(keys) != entries+1 {
			t.Fatalf("MinIO holds %d objects under %s after %d puts through the shim", len(keys), prefix, entries+1)
		}

		n, size, err := b.Clear(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != entries+1 || size != total.Load() {
			t.Errorf("Clear removed %d objects, %d bytes; want %d, %d", n, size, entries+1, total.Load())
		}
		if n := shim.createSessions.Load() - sessionsBefore; n != 1 {
			t.Errorf("one client made %d CreateSession calls, want 1 (its session is valid for 5 minutes)", n)
		}
		if keys := listKeys(t, raw, tg.Bucket, prefix); len(keys) != 0 {
			t.Errorf("%d objects left under %s after Clear, first %s", len(keys), prefix, keys[0])
		}
		if _, err := raw.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &tg.Bucket, Key: &sibling}); err != nil {
			t.Errorf("object under a sibling prefix is gone: %v", err)
		}
		if _, err := b.Get(ctx, actionID("clear0")); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get after Clear: %v, want ErrNotFound", err)
		}
	})

	sessions, data, bad := shim.createSessions.Load(), shim.dataRequests.Load(), shim.violations.Load()
	t.Logf("S3 Express shim: %d CreateSession calls for %d clients, %d data requests, %d violations; operations %v; payload hashes %v",
		sessions, clients.Load(), data, bad, shim.counts(&shim.ops), shim.counts(&shim.hashes))
	if sessions == 0 {
		t.Error("the SDK never called CreateSession")
	}
	if data == 0 {
		t.Error("no data request reached the shim")
	}
	if bad != 0 {
		t.Errorf("%d requests broke the S3 Express rules, among them:\n%s", bad, strings.Join(shim.problemList(), "\n"))
	}
	for _, op := range []string{"PutObject", "GetObject", "ListObjectsV2", "DeleteObjects"} {
		if shim.counts(&shim.ops)[op] == 0 {
			t.Errorf("no %s went through the shim", op)
		}
	}
}

const shimBaseKey, shimBaseSecret = "BASEKEY", "BASESECRET"

// shimBaseCreds are the base credentials only the shim knows.
var shimBaseCreds = credentials.NewStaticCredentialsProvider(shimBaseKey, shimBaseSecret, "")

// strictShim starts a shim with one directory bucket, or skips.
func strictShim(t *testing.T) (*expressShim, s3Target, string) {
	t.Helper()
	tg := s3TargetForTest(t)
	if tg.AccessKey == "" {
		t.Skip("needs the local MinIO (scripts/minio.sh) and its root credentials behind the S3 Express shim")
	}
	express := "gbc" + randomHex(5) + "--use1-az4--x-s3"
	return startExpressShim(t, tg, express, shimBaseKey, shimBaseSecret), tg, express
}

// newShimBackend is an S3 backend on a directory bucket of the shim,
// under prefix (a random one if ""), reading readOnly with ReadOnly
// sessions.
func newShimBackend(t *testing.T, shim *expressShim, bucket, prefix string, timeout time.Duration, readOnly ...string) *S3Backend {
	t.Helper()
	b, err := NewS3Backend(context.Background(), S3Options{
		Bucket:          bucket,
		Prefix:          cmp.Or(prefix, "gobuildcache/"+randomHex(6)+"/"),
		Endpoint:        shim.URL(),
		PathStyle:       true,
		Region:          shimRegion,
		Timeout:         timeout,
		TempDir:         t.TempDir(),
		Parallelism:     16,
		Credentials:     shimBaseCreds,
		ReadOnlyBuckets: readOnly,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

// TestS3ExpressSessionExpiry: requests go on through several session
// lifetimes (three-second sessions), and through every session being
// refused before its time, without one failing.
func TestS3ExpressSessionExpiry(t *testing.T) {
	shim, _, express := strictShim(t)
	shim.setSessionLife(3 * time.Second)
	b := newShimBackend(t, shim, express, "", 30*time.Second)

	ctx := t.Context()
	const workers, run = 8, 10 * time.Second
	deadline := time.Now().Add(run)
	var ops atomic.Int64
	var mu sync.Mutex
	var failures []string
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 5 {
			failures = append(failures, fmt.Sprintf("%v (kind %s)", err, errKind(err)))
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				body := fmt.Sprintf("body %d of worker %d", i, w)
				id := actionID(fmt.Sprint("expiry", w, "-", i))
				if _, err := b.Put(ctx, id, outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
					fail(err)
					continue
				}
				if _, err := b.Get(ctx, id); err != nil {
					fail(err)
				}
				if _, err := b.Get(ctx, actionID(fmt.Sprint("missing", w, "-", i))); !errors.Is(err, ErrNotFound) {
					fail(err)
				}
				ops.Add(3)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	// Halfway, every session is refused as expired: the requests signed
	// with them must get new ones and go on.
	time.Sleep(run / 2)
	shim.expireSessions()
	wg.Wait()

	t.Logf("%d requests in %v; shim: %s", ops.Load(), run, shim.summary())
	if len(failures) > 0 {
		t.Errorf("requests failed:\n%s", strings.Join(failures, "\n"))
	}
	if n := shim.sessionsIssued.Load(); n < 4 {
		t.Errorf("%d sessions issued in %v of three-second sessions: want at least 4", n, run)
	}
	if n, issued := shim.createSessions.Load(), shim.sessionsIssued.Load(); n != issued {
		t.Errorf("%d CreateSession calls for %d sessions", n, issued)
	}
	if shim.expiredAnswers.Load() == 0 {
		t.Error("no request was refused for an expired session: the test did not test that")
	}
	if v := shim.violations.Load(); v != 0 {
		t.Errorf("%d violations:\n%s", v, strings.Join(shim.problemList(), "\n"))
	}
}

// TestS3ExpressCreateSessionErrors: a refused, missing or slow
// CreateSession fails the request with an error of its true kind, so that
// the breaker and check treat it as what it is.
func TestS3ExpressCreateSessionErrors(t *testing.T) {
	shim, _, express := strictShim(t)
	for _, c := range []struct {
		name     string
		bucket   string
		delay    time.Duration
		status   int
		wantKind string
	}{
		{"refused", express, 0, 403, "auth"},
		{"no bucket", "gbcmissing--use1-az4--x-s3", 0, 0, "no_bucket"},
		{"slow", express, 3 * time.Second, 0, "timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			shim.setSessionFaults(c.delay, c.status)
			defer shim.setSessionFaults(0, 0)
			b := newShimBackend(t, shim, c.bucket, "", time.Second)
			_, err := b.Get(t.Context(), actionID("x"))
			var se *expressSessionError
			if kind := errKind(err); kind.String() != c.wantKind || !errors.As(err, &se) {
				t.Errorf("Get: %v\nkind %q, want %q from a typed CreateSession error", err, kind, c.wantKind)
			}
		})
	}
}

// TestS3ExpressGoBuild is the promise on S3 Express One Zone: go commands
// that each last several (three-second) sessions, while every live session
// is refused as expired every four seconds, build green; the breaker never
// opens, no remote request fails, and a fresh VM gets remote hits.
func TestS3ExpressGoBuild(t *testing.T) {
	mod, ref := moduleWithReference(t)
	shim, _, express := strictShim(t)
	shim.setSessionLife(3 * time.Second)
	args := []string{"-backend=s3", "-s3-bucket=" + express, "-s3-prefix=gobuildcache/" + randomHex(6) + "/",
		"-s3-endpoint=" + shim.URL(), "-s3-path-style", "-s3-region=" + shimRegion, "-prefetch-scope=ci/express"}
	env := []string{"GOBUILDCACHE_AWS_ACCESS_KEY_ID=" + shimBaseKey, "GOBUILDCACHE_AWS_SECRET_ACCESS_KEY=" + shimBaseSecret}

	stop := make(chan struct{})
	var expirer sync.WaitGroup
	expirer.Add(1)
	go func() {
		defer expirer.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(4 * time.Second):
				shim.expireSessions()
			}
		}
	}()
	start := time.Now()
	runs := map[string]goRun{}
	for _, vm := range []string{"vmA", "vmB"} {
		r, err := buildAndTestEnv(t, mod, t.TempDir(), vm, env, args...)
		if err != nil {
			close(stop)
			t.Fatal(err)
		}
		runs[vm] = r
	}
	close(stop)
	expirer.Wait()
	elapsed := time.Since(start)

	var remoteHits, openings int64
	for _, vm := range []string{"vmA", "vmB"} {
		r := runs[vm]
		for name, s := range map[string]StatsSnapshot{"go build": r.buildStats(t), "go test": r.stats} {
			var text bytes.Buffer
			s.WriteText(&text)
			t.Logf("%s, %s:\n%s", vm, name, text.String())
			if s.RemoteErrors != 0 || s.BreakerOpenings != 0 || s.RemoteSkipped != 0 || s.VerifyFailures != 0 || s.UploadsFailed != 0 || s.UploadsDropped != 0 {
				t.Errorf("%s %s: remote errors %d %v, breaker openings %d, skipped %d, verify failures %d, uploads failed %d dropped %d",
					vm, name, s.RemoteErrors, s.RemoteErrorsByKind, s.BreakerOpenings, s.RemoteSkipped, s.VerifyFailures, s.UploadsFailed, s.UploadsDropped)
			}
			openings += s.BreakerOpenings
			if vm == "vmB" {
				remoteHits += s.RemoteHits + s.PrefetchObjects
			}
		}
		if !bytes.Equal(r.binary, ref.binary) {
			t.Errorf("%s built another binary than the plain Go cache", vm)
		}
		for _, out := range []string{r.buildOut, r.testOut} {
			if strings.Contains(out, "gobuildcache") {
				t.Errorf("%s: gobuildcache wrote to the build log:\n%s", vm, out)
			}
		}
	}
	t.Logf("S3 Express go build, three-second sessions: %v for two VMs; breaker openings %d, VM B remote hits %d (remote and prefetched), sessions issued %d, ExpiredToken answers retried %d; shim: %s",
		elapsed.Round(time.Second), openings, remoteHits, shim.sessionsIssued.Load(), shim.expiredAnswers.Load(), shim.summary())
	if remoteHits == 0 {
		t.Error("VM B had no remote hits")
	}
	if n := shim.sessionsIssued.Load(); float64(n) < elapsed.Seconds()/3 {
		t.Errorf("%d sessions issued in %v of three-second sessions", n, elapsed.Round(time.Second))
	}
	if shim.expiredAnswers.Load() == 0 {
		t.Error("no request met an expired session: the test did not test that")
	}
	if v := shim.violations.Load(); v != 0 {
		t.Errorf("%d violations:\n%s", v, strings.Join(shim.problemList(), "\n"))
	}
}

// TestS3ExpressRegionFromZone: with no region set, a directory bucket's
// requests are signed for the region of its zone.
func TestS3ExpressRegionFromZone(t *testing.T) {
	shim, _, _ := strictShim(t)
	bucket := "gbc" + randomHex(5) + "--usw2-az1--x-s3"
	shim.addBucket(t, bucket, modeReadWrite, modeReadOnly)
	shim.setBucketRegion(bucket, "us-west-2")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "no-such-file")) // no region from a shared config either
	b, err := NewS3Backend(t.Context(), S3Options{
		Bucket: bucket, Prefix: "gobuildcache/", Endpoint: shim.URL(), PathStyle: true,
		Timeout: 10 * time.Second, TempDir: t.TempDir(), Credentials: shimBaseCreds,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	body := "in us-west-2"
	if _, err := b.Put(t.Context(), actionID("west"), outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
		t.Fatalf("put: %v\nshim: %s", err, strings.Join(shim.problemList(), "\n"))
	}
	if _, err := b.Get(t.Context(), actionID("west")); err != nil {
		t.Fatal(err)
	}
}

// TestS3ExpressReadLocationInAnotherRegion: on AWS the client reaches one
// region, the write location's (clientRegion), and the SDK builds a
// directory bucket's endpoint from its zone and that region, so a read
// location's directory bucket whose zone is in another region is a host
// that does not exist (https://main--usw2-az1--x-s3.s3express-usw2-az1.us-east-1.amazonaws.com;
// the SDK's resolver, checked here). Each request to it is a DNS failure,
// which is no location problem but the remote's: the breaker turns the
// whole remote off, the pull request's own location included, where README
// promises that a read location in another region is left out with one
// warning and the others go on. Here a fake transport answers the write
// location's host and fails every other name as a resolver would.
func TestS3ExpressReadLocationInAnotherRegion(t *testing.T) {
	for _, v := range []string{"AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"} {
		t.Setenv(v, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "no-such-file"))
	write := s3Location{bucket: "pr-cache--use1-az4--x-s3", prefix: "gobuildcache/pr/1/"}
	read := s3Location{bucket: "main-cache--usw2-az1--x-s3", prefix: "gobuildcache/main/"}
	ep, err := s3.NewDefaultEndpointResolverV2().ResolveEndpoint(t.Context(), s3.EndpointParameters{
		Bucket: aws.String(read.bucket), Region: aws.String("us-east-1"),
		UseFIPS: aws.Bool(false), UseDualStack: aws.Bool(false), Accelerate: aws.Bool(false), ForcePathStyle: aws.Bool(false),
	})
	if err != nil || ep.URI.Host != read.bucket+".s3express-usw2-az1.us-east-1.amazonaws.com" {
		t.Fatalf("the SDK's endpoint for %s from us-east-1: %v, %v", read.bucket, ep.URI.Host, err)
	}
	b, err := NewS3Backend(t.Context(), S3Options{
		Bucket: write.bucket, Prefix: write.prefix, ReadFrom: []s3Location{read},
		Timeout: 5 * time.Second, TempDir: t.TempDir(), Credentials: shimBaseCreds,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := b.client.Options().Region; r != "us-east-1" {
		t.Fatalf("client region %q, want the write location's zone's, us-east-1", r)
	}
	var asked atomic.Int64 // requests to hosts other than the write location's
	writeHost := write.bucket + ".s3express-use1-az4.us-east-1.amazonaws.com"
	fake := smithyhttp.ClientDoFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host != writeHost {
			asked.Add(1)
			return nil, &url.Error{Op: r.Method, URL: r.URL.String(), Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: r.URL.Hostname(), IsNotFound: true}}}
		}
		rec := httptest.NewRecorder()
		switch {
		case r.URL.Query().Get("list-type") == "2":
			rec.Header().Set("Content-Type", "application/xml")
			fmt.Fprint(rec, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>`)
		case r.Method == http.MethodPut:
		default:
			writeShimError(rec, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		}
		return rec.Result(), nil
	})
	// The backend's client, but for the transport and the sessions (no
	// CreateSession: its DNS failure would be the same).
	b.client = s3.New(s3.Options{
		Region: "us-east-1", Credentials: shimBaseCreds, HTTPClient: fake, Retryer: aws.NopRetryer{},
		ExpressCredentials: shimFixedExpressCreds(aws.Credentials{AccessKeyID: "SESS", SecretAccessKey: "s", SessionToken: "t", CanExpire: true, Expires: time.Now().Add(time.Hour)}),
	})
	stats := new(Stats)
	pr := newBreakerBackend(b, stats, newWarnings(quietLog), "")
	for i := range 5 {
		if _, err := pr.Get(t.Context(), ActionID{byte(i)}); !errors.Is(err, ErrNotFound) && errKind(err) != KindLocationGone {
			t.Errorf("get %d: %v (kind %v); want a miss, or the read location left out", i, err, errKind(err))
		}
	}
	if _, err := pr.ListManifests(t.Context(), "scope", 4); err != nil && errKind(err) != KindLocationGone {
		t.Errorf("manifests: %v (kind %v); want the write location's, the read location left out", err, errKind(err))
	}
	body := "pr's"
	if _, err := pr.Put(t.Context(), actionID("pr"), outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
		t.Errorf("put to the pull request's own location: %v", err)
	}
	snap := stats.Snapshot()
	if snap.BreakerOpenings != 0 || snap.RemoteErrors != snap.RemoteErrorsByKind["location_gone"] || !b.gone[1].Load() {
		t.Errorf("breaker opened %d times, remote errors %d %v, read location gone %v; want the read location left out with location_gone, the rest going on",
			snap.BreakerOpenings, snap.RemoteErrors, snap.RemoteErrorsByKind, b.gone[1].Load())
	}
	t.Logf("requests to the read location's host: %d", asked.Load())
}

// TestS3ExpressReadOnlyBucket: the layout of issue 13 on S3 Express, where
// IAM cannot restrict a directory bucket by prefix, only a session's mode:
// a trusted bucket whose policy grants these credentials ReadOnly sessions
// only is read with ReadOnly sessions, a second bucket is written, and a
// write to the trusted one is refused as a write, not as a broken remote.
func TestS3ExpressReadOnlyBucket(t *testing.T) {
	shim, _, own := strictShim(t)
	trusted := "gbc" + randomHex(5) + "--use1-az4--x-s3"
	shim.addBucket(t, trusted, modeReadWrite, modeReadOnly)
	open := func(bucket string, readOnly ...string) *S3Backend {
		return newShimBackend(t, shim, bucket, "gobuildcache/main/", 10*time.Second, readOnly...)
	}
	// main fills the trusted bucket; then its policy allows only ReadOnly
	// sessions to these credentials (those of a pull request).
	putString(t, open(trusted), "main-entry", "built by main")
	shim.setBucketModes(trusted, modeReadOnly)

	pr := open(trusted, trusted)
	if e, err := pr.Get(t.Context(), actionID("main-entry")); err != nil || e.Size != int64(len("built by main")) {
		t.Fatalf("read of the trusted bucket with a ReadOnly session: %+v, %v", e, err)
	}
	body := "planted"
	_, err := pr.Put(t.Context(), actionID("main-entry"), outputID(body), int64(len(body)), strings.NewReader(body))
	if errKind(err) != KindWriteRefused || shim.readOnlyRefusals.Load() != 1 {
		t.Errorf("write to the trusted bucket: %v (kind %v), %d refusals; want a refused write", err, errKind(err), shim.readOnlyRefusals.Load())
	}
	putString(t, open(own), "pr-entry", "built by the pull request")

	modes := shim.counts(&shim.modes)
	t.Logf("shim: %s", shim.summary())
	if modes[modeReadOnly] != 1 || modes[modeReadWrite] != 2 {
		t.Errorf("sessions by mode %v: want one ReadOnly (the pull request's on the trusted bucket) and two ReadWrite", modes)
	}
}

// TestS3ExpressCheck: `gobuildcache check` on a directory bucket makes a
// session and a round trip; a refused CreateSession is one line naming the
// permission.
func TestS3ExpressCheck(t *testing.T) {
	shim, _, express := strictShim(t)
	bin := gobuildcacheBinary(t)
	args := []string{"check", "-backend=s3", "-s3-bucket=" + express, "-s3-prefix=gobuildcache/check/", "-s3-endpoint=" + shim.URL(), "-s3-path-style", "-s3-region=" + shimRegion}
	env := append(os.Environ(), "GOBUILDCACHE_AWS_ACCESS_KEY_ID="+shimBaseKey, "GOBUILDCACHE_AWS_SECRET_ACCESS_KEY="+shimBaseSecret)
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "session:") || !strings.Contains(string(out), "remote cache OK") {
		t.Fatalf("check: %v\n%s", err, out)
	}
	t.Logf("check:\n%s", out)

	shim.setSessionFaults(0, 403)
	cmd = exec.Command(bin, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("check with CreateSession refused succeeded")
	}
	if msg := stderr.String(); strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "s3express:CreateSession") {
		t.Errorf("check with CreateSession refused: want one line naming s3express:CreateSession, got %q", msg)
	}
	t.Logf("check with CreateSession refused: %s", stderr.String())
}

// TestS3Express503: a few 503 SlowDown answers are retried away; a bucket
// answering 503 for longer (waking up) fails requests as busy, not as a
// broken remote, and serves again as soon as it is up.
func TestS3Express503(t *testing.T) {
	shim, _, express := strictShim(t)
	b := newShimBackend(t, shim, express, "", 10*time.Second)
	putString(t, b, "k", "body")
	shim.slowDown(2)
	if _, err := b.Get(t.Context(), actionID("k")); err != nil {
		t.Fatalf("get after two SlowDowns: %v", err)
	}
	shim.unavailableFor(2 * time.Second)
	if _, err := b.Get(t.Context(), actionID("k")); errKind(err) != KindThrottled {
		t.Errorf("get from a waking bucket: %v (kind %v), want throttle", err, errKind(err))
	}
	time.Sleep(2 * time.Second)
	if _, err := b.Get(t.Context(), actionID("k")); err != nil {
		t.Errorf("get once the bucket is up: %v", err)
	}
	if n := shim.unavailable.Load(); n < 5 {
		t.Errorf("the shim answered 503 %d times, want 2 SlowDowns and 3 attempts while waking", n)
	}
}

// TestS3ExpressDeleteManifests: the prefetch's manifest upkeep
// (writeManifest -> DeleteManifests, once a scope holds more than
// manifestsKept manifests) on an S3 Express directory bucket. AWS: "For
// directory buckets, only prefixes that end in a delimiter ( / ) are
// supported" (ListObjectsV2 Prefix). DeleteManifests lists each manifest's
// packs under packDir, "<prefix>v1/p/<scope>/<id>." (ending in "."), which a
// directory bucket refuses with 400, so no manifest or pack is ever deleted
// there and every upkeep fails.
func TestS3ExpressDeleteManifests(t *testing.T) {
	tg := s3TargetForTest(t)
	if tg.AccessKey == "" {
		t.Skip("needs the local MinIO behind the S3 Express shim")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	express := "gbc" + randomHex(5) + "--use1-az4--x-s3"
	shim := startExpressShim(t, tg, express, shimBaseKey, shimBaseSecret)
	b, err := NewS3Backend(ctx, S3Options{
		Bucket: express, Prefix: "review/", Endpoint: shim.URL(), PathStyle: true,
		Region: "us-east-1", Timeout: 30 * time.Second, TempDir: t.TempDir(),
		Parallelism: 4, Credentials: shimBaseCreds,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())

	const scope = "job.go1.26-linux-amd64-v1"
	id := newManifestID(time.Now(), "abc123")
	if err := b.PutManifest(ctx, scope, id, []byte("manifest")); err != nil {
		t.Fatalf("PutManifest: %v", err)
	}
	if err := b.PutPack(ctx, scope, id, 0, []byte("pack")); err != nil {
		t.Fatalf("PutPack: %v", err)
	}
	name := b.loc.manifestKey(scope, id)
	if err := b.DeleteManifests(ctx, []string{name}); err != nil {
		t.Errorf("DeleteManifests on a directory bucket: %v (kind %v)", err, errKind(err))
	}
	if v := shim.violations.Load(); v != 0 {
		t.Errorf("%d requests a directory bucket refuses:\n%s", v, strings.Join(shim.problemList(), "\n"))
	}
	infos, err := b.ListManifests(ctx, scope, -1)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 0 {
		t.Errorf("manifest still there after DeleteManifests: %v", infos[0].name)
	}
	// And the pack: list its scope's pack directory (a prefix ending in /).
	dir := b.loc.prefix + s3LayoutVersion + "/p/" + scope + "/"
	out, err := b.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(express), Prefix: &dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) != 0 {
		t.Errorf("pack still there after DeleteManifests: %s", aws.ToString(out.Contents[0].Key))
	}
}

// fakeDirectoryBucket is a minimal S3 Express zonal endpoint on 127.0.0.1
// that follows AWS's CreateSession documentation: "Specifies the mode of
// the session that will be created, either ReadWrite or ReadOnly. By
// default, a ReadWrite session is created." Its IAM allows ReadOnly
// sessions only (the condition s3express:SessionMode = ReadOnly): any
// other CreateSession is 403 AccessDenied. Every GetObject is 404
// NoSuchKey (a miss).
type fakeDirectoryBucket struct {
	srv      *httptest.Server
	sessions map[string]int // CreateSession calls by mode header ("" = none)
	mu       sync.Mutex
}

func startFakeDirectoryBucket(t *testing.T) *fakeDirectoryBucket {
	f := &fakeDirectoryBucket{sessions: map[string]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("session") {
			mode := r.Header.Get("X-Amz-Create-Session-Mode")
			f.mu.Lock()
			f.sessions[mode]++
			f.mu.Unlock()
			if mode != "ReadOnly" { // "" is ReadWrite, by AWS's documented default
				writeShimError(w, http.StatusForbidden, "AccessDenied", "Access Denied")
				return
			}
			exp := time.Now().Add(5 * time.Minute).UTC().Truncate(time.Second)
			w.Header().Set("Content-Type", "application/xml")
			fmt.Fprintf(w, shimSessionXML, "tok-"+randomHex(8), randomHex(20), "SESS"+randomHex(8), exp.Format(time.RFC3339))
			return
		}
		if r.Method == http.MethodPut && r.Header.Get("X-Amz-S3session-Token") != "" {
			writeShimError(w, http.StatusForbidden, "AccessDenied", "Access Denied") // a ReadOnly session writes nothing
			return
		}
		writeShimError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// TestS3ExpressReadOnlyCredentialsWithoutReadOnlyFlag: credentials that may
// create only ReadOnly sessions on the (directory) write bucket, without
// -read-only. On a standard bucket that is "one refused write per go
// command, no breaker" (TESTING.md, ReadOnlyRole) and the breaker's own
// message advises -read-only. On a directory bucket, gobuildcache asks
// CreateSession with no mode, which AWS documents as ReadWrite; the 403 is
// classified KindAuth (fatal), so the breaker turns the remote off, reads
// included, for breakerFatalPause (10 minutes), and every get is
// errBreakerOpen instead of a read of the bucket.
func TestS3ExpressReadOnlyCredentialsWithoutReadOnlyFlag(t *testing.T) {
	f := startFakeDirectoryBucket(t)
	ctx := t.Context()
	s3b, err := NewS3Backend(ctx, S3Options{
		Bucket: "cache--use1-az4--x-s3", Prefix: "p/", Endpoint: f.srv.URL, PathStyle: true,
		Region: "us-east-1", Timeout: 5 * time.Second, TempDir: t.TempDir(), Credentials: shimBaseCreds,
	})
	if err != nil {
		t.Fatal(err)
	}
	stats := new(Stats)
	b := newBreakerBackend(s3b, stats, newWarnings(quietLog), "")
	defer b.Close(context.Background())

	_, err = b.Get(ctx, ActionID{1})
	t.Logf("first get: %v (kind %v)", err, errKind(err))
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("a get with read-only credentials: %v (kind %v), want a miss (the bucket may be read)", err, errKind(err))
	}
	_, err = b.Get(ctx, ActionID{2})
	if errors.Is(err, errBreakerOpen) {
		b.mu.Lock()
		till := b.openTill.Sub(b.now())
		b.mu.Unlock()
		t.Errorf("second get: %v: the remote is off for %v, reads included", err, till.Round(time.Minute))
	}
	f.mu.Lock()
	t.Logf("CreateSession calls by mode: %v", f.sessions)
	f.mu.Unlock()
}
