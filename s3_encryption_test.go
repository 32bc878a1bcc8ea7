package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// encryptionPolicy is a session policy that allows everything in bucket
// but a PutObject that does not ask for server-side encryption mode: the
// bucket policy security teams apply to "deny unencrypted uploads".
func encryptionPolicy(bucket string, mode types.ServerSideEncryption) string {
	return fmt.Sprintf(`{"Version":"2012-10-17","Statement":[
{"Effect":"Allow","Action":["s3:*"],"Resource":["arn:aws:s3:::%[1]s","arn:aws:s3:::%[1]s/*"]},
{"Effect":"Deny","Action":["s3:PutObject"],"Resource":["arn:aws:s3:::%[1]s/*"],"Condition":{"StringNotEquals":{"s3:x-amz-server-side-encryption":"%[2]s"}}}]}`, bucket, mode)
}

// TestS3ServerSideEncryption: with -s3-sse, every object gobuildcache
// writes (entries, manifests, packs) asks for that encryption, so that a
// bucket policy requiring it lets the cache write; reads need nothing. On
// MinIO with its static KMS key (scripts/minio.sh), under credentials whose
// policy denies a PutObject without the header.
func TestS3ServerSideEncryption(t *testing.T) {
	tg := s3TargetForTest(t)
	keyID := os.Getenv("MINIO_KMS_KEY_ID") // "" on AWS: the account's aws/s3 key
	if tg.AccessKey != "" && keyID == "" {
		msg := "this MinIO has no KMS key: start it with scripts/minio.sh"
		if os.Getenv("GOBUILDCACHE_REQUIRE_S3") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ctx := context.Background()
	t.Run("no such key", func(t *testing.T) {
		// A key that does not exist refuses the writes, and only them
		// (MinIO answers 404 kms:KeyNotFound, AWS 400
		// KMS.NotFoundException): not a missing bucket, which would turn
		// the whole remote off.
		o := tg.options(t.TempDir())
		o.Encryption = s3Encryption{Mode: types.ServerSideEncryptionAwsKms, KMSKeyID: "gobuildcache-no-such-key"}
		b, err := NewS3Backend(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Put(ctx, actionID("k"), outputID("k"), 1, strings.NewReader("k")); errKind(err) != KindWriteRefused {
			t.Errorf("put with a KMS key that does not exist: %v (kind %v), want a refused write", err, errKind(err))
		}
		out, err := exec.Command(gobuildcacheBinary(t), append([]string{"check", "-s3-sse=aws:kms", "-s3-sse-kms-key-id=gobuildcache-no-such-key"}, tg.args()...)...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "put probe:   refused") || !strings.Contains(string(out), "check -s3-sse-kms-key-id") {
			t.Errorf("check with a KMS key that does not exist: %v\n%s", err, out)
		}
	})
	t.Run("not supported", func(t *testing.T) {
		// An encryption the server will not store (MinIO has no DSSE)
		// stops the writes alone: not a failing remote, whose breaker
		// would skip its reads too.
		if tg.AccessKey == "" {
			t.Skip("AWS stores aws:kms:dsse")
		}
		o := tg.options(t.TempDir())
		o.Encryption = s3Encryption{Mode: types.ServerSideEncryptionAwsKmsDsse}
		b, err := NewS3Backend(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Put(ctx, actionID("d"), outputID("d"), 1, strings.NewReader("d")); errKind(err) != KindWriteRefused {
			t.Errorf("put with an encryption the server does not support: %v (kind %v), want a refused write", err, errKind(err))
		}
		cmd := exec.Command(gobuildcacheBinary(t), append([]string{"check", "-s3-sse=aws:kms:dsse"}, tg.args()...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err == nil || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), "will not store objects with -s3-sse=aws:kms:dsse") {
			t.Errorf("check with an encryption the server does not support: %v, want one line naming the setting: %q", err, stderr.String())
		}
	})
	for _, enc := range []s3Encryption{
		{Mode: types.ServerSideEncryptionAes256},
		{Mode: types.ServerSideEncryptionAwsKms, KMSKeyID: keyID},
	} {
		t.Run(string(enc.Mode), func(t *testing.T) {
			tg := tg
			tg.Prefix = "sse-" + randomHex(4) + "/"
			role := minioCredentials(t, tg, "sse", encryptionPolicy(tg.Bucket, enc.Mode))
			open := func(enc s3Encryption) *S3Backend {
				o := tg.options(t.TempDir())
				o.Credentials = credentials.StaticCredentialsProvider{Value: role.creds}
				o.Encryption = enc
				b, err := NewS3Backend(ctx, o)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}

			// Without the header the policy refuses the write: a refusal
			// (uploads off, reads go on), not a broken remote.
			plain := open(s3Encryption{})
			body := strings.Repeat("encrypted at rest ", 1000) // compressed on the way
			_, err := plain.Put(ctx, actionID("a"), outputID(body), int64(len(body)), strings.NewReader(body))
			if errKind(err) != KindWriteRefused {
				t.Fatalf("put without -s3-sse under a policy that requires it: %v (kind %v), want a refused write", err, errKind(err))
			}

			b := open(enc)
			putString(t, b, "a", body)
			putString(t, b, "b", "small")
			id := newManifestID(time.Now(), "")
			if err := b.PutManifest(ctx, "job", id, []byte("manifest")); err != nil {
				t.Fatalf("manifest: %v", err)
			}
			if err := b.PutPack(ctx, "job", id, 0, []byte("pack")); err != nil {
				t.Fatalf("pack: %v", err)
			}
			keys := listKeys(t, role.client(t), tg.Bucket, tg.Prefix)
			if len(keys) != 4 {
				t.Fatalf("want 2 entries, a manifest and a pack, got %v", keys)
			}
			for _, k := range keys {
				h, err := role.client(t).HeadObject(ctx, &s3.HeadObjectInput{Bucket: &tg.Bucket, Key: aws.String(k)})
				if err != nil {
					t.Fatal(err)
				}
				if h.ServerSideEncryption != enc.Mode || !strings.Contains(aws.ToString(h.SSEKMSKeyId), enc.KMSKeyID) {
					t.Errorf("%s: stored with encryption %q, key %q; want %q, key %q", k, h.ServerSideEncryption, aws.ToString(h.SSEKMSKeyId), enc.Mode, enc.KMSKeyID)
				}
			}
			// Reads, with or without the setting, get the entry back whole.
			for _, r := range []*S3Backend{b, plain} {
				e, err := r.Get(ctx, actionID("a"))
				if err != nil {
					t.Fatal(err)
				}
				got, _ := os.ReadFile(e.DiskPath)
				os.Remove(e.DiskPath)
				if string(got) != body {
					t.Fatalf("read back %d bytes, want the %d put", len(got), len(body))
				}
			}
			m, err := b.GetManifest(ctx, b.loc.manifestKey("job", id))
			if err != nil || string(m) != "manifest" {
				t.Fatalf("manifest read back: %q, %v", m, err)
			}
			rc, err := b.GetPackRange(ctx, b.loc.manifestKey("job", id), 0, 1, 2)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := io.ReadAll(rc)
			rc.Close()
			if string(p) != "ac" {
				t.Fatalf("pack range read back: %q", p)
			}

			// check tells which setting a refused write may want, and
			// passes with it.
			out, err := runCheckAs(t, role, tg.args()...)
			if err != nil || !strings.Contains(out, "put probe:   refused") || !strings.Contains(out, "set -s3-sse") {
				t.Errorf("check without -s3-sse: %v\n%s", err, out)
			}
			args := append(tg.args(), "-s3-sse="+string(enc.Mode))
			if enc.KMSKeyID != "" {
				args = append(args, "-s3-sse-kms-key-id="+enc.KMSKeyID)
			}
			out, err = runCheckAs(t, role, args...)
			if err != nil || !strings.Contains(out, "put probe:   ok") || !strings.Contains(out, "remote cache OK") ||
				!strings.Contains(out, "encryption:  every object written asks for "+string(enc.Mode)) {
				t.Errorf("check with %v: %v\n%s", args, err, out)
			}
		})
	}
}
