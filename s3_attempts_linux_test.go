package main

import (
	"fmt"
	"net"
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
