package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Server answers the go command's GOCACHEPROG requests from a CacheBackend.
//
// One goroutine reads requests. Puts are handled on it, because their
// bodies follow on the same stream; gets run on their own goroutines so a
// slow one never holds up the rest. Replies go out through one encoder in
// whatever order they complete, each flushed at once.
type Server struct {
	backend CacheBackend
	// local, if set, is the local disk cache under backend (or backend itself).
	// Gets are first tried on it right on the reading goroutine: a local
	// hit costs no goroutine hop. Only what it misses goes to backend.
	local *DiskBackend
	// scratch holds the bodies of puts the cache could not keep, until
	// the go command is done with them.
	scratch scratchDir
	stats   *Stats
	log     *slog.Logger
	debug   bool
	// closeTimeout bounds the backend's Close (pending uploads) when the go
	// command says close.
	closeTimeout time.Duration
	now          func() time.Time

	outMu  sync.Mutex
	out    io.Writer
	outBuf []byte

	inflight sync.WaitGroup
	warn     *warnings

	observer Observer // optional
}

// Observer sees what the server does, as it does it: the prefetcher is
// one. Its methods must return quickly.
type Observer interface {
	// Started is called once the capabilities line is out.
	Started()
	// Got is called for every answered get, hit or not.
	Got(actionID ActionID, hit bool)
	// Stored is called for every stored put.
	Stored(actionID ActionID)
}

// ServerOptions are the optional parts of a Server.
type ServerOptions struct {
	// Local, if set, is the local disk cache under the backend (or the
	// backend itself). Gets are first tried on it right on the reading
	// goroutine: a local hit costs no goroutine hop. Only what it misses
	// goes to the backend.
	Local    *DiskBackend
	Observer Observer
	// Warn logs swallowed errors once per kind; shared with the backends
	// so that each kind is logged once. Default: a new one over the log.
	Warn *warnings
	// CloseTimeout bounds the backend's Close (pending uploads) when the
	// go command says close; zero gives them no time at all.
	CloseTimeout time.Duration
	Debug        bool // log one line per request
}

// NewServer returns a server over backend. log receives warnings (and, with
// debug, one line per request).
func NewServer(backend CacheBackend, stats *Stats, log *slog.Logger, o ServerOptions) *Server {
	s := &Server{
		backend:      backend,
		local:        o.Local,
		observer:     o.Observer,
		stats:        stats,
		log:          log,
		debug:        o.Debug,
		closeTimeout: o.CloseTimeout,
		now:          time.Now,
		warn:         o.Warn,
	}
	if s.warn == nil {
		s.warn = newWarnings(log)
	}
	return s
}

// Serve speaks the protocol on in and out until the go command sends close
// or in ends. It returns nil then, and a *ProtocolError (or I/O error) if
// the stream breaks. Either way it waits for requests in flight and closes
// the backend before returning.
func (s *Server) Serve(in io.Reader, out io.Writer) (err error) {
	s.out = out
	// The capabilities line goes first, before anything slow.
	if err := s.reply(&Response{KnownCommands: []Cmd{CmdGet, CmdPut, CmdClose}}); err != nil {
		return fmt.Errorf("write capabilities: %w", err)
	}
	if s.observer != nil {
		s.observer.Started()
	}

	ctx := context.Background()
	rr := newRequestReader(in)
	for {
		req, err := rr.next()
		if err == io.EOF {
			return s.finish(ctx, nil) // the go command went away without close
		}
		if err != nil {
			s.stats.AddError("protocol")
			return s.finish(ctx, err)
		}
		switch req.Command {
		case CmdGet:
			if len(req.ActionID) != idLen {
				s.stats.Gets.Add(1)
				s.stats.Misses.Add(1) // gets are hits and misses
				s.stats.AddError("bad_request")
				s.replyErr(req, badID("ActionID", req.ActionID))
				continue
			}
			id := ActionID(req.ActionID)
			if s.getLocal(req, id) {
				continue
			}
			s.inflight.Add(1)
			go func() {
				defer s.inflight.Done()
				start := s.now()
				e, err := s.backend.Get(ctx, id)
				s.getDone(req, id, start, e, err)
			}()
		case CmdPut:
			if err := s.handlePut(ctx, rr, req); err != nil {
				s.stats.AddError("protocol")
				return s.finish(ctx, err)
			}
		case CmdClose:
			err := s.finish(ctx, nil)
			if rerr := s.reply(&Response{ID: req.ID}); err == nil {
				err = rerr
			}
			return err
		default:
			s.stats.AddError("bad_request")
			s.replyErr(req, fmt.Sprintf("unknown command %q", req.Command))
		}
	}
}

// finish waits for requests in flight and closes the backend. It returns
// err, or the close error if err is nil.
func (s *Server) finish(ctx context.Context, err error) error {
	s.inflight.Wait()
	cctx, cancel := context.WithTimeout(ctx, s.closeTimeout)
	defer cancel()
	if cerr := s.backend.Close(cctx); cerr != nil && err == nil {
		// Pending remote work that could not finish is no reason to fail
		// the build: say so and move on.
		s.log.Warn("closing cache backend", "err", cerr)
	}
	s.scratch.remove()
	return err
}

// badID is the error message for a malformed ID in a request.
func badID(field string, id []byte) string {
	return fmt.Sprintf("invalid %s: %d bytes, want %d", field, len(id), idLen)
}

// getLocal answers a get from the local tier if it can, and reports
// whether it did.
func (s *Server) getLocal(req *Request, id ActionID) bool {
	if s.local == nil {
		return false
	}
	start := s.now()
	e, err := s.local.getLocal(id)
	if err != nil && s.backend != CacheBackend(s.local) {
		return false // maybe remote: ask the backend
	}
	s.getDone(req, id, start, e, err)
	return true
}

// getDone counts and answers a get that started at start.
func (s *Server) getDone(req *Request, id ActionID, start time.Time, e Entry, err error) {
	s.stats.Gets.Add(1)
	if s.observer != nil {
		s.observer.Got(id, err == nil)
	}
	d := s.now().Sub(start)
	s.stats.GetLatency.Observe(d)
	if err != nil {
		s.stats.Misses.Add(1)
		if !errors.Is(err, ErrNotFound) {
			// A backend that cannot answer is a miss: the go command
			// rebuilds, which is always correct.
			s.stats.AddError("get")
			s.warn.once("get", "cache get failed; treating it as a miss", err)
		}
		s.debugRequest(req, "miss", d, err)
		s.reply(&Response{ID: req.ID, Miss: true})
		return
	}
	s.stats.Hits.Add(1)
	s.stats.BytesServed.Add(e.Size)
	s.debugRequest(req, "hit", d, nil)
	t := e.Time
	s.reply(&Response{ID: req.ID, OutputID: e.OutputID[:], Size: e.Size, Time: &t, DiskPath: e.DiskPath})
}

// maxBodySize bounds one entry: far above any real build output, far below
// what would overflow an int64 of bytes anywhere.
const maxBodySize = 1 << 40

// handlePut stores one put. It consumes the body from rr whatever happens,
// and returns an error only if the stream itself is broken.
func (s *Server) handlePut(ctx context.Context, rr *requestReader, req *Request) error {
	start := s.now()
	s.stats.Puts.Add(1)
	var body io.Reader = eofReader{}
	var br *bodyReader
	if req.BodySize > 0 {
		var err error
		if br, err = rr.body(req); err != nil {
			return err
		}
		body = br
	}
	actionID, outputID := ActionID{}, OutputID{}
	var err error
	switch {
	case len(req.ActionID) != idLen:
		err = errors.New(badID("ActionID", req.ActionID))
	case len(req.OutputID) != idLen:
		err = errors.New(badID("OutputID", req.OutputID))
	default:
		actionID, outputID = ActionID(req.ActionID), OutputID(req.OutputID)
	}
	vr := newVerifyingReader(body, req.BodySize, outputID)

	var e Entry
	kind := "bad_request"
	if err == nil && req.BodySize > maxBodySize {
		err = fmt.Errorf("body of %d bytes exceeds the %d-byte limit", req.BodySize, int64(maxBodySize))
	}
	var notCached error // why the body went to scratch instead of the cache
	if err == nil {
		kind = "put"
		if s.local != nil {
			// Refuse a body the disk cannot hold before writing any of it.
			err = s.local.fits(outputID, req.BodySize)
		}
		if err == nil {
			e, err = s.backend.Put(ctx, actionID, outputID, req.BodySize, vr)
		}
		if errors.Is(err, errNotRecorded) && e.DiskPath != "" {
			// The body is in place, only not recorded: the go command
			// can use it as it is.
			notCached, err = err, nil
		} else if err != nil && vr.n == 0 && !errors.Is(err, errVerify) {
			// The cache could not keep the body and has read none of
			// it: the go command still needs it in a file.
			notCached = err
			if e, err = s.scratch.put(outputID, req.BodySize, vr); err != nil && !errors.Is(err, errVerify) {
				err = fmt.Errorf("%v; %w", notCached, err)
			}
		}
	}
	// Whatever the backend read, drain and verify the rest so the stream
	// stays in step and a bad body is always reported.
	_, verr := copyBuffered(io.Discard, vr)
	if br != nil {
		if ferr := br.finish(); ferr != nil {
			return ferr
		}
	}
	if isProtocolError(verr) {
		return verr
	}
	if verr != nil && (err == nil || kind == "put") {
		err = verr
	}
	d := s.now().Sub(start)
	s.stats.PutLatency.Observe(d)
	if err != nil {
		if errors.Is(err, errVerify) || errors.Is(err, errBadBody) {
			kind = "verify"
		} else if kind == "put" {
			s.warn.once("put", "cache put failed", err)
		}
		s.stats.AddError(kind)
		s.debugRequest(req, "error", d, err)
		s.replyErr(req, err.Error())
		return nil
	}
	if notCached != nil {
		s.stats.AddError(kind)
		what := "cache put failed; the go command gets the body from a scratch file, uncached"
		if errors.Is(notCached, errNotRecorded) {
			what = "cache put not recorded; the go command gets the body as stored, uncached"
		}
		s.warn.once("put", what, notCached)
		s.debugRequest(req, "not cached", d, notCached)
		s.reply(&Response{ID: req.ID, DiskPath: e.DiskPath})
		return nil
	}
	s.stats.BytesStored.Add(req.BodySize)
	if s.observer != nil {
		s.observer.Stored(actionID)
	}
	s.debugRequest(req, "stored", d, nil)
	s.reply(&Response{ID: req.ID, DiskPath: e.DiskPath})
	return nil
}

func (s *Server) replyErr(req *Request, msg string) {
	s.reply(&Response{ID: req.ID, Err: fmt.Sprintf("gobuildcache: %s %d: %s", req.Command, req.ID, msg)})
}

// reply writes one response line with one write.
func (s *Server) reply(res *Response) error {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	s.outBuf = appendResponse(s.outBuf[:0], res)
	_, err := s.out.Write(s.outBuf)
	return err
}

func (s *Server) debugRequest(req *Request, outcome string, d time.Duration, err error) {
	if !s.debug {
		return
	}
	attrs := []any{"id", req.ID, "cmd", string(req.Command), "key", keyPrefix(req.ActionID), "outcome", outcome, "dur", d}
	if req.Command == CmdPut {
		attrs = append(attrs, "size", req.BodySize)
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		attrs = append(attrs, "err", err)
	}
	s.log.Debug("request", attrs...)
}

func keyPrefix(id []byte) string {
	if len(id) > 6 {
		id = id[:6]
	}
	return hex.EncodeToString(id)
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
