package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// slowFirstServer answers GetObject with body, after first (for the first
// request only) and bodyDelay (between the headers and the body, always).
func slowFirstServer(t *testing.T, first, bodyDelay time.Duration, body string) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			select {
			case <-time.After(first):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		time.Sleep(bodyDelay)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func testClient(t *testing.T, endpoint string) *s3.Client {
	t.Helper()
	c, err := newS3Client(t.Context(), S3Options{Bucket: "b", Endpoint: endpoint, PathStyle: true, Region: "us-east-1", Timeout: 10 * time.Second, Credentials: shimBaseCreds})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAttemptTimeoutRetried: a GET whose answer is slower than the bound
// is retried, and the retry's answer taken, well before the request's
// deadline; a slow body after a prompt answer is not cut.
func TestAttemptTimeoutRetried(t *testing.T) {
	srv, n := slowFirstServer(t, 5*time.Second, 0, "hello")
	c := testClient(t, srv.URL)
	start := time.Now()
	out, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("k")})
	if err != nil {
		t.Fatalf("GetObject with a stalled first attempt: %v", err)
	}
	body, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if d := time.Since(start); string(body) != "hello" || n.Load() != 2 || d > 3*time.Second {
		t.Errorf("got %q after %v and %d attempts; want the second attempt's answer after about %v", body, d, n.Load(), attemptStart)
	}

	srv, _ = slowFirstServer(t, 0, attemptStart+500*time.Millisecond, "slow body")
	c = testClient(t, srv.URL)
	out, err = c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("k")})
	if err != nil {
		t.Fatal(err)
	}
	body, err = io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil || string(body) != "slow body" {
		t.Errorf("a body slower than the attempt bound: %q, %v", body, err)
	}
}

// TestAttemptSpeculativeWaits: a speculative read (the prefetch's) waits
// up to the ceiling for its first byte instead of being retried at the
// adaptive bound: a retry would only add load to a slow remote.
func TestAttemptSpeculativeWaits(t *testing.T) {
	srv, n := slowFirstServer(t, attemptStart+500*time.Millisecond, 0, "hello")
	c := testClient(t, srv.URL)
	out, err := c.GetObject(withSpeculative(t.Context()), &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("k")})
	if err != nil {
		t.Fatalf("speculative GetObject: %v", err)
	}
	body, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if string(body) != "hello" || n.Load() != 1 {
		t.Errorf("got %q after %d attempts; want the first attempt's answer, waited for", body, n.Load())
	}
}

// TestAttemptLimitAdapts: the bound for reads follows the remote's
// latency tail, within its floor and ceiling.
func TestAttemptLimitAdapts(t *testing.T) {
	a := newAttemptLimiter(nil)
	if a.readLimit() != attemptStart {
		t.Fatalf("initial bound %v", a.readLimit())
	}
	for range 100 {
		a.observe(2*time.Millisecond, false)
	}
	if a.readLimit() != attemptFloor {
		t.Errorf("after fast reads: %v, want the floor %v", a.readLimit(), attemptFloor)
	}
	for range 300 {
		a.observe(150*time.Millisecond, false)
	}
	if got := a.readLimit(); got != 600*time.Millisecond {
		t.Errorf("after 150ms reads: %v, want 4 x p99 = 600ms", got)
	}
	for range 300 {
		a.observe(3*time.Second, false)
	}
	if a.readLimit() != attemptCeiling {
		t.Errorf("after slow reads: %v, want the ceiling %v", a.readLimit(), attemptCeiling)
	}
}

// TestAttemptTimeoutCallerFirst: when the caller's own deadline ends first,
// that is the error, not an attempt timeout.
func TestAttemptTimeoutCallerFirst(t *testing.T) {
	srv, _ := slowFirstServer(t, 5*time.Second, 0, "x")
	c := testClient(t, srv.URL)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("k")})
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("GetObject past the caller's deadline: %v", err)
	}
}

// TestAttemptTimeoutOnce: a remote that does not answer costs two attempt
// bounds, not three.
func TestAttemptTimeoutOnce(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(srv.Close)
	c := testClient(t, srv.URL)
	start := time.Now()
	_, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("k")})
	d := time.Since(start)
	var te *firstByteTimeoutError
	if !errors.As(err, &te) || d < 2*attemptStart || d > 2*attemptStart+time.Second {
		t.Errorf("GetObject from a black hole: %v after %v; want a timeout after two attempts of %v", err, d, attemptStart)
	}
	if kind := classifyS3Error(err, false).String(); kind != "timeout" {
		t.Errorf("classified %q", kind)
	}
}

// TestAttemptTLSStallOnce: an endpoint that takes the connection and
// never answers the TLS handshake costs two handshake bounds, not three:
// a connection that does not come in time is a timed-out attempt,
// retried once.
func TestAttemptTLSStallOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() }) // held open, never answered
		}
	}()
	c := testClient(t, "https://"+ln.Addr().String())
	start := time.Now()
	_, err = c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("k")})
	d := time.Since(start)
	if kind := classifyS3Error(err, false); kind != KindTimeout || d > 2*attemptCeiling+time.Second {
		t.Errorf("GetObject from an endpoint that never shakes hands: %v (kind %v) after %v; want a timeout after two handshakes of %v", err, kind, d, attemptCeiling)
	}
}

// TestGetBodyStall: a get whose body stops coming fails as a timeout within
// seconds, not at the end of the request's deadline.
func TestGetBodyStall(t *testing.T) {
	body := strings.Repeat("x", 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Length", fmt.Sprint(len(body)))
		h.Set("x-amz-meta-"+metaOutputID, fmt.Sprintf("%x", outputID(body)))
		h.Set("x-amz-meta-"+metaSize, fmt.Sprint(len(body)))
		h.Set("x-amz-meta-"+metaTime, "1")
		h.Set("x-amz-meta-"+metaEncoding, "identity")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, body[:100])
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
	}))
	t.Cleanup(srv.Close)
	b, err := NewS3Backend(t.Context(), S3Options{Bucket: "b", Endpoint: srv.URL, PathStyle: true, Region: "us-east-1",
		Timeout: 30 * time.Second, TempDir: t.TempDir(), Credentials: shimBaseCreds})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = b.Get(t.Context(), ActionID(actionID("stall")))
	if d := time.Since(start); errKind(err) != KindTimeout || d > attemptCeiling+2*time.Second {
		t.Errorf("Get of a stalled body: %v (kind %v) after %v; want a timeout after about %v", err, errKind(err), d, attemptCeiling)
	}
}

// TestS3PutTooLarge: a body larger than one PutObject takes is refused
// before anything is sent, as KindTooLarge.
func TestS3PutTooLarge(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	t.Cleanup(srv.Close)
	b, err := NewS3Backend(t.Context(), S3Options{Bucket: "b", Endpoint: srv.URL, PathStyle: true, Region: "us-east-1",
		Timeout: 5 * time.Second, TempDir: t.TempDir(), Credentials: shimBaseCreds})
	if err != nil {
		t.Fatal(err)
	}
	b.maxPut = 10
	body := "more than ten bytes"
	_, err = b.Put(t.Context(), actionID("big"), outputID(body), int64(len(body)), strings.NewReader(body))
	if errKind(err) != KindTooLarge || requests.Load() != 0 {
		t.Errorf("Put over the limit: %v (kind %v), %d requests sent", err, errKind(err), requests.Load())
	}
}

// TestS3NotAnS3Server: an endpoint that answers 404 to everything (the
// wrong port, a proxy's error page) makes gets misses, but a put's or a
// listing's 404 is no miss: it turns the remote off, as a missing bucket does, with one
// warning, rather than failing every upload in silence while the breaker
// took each 404 for an answer. (A real S3 server answers a put to a
// missing bucket NoSuchBucket; only a fake answers a bare 404.)
func TestS3NotAnS3Server(t *testing.T) {
	var puts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			puts.Add(1)
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	b, err := NewS3Backend(t.Context(), S3Options{Bucket: "b", Endpoint: srv.URL, PathStyle: true, Region: "us-east-1",
		Timeout: 5 * time.Second, TempDir: t.TempDir(), Credentials: shimBaseCreds})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ListManifests(t.Context(), "scope", 4); errKind(err) != KindNoBucket {
		t.Errorf("a listing: %v (kind %v), want no_bucket", err, errKind(err))
	}
	stats := new(Stats)
	var logged strings.Builder
	breaker := newBreakerBackend(b, stats, newWarnings(slog.New(slog.NewTextHandler(&logged, nil))), "")
	if _, err := breaker.Get(t.Context(), actionID("k")); !errors.Is(err, ErrNotFound) {
		t.Errorf("get: %v, want a miss", err)
	}
	for i := range 5 {
		body := fmt.Sprint("body ", i)
		if _, err := breaker.Put(t.Context(), actionID(body), outputID(body), int64(len(body)), strings.NewReader(body)); err == nil {
			t.Errorf("put %d: no error", i)
		}
	}
	if n := puts.Load(); n != 1 {
		t.Errorf("%d puts reached the endpoint, want 1 (then the breaker is open)", n)
	}
	if got := stats.Snapshot().RemoteErrorsByKind["no_bucket"]; got != 1 || stats.BreakerOpenings.Load() != 1 {
		t.Errorf("no_bucket errors %d, breaker openings %d; want 1 and 1", got, stats.BreakerOpenings.Load())
	}
	if !strings.Contains(logged.String(), "remote cache disabled") {
		t.Errorf("no warning logged: %q", logged.String())
	}
}
