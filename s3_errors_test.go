package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

func TestClassifyS3Error(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	denied := &smithy.GenericAPIError{Code: "AccessDenied", Message: "denied"}
	for _, c := range []struct {
		err   error
		write bool
		want  ErrKind
	}{
		{refused, false, KindRefused},
		{fmt.Errorf("operation error S3: GetObject: %w", context.DeadlineExceeded), false, KindTimeout},
		{&net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, false, KindDNS},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), false, KindReset},
		{fmt.Errorf("request send failed: %w", io.EOF), false, KindReset},
		{errors.New("failed to retrieve credentials: no EC2 IMDS role found"), false, KindCredentials},
		// No credentials, and a metadata endpoint that answers 403: not
		// the bucket refusing a write.
		{fmt.Errorf("operation error S3: PutObject, get identity: get credentials: failed to refresh cached credentials, no EC2 IMDS role found, %w",
			&smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 403}}, Err: errors.New("request to EC2 IMDS failed")}), true, KindCredentials},
		{&smithy.GenericAPIError{Code: "SlowDown"}, false, KindThrottled},
		// A KMS key that cannot be used refuses that write or that read,
		// however the server says it: the bucket is there.
		{&smithy.GenericAPIError{Code: "KMS.NotFoundException"}, true, KindWriteRefused},
		// An encryption the server will not store (MinIO and DSSE) stops
		// writes; an object stored with SSE-C misses.
		{&smithy.GenericAPIError{Code: "InvalidArgument", Message: "Invalid arguments provided for b/k: (The encryption method is not supported)"}, true, KindWriteRefused},
		{&smithy.GenericAPIError{Code: "InvalidEncryptionAlgorithmError", Message: "The Encryption request you specified is not valid."}, true, KindWriteRefused},
		{&smithy.GenericAPIError{Code: "InvalidRequest", Message: "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object."}, false, KindDenied},
		{&smithy.GenericAPIError{Code: "InvalidArgument", Message: "Invalid part number"}, true, KindOther},
		{&smithy.GenericAPIError{Code: "KMS.DisabledException"}, false, KindDenied},
		{&smithy.GenericAPIError{Code: "KMS.ThrottlingException"}, false, KindThrottled},
		{&smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 404}}, Err: &smithy.GenericAPIError{Code: "kms:KeyNotFound"}}, true, KindWriteRefused},
		// An endpoint whose certificate this machine does not trust, or
		// that answers TLS in plain HTTP: no retry fixes either.
		{&url.Error{Op: "Get", URL: "https://minio.internal/b", Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}, false, KindTLS},
		{&url.Error{Op: "Put", URL: "https://minio.internal/b", Err: tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}}, true, KindTLS},
		{errors.New(`request send failed, Get "https://127.0.0.1:9000/b": http: server gave HTTP response to HTTPS client`), false, KindTLS},
		{&smithy.GenericAPIError{Code: "NoSuchBucket"}, false, KindNoBucket},
		{&smithy.GenericAPIError{Code: "PermanentRedirect"}, false, KindConfig},
		{&smithy.GenericAPIError{Code: "NoSuchKey"}, false, KindNotFound},
		// A 404 to a write: no bucket there, or no S3 server (never a miss).
		{&smithy.GenericAPIError{Code: "NotFound"}, true, KindNoBucket},
		{&smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 404}}, Err: errors.New("not found")}, true, KindNoBucket},
		{denied, false, KindDenied},
		{denied, true, KindWriteRefused},
		{&smithy.GenericAPIError{Code: "InvalidAccessKeyId"}, false, KindAuth},
		{&smithy.GenericAPIError{Code: "SignatureDoesNotMatch"}, true, KindAuth},
		{&smithy.GenericAPIError{Code: "InvalidTokenId"}, false, KindAuth}, // MinIO, a stale AWS_SESSION_TOKEN
		// S3 Express: a refused CreateSession refuses reads and writes
		// alike; an expired session (still refused after a retry with a
		// new one) is a session error, never auth.
		{&expressSessionError{Bucket: "b--use1-az4--x-s3", Err: denied}, true, KindAuth},
		{&expressSessionError{Bucket: "b--use1-az4--x-s3", Err: denied}, false, KindAuth},
		// ...unless it was a ReadOnly session of a bucket the client only
		// reads (a read location): then reads of it are denied, misses.
		{&expressSessionError{Bucket: "b--use1-az4--x-s3", ReadOnly: true, Err: denied}, false, KindDenied},
		{&expressSessionError{Bucket: "b--use1-az4--x-s3", Err: &smithy.GenericAPIError{Code: "NoSuchBucket"}}, false, KindNoBucket},
		// ...however the request's error wraps them (the SDK resolves a
		// session at signing today, not as "get identity"); but no base
		// credentials for CreateSession is no credentials.
		{fmt.Errorf("operation error S3: GetObject, get identity: %w", &expressSessionError{Bucket: "b--use1-az4--x-s3", ReadOnly: true, Err: denied}), false, KindDenied},
		{fmt.Errorf("operation error S3: PutObject, get identity: %w", &expressSessionError{Bucket: "b--use1-az4--x-s3", Err: denied}), true, KindAuth},
		{fmt.Errorf("operation error S3: GetObject, get identity: %w", &expressSessionError{Bucket: "b--use1-az4--x-s3",
			Err: errors.New("operation error S3: CreateSession, get identity: get credentials: failed to refresh cached credentials, no EC2 IMDS role found")}), false, KindCredentials},
		{&expressSessionError{Bucket: "b--use1-az4--x-s3", Err: fmt.Errorf("gave up waiting: %w", context.DeadlineExceeded)}, false, KindTimeout},
		{sessionRefused("ExpiredToken", "token"), false, KindSession},
		{sessionRefused("InvalidToken", "token"), true, KindSession},
		{sessionRefused("ExpiredToken", ""), false, KindAuth}, // expired STS credentials, no session
		{&smithyhttp.ResponseError{Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 503}}, Err: errors.New("ServiceUnavailable")}, false, KindThrottled},
		{&firstByteTimeoutError{limit: time.Second, final: true}, false, KindTimeout},
		{context.Canceled, false, KindCanceled},
		// The SDK refusing its configuration before sending.
		{errors.New("operation error S3: ListObjectsV2, bind auth scheme params: invalid input region us east 1"), false, KindConfig},
		{errors.New("operation error S3: PutObject, resolve auth scheme: resolve endpoint: endpoint rule error, A custom endpoint cannot be combined with FIPS"), true, KindConfig},
		{errors.New("something else"), false, KindOther},
	} {
		if got := classifyS3Error(c.err, c.write); got != c.want {
			t.Errorf("classify(%v, write %v) = %v, want %v", c.err, c.write, got, c.want)
		}
	}
	// What leaves the S3 layer carries its kind; a missing object is
	// ErrNotFound.
	if err := s3Error("put", "k", denied, true); errKind(err) != KindWriteRefused || KindWriteRefused.String() != "auth" {
		t.Errorf("s3Error of a denied put: kind %v", errKind(err))
	}
	if err := s3Error("get", "k", &smithy.GenericAPIError{Code: "NotFound"}, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("s3Error of a 404: %v, want ErrNotFound", err)
	}
	// A refused read is that key's miss, and says why.
	if err := s3Error("get", "k", denied, false); !errors.Is(err, ErrNotFound) || errKind(err) != KindDenied || KindDenied.fatal() {
		t.Errorf("s3Error of a denied get: %v, kind %v; want a miss of kind denied", err, errKind(err))
	}
}

// sessionRefused is the SDK's error for a request signed with the session
// token whose answer was code (400).
func sessionRefused(code, token string) error {
	req := &http.Request{Header: http.Header{}}
	if token != "" {
		req.Header.Set("X-Amz-S3session-Token", token)
	}
	return &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 400, Request: req}},
		Err:      &smithy.GenericAPIError{Code: code},
	}
}

// TestS3ConfigRefusedBeforeSending is the SDK refusing a configuration
// from the job's environment before any request leaves (no server: the
// endpoint is never reached). Each is KindConfig, which opens the breaker
// at the first request instead of after three, each go command's, and is
// named so in the stats, the warning and check's hint.
func TestS3ConfigRefusedBeforeSending(t *testing.T) {
	for _, c := range []struct {
		name, region, env, val string
	}{
		{"a region that is no region", "us east 1", "", ""},
		{"FIPS with a custom endpoint", "us-east-1", "AWS_USE_FIPS_ENDPOINT", "true"},
		{"dual-stack with a custom endpoint", "us-east-1", "AWS_USE_DUALSTACK_ENDPOINT", "true"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env != "" {
				t.Setenv(c.env, c.val)
			}
			b, err := NewS3Backend(context.Background(), S3Options{
				Bucket: "bucket", Prefix: "p/", Region: c.region, Endpoint: "http://127.0.0.1:1", PathStyle: true,
				Timeout: 5 * time.Second, TempDir: t.TempDir(), Parallelism: 1,
				Credentials: credentials.NewStaticCredentialsProvider("id", "secret", ""),
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Get(context.Background(), actionID("k")); errKind(err) != KindConfig {
				t.Errorf("get: %v (kind %v), want config", err, errKind(err))
			}
			_, err = b.ListManifests(context.Background(), "scope", 1)
			if errKind(err) != KindConfig {
				t.Errorf("list: %v (kind %v), want config", err, errKind(err))
			}
			if h := hint(&Config{}, "bucket", err); !strings.Contains(h, "refused its configuration") {
				t.Errorf("check's hint: %q, want one that says the SDK refused its configuration", h)
			}
		})
	}
}

// TestNeedsContentMD5: AWS's and Backblaze's refusals of a put without a
// Content-MD5 to a bucket with Object Lock, however the SDK wraps them,
// and no other InvalidRequest.
func TestNeedsContentMD5(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&smithy.GenericAPIError{Code: "InvalidRequest", Message: "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters"}, true},
		{fmt.Errorf("operation error S3: PutObject: %w", &smithy.GenericAPIError{Code: "InvalidRequest", Message: "Content-MD5 HTTP header is required for Put Object requests with Object Lock parameters"}), true},
		{&smithy.GenericAPIError{Code: "InvalidRequest", Message: "Missing required header for this request: x-amz-content-sha256"}, false},
		{&smithy.GenericAPIError{Code: "BadDigest", Message: "The Content-MD5 you specified did not match what we received."}, false},
		{errors.New("Content-MD5 required"), false},
	} {
		if got := needsContentMD5(tc.err); got != tc.want {
			t.Errorf("needsContentMD5(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestCheckHint: check's hint for a refusal names what to change: the IAM
// policy; the KMS key, when S3 says KMS refused; the expected owner, when
// one is set; and, for a refused put probe, the encryption a bucket policy
// may require.
func TestCheckHint(t *testing.T) {
	t.Setenv("AWS_CA_BUNDLE", "")
	untrusted := s3Error("list", "k", &url.Error{Op: "Get", URL: "https://minio.internal/b", Err: &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}}, false)
	denied := s3Error("get", "k", &smithy.GenericAPIError{Code: "AccessDenied", Message: "Access Denied"}, false)
	kms := s3Error("get", "k", &smithy.GenericAPIError{Code: "AccessDenied", Message: "User: arn:aws:sts::111122223333:assumed-role/ci/x is not authorized to perform: kms:Decrypt on resource: arn:aws:kms:us-east-1:111122223333:key/k"}, false)
	kmsPut := s3Error("put", "k", &smithy.GenericAPIError{Code: "AccessDenied", Message: "not authorized to perform: kms:GenerateDataKey"}, true)
	owned := &Config{S3BucketOwner: "111122223333"}
	sse := &Config{S3SSE: "aws:kms", S3SSEKMSKeyID: "k"}
	for _, tc := range []struct {
		got, want string
	}{
		{hint(&Config{}, "get probe", denied), "see the IAM policy"},
		{hint(owned, "bucket", denied), "not account 111122223333's, -s3-expected-bucket-owner"},
		{hint(owned, "get probe", kms), "need kms:Decrypt"},
		{hint(&Config{}, "get probe", s3Error("get", "k", &smithy.GenericAPIError{Code: "KMS.DisabledException", Message: "arn:aws:kms:us-east-1:111122223333:key/k is disabled."}, false)), "must exist and be enabled"},
		{hint(&Config{}, "bucket", untrusted), "set AWS_CA_BUNDLE"},
		{hint(&Config{}, "bucket", s3Error("list", "k", errors.New("http: server gave HTTP response to HTTPS client"), false)), "the scheme of -s3-endpoint"},
		{sseHint(&Config{}, denied), "set -s3-sse"},
		{sseHint(sse, denied), "other encryption than -s3-sse=aws:kms -s3-sse-kms-key-id=k"},
		{sseHint(sse, kmsPut), "need kms:GenerateDataKey"},
		{sseHint(&Config{S3Bucket: "c--use1-az4--x-s3"}, denied), ""},
	} {
		if !strings.Contains(tc.got, tc.want) || (tc.want == "" && tc.got != "") {
			t.Errorf("hint %q, want it to say %q", tc.got, tc.want)
		}
	}
	// With a bundle set, the SDK trusts its CAs alone: the hint says so.
	t.Setenv("AWS_CA_BUNDLE", "/etc/ci/ca.pem")
	if h := hint(&Config{}, "bucket", untrusted); !strings.Contains(h, "no CA of AWS_CA_BUNDLE=/etc/ci/ca.pem, which the AWS SDK trusts instead of the system's") {
		t.Errorf("hint with AWS_CA_BUNDLE set: %q", h)
	}
}

// TestInsecureEndpoint: check notes a plain-HTTP endpoint on another host,
// not one on this machine or over TLS.
func TestInsecureEndpoint(t *testing.T) {
	for ep, want := range map[string]bool{
		"http://minio.internal:9000": true,
		"http://10.0.0.7:9000":       true,
		"http://127.0.0.1:9000":      false,
		"http://[::1]:9000":          false,
		"http://localhost:9000":      false,
		"https://minio.internal":     false,
		"AWS":                        false,
	} {
		if got := insecureEndpoint(ep); got != want {
			t.Errorf("insecureEndpoint(%q) = %v, want %v", ep, got, want)
		}
	}
}
