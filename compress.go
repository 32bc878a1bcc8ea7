package main

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// zstd on the wire (-compression=zstd). Encoders and decoders are pooled:
// each holds buffers worth reusing across the many small objects of a
// build.

var zstdEncoders = sync.Pool{New: func() any {
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	return enc
}}

var zstdDecoders sync.Pool // of *zstd.Decoder

// getZstdDecoder returns a pooled decoder reading r, nil if r is not zstd.
// Put it back in zstdDecoders when done.
func getZstdDecoder(r io.Reader) *zstd.Decoder {
	if d, ok := zstdDecoders.Get().(*zstd.Decoder); ok {
		if d.Reset(r) == nil {
			return d
		}
		return nil
	}
	d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
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

// compress writes a zstd frame of r to a temp file and returns it, rewound,
// with its size.
func (b *S3Backend) compress(r io.Reader) (*os.File, int64, error) {
	f, err := b.createTemp(b.tempDir, "s3zst-*")
	if err != nil {
		return nil, 0, err
	}
	enc := zstdEncoders.Get().(*zstd.Encoder)
	defer zstdEncoders.Put(enc)
	enc.Reset(f)
	_, err = copyBuffered(enc, r)
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	var size int64
	if err == nil {
		size, err = f.Seek(0, io.SeekCurrent)
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, 0, err
	}
	return f, size, nil
}
