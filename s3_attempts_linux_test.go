package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestAttemptBlackHoleOnce: an endpoint that drops every packet (here a
// listener whose accept queue is full: Linux drops the SYNs) costs two
// connection bounds, not three: "a black-holed endpoint costs about two
// seconds (two attempts of 1 s) before a request fails".
func TestAttemptBlackHoleOnce(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for full := false; !full; { // fill the accept queue, never accepted
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			full = true
			continue
		}
		t.Cleanup(func() { c.Close() })
	}
	c := testClient(t, "http://"+addr)
	start := time.Now()
	_, err = c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("k")})
	d := time.Since(start)
	if kind := classifyS3Error(err, false); kind != KindTimeout || d > 2*time.Second+700*time.Millisecond {
		t.Errorf("GetObject from a black hole: %v (kind %v) after %v; want a timeout after two connection attempts of 1 s", err, kind, d)
	}
}

// TestAttemptWriteWaitsForItsBody: a write's answer is waited for from
// when its body has left this machine, not from when the last byte went
// into the socket's buffer. Over a thin uplink (here a server taking 1.5
// MiB in at 512 KiB/s, which a loopback send buffer holds at once), the
// body is still going out when the first-byte bound passes: before, the
// attempt timed out, its whole body was sent again, and that timed out too,
// a timeout that the breaker counts as the remote down. And a deadline
// that passes while the socket still sends the body is a slow upload, as
// one that passes while the body is still being read.
func TestAttemptWriteWaitsForItsBody(t *testing.T) {
	var puts atomic.Int64
	quit := make(chan struct{}) // what a cancelled put's socket still sends is not waited for
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		puts.Add(1)
		buf := make([]byte, 32<<10) // every 62.5 ms: 512 KiB/s
		for {
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				break
			}
			select {
			case <-time.After(62500 * time.Microsecond):
			case <-r.Context().Done():
				return
			case <-quit:
				return
			}
		}
		w.WriteHeader(http.StatusOK)
	}))
	srv.Listener = smallReadBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(quit) })
	b, err := NewS3Backend(t.Context(), S3Options{Bucket: "b", Endpoint: srv.URL, PathStyle: true, Region: "us-east-1",
		Timeout: 10 * time.Second, TempDir: t.TempDir(), Credentials: shimBaseCreds})
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("u", 3<<19)
	start := time.Now()
	_, err = b.Put(t.Context(), actionID(body), outputID(body), int64(len(body)), strings.NewReader(body))
	if err != nil || puts.Load() != 1 {
		t.Errorf("put of a body going out for 3 s: %v (kind %v) after %v, %d attempts; want it stored by one", err, errKind(err), time.Since(start), puts.Load())
	}

	// Its deadline passing while the socket still sends it: a slow
	// uplink, not a timeout of the remote (which the breaker counts).
	b, err = NewS3Backend(t.Context(), S3Options{Bucket: "b", Endpoint: srv.URL, PathStyle: true, Region: "us-east-1",
		Timeout: time.Second, TempDir: t.TempDir(), Credentials: shimBaseCreds})
	if err != nil {
		t.Fatal(err)
	}
	body = strings.Repeat("v", 3<<19)
	if _, err := b.Put(t.Context(), actionID(body), outputID(body), int64(len(body)), strings.NewReader(body)); errKind(err) != KindSlowUpload {
		t.Errorf("put whose deadline passed as the socket sent its body: %v (kind %v), want slow_upload", err, errKind(err))
	}
}
