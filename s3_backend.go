package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
)

// S3Backend stores entries in an S3 bucket: AWS S3, an S3 Express One Zone
// directory bucket (name--azid--x-s3), or an S3-compatible server such as
// MinIO, R2 or Ceph.
//
// Bucket layout, under the configured prefix (which ends in "/"):
//
//	<prefix>v1/a/<actionID hex>   one object per action: the body itself
//
// with the entry's metadata in the object's user metadata, so that a hit is
// a single GetObject and a miss a single 404:
//
//	x-amz-meta-gbc-output-id   hex SHA-256 of the body
//	x-amz-meta-gbc-size        body length in bytes
//	x-amz-meta-gbc-time        put time, Unix nanoseconds
//	x-amz-meta-gbc-encoding    how the object's bytes encode the body: "identity"
//	                           (the body itself) or "zstd" (a zstd frame of it)
//
// "v1" versions the layout: a reader never interprets objects of another
// version. The encoding is recorded in each object, never assumed from the
// reader's flags; an unknown encoding is a miss.
//
// Get downloads into a temp file (in tempDir) and verifies it against the
// output ID and size in the metadata: a body that does not match is never
// returned. The file is the caller's to move; what is left is removed by
// Close.
type S3Backend struct {
	client  *s3.Client
	bucket  string
	prefix  string
	timeout time.Duration // per request, retries included
	// compressMin is the smallest body uploaded zstd-compressed; 0 means
	// never compress. Reads decode whatever an object says it holds.
	compressMin int64

	// Seams.
	now        func() time.Time
	tempDir    string
	createTemp func(dir, pattern string) (*os.File, error)
	// tempDirFor, if set, names the directory for the download of a body
	// with the given output ID (the local tier's, so that installing it is
	// a rename in place); otherwise tempDir.
	tempDirFor func(outputID []byte) string

	mu    sync.Mutex
	temps map[string]bool // Get results not yet removed
}

var _ CacheBackend = (*S3Backend)(nil)

// s3LayoutVersion is the layout version segment of every key.
const s3LayoutVersion = "v1"

// Object metadata keys (lowercase: S3 returns them lowercased).
const (
	metaOutputID = "gbc-output-id"
	metaSize     = "gbc-size"
	metaTime     = "gbc-time"
	metaEncoding = "gbc-encoding"
)

// S3Options are the settings of an S3Backend.
type S3Options struct {
	Bucket    string
	Prefix    string
	Region    string
	Endpoint  string // "" for AWS (or AWS_ENDPOINT_URL_S3)
	PathStyle bool
	Timeout   time.Duration
	// CompressMin > 0 uploads bodies of at least that size zstd-compressed.
	CompressMin int64
	TempDir     string
	// Parallelism is how many requests may be in flight at once; the
	// connection pool keeps that many connections.
	Parallelism int
	Debug       bool
	Log         *slog.Logger
	Getenv      func(string) string
}

// NewS3Backend builds a client. It makes no network call: credentials are
// resolved on first use.
func NewS3Backend(ctx context.Context, o S3Options) (*S3Backend, error) {
	client, err := newS3Client(ctx, o)
	if err != nil {
		return nil, err
	}
	return &S3Backend{
		client:      client,
		bucket:      o.Bucket,
		prefix:      o.Prefix,
		timeout:     o.Timeout,
		compressMin: o.CompressMin,
		now:         time.Now,
		tempDir:     o.TempDir,
		createTemp:  os.CreateTemp,
		temps:       make(map[string]bool),
	}, nil
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
	cfg.Region = clientRegion(o.Bucket, cfg.Region, cmp.Or(o.Endpoint, getenv("AWS_ENDPOINT_URL_S3"), getenv("AWS_ENDPOINT_URL")))
	parallel := max(o.Parallelism, 16)
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	// Each attempt of a request gets a bounded wait for its answer
	// (attemptLimiter), and a timed-out attempt is retried; connecting and
	// a TLS handshake get a second or two. The whole request, retries
	// included, gets timeout. So a black-holed endpoint costs a few seconds
	// before the breaker stops asking it.
	httpClient := awshttp.NewBuildableClient().
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
	sessions := newExpressSessions(timeout)
	client := s3.NewFromConfig(cfg, func(so *s3.Options) {
		so.HTTPClient = newAttemptLimiter(httpClient)
		so.ExpressCredentials = sessions
		so.APIOptions = append(so.APIOptions, sessions.preflight)
		so.Retryer = retry.NewStandard(func(ro *retry.StandardOptions) {
			ro.MaxAttempts = 3
			ro.MaxBackoff = 500 * time.Millisecond
			ro.RateLimiter = ratelimit.None
			// Throttling, 5xx, refused and reset connections are retried,
			// an attempt that timed out once, and a request refused for an
			// expired S3 Express session with a new session.
			ro.Retryables = append([]retry.IsErrorRetryable{retry.IsErrorRetryableFunc(retryOnce), retry.IsErrorRetryableFunc(sessions.retryExpired)}, ro.Retryables...)
		})
		so.DisableLogOutputChecksumValidationSkipped = true
		so.ContinueHeaderThresholdBytes = -1
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
	})
	sessions.create = createSessionWith(client)
	return client, nil
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

func (b *S3Backend) key(actionID []byte) string {
	return b.prefix + s3LayoutVersion + "/a/" + hex.EncodeToString(actionID)
}

// Get implements CacheBackend with one GetObject.
func (b *S3Backend) Get(ctx context.Context, actionID []byte) (Entry, error) {
	if err := checkID("action ID", actionID); err != nil {
		return Entry{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.bucket, Key: aws.String(b.key(actionID))})
	if err != nil {
		if isS3NotFound(err) {
			return Entry{}, fmt.Errorf("get %x: %w", actionID, ErrNotFound)
		}
		return Entry{}, fmt.Errorf("get %x: %w", actionID, err)
	}
	defer out.Body.Close()
	e, encoding, err := parseS3Metadata(out.Metadata)
	if err != nil {
		return Entry{}, fmt.Errorf("get %x: %w", actionID, err)
	}
	var body io.Reader = out.Body
	switch encoding {
	case "identity":
		if n := aws.ToInt64(out.ContentLength); n != e.Size {
			return Entry{}, fmt.Errorf("get %x: %w: object has %d bytes, metadata says %d", actionID, errVerify, n, e.Size)
		}
	case "zstd":
		src := &sourceErr{r: out.Body}
		dec := getZstdDecoder(src)
		if dec == nil {
			if src.err != nil {
				return Entry{}, fmt.Errorf("get %x: %w", actionID, src.err)
			}
			return Entry{}, fmt.Errorf("get %x: %w: bad zstd stream", actionID, errVerify)
		}
		defer zstdDecoders.Put(dec)
		body = zstdReader{dec, src}
	}
	dir := b.tempDir
	if b.tempDirFor != nil {
		dir = b.tempDirFor(e.OutputID)
	}
	f, err := b.createTemp(dir, tempPrefix+"s3get-*")
	if err != nil {
		return Entry{}, fmt.Errorf("get %x: %w", actionID, err)
	}
	// The verifying reader stops one byte past the declared size, so a
	// decompression bomb costs nothing.
	_, err = copyBuffered(f, newVerifyingReader(body, e.Size, e.OutputID))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return Entry{}, fmt.Errorf("get %x: %w", actionID, err)
	}
	b.mu.Lock()
	b.temps[f.Name()] = true
	b.mu.Unlock()
	e.DiskPath = f.Name()
	return e, nil
}

// Put implements CacheBackend with one PutObject. A body that can seek (a
// file) is checked against outputID first and then sent; any other body is
// spooled to a temp file while it is checked.
func (b *S3Backend) Put(ctx context.Context, actionID, outputID []byte, size int64, body io.Reader) (Entry, error) {
	if err := checkID("action ID", actionID); err != nil {
		return Entry{}, err
	}
	if err := checkID("output ID", outputID); err != nil {
		return Entry{}, err
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	rs, ok := body.(io.ReadSeeker)
	if !ok {
		f, err := b.createTemp(b.tempDir, "s3put-*")
		if err != nil {
			return Entry{}, fmt.Errorf("put %x: %w", actionID, err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if _, err := copyBuffered(f, newVerifyingReader(body, size, outputID)); err != nil {
			return Entry{}, fmt.Errorf("put %x: %w", actionID, err)
		}
		rs = f
	} else if _, err := copyBuffered(io.Discard, newVerifyingReader(rs, size, outputID)); err != nil {
		return Entry{}, fmt.Errorf("put %x: %w", actionID, err)
	}
	if _, err := rs.Seek(0, io.SeekStart); err != nil {
		return Entry{}, fmt.Errorf("put %x: %w", actionID, err)
	}
	encoding, stored, storedSize := "identity", rs, size
	if b.compressMin > 0 && size >= b.compressMin {
		frame, zsize, release, err := b.compress(rs, size)
		if err != nil {
			return Entry{}, fmt.Errorf("put %x: %w", actionID, err)
		}
		defer release()
		if zsize < size-size/10 { // worth it: at least 10% smaller
			encoding, stored, storedSize = "zstd", frame, zsize
		} else if _, err := rs.Seek(0, io.SeekStart); err != nil {
			return Entry{}, fmt.Errorf("put %x: %w", actionID, err)
		}
	}
	now := b.now()
	ctx, cancel := context.WithTimeout(ctx, b.putTimeout(size))
	defer cancel()
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &b.bucket,
		Key:           aws.String(b.key(actionID)),
		Body:          io.NewSectionReader(readerAt{stored}, 0, storedSize),
		ContentLength: aws.Int64(storedSize),
		ContentType:   aws.String("application/octet-stream"),
		Metadata: map[string]string{
			metaOutputID: hex.EncodeToString(outputID),
			metaSize:     strconv.FormatInt(size, 10),
			metaTime:     strconv.FormatInt(now.UnixNano(), 10),
			metaEncoding: encoding,
		},
	})
	if err != nil {
		return Entry{}, fmt.Errorf("put %x: %w", actionID, err)
	}
	return Entry{OutputID: outputID, Size: size, Time: now}, nil
}

// getObject reads a whole small object (a manifest) of at most max bytes.
func (b *S3Backend) getObject(ctx context.Context, key string, max int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.bucket, Key: &key})
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(io.LimitReader(out.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("get %s: larger than %d bytes", key, max)
	}
	return data, nil
}

// putObject writes a small object (a manifest).
func (b *S3Backend) putObject(ctx context.Context, key string, data []byte) error {
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        &b.bucket,
		Key:           &key,
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// putTimeout allows uploads of large bodies more time: the request timeout
// plus a second per 8 MiB.
func (b *S3Backend) putTimeout(size int64) time.Duration {
	return b.timeout + time.Duration(size/(8<<20))*time.Second
}

// Close implements CacheBackend: it removes downloaded files nobody took.
func (b *S3Backend) Close(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for p := range b.temps {
		os.Remove(p)
	}
	b.temps = map[string]bool{}
	return nil
}

// release tells the backend a file returned by Get has been moved away.
func (b *S3Backend) release(path string) {
	b.mu.Lock()
	delete(b.temps, path)
	b.mu.Unlock()
}

// parseS3Metadata reads an entry and its encoding from object metadata. It
// is strict: a reader never guesses at an object it does not understand.
func parseS3Metadata(md map[string]string) (e Entry, encoding string, err error) {
	switch encoding = md[metaEncoding]; encoding {
	case "identity", "zstd":
	case "":
		return Entry{}, "", fmt.Errorf("%w: object has no %s metadata", errVerify, metaEncoding)
	default:
		// Written by a newer version: not corrupt, just not ours to read.
		return Entry{}, "", fmt.Errorf("%w: object encoding %.40q not understood", ErrNotFound, encoding)
	}
	out, err := parseHexID(md[metaOutputID])
	if err != nil {
		return Entry{}, "", fmt.Errorf("%w: metadata %s: %v", errVerify, metaOutputID, err)
	}
	size, err := strconv.ParseInt(md[metaSize], 10, 64)
	if err != nil || size < 0 {
		return Entry{}, "", fmt.Errorf("%w: metadata %s %.40q", errVerify, metaSize, md[metaSize])
	}
	ns, err := strconv.ParseInt(md[metaTime], 10, 64)
	if err != nil {
		return Entry{}, "", fmt.Errorf("%w: metadata %s %.40q", errVerify, metaTime, md[metaTime])
	}
	return Entry{OutputID: out, Size: size, Time: time.Unix(0, ns)}, encoding, nil
}

func isS3NotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == "NotFound"
}

// readerAt adapts a ReadSeeker for io.SectionReader (the SDK wants a body
// it can rewind for retries; a SectionReader over a file is one).
type readerAt struct{ rs io.ReadSeeker }

func (r readerAt) ReadAt(p []byte, off int64) (int, error) {
	if ra, ok := r.rs.(io.ReaderAt); ok {
		return ra.ReadAt(p, off)
	}
	if _, err := r.rs.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	return io.ReadFull(r.rs, p)
}

// checkS3Prefix validates a key prefix: it must stay a plain relative key
// path, so that no prefix can reach outside its own tree.
func checkS3Prefix(p string) error {
	switch {
	case len(p) > 512:
		return errors.New("longer than 512 bytes")
	case strings.ContainsAny(p, "\x00\\"):
		return errors.New("contains NUL or backslash")
	case strings.HasPrefix(p, "/"):
		return errors.New("starts with /")
	}
	for _, seg := range strings.Split(strings.TrimSuffix(p, "/"), "/") {
		if p != "" && (seg == "" || seg == "." || seg == "..") {
			return fmt.Errorf("has an empty, . or .. segment")
		}
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return errors.New("contains a control character")
		}
	}
	return nil
}

// Clear deletes every object under the prefix (all layout versions, and
// anything else stored there), listing it and deleting in batches of 1000
// with a few DeleteObjects in parallel. It reports the objects and bytes
// removed.
func (b *S3Backend) Clear(ctx context.Context) (objects, bytes int64, err error) {
	const parallel = 4
	batches := make(chan []types.ObjectIdentifier)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for batch := range batches {
				out, err := b.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
					Bucket: &b.bucket,
					Delete: &types.Delete{Objects: batch, Quiet: aws.Bool(true)},
				})
				if err == nil && len(out.Errors) > 0 {
					e := out.Errors[0]
					err = fmt.Errorf("%d objects not deleted, first %s: %s", len(out.Errors), aws.ToString(e.Key), aws.ToString(e.Message))
				}
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
				}
			}
		}()
	}
	var listErr error
	pages := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &b.bucket, Prefix: aws.String(b.prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			listErr = err
			break
		}
		batch := make([]types.ObjectIdentifier, 0, len(page.Contents))
		for _, o := range page.Contents {
			batch = append(batch, types.ObjectIdentifier{Key: o.Key})
			objects++
			bytes += aws.ToInt64(o.Size)
		}
		if len(batch) > 0 {
			batches <- batch
		}
	}
	close(batches)
	wg.Wait()
	if err := cmp.Or(listErr, firstErr); err != nil {
		return objects, bytes, fmt.Errorf("clear s3://%s/%s: %w", b.bucket, b.prefix, err)
	}
	return objects, bytes, nil
}

// compressMin is the S3Options.CompressMin that cfg asks for.
func compressMin(cfg *Config) int64 {
	if cfg.Compression != "zstd" {
		return 0
	}
	return max(int64(cfg.CompressionMinSize), 1)
}

// newS3FromConfig builds the S3 backend that cfg describes.
func newS3FromConfig(ctx context.Context, cfg *Config, tempDir string, log *slog.Logger, getenv func(string) string) (*S3Backend, error) {
	return NewS3Backend(ctx, S3Options{
		Bucket:      cfg.S3Bucket,
		Prefix:      cfg.S3Prefix,
		Region:      cfg.S3Region,
		Endpoint:    cfg.S3Endpoint,
		PathStyle:   cfg.S3PathStyle,
		Timeout:     cfg.S3Timeout,
		CompressMin: compressMin(cfg),
		TempDir:     tempDir,
		Parallelism: cfg.UploadWorkers,
		Debug:       cfg.Debug,
		Log:         log,
		Getenv:      getenv,
	})
}
