package main

// Benchmarks of the hit path, each hand-written fast path against what it
// replaces. Run with -count 6 and compare medians (benchstat).

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkDecodeRequest: a get line as the go command writes it.
func BenchmarkDecodeRequest(b *testing.B) {
	line := []byte(getLine(7, actionID("bench")))
	line = line[:bytes.IndexByte(line, '\n')+1]
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req Request
			if !parseRequestFast(line, &req) {
				b.Fatal("not parsed")
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req Request
			if err := json.Unmarshal(line, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEncodeResponse: a hit's reply.
func BenchmarkEncodeResponse(b *testing.B) {
	now := time.Now()
	res := &Response{ID: 7, OutputID: idBytes(outputID("x")), Size: 12345, Time: &now, DiskPath: "/home/runner/.cache/gobuildcache/v1/o/ab/" + hexID(outputID("x"))}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf = appendResponse(buf[:0], res)
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		for b.Loop() {
			buf.Reset()
			if err := enc.Encode(res); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkReadRecord: the hit path's read of an action record.
func BenchmarkReadRecord(b *testing.B) {
	path := filepath.Join(b.TempDir(), "record")
	rec := formatActionRecord(Entry{OutputID: outputID("x"), Size: 12345, Time: time.Now()})
	if err := os.WriteFile(path, []byte(rec), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Run("readSmallFile", func(b *testing.B) {
		b.ReportAllocs()
		var buf [128]byte
		for b.Loop() {
			if n, err := readSmallFile(path, buf[:]); err != nil || n != len(rec) {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("os.ReadFile", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if data, err := os.ReadFile(path); err != nil || len(data) != len(rec) {
				b.Fatal(len(data), err)
			}
		}
	})
}

// BenchmarkGetLocal: a whole local hit (record read, parse, stat).
func BenchmarkGetLocal(b *testing.B) {
	d, err := NewDiskBackend(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 4096)
	id := actionID("hit")
	if _, err := d.Put(b.Context(), id, OutputID(sha256.Sum256(body)), int64(len(body)), bytes.NewReader(body)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.getLocal(id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyingReader: checking a 1 MiB body on its way through,
// against hashing it with no checks at all.
func BenchmarkVerifyingReader(b *testing.B) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	sum := OutputID(sha256.Sum256(body))
	b.Run("verifying", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, err := copyBuffered(io.Discard, newVerifyingReader(bytes.NewReader(body), int64(len(body)), sum)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sha256-only", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			h := sha256.New()
			if _, err := copyBuffered(h, bytes.NewReader(body)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBodyDecode: a put's 1 MiB body, from its base64 string to the
// bytes, with base64Reader and with the standard library's decoder (which
// filters line breaks byte by byte), both over quotedReader.
func BenchmarkBodyDecode(b *testing.B) {
	body := bytes.Repeat([]byte("an object file, more or less compressible. "), 1<<20/43)
	line := `"` + base64.StdEncoding.EncodeToString(body) + `"` + "\n"
	for _, c := range []struct {
		name string
		dec  func(io.Reader) io.Reader
	}{
		{"fast", func(q io.Reader) io.Reader { return &base64Reader{src: q} }},
		{"stdlib", func(q io.Reader) io.Reader { return base64.NewDecoder(base64.StdEncoding, q) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			buf := make([]byte, 32<<10)
			for b.Loop() {
				br := bufio.NewReaderSize(strings.NewReader(line[1:]), 64<<10)
				n, err := io.CopyBuffer(io.Discard, c.dec(&quotedReader{br: br}), buf)
				if err != nil || n != int64(len(body)) {
					b.Fatalf("%d bytes, %v", n, err)
				}
			}
		})
	}
}

// BenchmarkStringEnd: finding the end of a 1 MiB body string.
func BenchmarkStringEnd(b *testing.B) {
	s := []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("xyz"), 1<<20/3)) + `"`)
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(len(s)))
		for b.Loop() {
			if stringEnd(s) != len(s)-1 {
				b.Fatal("wrong end")
			}
		}
	})
	b.Run("IndexAny", func(b *testing.B) {
		b.SetBytes(int64(len(s)))
		for b.Loop() {
			if bytes.IndexAny(s, "\"\\\n\r") != len(s)-1 {
				b.Fatal("wrong end")
			}
		}
	})
}

// BenchmarkDecodeManifest: a manifest of 2,500 entries, 8 MiB of them
// carried whole (as a CI job's are: each body its own, a third of it
// incompressible, so that the whole compresses about 3x, as real
// manifests do), decoded as decodeManifest does (a buffer of the size the
// frame's header gives), into a buffer of the older guess (4x the stored
// size), and with io.ReadAll's steps of growth.
func BenchmarkDecodeManifest(b *testing.B) {
	var m manifest
	text := bytes.Repeat([]byte("an export file, more or less compressible. "), 2<<10/43)
	for i := range 2500 {
		e := manifestEntry{id: actionID(string(rune(i)) + "entry")}
		if i < 8<<20/(3<<10) {
			var body []byte
			for h := sha256.Sum256([]byte(strconv.Itoa(i))); len(body) < 1<<10; h = sha256.Sum256(h[:]) {
				body = append(body, h[:]...)
			}
			body = append(body, text...)
			e.inline, e.outputID, e.body = true, sha256.Sum256(body), body
		}
		m.entries = append(m.entries, e)
	}
	obj, err := encodeManifestObject(m)
	if err != nil {
		b.Fatal(err)
	}
	decodeWith := func(read func(io.Reader) ([]byte, error)) manifest {
		d := getZstdDecoder(bytes.NewReader(obj))
		defer zstdDecoders.Put(d)
		raw, err := read(d)
		if err != nil {
			b.Fatal(err)
		}
		return parseManifest(raw)
	}
	for _, c := range []struct {
		name   string
		decode func() manifest
	}{
		{"decodeManifest", func() manifest { return decodeManifest(obj) }},
		{"4x", func() manifest {
			return decodeWith(func(r io.Reader) ([]byte, error) { return readAllSized(r, 4*int64(len(obj)), maxManifestSize) })
		}},
		{"readall", func() manifest {
			return decodeWith(func(r io.Reader) ([]byte, error) { return io.ReadAll(io.LimitReader(r, maxManifestSize+1)) })
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if got := c.decode(); len(got.entries) != len(m.entries) {
					b.Fatalf("%d entries", len(got.entries))
				}
			}
		})
	}
}

// BenchmarkPutSmall: landing a small entry (a 300-byte body and its
// record, each a temp file moved into place), as a fresh machine lands
// thousands, with the temp files made by createTempFile (Linux: a bare
// file descriptor) and by os.CreateTemp.
func BenchmarkPutSmall(b *testing.B) {
	// One directory for every case, removed at the end: file creation
	// right after a bulk deletion is slow on ext4, and would tax the next
	// case.
	parent := b.TempDir()
	for _, c := range []struct {
		name   string
		create func(dir, pattern string) (tempFile, error)
	}{
		{"createTempFile", createTempFile},
		{"os.CreateTemp", func(dir, pattern string) (tempFile, error) { return os.CreateTemp(dir, pattern) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			dir, err := os.MkdirTemp(parent, "")
			if err != nil {
				b.Fatal(err)
			}
			d, err := NewDiskBackend(dir)
			if err != nil {
				b.Fatal(err)
			}
			d.createTemp = c.create
			body := make([]byte, 300)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				copy(body, strconv.Itoa(i))
				if _, err := d.Put(b.Context(), actionID(strconv.Itoa(i)), OutputID(sha256.Sum256(body)), int64(len(body)), bytes.NewReader(body)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
