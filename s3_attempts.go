package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// attemptLimiter is the S3 client's HTTP client: it bounds how long one
// attempt of a request waits for the first byte of the answer, counted from
// when the request has been written, and fails a slower attempt with a
// timeout that the SDK's retryer retries on a new connection. This is
// AWS's guidance for latency-sensitive use of S3: a request slower than
// the remote's usual tail is better retried than waited for.
//
// For reads (GET, HEAD) the bound follows the remote: four times the 99th
// percentile of the last readSamples first-byte latencies, within
// [attemptFloor, attemptCeiling]; attemptStart until enough reads have been
// seen. Speculative reads (the prefetch's, see withSpeculative) wait
// attemptCeiling: no build waits on them alone, and retrying them early
// would add load just when the remote is slow. So do the circuit breaker's
// probes (withProbe), and a probe's answer raises the bound to four times
// its latency at once: the bound grows only by answers that come within
// it, so a remote that slowed down past it (a busy server, 400 ms where it
// answered in 10) would time out every get and every probe, and stay off
// for the rest of the run though it answers. Writes wait attemptCeiling
// plus a second per writeRate bytes, since the service answers a write
// only once it holds the whole body; and where the system tells what of a
// request the other end has not taken in yet (Linux: unsentBytes), a
// write's wait starts when its body has left this machine, not when its
// last byte went into the socket's buffer, which over a thin uplink may
// take seconds more to go out (see drainState).
type attemptLimiter struct {
	next aws.HTTPClient

	mu      sync.Mutex
	samples []time.Duration // ring of recent read latencies
	pos     int             // where the next sample goes
	seen    int
	limit   time.Duration // for reads, recomputed every limitEvery samples
}

var _ aws.HTTPClient = (*attemptLimiter)(nil)

const (
	attemptStart   = time.Second            // for reads, before the remote's latency is known
	attemptFloor   = 250 * time.Millisecond // never less: a busy machine's scheduling hiccup is not an outage
	attemptCeiling = 2 * time.Second        // AWS: "retry a GET or PUT after 2 seconds"
	readSamples    = 256
	minSamples     = 20
	limitEvery     = 16
	writeRate      = 16 << 20 // bytes a second a write is allowed at least, on top of the ceiling
)

func newAttemptLimiter(next aws.HTTPClient) *attemptLimiter {
	return &attemptLimiter{next: next, samples: make([]time.Duration, 0, readSamples), limit: attemptStart}
}

// firstByteTimeoutError is an attempt that got no answer within its bound.
// The first is retried (retryOnce); a retry's is final.
type firstByteTimeoutError struct {
	limit time.Duration
	final bool
}

func (e *firstByteTimeoutError) Error() string {
	return fmt.Sprintf("no answer %v after the request was sent", e.limit)
}
func (e *firstByteTimeoutError) Timeout() bool   { return true }
func (e *firstByteTimeoutError) Temporary() bool { return true }

// connectTimeoutError is an attempt that got no connection in time: no
// answer to its dial or its TLS handshake. Like a first-byte timeout, the
// first is retried (retryOnce); a retry's is final.
type connectTimeoutError struct {
	err   error
	final bool
}

func (e *connectTimeoutError) Error() string   { return e.err.Error() }
func (e *connectTimeoutError) Unwrap() error   { return e.err }
func (e *connectTimeoutError) Timeout() bool   { return true }
func (e *connectTimeoutError) Temporary() bool { return true }

// Do implements aws.HTTPClient.
func (a *attemptLimiter) Do(req *http.Request) (*http.Response, error) {
	read := req.Method == http.MethodGet || req.Method == http.MethodHead
	limit := a.readLimit()
	probe := read && isProbe(req.Context())
	if read && (isSpeculative(req.Context()) || probe) {
		limit = attemptCeiling
	}
	if !read {
		limit = attemptCeiling + time.Duration(max(req.ContentLength, 0)/writeRate)*time.Second
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	// The SDK numbers its attempts in this header ("attempt=2; max=3").
	retry := !strings.HasPrefix(req.Header.Get("Amz-Sdk-Request"), "attempt=1;")
	timedOut := &firstByteTimeoutError{limit: limit, final: retry}
	sent := sendProgressOf(req.Context()) // a write's, if its caller follows it
	var (
		mu      sync.Mutex
		timer   *time.Timer
		written time.Time
		conn    net.Conn // a write's, for drain
		drain   drainState
		done    bool // the attempt is over: a write's expire does nothing
		expired bool // a write's expire cancelled it
	)
	expire := func() { cancel(timedOut) }
	if !read {
		// A write's body may still be on its way when the transport has
		// written it (into a send buffer of megabytes, over a thin
		// uplink): its answer is not due while that goes down.
		expire = func() {
			mu.Lock()
			defer mu.Unlock()
			if done {
				return
			}
			if wait := drain.next(conn, limit, sent); wait > 0 {
				timer.Reset(wait)
				return
			}
			expired = true
			cancel(timedOut)
		}
	}
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			mu.Lock()
			defer mu.Unlock()
			conn = info.Conn
		},
		// Called again if the transport resends the request on another
		// connection: the wait starts over.
		WroteRequest: func(httptrace.WroteRequestInfo) {
			mu.Lock()
			defer mu.Unlock()
			written = time.Now()
			wait := limit
			if !read && drain.start(conn, written, sent) {
				wait = drainPoll
			}
			if timer == nil {
				timer = time.AfterFunc(wait, expire)
			} else {
				timer.Reset(wait)
			}
		},
	}
	resp, err := a.next.Do(req.WithContext(httptrace.WithClientTrace(ctx, trace)))
	mu.Lock()
	done = true
	stopped := timer == nil || timer.Stop() || !read && !expired
	start := written
	mu.Unlock()
	if !stopped || errors.Is(context.Cause(ctx), timedOut) {
		if err == nil {
			resp.Body.Close()
		}
		cancel(nil)
		if req.Context().Err() != nil {
			return nil, req.Context().Err() // the caller gave up first
		}
		return nil, timedOut
	}
	if err != nil {
		cancel(nil)
		var ne net.Error
		if start.IsZero() && req.Context().Err() == nil && errors.As(err, &ne) && ne.Timeout() {
			// No connection in time (a black hole drops the SYN) or no
			// TLS handshake: an attempt without an answer all the same.
			return nil, &connectTimeoutError{err: err, final: retry}
		}
		return nil, err
	}
	if read && !start.IsZero() {
		a.observe(time.Since(start), probe)
	}
	// The attempt's context lives as long as its body is being read.
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}

// drainPoll is how often a write whose body is still on its way looks
// at what is left of it.
const drainPoll = 100 * time.Millisecond

// drainState follows the bytes of a write that the socket has not sent
// yet (unsentBytes), from when the transport has written the whole
// request: the answer is due limit after they are all gone, and a body
// whose unsent bytes do not go down for limit has stalled.
type drainState struct {
	written  time.Time // when the transport wrote the request
	drained  time.Time // when the socket was first seen to have sent it all
	unsent   int       // at the last look
	progress time.Time // when unsent last went down
}

// start is called when the transport has written the request to conn; it
// reports whether the system tells what is unsent (else the answer is due
// limit after now).
func (d *drainState) start(conn net.Conn, now time.Time, sent *sendProgress) bool {
	*d = drainState{written: now, progress: now}
	if conn == nil {
		return false
	}
	n, ok := unsentBytes(conn)
	if ok {
		d.unsent = n
		sent.setUnsent(n)
	}
	return ok
}

// next is called when a write's timer fires: how long to wait further, 0
// for not at all.
func (d *drainState) next(conn net.Conn, limit time.Duration, sent *sendProgress) time.Duration {
	now := time.Now()
	n, ok := 0, false
	if conn != nil && d.drained.IsZero() {
		n, ok = unsentBytes(conn)
	}
	switch {
	case !ok:
		// Sent, or not known: the answer is due limit after the body
		// left, or after the request was written where that is not known.
		from := d.drained
		if from.IsZero() {
			from = d.written
		}
		return max(from.Add(limit).Sub(now), 0)
	case n == 0:
		d.drained = now
		sent.setUnsent(0)
		return limit
	}
	if n < d.unsent {
		d.unsent, d.progress = n, now
		sent.progressed(now)
	}
	sent.setUnsent(n)
	if now.Sub(d.progress) >= limit {
		return 0 // stalled: the other end takes nothing in
	}
	return drainPoll
}

// sendProgress is how far a write's body has gone out: its reads by the
// transport (S3Backend.putObject wraps the body in it) and the bytes its
// socket has yet to send (the attemptLimiter, where the system tells). It
// tells a write whose deadline passed while its body was still going out
// (a slow uplink: the remote takes it in) from one the remote does not
// answer.
type sendProgress struct {
	r      io.ReaderAt
	size   int64
	at     atomic.Int64 // the end of the last read: reads go in order, from 0 again for each pass
	unsent atomic.Int64 // written to the socket and not yet sent, at the last look
	last   atomic.Int64 // when the body was last read, or unsent last went down, in Unix ns
}

func (s *sendProgress) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.r.ReadAt(p, off)
	s.at.Store(off + int64(n))
	s.progressed(time.Now())
	return n, err
}

func (s *sendProgress) progressed(now time.Time) {
	if s != nil {
		s.last.Store(now.UnixNano())
	}
}

func (s *sendProgress) setUnsent(n int) {
	if s != nil {
		s.unsent.Store(int64(n))
	}
}

// sending reports whether the body was still going out at now: not all of
// it read or sent, and some of it last within attemptCeiling (the stall
// that fails a get's body). A body sent whole, or stalled, is not.
func (s *sendProgress) sending(now time.Time) bool {
	return (s.at.Load() < s.size || s.unsent.Load() > 0) && now.Sub(time.Unix(0, s.last.Load())) < attemptCeiling
}

type sendProgressKey struct{}

// withSendProgress has ctx's writes fill in s.
func withSendProgress(ctx context.Context, s *sendProgress) context.Context {
	return context.WithValue(ctx, sendProgressKey{}, s)
}

func sendProgressOf(ctx context.Context) *sendProgress {
	s, _ := ctx.Value(sendProgressKey{}).(*sendProgress)
	return s
}

// retryOnce is a retry.IsErrorRetryable: an attempt that timed out, for
// its answer or for its connection, is retried once, not as often as other
// failures, so that a remote that has stopped answering (or a black hole
// that drops every packet) costs two bounds, not three; a TLS failure no
// retry can fix (an untrusted certificate) is not retried.
func retryOnce(err error) aws.Ternary {
	var t *firstByteTimeoutError
	var c *connectTimeoutError
	if errors.As(err, &t) && t.final || errors.As(err, &c) && c.final || tlsRefused(err) {
		return aws.FalseTernary
	}
	return aws.UnknownTernary
}

// readLimit is the current bound for a read attempt.
func (a *attemptLimiter) readLimit() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.limit
}

// observe records a read's first-byte latency; a probe's (probe) raises
// the bound to fit it.
func (a *attemptLimiter) observe(d time.Duration, probe bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.samples) < readSamples {
		a.samples = append(a.samples, d)
	} else {
		a.samples[a.pos] = d
		a.pos = (a.pos + 1) % readSamples
	}
	a.seen++
	if len(a.samples) >= minSamples && a.seen%limitEvery == 0 || len(a.samples) == minSamples {
		s := slices.Clone(a.samples)
		slices.Sort(s)
		p99 := s[(len(s)*99)/100]
		a.limit = min(max(4*p99, attemptFloor), attemptCeiling)
	}
	if probe {
		a.limit = max(a.limit, min(4*d, attemptCeiling))
	}
}

// cancelOnClose ends an attempt's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
