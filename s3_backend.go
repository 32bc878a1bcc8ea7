package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3Backend stores entries in an S3 bucket: AWS S3, an S3 Express One Zone
// directory bucket (name--azid--x-s3), or an S3-compatible server such as
// MinIO, R2 or Ceph. Its keys and object metadata are laid out as
// s3Location says. Besides entries it keeps the prefetch manifests
// (manifestStore).
//
// Every SDK error is classified here (s3Error): what leaves this type is
// ErrNotFound, errVerify, a *kindError, or a local failure (a temp file, a
// seek), which errKind calls KindOther.
//
// Get downloads into a new file (in the directory TempDirFor names, else
// TempDir) and verifies it against the output ID and size in the metadata:
// a body that does not match is never returned. The file is the caller's
// (see CacheBackend.Get).
//
// It writes one location, loc, and may read further ones after it, in
// order (-s3-read-from), which it never writes: a get is answered by the
// first location that has the entry, all of them asked at once (getFirst),
// so that a key the write location lacks costs one round trip, not one per
// location. Manifests are listed and read in every location, loc's first,
// and stored and deleted in loc alone. Read locations share the client:
// the same endpoint, region and credentials (on S3 Express, the SDK keeps
// one session per bucket).
type S3Backend struct {
	client  *s3.Client
	loc     s3Location    // the write location
	reads   []s3Location  // read after loc, in order; never written
	timeout time.Duration // per request, retries included
	// compressMin is the smallest body uploaded zstd-compressed; 0 means
	// never compress. Reads decode whatever an object says it holds.
	compressMin int64
	// sse is the encryption every object written asks for.
	sse s3Encryption
	// contentMD5 is set once the write location has refused a PutObject
	// without a Content-MD5 header (Object Lock: needsContentMD5): every
	// put from then on sends one.
	contentMD5 atomic.Bool

	// maxPut is the largest object one PutObject may store: 5 GiB on S3
	// and S3 Express. A larger body is refused, not split into a multipart
	// upload: with the default -upload-queue-size (1 GiB) no such body
	// reaches here, and a build output that large is rare enough not to
	// share.
	maxPut int64

	// With read locations: whether the write location held nothing when
	// this server first asked, by a listing that its first request starts.
	// Until that answers, gets ask every location; once it says empty, they
	// skip the write location, so that a pull request's first run costs one
	// request per get, not two. (An entry another machine writes there
	// meanwhile is found by this server in a read location or not at all;
	// the next server sees it.)
	probeOnce  sync.Once
	writeEmpty atomic.Bool

	// gone[i] is set once location i (see location) has answered that it
	// cannot be used at all (see locationErr): this server asks it no more.
	gone []atomic.Bool
	// awsRegion is the one region whose AWS endpoints the client reaches
	// (clientRegion), "" with a custom endpoint: see elsewhere.
	awsRegion string

	// writing is the bytes of the bodies that gets are writing now: each
	// takes its declared size before it writes (reserveRoom).
	writing atomic.Int64

	// carried holds, with its action's put time, the stdout key of each
	// action this backend got whose object says its stdout entry is empty
	// (metaStdout), until a get of that key takes it: that get is answered
	// without a request. At most maxCarried; past that a stdout key is
	// asked of the bucket, which misses it.
	carriedMu sync.Mutex
	carried   map[ActionID]time.Time

	// Seams.
	now        func() time.Time
	tempDir    string
	createTemp func(dir, pattern string) (*os.File, error)
	// tempDirFor, if set, names the directory for the download of a body
	// with the given output ID (the local tier's, so that installing it is
	// a rename in place); otherwise tempDir.
	tempDirFor func(outputID OutputID) string
	freeBytes  func(dir string) (int64, error)
}

var (
	_ CacheBackend = (*S3Backend)(nil)
	_ Remote       = (*S3Backend)(nil)
)

// NewS3Backend builds a client. It makes no network call: credentials are
// resolved on first use.
func NewS3Backend(ctx context.Context, o S3Options) (*S3Backend, error) {
	client, err := newS3Client(ctx, o)
	if err != nil {
		return nil, err
	}
	awsRegion := ""
	if co := client.Options(); co.BaseEndpoint == nil {
		awsRegion = co.Region
	}
	return &S3Backend{
		awsRegion:   awsRegion,
		client:      client,
		loc:         s3Location{bucket: o.Bucket, prefix: o.Prefix},
		reads:       o.ReadFrom,
		gone:        make([]atomic.Bool, 1+len(o.ReadFrom)),
		carried:     make(map[ActionID]time.Time),
		timeout:     o.Timeout,
		compressMin: o.CompressMin,
		sse:         o.Encryption,
		maxPut:      5 << 30,
		now:         time.Now,
		tempDir:     o.TempDir,
		createTemp:  createSharedTemp,
		tempDirFor:  o.TempDirFor,
		freeBytes:   freeBytes,
	}, nil
}

// maxCarried bounds S3Backend.carried: a go command asks for an action's
// output right after its entry, so few wait there at once.
const maxCarried = 1 << 16

// Get implements CacheBackend with one GetObject per location, all at
// once: the first location, in order, that has the entry answers. An
// action's empty stdout entry that the action's object carried is
// answered without a request.
func (b *S3Backend) Get(ctx context.Context, actionID ActionID) (Entry, error) {
	if t, ok := b.takeCarried(actionID); ok {
		return b.emptyEntry(actionID, t)
	}
	if len(b.reads) == 0 {
		return b.getFrom(ctx, b.loc, actionID)
	}
	b.probeWriteLocation()
	locs := b.readable(!b.writeEmpty.Load())
	return getFirst(ctx, len(locs), func(ctx context.Context, i int) (Entry, error) {
		if err := b.elsewhere(b.location(locs[i])); err != nil {
			return Entry{}, b.locationErr(locs[i], err)
		}
		e, err := b.getFrom(ctx, b.location(locs[i]), actionID)
		return e, b.locationErr(locs[i], err)
	}, func(e Entry) { os.Remove(e.DiskPath) })
}

// noteCarried records that the object of actionID, put at t, carries its
// empty stdout entry.
func (b *S3Backend) noteCarried(actionID ActionID, t time.Time) {
	key := stdoutKey(actionID)
	b.carriedMu.Lock()
	defer b.carriedMu.Unlock()
	if len(b.carried) < maxCarried {
		b.carried[key] = t
	}
}

// takeCarried reports whether key is the stdout key of an action got with
// its empty stdout entry, and when that was put; it forgets the key.
func (b *S3Backend) takeCarried(key ActionID) (time.Time, bool) {
	b.carriedMu.Lock()
	defer b.carriedMu.Unlock()
	t, ok := b.carried[key]
	delete(b.carried, key)
	return t, ok
}

// emptyEntry returns an empty entry put at t, in a new empty file that is
// the caller's, as a download's is.
func (b *S3Backend) emptyEntry(key ActionID, t time.Time) (Entry, error) {
	dir := b.tempDir
	if b.tempDirFor != nil {
		dir = b.tempDirFor(emptyOutputID)
	}
	f, err := b.createTemp(dir, tempPrefix+"s3get-*")
	if err == nil {
		err = f.Close()
		if err != nil {
			os.Remove(f.Name())
		}
	}
	if err != nil {
		return Entry{}, fmt.Errorf("get %x: %w", key[:], withKind(KindLocal, err))
	}
	return Entry{OutputID: emptyOutputID, Time: t, DiskPath: f.Name()}, nil
}

// elsewhere returns an error (KindConfig) if location l is a directory
// bucket that the client cannot reach: on AWS, one whose zone is in
// another region than the client's. The SDK builds its endpoint from the
// zone and the client's region, a host that does not exist, whose DNS
// failure would pass for the remote's. So a read location of another
// region is left out (locationErr), as a general purpose bucket's is by
// S3's redirect.
func (b *S3Backend) elsewhere(l s3Location) error {
	zone, region := bucketZone(l.bucket)
	if b.awsRegion == "" || region == "" || region == b.awsRegion {
		return nil
	}
	return withKind(KindConfig, fmt.Errorf("%s: the zone %s of the directory bucket is in %s, but this client's requests go to %s (-s3-bucket's region, which -s3-read-from shares)", l, zone, region, b.awsRegion))
}

// readable returns the locations to ask (see location), in order: the
// write location if withWrite, then the read locations; none that is gone.
func (b *S3Backend) readable(withWrite bool) []int {
	locs := make([]int, 0, len(b.gone))
	for i := range b.gone {
		if (i > 0 || withWrite) && !b.gone[i].Load() {
			locs = append(locs, i)
		}
	}
	return locs
}

// locationErr confines to location i an error that says the location
// cannot be used at all, when there are others to go on with (read
// locations): a bucket that does not exist, or a read location's bucket in
// another region (a typo in -s3-bucket or -s3-read-from). The location is
// gone for the rest of this server's run, and the error is
// KindLocationGone, which the breaker reports and does not hold against the
// remote: without the write location's bucket it stops writing and reads
// go on; without a read location's, the others go on. Any other error, and
// every error of a remote with one location, is returned as it is.
func (b *S3Backend) locationErr(i int, err error) error {
	if len(b.reads) == 0 || err == nil {
		return err
	}
	switch kind := errKind(err); {
	case kind == KindNoBucket, kind == KindConfig && i > 0:
		b.gone[i].Store(true)
		return withKind(KindLocationGone, fmt.Errorf("location %s: %w", b.location(i), err))
	}
	return err
}

// probeWriteLocation starts, once, the listing that tells whether the
// write location holds anything (see writeEmpty). It runs in the
// background: no request waits for it.
func (b *S3Backend) probeWriteLocation() {
	b.probeOnce.Do(func() {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
			defer cancel()
			dir := b.loc.prefix + s3LayoutVersion + "/"
			out, err := b.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &b.loc.bucket, Prefix: &dir, MaxKeys: aws.Int32(1)})
			// A page of no keys may still be cut short (IsTruncated): keys
			// may follow.
			if err == nil && len(out.Contents) == 0 && !aws.ToBool(out.IsTruncated) {
				b.writeEmpty.Store(true)
			}
		}()
	})
}

// location returns location i: 0 is the write location, i > 0 the i-th
// read location.
func (b *S3Backend) location(i int) s3Location {
	if i == 0 {
		return b.loc
	}
	return b.reads[i-1]
}

// getFrom gets actionID's entry from one location with one GetObject
// (openObject).
func (b *S3Backend) getFrom(ctx context.Context, loc s3Location, actionID ActionID) (Entry, error) {
	key := loc.actionKey(actionID)
	out, ctx, err := b.openObject(ctx, &s3.GetObjectInput{Bucket: &loc.bucket, Key: &key})
	if err != nil {
		return Entry{}, err
	}
	defer out.Body.Close()
	e, encoding, err := parseS3Metadata(out.Metadata)
	if err != nil {
		return Entry{}, fmt.Errorf("get %s: %w", key, err)
	}
	var body io.Reader = out.Body
	switch encoding {
	case "identity":
		if n := aws.ToInt64(out.ContentLength); n != e.Size {
			return Entry{}, fmt.Errorf("get %s: %w: object has %d bytes, metadata says %d", key, errVerify, n, e.Size)
		}
	case "zstd":
		src := &sourceErr{r: out.Body}
		dec := getZstdDecoder(src)
		if dec == nil {
			if src.err != nil {
				return Entry{}, s3Error("get", key, getCause(ctx, src.err), false)
			}
			return Entry{}, fmt.Errorf("get %s: %w: bad zstd stream", key, errVerify)
		}
		defer zstdDecoders.Put(dec)
		body = zstdReader{dec, src}
	}
	dir := b.tempDir
	if b.tempDirFor != nil {
		dir = b.tempDirFor(e.OutputID)
	}
	release, err := b.reserveRoom(ctx, dir, e.Size)
	if err != nil {
		return Entry{}, fmt.Errorf("get %s: %w", key, err)
	}
	defer release()
	f, err := b.createTemp(dir, tempPrefix+"s3get-*")
	if err != nil {
		return Entry{}, fmt.Errorf("get %s: %w", key, withKind(KindLocal, err))
	}
	// The verifying reader stops one byte past the declared size, so a
	// decompression bomb costs no more than the room taken for it.
	w := &localWriter{w: f}
	_, err = copyBuffered(w, newVerifyingReader(body, e.Size, e.OutputID))
	if cerr := f.Close(); err == nil && cerr != nil {
		err, w.err = cerr, cerr
	}
	if err != nil {
		os.Remove(f.Name())
		switch {
		case errors.Is(err, errVerify):
			return Entry{}, fmt.Errorf("get %s: %w", key, err)
		case w.err != nil:
			// The local disk's failure (full meanwhile), not the
			// remote's: it answered.
			return Entry{}, fmt.Errorf("get %s: %w", key, withKind(KindLocal, w.err))
		}
		return Entry{}, s3Error("get", key, getCause(ctx, err), false) // the download broke off
	}
	if out.Metadata[metaStdout] == stdoutEmpty {
		b.noteCarried(actionID, e.Time)
	}
	e.DiskPath = f.Name()
	return e, nil
}

// localWriter writes to a local file and keeps its error, so that a
// download that broke off for the local disk (full, say) is told from one
// the remote broke off.
type localWriter struct {
	w   io.Writer
	err error
}

func (l *localWriter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if err != nil {
		l.err = err
	}
	return n, err
}

// reserveRoom takes size bytes of the file system of dir, where a get is
// about to write a body, and returns their release. A remote's metadata may
// declare any size up to maxBodySize, and a zstd body may decode to all of
// it, so it refuses (KindTooLarge, a miss) a body that, with the bodies
// other gets are writing, would leave less free than the go command's puts
// leave (fitsReserve), or for the prefetch's speculative gets, than the
// prefetch leaves (prefetchReserve): no object fills the disk under the
// build.
func (b *S3Backend) reserveRoom(ctx context.Context, dir string, size int64) (release func(), err error) {
	reserve := int64(fitsReserve)
	if isSpeculative(ctx) {
		reserve = prefetchReserve
	}
	writing := b.writing.Add(size)
	release = func() { b.writing.Add(-size) }
	if free, ferr := b.freeBytes(dir); ferr == nil && writing > free-reserve {
		release()
		return nil, withKind(KindTooLarge, fmt.Errorf("%w: a body of %s, with %s free on the file system of %s", ErrNotFound, formatBytes(size), formatBytes(free), dir))
	}
	return release, nil
}

// openObject sends in's GetObject under the get deadlines (see
// newS3Client): b.timeout until the answer begins; then the body gets
// b.timeout plus a second per 8 MiB, and fails as soon as it stalls for
// attemptCeiling. It returns the answer, whose body the caller closes
// (which releases the deadlines), and the request's context, for getCause
// of an error reading the body; an error is classified.
func (b *S3Backend) openObject(ctx context.Context, in *s3.GetObjectInput) (*s3.GetObjectOutput, context.Context, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	deadline := time.AfterFunc(b.timeout, func() { cancel(errGetDeadline) })
	out, err := b.client.GetObject(ctx, in)
	if err != nil {
		deadline.Stop()
		cancel(nil)
		return nil, ctx, s3Error("get", aws.ToString(in.Key), getCause(ctx, err), false)
	}
	deadline.Reset(b.timeout + time.Duration(aws.ToInt64(out.ContentLength)/(8<<20))*time.Second)
	stall := time.AfterFunc(attemptCeiling, func() { cancel(errGetStalled) })
	out.Body = releasingBody{stallReader{out.Body, stall}, func() {
		stall.Stop()
		deadline.Stop()
		cancel(nil)
	}}
	return out, ctx, nil
}

// releasingBody calls release once the body is closed.
type releasingBody struct {
	io.ReadCloser
	release func()
}

func (r releasingBody) Close() error {
	err := r.ReadCloser.Close()
	r.release()
	return err
}

var (
	errGetDeadline = fmt.Errorf("no complete answer in time: %w", context.DeadlineExceeded)
	errGetStalled  = fmt.Errorf("the answer stalled for %v: %w", attemptCeiling, context.DeadlineExceeded)
)

// getCause returns what ended a get: err, or the deadline or stall that
// cancelled ctx (a timeout, not the caller giving up). A failed S3 Express
// CreateSession, which has a deadline of its own, is its own cause even
// when the get's deadline passed as it failed: its type says what failed.
func getCause(ctx context.Context, err error) error {
	var se *expressSessionError
	if c := context.Cause(ctx); (errors.Is(c, errGetDeadline) || errors.Is(c, errGetStalled)) && !errors.Is(err, c) && !errors.As(err, &se) {
		return fmt.Errorf("%w (%v)", c, err)
	}
	return err
}

// stallReader re-arms a stall timer with every read that makes progress.
type stallReader struct {
	io.ReadCloser
	stall *time.Timer
}

func (r stallReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if n > 0 {
		r.stall.Reset(attemptCeiling)
	}
	return n, err
}

// Put implements CacheBackend with one PutObject. A body that can seek (a
// file) is checked against outputID first and then sent; any other body is
// spooled to a temp file while it is checked.
func (b *S3Backend) Put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	return b.put(ctx, actionID, outputID, size, body, false)
}

// PutWithEmptyStdout implements Remote: the object of actionID says, in
// its metadata, that its stdout entry is empty (see s3Location).
func (b *S3Backend) PutWithEmptyStdout(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	return b.put(ctx, actionID, outputID, size, body, true)
}

func (b *S3Backend) put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader, emptyStdout bool) (Entry, error) {
	key := b.loc.actionKey(actionID)
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	rs, ok := body.(io.ReadSeeker)
	if !ok {
		f, err := b.createTemp(b.tempDir, "s3put-*")
		if err != nil {
			return Entry{}, fmt.Errorf("put %s: %w", key, err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if _, err := copyBuffered(f, newVerifyingReader(ctxReader{ctx, body}, size, outputID)); err != nil {
			return Entry{}, fmt.Errorf("put %s: %w", key, err)
		}
		rs = f
	} else if _, err := copyBuffered(io.Discard, newVerifyingReader(ctxReader{ctx, rs}, size, outputID)); err != nil {
		return Entry{}, fmt.Errorf("put %s: %w", key, err)
	}
	if _, err := rs.Seek(0, io.SeekStart); err != nil {
		return Entry{}, fmt.Errorf("put %s: %w", key, err)
	}
	encoding, stored, storedSize := "identity", rs, size
	if b.compressMin > 0 && size >= b.compressMin {
		frame, zsize, release, err := b.compress(ctxReader{ctx, rs}, size)
		switch {
		case err == nil:
			defer release()
		case ctx.Err() != nil:
			return Entry{}, fmt.Errorf("put %s: %w", key, err)
		}
		// Sent compressed if that is worth it (at least 10% smaller), and
		// as it is if the local disk had no room for the frame.
		if err == nil && zsize < size-size/10 {
			encoding, stored, storedSize = "zstd", frame, zsize
		} else if _, err := rs.Seek(0, io.SeekStart); err != nil {
			return Entry{}, fmt.Errorf("put %s: %w", key, err)
		}
	}
	if storedSize > b.maxPut {
		return Entry{}, withKind(KindTooLarge, fmt.Errorf("put %s: %d bytes, more than one PutObject takes (%d)", key, storedSize, b.maxPut))
	}
	now := b.now()
	ctx, cancel := context.WithTimeout(ctx, b.putTimeout(size))
	defer cancel()
	meta := map[string]string{
		metaOutputID: hex.EncodeToString(outputID[:]),
		metaSize:     strconv.FormatInt(size, 10),
		metaTime:     strconv.FormatInt(now.UnixNano(), 10),
		metaEncoding: encoding,
	}
	if emptyStdout {
		meta[metaStdout] = stdoutEmpty
	}
	if err := b.putObject(ctx, key, readerAt{stored}, storedSize, meta); err != nil {
		return Entry{}, err
	}
	return Entry{OutputID: outputID, Size: size, Time: now}, nil
}

// ctxReader reads r until ctx ends, so that Put's passes over a large body
// (its check, its compression) stop within a buffer of a cancelled upload
// (a close whose deadline has passed) instead of after the whole body.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ListManifests implements manifestStore: the newest n manifests of each
// location, the write location's first. Listings of directory buckets are
// unordered: the keys are sorted by name, which starts with the time. A
// location that refuses the listing (403) has none; a location that cannot
// be used (locationErr) is left out, and its error returned beside the
// others' manifests; any other failure is the answer. Manifests
// of read locations are named s3://BUCKET/KEY.
func (b *S3Backend) ListManifests(ctx context.Context, scope string, n int) ([]manifestInfo, error) {
	if len(b.reads) > 0 {
		b.probeWriteLocation() // the prefetch's first request: find out now
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	locs := b.readable(true)
	lists := make([][]manifestInfo, len(locs))
	errs := make([]error, len(locs))
	atOnce(len(locs), func(i int) { // each is a round trip
		lists[i], errs[i] = b.listManifests(ctx, locs[i], scope, n)
		errs[i] = b.locationErr(locs[i], errs[i])
	})
	var infos []manifestInfo
	var gone error
	for i, l := range lists {
		switch err := errs[i]; {
		case errKind(err) == KindLocationGone:
			gone = err
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return nil, err
		}
		infos = append(infos, l...)
	}
	return infos, gone
}

// listManifests lists the newest n manifests of scope in location i.
func (b *S3Backend) listManifests(ctx context.Context, i int, scope string, n int) ([]manifestInfo, error) {
	loc := b.location(i)
	if err := b.elsewhere(loc); err != nil {
		return nil, err
	}
	var keys []string
	dir := loc.manifestDir(scope)
	pages := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &loc.bucket, Prefix: &dir})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, s3ListError(loc.bucket+"/"+dir, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	keys = newestFirst(keys, n)
	infos := make([]manifestInfo, len(keys))
	for j, k := range keys {
		infos[j].name = k
		if i > 0 {
			infos[j].name, infos[j].readOnly = "s3://"+loc.bucket+"/"+k, true
		}
		infos[j].time, _ = loc.manifestTime(scope, k)
	}
	return infos, nil
}

// GetManifest implements manifestStore.
func (b *S3Backend) GetManifest(ctx context.Context, name string) ([]byte, error) {
	loc, key, err := b.manifestLocation(name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &loc.bucket, Key: &key})
	if err != nil {
		return nil, s3Error("get", name, err, false)
	}
	defer out.Body.Close()
	data, err := readAllSized(out.Body, aws.ToInt64(out.ContentLength), maxManifestObject)
	if err != nil {
		return nil, s3Error("get", name, err, false)
	}
	if int64(len(data)) > maxManifestObject {
		return nil, fmt.Errorf("get %s: %w: larger than %d bytes", name, errVerify, maxManifestObject)
	}
	return data, nil
}

// manifestLocation returns the location and key of a manifest named as
// ListManifests names it: a key of the write location, or s3://BUCKET/KEY
// in a read location.
func (b *S3Backend) manifestLocation(name string) (s3Location, string, error) {
	rest, ok := strings.CutPrefix(name, "s3://")
	if !ok {
		return b.loc, name, nil
	}
	bucket, key, _ := strings.Cut(rest, "/")
	for _, l := range b.reads {
		if l.bucket == bucket && strings.HasPrefix(key, l.prefix) {
			return l, key, nil
		}
	}
	return s3Location{}, "", fmt.Errorf("get %.200s: not in a read location", name)
}

// GetPackRange implements manifestStore with one ranged GetObject
// (openObject).
func (b *S3Backend) GetPackRange(ctx context.Context, name string, i int, off, n int64) (io.ReadCloser, error) {
	loc, mkey, err := b.manifestLocation(name)
	if err != nil {
		return nil, err
	}
	key, ok := loc.packKey(mkey, i)
	if !ok || off < 0 || n <= 0 {
		return nil, fmt.Errorf("get pack %d of %.200s: not a pack range", i, name)
	}
	out, ctx, err := b.openObject(ctx, &s3.GetObjectInput{
		Bucket: &loc.bucket, Key: &key,
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1)),
	})
	if err != nil {
		return nil, err
	}
	if got := aws.ToInt64(out.ContentLength); got != n {
		out.Body.Close()
		return nil, fmt.Errorf("get %s: %w: range of %d bytes, want %d", key, errVerify, got, n)
	}
	return &packRangeReader{out.Body, ctx, key}, nil
}

// packRangeReader is the body of a pack range, its errors classified like
// a get's.
type packRangeReader struct {
	io.ReadCloser
	ctx context.Context
	key string
}

func (r *packRangeReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = s3Error("get", r.key, getCause(r.ctx, err), false)
	}
	return n, err
}

// PutManifest implements manifestStore.
func (b *S3Backend) PutManifest(ctx context.Context, scope, id string, data []byte) error {
	return b.putBlob(ctx, b.loc.manifestKey(scope, id), data)
}

// PutPack implements manifestStore.
func (b *S3Backend) PutPack(ctx context.Context, scope, id string, i int, data []byte) error {
	key, ok := b.loc.packKey(b.loc.manifestKey(scope, id), i)
	if !ok {
		return fmt.Errorf("put pack %d of %s/%s: not a manifest id", i, scope, id)
	}
	return b.putBlob(ctx, key, data)
}

// putBlob stores data under key with one PutObject.
func (b *S3Backend) putBlob(ctx context.Context, key string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, b.putTimeout(int64(len(data))))
	defer cancel()
	return b.putObject(ctx, key, bytes.NewReader(data), int64(len(data)), nil)
}

// putObject stores size bytes of body under key in the write location,
// with metadata meta and the encryption every object written asks for, and
// classifies its error. It sends a Content-MD5 header once the location
// has refused a put without one, and then sends this put again.
func (b *S3Backend) putObject(ctx context.Context, key string, body io.ReaderAt, size int64, meta map[string]string) error {
	sent := &sendProgress{r: body, size: size}
	ctx = withSendProgress(ctx, sent)
	for {
		in := &s3.PutObjectInput{
			Bucket:        &b.loc.bucket,
			Key:           &key,
			Body:          io.NewSectionReader(sent, 0, size),
			ContentLength: aws.Int64(size),
			ContentType:   aws.String("application/octet-stream"),
			Metadata:      meta,
		}
		b.sse.apply(in)
		withMD5 := b.contentMD5.Load()
		if withMD5 {
			h := md5.New()
			if _, err := copyBuffered(h, io.NewSectionReader(body, 0, size)); err != nil {
				return fmt.Errorf("put %s: %w", key, err)
			}
			in.ContentMD5 = aws.String(base64.StdEncoding.EncodeToString(h.Sum(nil)))
		}
		_, err := b.client.PutObject(ctx, in)
		switch {
		case err == nil:
			return nil
		case !withMD5 && needsContentMD5(err):
			b.contentMD5.Store(true)
			continue
		}
		kind := classifyS3Error(err, true)
		if kind == KindTimeout && errors.Is(ctx.Err(), context.DeadlineExceeded) && sent.sending(time.Now()) {
			kind = KindSlowUpload
			err = fmt.Errorf("body still being sent at the deadline (a slow uplink): %w", err)
		}
		return b.locationErr(0, s3ErrorOf("put", key, err, kind))
	}
}

// DeleteManifests implements manifestStore: one listing of the pack
// directory of each scope the names are in (a directory bucket lists only
// prefixes that end in "/"), then DeleteObjects of the manifests and their
// packs. Only manifests of the write location can be deleted.
func (b *S3Backend) DeleteManifests(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	for _, k := range names {
		if strings.HasPrefix(k, "s3://") {
			return fmt.Errorf("delete %.200s: a read location is never written", k)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	var objs []types.ObjectIdentifier
	packs := map[string][]string{} // a scope's pack directory: the keys in it
	for _, k := range names {
		objs = append(objs, types.ObjectIdentifier{Key: aws.String(k)})
		prefix, ok := b.loc.packDir(k)
		if !ok {
			continue
		}
		dir := prefix[:strings.LastIndexByte(prefix, '/')+1]
		keys, listed := packs[dir]
		if !listed {
			pages := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &b.loc.bucket, Prefix: &dir})
			for pages.HasMorePages() {
				page, err := pages.NextPage(ctx)
				if err != nil {
					return s3ListError(b.loc.bucket+"/"+dir, err)
				}
				for _, o := range page.Contents {
					keys = append(keys, aws.ToString(o.Key))
				}
			}
			packs[dir] = keys
		}
		for _, pk := range keys {
			if strings.HasPrefix(pk, prefix) {
				objs = append(objs, types.ObjectIdentifier{Key: aws.String(pk)})
			}
		}
	}
	for batch := range slices.Chunk(objs, deleteBatch) {
		if err := b.deleteObjects(ctx, batch); err != nil {
			return s3Error("delete", names[0], err, true)
		}
	}
	return nil
}

// deleteBatch is the most keys one DeleteObjects takes.
const deleteBatch = 1000

// deleteObjects deletes keys, at most deleteBatch of them. A quiet
// DeleteObjects answers 200 and lists only the keys it did not delete,
// each with an error code (AccessDenied without s3:DeleteObject): the
// first is the error, with its code, so that it is classified as a
// request's would be.
func (b *S3Backend) deleteObjects(ctx context.Context, keys []types.ObjectIdentifier) error {
	var opts []func(*s3.Options)
	if !isDirectoryBucket(b.loc.bucket) {
		opts = append(opts, withContentMD5)
	}
	out, err := b.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &b.loc.bucket, Delete: &types.Delete{Objects: keys, Quiet: aws.Bool(true)}}, opts...)
	if err != nil {
		return err
	}
	if len(out.Errors) > 0 {
		e := out.Errors[0]
		return &smithy.GenericAPIError{
			Code:    aws.ToString(e.Code),
			Message: fmt.Sprintf("%d objects not deleted, first %s: %s", len(out.Errors), aws.ToString(e.Key), aws.ToString(e.Message)),
		}
	}
	return nil
}

// putTimeout allows uploads of large bodies more time: the request timeout
// plus a second per 8 MiB.
func (b *S3Backend) putTimeout(size int64) time.Duration {
	return b.timeout + time.Duration(size/(8<<20))*time.Second
}

// Close implements CacheBackend. Files returned by Get are the callers'
// and stay.
func (b *S3Backend) Close(ctx context.Context) error { return nil }

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
	if err != nil || size < 0 || size > maxBodySize {
		return Entry{}, "", fmt.Errorf("%w: metadata %s %.40q", errVerify, metaSize, md[metaSize])
	}
	ns, err := strconv.ParseInt(md[metaTime], 10, 64)
	if err != nil {
		return Entry{}, "", fmt.Errorf("%w: metadata %s %.40q", errVerify, metaTime, md[metaTime])
	}
	return Entry{OutputID: OutputID(out), Size: size, Time: time.Unix(0, ns)}, encoding, nil
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
	case !utf8.ValidString(p):
		return errors.New("is not UTF-8 (S3 keys are)")
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
// anything else stored there), listing it and deleting in batches of
// deleteBatch with a few DeleteObjects in parallel. It reports the objects
// and bytes removed.
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
				if err := b.deleteObjects(ctx, batch); err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
				}
			}
		}()
	}
	var listErr error
	pages := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &b.loc.bucket, Prefix: aws.String(b.loc.prefix)})
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
	switch {
	case listErr != nil:
		return objects, bytes, s3ListError(b.loc.String(), listErr)
	case firstErr != nil:
		return objects, bytes, s3Error("delete", b.loc.String(), firstErr, true)
	}
	return objects, bytes, nil
}
