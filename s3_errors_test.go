package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/aws/smithy-go"
)

func TestClassifyS3Error(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	denied := &smithy.GenericAPIError{Code: "AccessDenied", Message: "denied"}
	for _, c := range []struct {
		err   error
		write bool
		want  ErrKind
	}{
		{refused, false, KindRefused},
		{fmt.Errorf("operation error S3: GetObject: %w", context.DeadlineExceeded), false, KindTimeout},
		{&net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, false, KindDNS},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), false, KindReset},
		{fmt.Errorf("request send failed: %w", io.EOF), false, KindReset},
		{errors.New("failed to retrieve credentials: no EC2 IMDS role found"), false, KindCredentials},
		{&smithy.GenericAPIError{Code: "SlowDown"}, false, KindThrottled},
		{&smithy.GenericAPIError{Code: "NoSuchBucket"}, false, KindNoBucket},
		{&smithy.GenericAPIError{Code: "PermanentRedirect"}, false, KindConfig},
		{&smithy.GenericAPIError{Code: "NoSuchKey"}, false, KindNotFound},
		{denied, false, KindAuth},
		{denied, true, KindWriteRefused},
		{context.Canceled, false, KindCanceled},
		{errors.New("something else"), false, KindOther},
	} {
		if got := classifyS3Error(c.err, c.write); got != c.want {
			t.Errorf("classify(%v, write %v) = %v, want %v", c.err, c.write, got, c.want)
		}
	}
	// What leaves the S3 layer carries its kind; a missing object is
	// ErrNotFound.
	if err := s3Error("put", "k", denied, true); errKind(err) != KindWriteRefused || KindWriteRefused.String() != "auth" {
		t.Errorf("s3Error of a denied put: kind %v", errKind(err))
	}
	if err := s3Error("get", "k", &smithy.GenericAPIError{Code: "NotFound"}, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("s3Error of a 404: %v, want ErrNotFound", err)
	}
}
