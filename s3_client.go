package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/logging"
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
	TempDir     string
	// TempDirFor, if set, names the directory for the download of a body
	// with the given output ID (see S3Backend.Get); else TempDir.
	TempDirFor func(OutputID) string
	// Parallelism is how many requests may be in flight at once; the
	// connection pool keeps that many connections.
	Parallelism int
	Debug       bool
	Log         *slog.Logger
	Getenv      func(string) string
}

// newS3Client configures the SDK for a cache: quiet, short timeouts, brief
// retries without a client-side retry quota, and no checksums of its own
// (every body is verified against its SHA-256 output ID, end to end).
func newS3Client(ctx context.Context, o S3Options) (*s3.Client, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
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
	if creds := prefixedCredentials(getenv); creds != nil {
		opts = append(opts, config.WithCredentialsProvider(creds))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1" // S3-compatible servers rarely care
	}
	parallel := max(o.Parallelism, 16)
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	// A cache lookup is worth little after a second: connecting and the
	// first byte of an answer each get at most that (a retry follows), and
	// the whole request, body included, gets timeout. So a black-holed
	// endpoint costs a few seconds before the breaker stops asking it.
	attempt := min(timeout, time.Second)
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) {
			d.Timeout = attempt
			d.KeepAlive = 30 * time.Second
		}).
		WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConns = 2 * parallel
			t.MaxIdleConnsPerHost = 2 * parallel
			t.ResponseHeaderTimeout = attempt
			t.IdleConnTimeout = 90 * time.Second
		})
	return s3.NewFromConfig(cfg, func(so *s3.Options) {
		so.HTTPClient = httpClient
		so.Retryer = retry.NewStandard(func(ro *retry.StandardOptions) {
			ro.MaxAttempts = 3
			ro.MaxBackoff = 500 * time.Millisecond
			ro.RateLimiter = ratelimit.None
			// Throttling, 5xx, refused and reset connections are retried;
			// a timeout is not: a remote that took a second to say nothing
			// will not do better, and the build is waiting.
			ro.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(noRetryOnTimeout)}, ro.Retryables...)
		})
		so.DisableLogOutputChecksumValidationSkipped = true
		so.ContinueHeaderThresholdBytes = -1
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
	}), nil
}

func noRetryOnTimeout(err error) aws.Ternary {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
}

// prefixedCredentials returns static credentials from GOBUILDCACHE_AWS_*
// variables, or nil if they are not set. They let CI hand credentials to the
// cache without exporting them to every test binary the build runs.
func prefixedCredentials(getenv func(string) string) aws.CredentialsProvider {
	id, secret := getenv("GOBUILDCACHE_AWS_ACCESS_KEY_ID"), getenv("GOBUILDCACHE_AWS_SECRET_ACCESS_KEY")
	if id == "" || secret == "" {
		return nil
	}
	return credentials.NewStaticCredentialsProvider(id, secret, getenv("GOBUILDCACHE_AWS_SESSION_TOKEN"))
}

// compressMin is the S3Options.CompressMin that cfg asks for.
func compressMin(cfg *Config) int64 {
	if cfg.Compression != "zstd" {
		return 0
	}
	return max(int64(cfg.CompressionMinSize), 1)
}

// newS3FromConfig builds the S3 backend that cfg describes.
func newS3FromConfig(ctx context.Context, cfg *Config, tempDir string, tempDirFor func(OutputID) string, log *slog.Logger, getenv func(string) string) (*S3Backend, error) {
	return NewS3Backend(ctx, S3Options{
		Bucket:      cfg.S3Bucket,
		Prefix:      cfg.S3Prefix,
		ReadFrom:    cfg.S3ReadFrom,
		Region:      cfg.S3Region,
		Endpoint:    cfg.S3Endpoint,
		PathStyle:   cfg.S3PathStyle,
		Timeout:     cfg.S3Timeout,
		CompressMin: compressMin(cfg),
		TempDir:     tempDir,
		TempDirFor:  tempDirFor,
		Parallelism: cfg.UploadWorkers,
		Debug:       cfg.Debug,
		Log:         log,
		Getenv:      getenv,
	})
}
