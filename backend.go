package main

import (
	"bytes"
	"context"
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

// idLen is the length in bytes of action and output IDs: both are SHA-256
// sums in the go command.
const idLen = sha256.Size

// Entry is what a backend knows about one cached action.
type Entry struct {
	OutputID []byte    // SHA-256 of the body, idLen bytes
	Size     int64     // length of the body in bytes
	Time     time.Time // when the entry was put
	// DiskPath is the absolute path of a local file holding exactly the
	// body. It is set on every entry a backend returns.
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
	// holding exactly Entry.Size bytes whose SHA-256 is Entry.OutputID,
	// and that file exists at least until Close.
	Get(ctx context.Context, actionID []byte) (Entry, error)

	// Put stores the body read from body under actionID.
	//
	// body yields exactly size bytes whose SHA-256 is outputID; Put must
	// not store anything if it does not (see newVerifyingReader). After a
	// nil error a Get of actionID returns this entry (or a newer one); for
	// asyncUploads, once the upload is done. A backend that keeps the body
	// locally sets the returned Entry.DiskPath, which then holds the body
	// at least until Close; the server's backend always does (it is the
	// disk backend or the local tier). Put reads body only before it
	// returns.
	Put(ctx context.Context, actionID, outputID []byte, size int64, body io.Reader) (Entry, error)

	// Close waits for or cancels work still pending (bounded by ctx) and
	// releases resources. No other method may be called after Close.
	Close(ctx context.Context) error
}

// checkID returns an error unless id is a well-formed action or output ID.
func checkID(what string, id []byte) error {
	if len(id) != idLen {
		return fmt.Errorf("invalid %s: %d bytes, want %d", what, len(id), idLen)
	}
	return nil
}

// parseHexID decodes a hex action or output ID as stored on disk or in a
// bucket.
func parseHexID(s string) ([]byte, error) {
	if len(s) != 2*idLen {
		return nil, fmt.Errorf("invalid id %.80q: length %d, want %d", s, len(s), 2*idLen)
	}
	id, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("invalid id %.80q: not hex", s)
	}
	return id, nil
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
	outputID []byte
}

func newVerifyingReader(r io.Reader, size int64, outputID []byte) *verifyingReader {
	return &verifyingReader{r: r, h: sha256.New(), size: size, outputID: outputID}
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	// Never read more than one byte past the declared size: enough to
	// notice a long body without buffering it.
	if rem := v.size - v.n + 1; int64(len(p)) > rem {
		p = p[:rem]
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
		if sum := v.h.Sum(nil); !bytes.Equal(sum, v.outputID) {
			return n, fmt.Errorf("%w: sha256 %x, want %x", errVerify, sum, v.outputID)
		}
	}
	return n, err
}
