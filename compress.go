package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// zstd on the wire (-compression=zstd). Encoders and decoders are pooled:
// each holds buffers worth reusing across the many small objects of a
// build. Frames carry no xxhash checksum and a checksum in a frame is not
// checked: every body is checked against its SHA-256 OutputID after
// decoding, which a checksum would only repeat (at a tenth of the decoding
// time).
//
// The encoders' window is zstdWindow, not the library's 8 MiB: an encoder
// allocates twice its window as history the first time it compresses more
// than one block, and each server process does that anew for every pooled
// encoder (16 MiB each, written once by the kernel's page faults and once
// by zeroing), while a build's entries compress no better with the larger
// window (the same size, to a ten-thousandth, over a CI replay's local
// cache: see HISTORY.md). A pack's frames are about packFrameRaw anyway.
const zstdWindow = 1 << 20

var zstdEncoders = sync.Pool{New: func() any {
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false), zstd.WithWindowSize(zstdWindow))
	return enc
}}

var zstdDecoders sync.Pool // of *zstd.Decoder

// zstdMaxWindow bounds the window a frame may ask its decoder for, which
// the decoder allocates: no version of gobuildcache wrote a frame with a
// window over 8 MiB (the library's default before zstdWindow), and a
// frame of one segment gives its whole decoded size as its window, so
// that without a bound a small object claiming gigabytes would cost each
// reader that much memory. A frame over the bound does not decode
// (errVerify), like any other corrupt one.
const zstdMaxWindow = 16 << 20

// getZstdDecoder returns a pooled decoder reading r, nil if r is not zstd.
// Put it back in zstdDecoders when done.
func getZstdDecoder(r io.Reader) *zstd.Decoder {
	if d, ok := zstdDecoders.Get().(*zstd.Decoder); ok {
		if d.Reset(r) == nil {
			return d
		}
		return nil
	}
	d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.IgnoreChecksum(true), zstd.WithDecoderMaxWindow(zstdMaxWindow))
	if err != nil {
		return nil
	}
	return d
}

// zstdReader reads a decoder without exposing its WriteTo, so that copies
// go through the caller's reader chain (and its size limit). A frame that
// does not decode is corrupt data (errVerify); an error of the stream under
// it is passed on as it is.
type zstdReader struct {
	d   *zstd.Decoder
	src *sourceErr
}

func (z zstdReader) Read(p []byte) (int, error) {
	n, err := z.d.Read(p)
	if err != nil && err != io.EOF && z.src.err == nil {
		err = fmt.Errorf("%w: zstd: %v", errVerify, err)
	}
	return n, err
}

// sourceErr remembers the first error, other than EOF, of the reader under
// a decoder.
type sourceErr struct {
	r   io.Reader
	err error
}

func (s *sourceErr) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// compressInMemory is the largest body compressed into memory; a larger
// one is compressed into a temp file. Most bodies of a build are small, and
// a temp file costs a create and a delete each: on some file systems (ext4
// without a journal) every recent deletion slows each later file creation,
// the compiler's included. At most one buffer per upload worker is in use.
const compressInMemory = 4 << 20

var compressBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// compress returns a zstd frame of r, a body of size bytes, ready to read
// from its start, with the frame's size. release frees it; call it when
// done with the frame, and only then. A frame too large for memory is
// written to a temp file if the local disk has room for size bytes more
// (reserveRoom), else compress fails (KindTooLarge), as it does when the
// file cannot be written: the body is then sent as it is.
func (b *S3Backend) compress(r io.Reader, size int64) (frame io.ReadSeeker, n int64, release func(), err error) {
	if size <= compressInMemory {
		buf := compressBuffers.Get().(*bytes.Buffer)
		buf.Reset()
		release := func() { compressBuffers.Put(buf) }
		if err := zstdTo(buf, r); err != nil {
			release()
			return nil, 0, nil, err
		}
		return bytes.NewReader(buf.Bytes()), int64(buf.Len()), release, nil
	}
	// The frame takes disk beside the body until it is sent: only if
	// that leaves what the go command's puts leave free (reserveRoom),
	// so that no upload takes the disk's last bytes from the build.
	unreserve, err := b.reserveRoom(context.Background(), b.tempDir, size)
	if err != nil {
		return nil, 0, nil, err
	}
	f, err := b.createTemp(b.tempDir, "s3zst-*")
	if err != nil {
		unreserve()
		return nil, 0, nil, err
	}
	release = func() {
		f.Close()
		os.Remove(f.Name())
		unreserve()
	}
	err = zstdTo(f, r)
	if err == nil {
		n, err = f.Seek(0, io.SeekCurrent)
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		release()
		return nil, 0, nil, err
	}
	return f, n, release, nil
}

// zstdTo writes a zstd frame of r to w, with a pooled encoder.
func zstdTo(w io.Writer, r io.Reader) error {
	enc := zstdEncoders.Get().(*zstd.Encoder)
	defer zstdEncoders.Put(enc)
	enc.Reset(w)
	_, err := copyBuffered(enc, r)
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	return err
}
