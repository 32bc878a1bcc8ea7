package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// ErrNotFound is the one sentinel for "this cache has no entry for that
// action ID". Backends wrap it (check with errors.Is); only the server turns
// it into a Miss reply.
var ErrNotFound = errors.New("not found")

// errVerify marks a body whose length or SHA-256 does not match what it
// claims to be. Such a body is never stored and never served.
var errVerify = errors.New("body does not match its output ID")

// errNotRecorded is wrapped by a Put that placed the body, whole and
// verified, but could not record it under its action ID (see
// CacheBackend.Put): the body may be handed out, uncached.
var errNotRecorded = errors.New("body stored, but not its record")

// idLen is the length in bytes of action and output IDs: both are SHA-256
// sums in the go command.
const idLen = sha256.Size

// ActionID is the key of a cache entry: the go command's hash of an action.
// The server parses it once from the request; below it, IDs are always
// well-formed.
type ActionID [idLen]byte

// OutputID is the SHA-256 of an entry's body.
type OutputID [idLen]byte

// Entry is what a backend knows about one cached action.
type Entry struct {
	OutputID OutputID  // SHA-256 of the body
	Size     int64     // length of the body in bytes
	Time     time.Time // when the entry was put
	// DiskPath is the absolute path of a local file holding exactly the
	// body. It is set on every entry a backend's Get returns; who owns the
	// file is said there.
	DiskPath string
}

// CacheBackend stores cache entries keyed by action ID.
//
// All methods are safe for concurrent use by multiple goroutines, and a
// backend must tolerate other processes sharing its storage.
type CacheBackend interface {
	// Get returns the entry stored under actionID.
	//
	// On a miss the error wraps ErrNotFound. Any other error means the
	// backend could not answer (I/O, network); callers treat it as a miss
	// but may count it. On success, Entry.DiskPath names a local file
	// holding exactly Entry.Size bytes whose SHA-256 is Entry.OutputID.
	//
	// Who owns that file depends on where the backend keeps its entries.
	// A local backend (DiskBackend, localTier) returns its own file: the
	// caller reads it and neither moves nor changes it, and it exists at
	// least until Close. A remote backend (S3Backend, memBackend, and the
	// wrappers breakerBackend and asyncUploads over one) downloads the body
	// into a new file that is the caller's: the caller moves it into place
	// (DiskBackend.install) or removes it; the backend never touches it
	// again, Close included.
	Get(ctx context.Context, actionID ActionID) (Entry, error)

	// Put stores the body read from body under actionID.
	//
	// body yields exactly size bytes whose SHA-256 is outputID; Put must
	// not store anything if it does not (see newVerifyingReader). After a
	// nil error a Get of actionID returns this entry (or a newer one); for
	// asyncUploads, once the upload is done. A backend that keeps the body
	// locally sets the returned Entry.DiskPath, which then holds the body
	// at least until Close; the server's backend always does (it is the
	// disk backend or the local tier). Put reads body only before it
	// returns. A local backend that placed the body but could not record
	// it returns the entry with an error wrapping errNotRecorded: its
	// DiskPath holds the body, which no Get will find.
	Put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error)

	// Close waits for or cancels work still pending (bounded by ctx) and
	// releases resources. No other method may be called after Close.
	Close(ctx context.Context) error
}

// speculativeKey marks a context whose requests are sent ahead of need:
// the prefetch's. No build waits on such a request alone (a get that needs
// its entry waits at most as long as a request of its own would take), and
// the prefetch adapts how many it sends to how the remote answers
// (flowLimit), so a timeout or a "slow down" of one is the prefetch's to
// handle: the circuit breaker counts it but does not open for it.
type speculativeKey struct{}

// withSpeculative marks ctx's requests as speculative.
func withSpeculative(ctx context.Context) context.Context {
	return context.WithValue(ctx, speculativeKey{}, true)
}

// isSpeculative reports whether ctx's requests are speculative.
func isSpeculative(ctx context.Context) bool {
	v, _ := ctx.Value(speculativeKey{}).(bool)
	return v
}

// probeKey marks a context whose requests probe a remote that the circuit
// breaker keeps requests away from (breakerBackend.probe): no build waits
// on them either, and what they find tells whether the remote answers.
type probeKey struct{}

// withProbe marks ctx's requests as probes.
func withProbe(ctx context.Context) context.Context {
	return context.WithValue(ctx, probeKey{}, true)
}

// isProbe reports whether ctx's requests are probes.
func isProbe(ctx context.Context) bool {
	v, _ := ctx.Value(probeKey{}).(bool)
	return v
}

// manifestStore keeps a remote's prefetch manifests (see manifest.go) and
// the packs they name (pack.go), by scope. Both are opaque blobs to it.
type manifestStore interface {
	// ListManifests returns the scope's manifests, newest first, at most n
	// of them (all if n < 0); a remote that reads several locations
	// returns each location's so, its own (the one it writes) first. A
	// location that cannot be used is left out: the others' manifests come
	// with an error of KindLocationGone that says so.
	ListManifests(ctx context.Context, scope string, n int) ([]manifestInfo, error)
	// GetManifest returns the stored bytes of the named manifest (at most
	// maxManifestObject of them); ErrNotFound if it is gone.
	GetManifest(ctx context.Context, name string) ([]byte, error)
	// PutManifest stores data as the manifest id of scope. id is new
	// (newManifestID) and sorts after every manifest listed before.
	PutManifest(ctx context.Context, scope, id string, data []byte) error
	// DeleteManifests removes the named manifests and their packs.
	DeleteManifests(ctx context.Context, names []string) error

	// PutPack stores data as pack i of the manifest id of scope, which is
	// stored after its packs. A pack is never overwritten: its manifest's
	// id is new.
	PutPack(ctx context.Context, scope, id string, i int, data []byte) error
	// GetPackRange returns a reader of bytes [off, off+n) of pack i of the
	// manifest named name (as ListManifests returned it), from that
	// manifest's location; ErrNotFound if the pack is gone. The reader
	// fails if the answer stalls; the caller closes it.
	GetPackRange(ctx context.Context, name string, i int, off, n int64) (io.ReadCloser, error)
}

// manifestInfo names one stored manifest.
type manifestInfo struct {
	name string    // as ListManifests returns it, for GetManifest and DeleteManifests
	time time.Time // when it was written; zero if unknown
	// readOnly: one this server reads and never writes, so never
	// deletes: in a read location (-s3-read-from), or of a further scope
	// (-prefetch-scope's names after the first).
	readOnly bool
}

// Remote is a remote cache: entries and the manifests that describe
// them. S3Backend is one; breakerBackend wraps one.
type Remote interface {
	CacheBackend
	manifestStore

	// PutWithEmptyStdout is Put, and it stores as well, in the same
	// request, an empty entry under stdoutKey(actionID): the output of the
	// tool the action ran (a compile, a vet), which the go command puts
	// beside the action's entry and which is empty for nearly every
	// package. After a nil error a Get of actionID returns its entry, and
	// a Get of the stdout key that follows one of actionID returns the
	// empty entry. (A remote may answer the stdout key only then: the go
	// command asks for an action's output only after its entry, and takes
	// a miss of it as no output.)
	PutWithEmptyStdout(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error)
}

// stdoutKey is the key under which the go command stores the output of
// the tool that the action id ran (a compile, a vet):
// cmd/go/internal/cache.Subkey(id, "stdout").
func stdoutKey(id ActionID) ActionID {
	h := sha256.New()
	h.Write([]byte("subkey:"))
	h.Write(id[:])
	h.Write([]byte("stdout"))
	var out ActionID
	h.Sum(out[:0])
	return out
}

// emptyOutputID is the output ID of an empty body.
var emptyOutputID = OutputID(sha256.Sum256(nil))

// parseHexID decodes a hex action or output ID as stored on disk or in a
// bucket.
func parseHexID(s string) ([idLen]byte, error) {
	var id [idLen]byte
	if len(s) != 2*idLen {
		return id, fmt.Errorf("invalid id %.80q: length %d, want %d", s, len(s), 2*idLen)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("invalid id %.80q: not hex", s)
	}
	return id, nil
}

var randReader = rand.Reader

// randomSuffix returns a short random name part, for temp and manifest
// names.
func randomSuffix() string {
	var b [6]byte
	if _, err := io.ReadFull(randReader, b[:]); err != nil {
		return "0"
	}
	return hex.EncodeToString(b[:])
}

// verifyingReader passes through exactly the bytes of a body and, in place
// of the final io.EOF, returns an error wrapping errVerify when the body's
// length or SHA-256 differ from what was declared. A backend that copies
// it to EOF therefore never commits a body that does not match its
// OutputID.
type verifyingReader struct {
	r        io.Reader
	h        hash.Hash
	n        int64
	size     int64
	outputID OutputID
}

func newVerifyingReader(r io.Reader, size int64, outputID OutputID) *verifyingReader {
	return &verifyingReader{r: r, h: sha256.New(), size: size, outputID: outputID}
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	// Never read more than one byte past the declared size: enough to
	// notice a long body without buffering it. (Written so that no
	// declared size, however large or negative, overflows.)
	if rem := v.size - v.n; int64(len(p)) > rem {
		p = p[:max(rem+1, 0)]
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if v.n > v.size {
		return n, fmt.Errorf("%w: more than the declared %d bytes", errVerify, v.size)
	}
	if err == io.EOF {
		if v.n != v.size {
			return n, fmt.Errorf("%w: got %d bytes, want %d", errVerify, v.n, v.size)
		}
		var sum OutputID
		if v.h.Sum(sum[:0]); sum != v.outputID {
			return n, fmt.Errorf("%w: sha256 %x, want %x", errVerify, sum, v.outputID)
		}
	}
	return n, err
}
