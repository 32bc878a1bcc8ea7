package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
)

// TestS3CABundle: an endpoint whose certificate a private CA signed (an
// on-premises MinIO or Ceph) works when AWS_CA_BUNDLE names the CA, as the
// AWS SDK documents; without it, the first request fails as kind tls, is
// not retried, and check fails in one line naming AWS_CA_BUNDLE. A TLS
// proxy in front of MinIO plays the endpoint.
func TestS3CABundle(t *testing.T) {
	tg := s3TargetForTest(t)
	if tg.AccessKey == "" {
		t.Skip("on MinIO only: the proxy plays a private CA's endpoint")
	}
	endpoint, caFile, conns := newS3TLSProxy(t, tg.Endpoint)
	tg.Endpoint = endpoint
	ctx := context.Background()
	open := func() *S3Backend {
		b, err := NewS3Backend(ctx, tg.options(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	check := func() (string, string, error) {
		cmd := exec.Command(gobuildcacheBinary(t), append([]string{"check"}, tg.args()...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String(), stderr.String(), err
	}

	t.Setenv("AWS_CA_BUNDLE", caFile)
	b := open()
	putString(t, b, "a", "body of a")
	if e, err := b.Get(ctx, actionID("a")); err != nil || e.OutputID != outputID("body of a") {
		t.Fatalf("get over TLS with AWS_CA_BUNDLE: %+v, %v", e, err)
	}
	if stdout, stderr, err := check(); err != nil || !strings.Contains(stdout, "remote cache OK") ||
		!strings.Contains(stdout, "\ntrust:       the CAs in "+caFile+" (AWS_CA_BUNDLE), instead of the system's\n") {
		t.Errorf("check with AWS_CA_BUNDLE: want it OK, naming the bundle: %v\n%s%s", err, stdout, stderr)
	}

	t.Setenv("AWS_CA_BUNDLE", "")
	untrusting := open()
	before := conns.Load()
	if _, err := untrusting.Get(ctx, actionID("a")); errKind(err) != KindTLS {
		t.Errorf("get from an endpoint this machine does not trust: %v (kind %v), want kind tls", err, errKind(err))
	}
	if n := conns.Load() - before; n != 1 {
		t.Errorf("an untrusted certificate cost %d connections, want 1: no retry can fix it", n)
	}
	if _, stderr, err := check(); err == nil || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "set AWS_CA_BUNDLE") {
		t.Errorf("check of an endpoint this machine does not trust: %v, want one line naming AWS_CA_BUNDLE: %q", err, stderr)
	}
}
