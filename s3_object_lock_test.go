package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// objectLockRule asks what AWS S3 (and Backblaze B2) ask of a bucket with
// Object Lock default retention, and MinIO does not (minio#16480): a
// PutObject with neither a Content-MD5 nor an x-amz-checksum- header is
// refused with AWS's 400 InvalidRequest. It counts the puts it refused and
// those it passed with a Content-MD5.
type objectLockRule struct {
	url             string
	refused, hashed atomic.Int64
}

func newObjectLockRule(t *testing.T, endpoint string) *objectLockRule {
	rule := &objectLockRule{}
	rule.url = newS3RuleProxy(t, endpoint, func(r *http.Request) *s3Refusal {
		if r.Method != http.MethodPut || r.URL.Query().Get("x-id") != "PutObject" { // the SDK names its operation
			return nil
		}
		for k := range r.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-amz-checksum-") {
				return nil
			}
		}
		if r.Header.Get("Content-MD5") != "" {
			rule.hashed.Add(1)
			return nil
		}
		rule.refused.Add(1)
		return &s3Refusal{http.StatusBadRequest, "InvalidRequest", "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters"}
	})
	return rule
}

// TestS3ObjectLockBucket: a bucket with Object Lock default retention (on
// MinIO, which keeps the objects locked, behind objectLockRule) refuses
// the first put, which is sent again with a Content-MD5, as is every put
// after it; entries, manifests and packs are stored locked and read back;
// check passes and clear empties the prefix (delete markers: nothing
// locked is removed).
func TestS3ObjectLockBucket(t *testing.T) {
	tg := s3TargetForTest(t)
	if tg.AccessKey == "" {
		t.Skip("a locked bucket is made on MinIO only")
	}
	ctx := context.Background()
	tg.Bucket = "gbc-locked-" + randomHex(4)
	root := rawClient(t, tg)
	if _, err := root.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &tg.Bucket, ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.PutObjectLockConfiguration(ctx, &s3.PutObjectLockConfigurationInput{
		Bucket: &tg.Bucket,
		ObjectLockConfiguration: &types.ObjectLockConfiguration{
			ObjectLockEnabled: types.ObjectLockEnabledEnabled,
			Rule:              &types.ObjectLockRule{DefaultRetention: &types.DefaultRetention{Mode: types.ObjectLockRetentionModeGovernance, Days: aws.Int32(1)}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	rule := newObjectLockRule(t, tg.Endpoint)
	tg.Endpoint = rule.url

	b := newTestS3(t, tg)
	body := strings.Repeat("locked for a day ", 1000)
	for _, k := range []string{"a", "b"} {
		e, err := b.Put(ctx, actionID(k), outputID(body+k), int64(len(body)+1), strings.NewReader(body+k))
		if err != nil {
			t.Fatalf("put %s: %v (kind %v)", k, err, errKind(err))
		}
		if e.Size != int64(len(body)+1) {
			t.Fatalf("put %s: %+v", k, e)
		}
	}
	id := newManifestID(b.now(), "")
	if err := b.PutManifest(ctx, "job", id, []byte("manifest")); err != nil {
		t.Fatal(err)
	}
	if err := b.PutPack(ctx, "job", id, 0, []byte("pack")); err != nil {
		t.Fatal(err)
	}
	if r, h := rule.refused.Load(), rule.hashed.Load(); r != 1 || h != 4 {
		t.Fatalf("puts refused %d, sent with a Content-MD5 %d; want 1 (the first) and 4 (every one)", r, h)
	}
	for _, k := range listKeys(t, root, tg.Bucket, tg.Prefix) {
		h, err := root.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &tg.Bucket, Key: aws.String(k)})
		if err != nil {
			t.Fatal(err)
		}
		if h.ObjectLockMode != types.ObjectLockModeGovernance {
			t.Errorf("%s: lock mode %q, want GOVERNANCE (the bucket's default retention)", k, h.ObjectLockMode)
		}
	}
	e, err := b.Get(ctx, actionID("b"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(e.DiskPath)
	os.Remove(e.DiskPath)
	if string(got) != body+"b" {
		t.Fatalf("read back %d bytes, want %d", len(got), len(body)+1)
	}

	bin := gobuildcacheBinary(t)
	if out, err := exec.Command(bin, append([]string{"check"}, tg.args()...)...).CombinedOutput(); err != nil || !strings.Contains(string(out), "remote cache OK") {
		t.Errorf("check of a locked bucket: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, append([]string{"clear", "-cache-dir=" + t.TempDir()}, tg.args()...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "4 objects") {
		t.Fatalf("clear of a locked bucket: %v\n%s", err, out)
	}
	if keys := listKeys(t, root, tg.Bucket, tg.Prefix); len(keys) != 0 {
		t.Errorf("left after clear: %v", keys)
	}
}
