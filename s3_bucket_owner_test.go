package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// TestS3ExpectedBucketOwner: with -s3-expected-bucket-owner every request
// names the owner, and a bucket of another account (a name someone else
// took) is never read or written: its gets are misses, its puts refused
// writes, its listings empty, and check fails on it in one line naming the
// setting. MinIO ignores the header, so a proxy in front of it answers as
// S3 does: 403 AccessDenied to a request whose expected owner is not the
// bucket's.
func TestS3ExpectedBucketOwner(t *testing.T) {
	tg := s3TargetForTest(t)
	if tg.AccessKey == "" {
		t.Skip("on MinIO only: the proxy plays the bucket's owner")
	}
	const owner, other = "111122223333", "999988887777"
	var named, unnamed atomic.Int64
	tg.Endpoint = newS3RuleProxy(t, tg.Endpoint, func(r *http.Request) *s3Refusal {
		switch r.Header.Get("X-Amz-Expected-Bucket-Owner") {
		case "":
			unnamed.Add(1)
			return nil
		case owner:
			named.Add(1)
			return nil
		}
		return &s3Refusal{http.StatusForbidden, "AccessDenied", "Access Denied"}
	})
	ctx := context.Background()
	open := func(owner string) *S3Backend {
		o := tg.options(t.TempDir())
		o.BucketOwner = owner
		b, err := NewS3Backend(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	b := open(owner)
	putString(t, b, "a", "body of a")
	if e, err := b.Get(ctx, actionID("a")); err != nil || e.OutputID != outputID("body of a") {
		t.Fatalf("get from the owner's bucket: %+v, %v", e, err)
	}
	if err := b.PutManifest(ctx, "job", newManifestID(b.now(), ""), []byte("manifest")); err != nil {
		t.Fatal(err)
	}
	if infos, err := b.ListManifests(ctx, "job", 8); err != nil || len(infos) != 1 {
		t.Fatalf("manifests in the owner's bucket: %v, %v", infos, err)
	}
	if n := unnamed.Load(); n != 0 || named.Load() == 0 {
		t.Fatalf("%d requests named no owner (%d named it)", n, named.Load())
	}

	before := listKeys(t, rawClient(t, tg), tg.Bucket, tg.Prefix)
	wrong := open(other)
	if _, err := wrong.Get(ctx, actionID("a")); errKind(err) != KindDenied || !errors.Is(err, ErrNotFound) {
		t.Errorf("get from another account's bucket: %v (kind %v), want a denied read (a miss)", err, errKind(err))
	}
	if _, err := wrong.Put(ctx, actionID("b"), outputID("b"), 1, strings.NewReader("b")); errKind(err) != KindWriteRefused {
		t.Errorf("put to another account's bucket: %v (kind %v), want a refused write", err, errKind(err))
	}
	if infos, err := wrong.ListManifests(ctx, "job", 8); err != nil || len(infos) != 0 {
		t.Errorf("manifests of another account's bucket: %v, %v; want none", infos, err)
	}
	if after := listKeys(t, rawClient(t, tg), tg.Bucket, tg.Prefix); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("another account's bucket changed: %v -> %v", before, after)
	}

	cmd := exec.Command(gobuildcacheBinary(t), append([]string{"check", "-s3-expected-bucket-owner=" + other}, tg.args()...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err == nil || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), "-s3-expected-bucket-owner") {
		t.Errorf("check of another account's bucket: %v, want one line naming -s3-expected-bucket-owner: %q", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "owner:       every request asks that the bucket be account "+other+"'s") {
		t.Errorf("check does not say which owner it asks for:\n%s", stdout.String())
	}
}
