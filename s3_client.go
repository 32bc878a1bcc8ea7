package main

import (
	"cmp"
	"context"
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/logging"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// S3Options are the settings of an S3Backend.
type S3Options struct {
	Bucket string
	Prefix string
	// ReadFrom are locations read after Bucket and Prefix, in order, and
	// never written.
	ReadFrom  []s3Location
	Region    string
	Endpoint  string // "" for AWS (or AWS_ENDPOINT_URL_S3)
	PathStyle bool
	Timeout   time.Duration
	// CompressMin > 0 uploads bodies of at least that size zstd-compressed.
	CompressMin int64
	// Encryption is what every object written asks for.
	Encryption s3Encryption
	// BucketOwner, if set, is the account every request's bucket must
	// belong to (x-amz-expected-bucket-owner): S3 answers 403 otherwise.
	BucketOwner string
	TempDir     string
	// TempDirFor, if set, names the directory for the download of a body
	// with the given output ID (see S3Backend.Get); else TempDir.
	TempDirFor func(OutputID) string
	// Parallelism is how many requests may be in flight at once; the
	// connection pool keeps that many connections.
	Parallelism int
	// ReadOnlyBuckets are the S3 Express directory buckets this client only
	// reads: their sessions are asked for in ReadOnly mode.
	ReadOnlyBuckets []string
	Debug           bool
	Log             *slog.Logger
	// Credentials, if set, sign every request in place of the SDK's
	// default chain.
	Credentials aws.CredentialsProvider
	// EnvEndpoint is the endpoint the SDK's variables name
	// (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL), "" if none: when Endpoint
	// is "", it tells a directory bucket's region.
	EnvEndpoint string
}

// newS3Client configures the SDK for a cache: quiet, no checksums of its
// own (every body is verified against its SHA-256 output ID, end to end),
// S3 Express sessions of our own (expressSessions), and this retry and
// deadline policy, made for real networks, where a cache answer is worth
// little once the build could have compiled the package itself:
//
//   - Each attempt waits for the first byte of its answer only as long as
//     the remote's recent latency tail says (attemptLimiter: 4 x p99 of
//     reads, 250 ms to 2 s; 1 s before any is known; writes 2 s plus a
//     second per 16 MiB sent), then it is abandoned and retried once on a
//     new connection, as AWS advises for latency-sensitive use.
//   - Up to 3 attempts for throttling (503 SlowDown), 5xx and broken
//     connections, with jittered backoff of at most 500 ms and no client
//     retry quota; a request refused for an expired S3 Express session is
//     retried with a new session. Connecting gets 1 s, a TLS handshake 2 s;
//     one that times out is retried once, as a first byte is.
//   - The whole request gets -s3-timeout until its answer begins; then a
//     get's body gets that again plus a second per 8 MiB, and fails at
//     once if it stalls for attemptCeiling (S3Backend.Get).
//
// So a black-holed endpoint costs about two seconds (two attempts of 1 s)
// before a request fails, and the breaker stops asking after two of those.
func newS3Client(ctx context.Context, o S3Options) (*s3.Client, error) {
	var logger logging.Logger = logging.Nop{}
	var logMode aws.ClientLogMode
	if o.Debug && o.Log != nil {
		// Retries only: request dumps would carry signatures and tokens.
		logger = logging.LoggerFunc(func(c logging.Classification, format string, v ...any) {
			o.Log.Debug("s3 sdk: "+fmt.Sprintf(format, v...), "class", string(c))
		})
		logMode = aws.LogRetries
	}
	opts := []func(*config.LoadOptions) error{
		config.WithLogger(logger),
		config.WithClientLogMode(logMode),
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if o.Region != "" {
		opts = append(opts, config.WithRegion(o.Region))
	}
	if o.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(o.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS config: %w", err)
	}
	cfg.Region = clientRegion(o.Bucket, cfg.Region, cmp.Or(o.Endpoint, o.EnvEndpoint))
	parallel := max(o.Parallelism, 16)
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	// The SDK's own client, if its configuration made one, holds what
	// AWS_CA_BUNDLE (or ca_bundle in the config file) says to trust: a
	// private CA's endpoint. Ours adds to it; a new one would drop it.
	base, ok := cfg.HTTPClient.(*awshttp.BuildableClient)
	if !ok {
		base = awshttp.NewBuildableClient()
	}
	httpClient := base.
		WithDialerOptions(func(d *net.Dialer) {
			d.Timeout = time.Second
			d.KeepAlive = 30 * time.Second
		}).
		WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConns = 2 * parallel
			t.MaxIdleConnsPerHost = 2 * parallel
			t.TLSHandshakeTimeout = attemptCeiling
			t.IdleConnTimeout = 90 * time.Second
		})
	limiter := newAttemptLimiter(httpClient)
	common := func(so *s3.Options) {
		so.HTTPClient = limiter
		so.DisableLogOutputChecksumValidationSkipped = true
		so.ContinueHeaderThresholdBytes = -1
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
	}
	retries := func(first ...retry.IsErrorRetryable) func(*s3.Options) {
		return func(so *s3.Options) {
			so.Retryer = retry.NewStandard(func(ro *retry.StandardOptions) {
				ro.MaxAttempts = 3
				ro.MaxBackoff = 500 * time.Millisecond
				ro.RateLimiter = ratelimit.None
				ro.Retryables = append(append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(retryOnce)}, first...), ro.Retryables...)
			})
		}
	}
	// S3 Express sessions come from a client of their own, built first, so
	// that the client that uses them has its provider from the start.
	sessions := newExpressSessions(createSessionWith(s3.NewFromConfig(cfg, common, retries())), timeout, o.ReadOnlyBuckets...)
	client := s3.NewFromConfig(cfg, common, retries(retry.IsErrorRetryableFunc(sessions.retryExpired)), func(so *s3.Options) {
		so.ExpressCredentials = sessions
		so.APIOptions = append(so.APIOptions, sessions.preflight)
		if o.BucketOwner != "" {
			// Every request but CreateSession, which the sessions'
			// client sends and which takes no owner.
			so.APIOptions = append(so.APIOptions, smithyhttp.SetHeaderValue("X-Amz-Expected-Bucket-Owner", o.BucketOwner))
		}
	})
	return client, nil
}

// credentialsOf returns cfg's GOBUILDCACHE_AWS_* credentials, or nil if
// they are not set.
func credentialsOf(cfg *Config) aws.CredentialsProvider {
	c := cfg.awsCreds
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return nil
	}
	return credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
}

// compressMin is the S3Options.CompressMin that cfg asks for.
func compressMin(cfg *Config) int64 {
	if cfg.Compression != "zstd" {
		return 0
	}
	return max(int64(cfg.CompressionMinSize), 1)
}

// newS3FromConfig builds the S3 backend that cfg describes.
func newS3FromConfig(ctx context.Context, cfg *Config, tempDir string, tempDirFor func(OutputID) string, log *slog.Logger) (*S3Backend, error) {
	return NewS3Backend(ctx, S3Options{
		Bucket:          cfg.S3Bucket,
		Prefix:          cfg.S3Prefix,
		ReadFrom:        cfg.S3ReadFrom,
		ReadOnlyBuckets: readOnlyBuckets(cfg),
		Region:          cfg.S3Region,
		Endpoint:        cfg.S3Endpoint,
		PathStyle:       cfg.S3PathStyle,
		Timeout:         cfg.S3Timeout,
		CompressMin:     compressMin(cfg),
		Encryption:      s3Encryption{Mode: types.ServerSideEncryption(cfg.S3SSE), KMSKeyID: cfg.S3SSEKMSKeyID},
		BucketOwner:     cfg.S3BucketOwner,
		TempDir:         tempDir,
		TempDirFor:      tempDirFor,
		Parallelism:     cfg.UploadWorkers,
		Debug:           cfg.Debug,
		Log:             log,
		Credentials:     credentialsOf(cfg),
		EnvEndpoint:     cfg.sdkEndpoint,
	})
}

// readOnlyBuckets are the directory buckets that cfg never writes, whose
// sessions are asked for in ReadOnly mode: those of the read locations (but
// the write location's bucket), and with -read-only every one.
func readOnlyBuckets(cfg *Config) []string {
	var buckets []string
	add := func(b string) {
		if isDirectoryBucket(b) && !slices.Contains(buckets, b) {
			buckets = append(buckets, b)
		}
	}
	for _, l := range cfg.S3ReadFrom {
		if l.bucket != cfg.S3Bucket || cfg.ReadOnly {
			add(l.bucket)
		}
	}
	if cfg.ReadOnly {
		add(cfg.S3Bucket)
	}
	return buckets
}

// withContentMD5 is an option of a DeleteObjects to a general purpose
// bucket: the request carries a Content-MD5 header in place of the
// x-amz-checksum- header the SDK gives it. S3's documentation asks a
// Content-MD5 of every Multi-Object Delete to such a bucket, and
// S3-compatible servers that know no other checksum refuse the request
// without one (AWS's SDKs for other languages document the same fallback).
// A directory bucket takes either, and keeps the SDK's.
func withContentMD5(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
		return st.Finalize.Insert(middleware.FinalizeMiddlewareFunc("gobuildcache:ContentMD5", setContentMD5), "Signing", middleware.Before)
	})
}

// setContentMD5 is withContentMD5's step, run for each attempt before it
// is signed.
func setContentMD5(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
	req, ok := in.Request.(*smithyhttp.Request)
	if !ok || req.GetStream() == nil {
		return next.HandleFinalize(ctx, in)
	}
	for k := range req.Header {
		if k := strings.ToLower(k); strings.HasPrefix(k, "x-amz-checksum-") || strings.HasPrefix(k, "x-amz-sdk-checksum-") {
			req.Header.Del(k)
		}
	}
	h := md5.New()
	if _, err := io.Copy(h, req.GetStream()); err != nil {
		return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("content-md5: %w", err)
	}
	if err := req.RewindStream(); err != nil {
		return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("content-md5: %w", err)
	}
	req.Header.Set("Content-MD5", base64.StdEncoding.EncodeToString(h.Sum(nil)))
	return next.HandleFinalize(ctx, in)
}
