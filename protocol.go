package main

// The GOCACHEPROG wire format, as defined by the go command in
// cmd/go/internal/cacheprog: one JSON object per line in each direction. A
// "put" whose BodySize is non-zero is followed by a line holding the body as
// a base64-encoded JSON string. The go command writes an empty line after
// every request object.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Cmd is a request's command.
type Cmd string

const (
	CmdGet   Cmd = "get"
	CmdPut   Cmd = "put"
	CmdClose Cmd = "close"
)

// Request is one message from the go command.
type Request struct {
	ID       int64
	Command  Cmd
	ActionID []byte `json:",omitempty"`
	OutputID []byte `json:",omitempty"`
	BodySize int64  `json:",omitempty"`
}

// Response is one message to the go command. Field names and omissions
// match cmd/go/internal/cacheprog.Response.
type Response struct {
	ID            int64
	Err           string     `json:",omitempty"`
	KnownCommands []Cmd      `json:",omitempty"`
	Miss          bool       `json:",omitempty"`
	OutputID      []byte     `json:",omitempty"`
	Size          int64      `json:",omitempty"`
	Time          *time.Time `json:",omitempty"`
	DiskPath      string     `json:",omitempty"`
}

// maxRequestLine bounds one request's JSON. Real requests are about 200
// bytes; bodies travel on their own line and are streamed.
const maxRequestLine = 64 << 10

// ProtocolError is a malformed stream: the server cannot tell where the next
// request starts, so it stops.
type ProtocolError struct {
	ID  int64 // request ID, or 0 if it could not be read
	Msg string
}

func (e *ProtocolError) Error() string {
	if e.ID == 0 {
		return "protocol error: " + e.Msg
	}
	return fmt.Sprintf("protocol error in request %d: %s", e.ID, e.Msg)
}

// requestReader decodes requests from the go command's stream.
type requestReader struct {
	br     *bufio.Reader
	lastID int64
}

func newRequestReader(r io.Reader) *requestReader {
	return &requestReader{br: bufio.NewReaderSize(r, maxRequestLine)}
}

// next reads the next request. It returns io.EOF at a clean end of stream
// and a *ProtocolError for anything it cannot parse. It does not read a
// put's body: call body next.
func (rr *requestReader) next() (*Request, error) {
	if err := skipSpace(rr.br); err != nil {
		return nil, err // io.EOF between requests is a clean end
	}
	line, err := rr.br.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		return nil, &ProtocolError{ID: guessID(line), Msg: fmt.Sprintf("request line longer than %d bytes", maxRequestLine)}
	case err == io.EOF:
		// A last line without newline is fine if it is complete JSON.
	case err != nil:
		return nil, err
	}
	req := new(Request)
	if !parseRequestFast(line, req) {
		*req = Request{}
		err = json.Unmarshal(line, req)
	} else {
		err = nil
	}
	if err != nil {
		return nil, &ProtocolError{ID: guessID(line), Msg: fmt.Sprintf("malformed JSON (after request %d): %v", rr.lastID, err)}
	}
	if req.BodySize < 0 {
		return nil, &ProtocolError{ID: req.ID, Msg: fmt.Sprintf("negative BodySize %d", req.BodySize)}
	}
	if req.BodySize > 0 && req.Command != CmdPut {
		return nil, &ProtocolError{ID: req.ID, Msg: fmt.Sprintf("BodySize %d on a %q request", req.BodySize, req.Command)}
	}
	rr.lastID = req.ID
	return req, nil
}

// body returns a reader of the decoded body that follows a put request with
// BodySize > 0. Read errors wrap errBadBody when the body's base64 is
// invalid (the stream is still in step: finish drains to the closing quote)
// and are a *ProtocolError when the line is not a JSON string at all.
func (rr *requestReader) body(req *Request) (*bodyReader, error) {
	if err := skipSpace(rr.br); err != nil {
		return nil, &ProtocolError{ID: req.ID, Msg: "missing body: " + eofMsg(err)}
	}
	c, _ := rr.br.ReadByte()
	if c != '"' {
		return nil, &ProtocolError{ID: req.ID, Msg: fmt.Sprintf("body line starts with %q, want a JSON string", c)}
	}
	q := &quotedReader{br: rr.br, id: req.ID}
	return &bodyReader{q: q, dec: &base64Reader{src: q}}, nil
}

// errBadBody marks a body string whose content is not valid base64.
var errBadBody = errors.New("body is not valid base64")

// bodyReader yields the decoded bytes of one body string.
type bodyReader struct {
	q   *quotedReader
	dec io.Reader
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.dec.Read(p)
	if err != nil && err != io.EOF && !isProtocolError(err) {
		err = fmt.Errorf("%w: %v", errBadBody, err)
	}
	return n, err
}

// finish consumes the rest of the body string up to its closing quote,
// whatever the consumer read. It returns a *ProtocolError if the string is
// broken, and nil otherwise.
func (b *bodyReader) finish() error {
	if _, err := copyBuffered(io.Discard, b.q); err != nil {
		return err
	}
	return nil
}

// base64Reader decodes standard base64 from src, which holds no line
// breaks (quotedReader refuses them), in chunks straight into the caller's
// buffer: base64.NewDecoder filters line breaks byte by byte, a tenth of
// the server's CPU time in a cold build (BenchmarkBodyDecode).
type base64Reader struct {
	src    io.Reader
	in     [8 << 10]byte // undecoded input: in[:n]
	n      int
	out    [6 << 10]byte // decoded, not yet returned: out[o:m]
	o, m   int
	eof    bool
	padded bool // a decoded chunk ended in '=': nothing may follow
}

func (d *base64Reader) Read(p []byte) (int, error) {
	for d.o == d.m {
		if d.eof && d.n == 0 {
			return 0, io.EOF
		}
		for !d.eof && d.n < 4 {
			if err := d.read(); err != nil {
				return 0, err
			}
		}
		if !d.eof {
			if err := d.read(); err != nil { // fill up, once
				return 0, err
			}
		}
		whole := d.n &^ 3 // only whole quads, but at the end all of it
		if d.eof {
			whole = d.n
		}
		if d.padded && whole > 0 {
			return 0, base64.CorruptInputError(0)
		}
		dst := d.out[:]
		direct := len(p) >= base64.StdEncoding.DecodedLen(whole)
		if direct {
			dst = p
		}
		k, err := base64.StdEncoding.Decode(dst, d.in[:whole])
		if err != nil {
			return 0, err
		}
		d.padded = d.padded || whole > 0 && d.in[whole-1] == '='
		d.n = copy(d.in[:], d.in[whole:d.n])
		if direct {
			return k, nil
		}
		d.o, d.m = 0, k
	}
	k := copy(p, d.out[d.o:d.m])
	d.o += k
	return k, nil
}

// read appends what src has to the undecoded input, noting its end.
func (d *base64Reader) read() error {
	k, err := d.src.Read(d.in[d.n:])
	d.n += k
	if err == io.EOF {
		d.eof = true
		return nil
	}
	return err
}

// quotedReader yields the raw characters of a JSON string whose opening
// quote has been read, stopping at the closing quote. Base64 needs no
// escapes, so a backslash, a control character or the end of the stream
// before the closing quote is a protocol error.
type quotedReader struct {
	br   *bufio.Reader
	id   int64
	done bool
}

func (q *quotedReader) Read(p []byte) (int, error) {
	if q.done {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Look at what is buffered without copying twice.
	buf, err := q.br.Peek(1)
	if err != nil {
		return 0, &ProtocolError{ID: q.id, Msg: "body string not terminated: " + eofMsg(err)}
	}
	if n := q.br.Buffered(); n > 1 {
		buf, _ = q.br.Peek(min(n, len(p)))
	}
	end := stringEnd(buf)
	if end < 0 {
		n := copy(p, buf)
		q.br.Discard(n)
		return n, nil
	}
	switch buf[end] {
	case '"':
		n := copy(p, buf[:end])
		q.br.Discard(end + 1)
		q.done = true
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	case '\\':
		return 0, &ProtocolError{ID: q.id, Msg: "escape sequence in body string"}
	default:
		return 0, &ProtocolError{ID: q.id, Msg: "body string not terminated before end of line"}
	}
}

// stringEnd returns the index of the first '"', '\\', '\n' or '\r' in b, or
// -1: bytes.IndexAny with those four, in four passes of bytes.IndexByte,
// which are each many times faster (BenchmarkStringEnd).
func stringEnd(b []byte) int {
	end := -1
	for _, c := range []byte{'"', '\\', '\n', '\r'} {
		if end >= 0 {
			b = b[:end]
		}
		if i := bytes.IndexByte(b, c); i >= 0 {
			end = i
		}
	}
	return end
}

func isProtocolError(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

// skipSpace consumes JSON whitespace. It returns io.EOF if the stream ends.
func skipSpace(br *bufio.Reader) error {
	for {
		c, err := br.ReadByte()
		if err != nil {
			return err
		}
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return br.UnreadByte()
	}
}

func eofMsg(err error) string {
	if err == io.EOF {
		return "unexpected end of input"
	}
	return err.Error()
}

// guessID finds the ID of a request that failed to parse, so the error can
// name it. It returns 0 if there is none.
func guessID(line []byte) int64 {
	i := bytes.Index(line, []byte(`"ID":`))
	if i < 0 {
		return 0
	}
	rest := line[i+len(`"ID":`):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	id, _ := strconv.ParseInt(string(rest[:j]), 10, 64)
	return id
}
