package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// runCheck verifies that the remote cache cfg describes works: credentials,
// bucket access, and a put/get/delete round trip of a probe object under
// the prefix. It prints each step on out and returns a one-line error for
// the first that fails.
func runCheck(ctx context.Context, cfg *Config, out io.Writer, log *slog.Logger, getenv func(string) string) error {
	if cfg.Backend != "s3" {
		return errors.New("check tests a remote cache: give -backend=s3 (BACKEND_TYPE=s3) and -s3-bucket")
	}
	tmp, err := os.MkdirTemp("", "gobuildcache-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b, err := newS3FromConfig(ctx, cfg, tmp, nil, log, getenv)
	if err != nil {
		return err
	}
	defer b.Close(ctx)
	o := b.client.Options()
	where := "AWS"
	if o.BaseEndpoint != nil {
		where = *o.BaseEndpoint
	}
	fmt.Fprintf(out, "bucket:      s3://%s/%s (region %s, endpoint %s, path style %v)\n", cfg.S3Bucket, cfg.S3Prefix, o.Region, where, o.UsePathStyle)
	if isDirectoryBucket(cfg.S3Bucket) {
		fmt.Fprintln(out, "             S3 Express One Zone directory bucket: session authentication (CreateSession)")
		if zone, region := bucketZone(cfg.S3Bucket); region != "" && cfg.S3Region != "" && cfg.S3Region != region {
			if o.BaseEndpoint == nil {
				fmt.Fprintf(out, "note:        the bucket's zone %s is in %s, so requests go there; the configured region %s is not used\n", zone, region, cfg.S3Region)
			} else {
				fmt.Fprintf(out, "warning:     the bucket's zone %s is in %s, but requests are signed for the configured region %s (custom endpoint)\n", zone, region, cfg.S3Region)
			}
		}
	}

	var detail string // printed after a step's result
	step := func(name string, f func(ctx context.Context) error) (time.Duration, error) {
		sctx, cancel := context.WithTimeout(ctx, cfg.S3Timeout)
		defer cancel()
		detail = ""
		start := time.Now()
		err := f(sctx)
		d := time.Since(start).Round(time.Microsecond)
		if err != nil {
			fmt.Fprintf(out, "%-12s FAILED after %v\n", name+":", d)
			return d, fmt.Errorf("%s: %v%s", name, oneLine(err), hint(name, err))
		}
		fmt.Fprintf(out, "%-12s ok (%v)%s\n", name+":", d, detail)
		return d, nil
	}

	if _, err := step("credentials", func(ctx context.Context) error {
		creds, err := o.Credentials.Retrieve(ctx)
		detail = ", from " + creds.Source
		return err
	}); err != nil {
		return err
	}
	if sessions, ok := o.ExpressCredentials.(*expressSessions); ok && isDirectoryBucket(cfg.S3Bucket) {
		// A directory bucket's access is its CreateSession.
		if _, err := step("session", func(ctx context.Context) error {
			creds, err := sessions.Retrieve(ctx, cfg.S3Bucket)
			detail = fmt.Sprintf(", valid until %s", creds.Expires.Local().Format(time.TimeOnly))
			return err
		}); err != nil {
			return err
		}
	} else if _, err := step("bucket", func(ctx context.Context) error {
		_, err := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &cfg.S3Bucket})
		return err
	}); err != nil {
		return err
	}
	body := make([]byte, 4096)
	rand.Read(body)
	sum := OutputID(sha256.Sum256(body))
	probe := ActionID(sha256.Sum256(append([]byte("gobuildcache check "), body...)))
	var rtts []time.Duration
	for _, s := range []struct {
		name string
		f    func(ctx context.Context) error
	}{
		{"put probe", func(ctx context.Context) error {
			_, err := b.Put(ctx, probe, sum, int64(len(body)), strings.NewReader(string(body)))
			return err
		}},
		{"get probe", func(ctx context.Context) error {
			_, err := b.Get(ctx, probe)
			return err
		}},
		{"delete probe", func(ctx context.Context) error {
			_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &cfg.S3Bucket, Key: aws.String(b.loc.actionKey(probe))})
			return err
		}},
	} {
		d, err := step(s.name, s.f)
		if err != nil {
			return err
		}
		rtts = append(rtts, d)
	}
	fmt.Fprintf(out, "round trip:  put %v, get %v, delete %v\n", rtts[0], rtts[1], rtts[2])
	if cfg.ReadOnly {
		fmt.Fprintln(out, "note:        -read-only: the server will never write, but check just did")
	}
	fmt.Fprint(out, "\n"+iamPolicy(cfg.S3Bucket))
	fmt.Fprintln(out, "\nremote cache OK")
	return nil
}

// iamPolicy is what the credentials must be allowed, for the bucket kind.
func iamPolicy(bucket string) string {
	if isDirectoryBucket(bucket) {
		return fmt.Sprintf(`The IAM policy must allow (directory bucket: one action covers every request):
  {"Effect": "Allow", "Action": "s3express:CreateSession",
   "Resource": "arn:aws:s3express:REGION:ACCOUNT:bucket/%s"}
`, bucket)
	}
	return fmt.Sprintf(`The IAM policy must allow:
  {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
   "Resource": "arn:aws:s3:::%[1]s/*"},
  {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::%[1]s"}
(without s3:ListBucket a missing object reads as 403 Forbidden, not a miss)
`, bucket)
}

// hint suggests the usual cause of a failed check step.
func hint(step string, err error) string {
	var re *smithyhttp.ResponseError
	if step == "bucket" && errors.As(err, &re) && re.HTTPStatusCode() == 404 {
		return " (no such bucket: check -s3-bucket and -s3-region)"
	}
	var se *expressSessionError
	if errors.As(err, &se) {
		zone, region := bucketZone(se.Bucket)
		switch classifyS3Error(err, false) {
		case KindAuth:
			return fmt.Sprintf(" (CreateSession refused: the credentials need s3express:CreateSession on arn:aws:s3express:%s:ACCOUNT:bucket/%s)", cmp.Or(region, "REGION"), se.Bucket)
		case KindNoBucket:
			return " (no such directory bucket: check -s3-bucket)"
		case KindRefused, KindDNS, KindTimeout, KindNetwork:
			if region != "" {
				return fmt.Sprintf(" (CreateSession got no answer: the bucket's zone %s is in %s; check -s3-region, -s3-endpoint and the network)", zone, region)
			}
			return " (CreateSession got no answer: check -s3-region, -s3-endpoint and the network)"
		}
	}
	switch classifyS3Error(err, false) {
	case KindCredentials:
		return " (no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or GOBUILDCACHE_AWS_ACCESS_KEY_ID/GOBUILDCACHE_AWS_SECRET_ACCESS_KEY)"
	case KindAuth:
		return " (credentials rejected or not allowed: see the IAM policy in README.md)"
	case KindNoBucket:
		return " (no such bucket: check -s3-bucket and -s3-region)"
	case KindConfig:
		return " (the bucket is in another region, or the request is malformed: check -s3-region and -s3-endpoint)"
	case KindRefused, KindDNS, KindTimeout, KindNetwork:
		return " (endpoint unreachable: check -s3-endpoint / AWS_ENDPOINT_URL_S3 and the network)"
	}
	return ""
}

// oneLine flattens a multi-line error message.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
