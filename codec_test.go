package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAppendResponseMatchesEncodingJSON(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.FixedZone("x", 3600))
	zero := time.Time{}
	for _, res := range []*Response{
		{ID: 0, KnownCommands: []Cmd{CmdGet, CmdPut, CmdClose}},
		{ID: 1, Miss: true},
		{ID: 2, OutputID: idBytes(outputID("x")), Size: 10, Time: &now, DiskPath: "/tmp/a b/c"},
		{ID: 3, Err: `bad "quote" \ <tag> & é` + "\x01"},
		{ID: 4, DiskPath: `C:\cache\o\ab`},
		{ID: 5, Time: &zero},
		{ID: -9, Size: -1},
	} {
		want, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		got := appendResponse(nil, res)
		if string(got) != string(want)+"\n" {
			t.Errorf("appendResponse:\n got %s\nwant %s", got, want)
		}
	}
}

var requestSeeds = []string{
	`{"ID":1,"Command":"get","ActionID":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}`,
	`{"ID":2,"Command":"put","ActionID":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","OutputID":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","BodySize":5}`,
	`{"ID":3,"Command":"close"}`,
	`{"ID":4,"Command":"put","ActionID":"AAEC","OutputID":""}`,
	`{"Command":"get","ID":5}`,
	`{"ID":6,"Command":"get","ActionID":"AA\u003d\u003d"}`,
	`{"ID":07,"Command":"get"}`,
	`{"ID":1e3,"Command":"get"}`,
	`{"ID":-1,"Command":"get","BodySize":-5}`,
	`{"ID":99999999999999999999,"Command":"get"}`,
	`{"id":8,"command":"GET"}`,
	`{"ID":9,"Command":"get","ActionID":"!!!!"}`,
	`{"ID":10,"Command":"get"} `,
	`[]`,
	``,
}

// FuzzParseRequest holds the fast request decoder to encoding/json: when it
// accepts a line, it must decode exactly what encoding/json decodes.
func FuzzParseRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var fast Request
		if !parseRequestFast(line, &fast) {
			return
		}
		var slow Request
		if err := json.Unmarshal(line, &slow); err != nil {
			t.Fatalf("fast decoder accepted %q, encoding/json rejects it: %v", line, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: fast %+v, encoding/json %+v", line, fast, slow)
		}
	})
}

// FuzzRequestStream feeds arbitrary bytes to the request reader as the
// server does, bodies included: it must never panic or loop, and every
// error is either io.EOF or a protocol error that names what is wrong.
func FuzzRequestStream(f *testing.F) {
	body := "hello"
	f.Add([]byte(putLine(1, actionID("a"), outputID(body), body) + getLine(2, actionID("a"))))
	f.Add([]byte(putLine(1, actionID("a"), outputID(body), body)[:60]))
	f.Add([]byte(strings.Replace(putLine(1, actionID("a"), outputID(body), body), `"aGVsbG8="`, `"aGV\sbG8="`, 1)))
	f.Add([]byte("{\"ID\":1,\"Command\":\"put\",\"BodySize\":3}\n\n\"QUJD\"\n"))
	f.Add([]byte("{\"ID\":1,\"Command\":\"put\",\"BodySize\":3}\n\n\"QU\nJD\"\n"))
	f.Add([]byte("\n\n\n"))
	f.Add([]byte("{\"ID\":1,\"Command\":\"get\"}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rr := newRequestReader(bytes.NewReader(data))
		for i := 0; i < 1000; i++ {
			req, err := rr.next()
			if err == io.EOF {
				return
			}
			if err != nil {
				if !isProtocolError(err) || err.Error() == "" {
					t.Fatalf("error %T %v is not a protocol error", err, err)
				}
				return
			}
			if req.Command == CmdPut && req.BodySize > 0 {
				br, err := rr.body(req)
				if err != nil {
					if !isProtocolError(err) {
						t.Fatalf("body: %T %v", err, err)
					}
					return
				}
				vr := newVerifyingReader(br, req.BodySize, OutputID(append(req.OutputID, make([]byte, idLen)...)))
				_, verr := io.Copy(io.Discard, io.LimitReader(vr, 1<<20))
				if verr != nil && !isProtocolError(verr) && !errors.Is(verr, errVerify) && !errors.Is(verr, errBadBody) {
					t.Fatalf("body read: %T %v", verr, verr)
				}
				if err := br.finish(); err != nil {
					if !isProtocolError(err) {
						t.Fatalf("finish: %T %v", err, err)
					}
					return
				}
			}
		}
	})
}

// FuzzActionRecord checks the disk record parser never accepts what the
// writer could not have produced.
func FuzzActionRecord(f *testing.F) {
	f.Add([]byte(formatActionRecord(Entry{OutputID: outputID("x"), Size: 3, Time: time.Unix(0, 5)})))
	f.Add([]byte("00 1 2\n"))
	f.Add([]byte(strings.Repeat("a", 64) + " -1 2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseActionRecord(b)
		if err != nil {
			return
		}
		if got := formatActionRecord(e); got != string(b) {
			// Accepted input must be canonical, except for number
			// spellings strconv also accepts (leading +, zeros).
			e2, err := parseActionRecord([]byte(got))
			if err != nil || !reflect.DeepEqual(e, e2) {
				t.Fatalf("%q parsed to %+v, which formats to %q", b, e, got)
			}
		}
		if len(e.OutputID) != idLen || e.Size < 0 {
			t.Fatalf("%q parsed to invalid entry %+v", b, e)
		}
	})
}

// FuzzBodyDecoder feeds arbitrary body lines (after the opening quote) to
// the put-body decoder with the verifying reader on top, as handlePut does:
// it must never panic, never yield more than the declared size, and end in
// EOF only for a body that matches its size and SHA-256.
func FuzzBodyDecoder(f *testing.F) {
	f.Add([]byte(`aGVsbG8="`+"\n"), int64(5), []byte("hello"))
	f.Add([]byte(`aGVsbG8=`), int64(5), []byte("hello"))
	f.Add([]byte(`aGVs\bG8="`), int64(5), []byte("hello"))
	f.Add([]byte(`!!!!"`), int64(3), []byte("abc"))
	f.Add([]byte(`"`), int64(0), []byte(""))
	f.Add([]byte("aGVs\nbG8=\""), int64(5), []byte("hello"))
	f.Fuzz(func(t *testing.T, line []byte, size int64, claimed []byte) {
		if size < 0 || size > 1<<20 {
			return
		}
		sum := sha256.Sum256(claimed)
		rr := newRequestReader(bytes.NewReader(append([]byte{'"'}, line...)))
		req := &Request{ID: 1, Command: CmdPut, BodySize: size, OutputID: sum[:]}
		br, err := rr.body(req)
		if err != nil {
			t.Fatalf("body: %v", err)
		}
		var out bytes.Buffer
		_, err = io.Copy(&out, newVerifyingReader(br, size, sum))
		if int64(out.Len()) > size+1 {
			t.Fatalf("decoder yielded %d bytes for a declared %d", out.Len(), size)
		}
		if err == nil && (int64(out.Len()) != size || !bytes.Equal(out.Bytes(), claimed)) {
			t.Fatalf("accepted %q as a body of %d bytes with sha256 of %q", out.Bytes(), size, claimed)
		}
		if err != nil && !isProtocolError(err) && !errors.Is(err, errVerify) && !errors.Is(err, errBadBody) {
			t.Fatalf("error of unexpected kind %T: %v", err, err)
		}
		if ferr := br.finish(); ferr != nil && !isProtocolError(ferr) {
			t.Fatalf("finish: %T %v", ferr, ferr)
		}
	})
}

// FuzzBase64Reader: base64Reader, over a source that returns its bytes a
// few at a time and read into buffers of any size, decodes what the
// standard library decodes and fails where it fails; stringEnd finds what
// bytes.IndexAny finds.
func FuzzBase64Reader(f *testing.F) {
	f.Add([]byte("aGVsbG8="), uint8(3), uint16(1))
	f.Add([]byte("aGVsbG8"), uint8(1), uint16(5))
	f.Add([]byte("!!!!"), uint8(7), uint16(100))
	f.Add(bytes.Repeat([]byte("QUJD"), 500), uint8(200), uint16(4096))
	f.Fuzz(func(t *testing.T, s []byte, chunk uint8, readSize uint16) {
		if got, want := stringEnd(s), bytes.IndexAny(s, "\"\\\n\r"); got != want {
			t.Fatalf("stringEnd(%q) = %d, want %d", s, got, want)
		}
		if bytes.ContainsAny(s, "\"\\\n\r") {
			return // quotedReader never yields these
		}
		want, wantErr := base64.StdEncoding.DecodeString(string(s))
		d := &base64Reader{src: &chunkedReader{b: s, n: int(chunk) + 1}}
		var got []byte
		buf := make([]byte, int(readSize)+1)
		var err error
		for {
			var n int
			n, err = d.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		if err == io.EOF {
			err = nil
		}
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("decoding %q: error %v, the standard library's %v", s, err, wantErr)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("decoding %q: %q, want %q", s, got, want)
		}
	})
}

// chunkedReader returns b at most n bytes at a time.
type chunkedReader struct {
	b []byte
	n int
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p, c.b[:min(c.n, len(c.b))])
	c.b = c.b[k:]
	return k, nil
}
