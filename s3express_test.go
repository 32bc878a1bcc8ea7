package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
)

// TestS3ExpressDirectoryBucket runs the S3 backend against an S3 Express One
// Zone directory bucket name ("gbc<random>--use1-az4--x-s3"), so that the
// real SDK takes its directory-bucket code path, with MinIO storing the
// objects. MinIO does not speak that path (it has no CreateSession and
// rejects credential scopes for service "s3express"), so a test-only shim
// (expressShim, on 127.0.0.1) sits between the SDK and MinIO.
//
// What it covers:
//   - The SDK recognises the --x-s3 name even with a custom endpoint, calls
//     CreateSession (GET /<bucket>?session) signed with the base credentials
//     (checked by the shim: full SigV4, service s3express), and caches the
//     session: once a client has one, 1010 concurrent puts and a Clear make
//     no further CreateSession call. (Concurrent first requests of a fresh
//     client each make their own CreateSession: the SDK clones its session
//     provider per operation, singleflight group included, so only the
//     cache is shared. The test counts but does not bound those.)
//   - Every data request the backend makes (PutObject, GetObject,
//     ListObjectsV2, DeleteObjects) is SigV4-signed for s3express with a
//     session key the shim issued, carries that session's
//     X-Amz-S3session-Token, and is addressed to the session's bucket. The
//     shim recomputes each signature; any miss is counted and fails the test.
//     ShimRejects checks that these checks bite: requests signed with the
//     base credentials (session auth disabled) or with a forged session
//     are refused.
//   - The shim also rejects the listing requests a directory bucket rejects:
//     a prefix that does not end in "/", a delimiter other than "/", and
//     start-after.
//   - The backend contract (testConformance, 64 MiB object included) and
//     S3Backend.Clear (paged ListObjectsV2 over more than 1000 keys, quiet
//     DeleteObjects) work on such a bucket; a plain MinIO client then finds
//     nothing left under the prefix, and a sibling prefix untouched.
//
// What it does NOT cover (real S3 Express differs, and none of it is tested
// here):
//   - Storage semantics are MinIO's: listings come back in lexicographic
//     order, where a directory bucket returns them unordered; beyond the
//     listing checks above, directory-bucket limits and behaviours (such as
//     at most 1000 keys per DeleteObjects, or its error codes) are whatever
//     MinIO does.
//   - Transport: S3 Express accepts HTTPS only. Over HTTPS the SDK does not
//     hash the payload (UNSIGNED-PAYLOAD, or aws-chunked bodies with
//     checksum trailers when request checksums are WhenSupported); here the
//     SDK talks plain http and sends hex SHA-256 payload hashes, which the
//     shim passes on to MinIO.
//   - Sessions: AWS sessions last 5 minutes, and the SDK refreshes one in
//     the background when it is used within a minute of expiry. Each client
//     here lives far less than that, so expiry, refresh under load and
//     ExpiredToken handling are not exercised.
//   - Authorisation: the shim accepts one fixed base key. There is no IAM
//     evaluation of s3express:CreateSession, no bucket policy, no ReadOnly
//     session mode.
//   - Endpoints: real directory buckets resolve to virtual-hosted zonal
//     endpoints (https://<bucket>.s3express-<az>.<region>.amazonaws.com) and
//     the AZ id must exist; here the endpoint is an IP, so the SDK uses path
//     style and nobody checks the AZ id.
//   - The objects live in an ordinary MinIO bucket: the shim maps the
//     directory bucket name onto it (see startExpressShim).
func TestS3ExpressDirectoryBucket(t *testing.T) {
	tg := s3TargetForTest(t)
	if tg.AccessKey == "" {
		t.Skip("needs the local MinIO (scripts/minio.sh) and its root credentials behind the S3 Express shim; TEST_S3_BUCKET names a real bucket")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	const baseKey, baseSecret = "BASEKEY", "BASESECRET"
	express := "gbc" + randomHex(5) + "--use1-az4--x-s3"
	shim := startExpressShim(t, tg, express, baseKey, baseSecret)

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
			// The SDK's base credentials: only the shim knows them.
			Getenv: func(k string) string {
				switch k {
				case "GOBUILDCACHE_AWS_ACCESS_KEY_ID":
					return baseKey
				case "GOBUILDCACHE_AWS_SECRET_ACCESS_KEY":
					return baseSecret
				}
				return ""
			},
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
		other := startExpressShim(t, tg, express, baseKey, baseSecret)
		base := credentials.NewStaticCredentialsProvider(baseKey, baseSecret, "")
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
