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
	"net"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// runCheck verifies that the remote cache cfg describes works, and that it
// is as safe as it should be: credentials; that the write location can be
// listed and read; a put/get/delete round trip of a probe object in it
// (with -read-only, a read alone: check then writes nothing there); and
// for each read location, that it can be read and that a write to it is
// refused. It prints each step on out and returns a one-line error for the
// first that fails, or if a read location could be written (DANGER). A
// refused write to the write location is reported, and is no failure: the
// server reads and does not write then.
func runCheck(ctx context.Context, cfg *Config, out io.Writer, log *slog.Logger) error {
	fmt.Fprintf(out, "version:     %s\n", versionLine(debug.ReadBuildInfo()))
	tmp, err := os.MkdirTemp("", "gobuildcache-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	b, err := newS3FromConfig(ctx, cfg, tmp, nil, log)
	if err != nil {
		return err
	}
	defer b.Close(ctx)
	o := b.client.Options()
	where := "AWS"
	if o.BaseEndpoint != nil {
		where = *o.BaseEndpoint
	}
	fmt.Fprintf(out, "bucket:      %s (region %s, endpoint %s, path style %v)\n", b.loc, o.Region, where, o.UsePathStyle)
	if f := os.Getenv("AWS_CA_BUNDLE"); f != "" {
		fmt.Fprintf(out, "trust:       the CAs in %s (AWS_CA_BUNDLE), instead of the system's\n", f)
	}
	if insecureEndpoint(where) {
		fmt.Fprintln(out, "note:        plain HTTP to another host: requests are signed but answers are not, so anyone on the way can change what builds are given; use https outside a network you trust")
	}
	if cfg.S3SSE != "" {
		key := ""
		if cfg.S3SSEKMSKeyID != "" {
			key = ", key " + cfg.S3SSEKMSKeyID
		}
		fmt.Fprintf(out, "encryption:  every object written asks for %s%s\n", cfg.S3SSE, key)
	}
	if cfg.S3BucketOwner != "" {
		fmt.Fprintf(out, "owner:       every request asks that the bucket be account %s's\n", cfg.S3BucketOwner)
	}
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
	for _, l := range b.reads {
		fmt.Fprintf(out, "read from:   %s (read, never written)\n", l)
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
			return d, fmt.Errorf("%s: %v%s", name, oneLine(err), hint(cfg, name, err))
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
	}
	// A listing, not HeadBucket: it needs exactly what the server needs
	// (s3:ListBucket on the prefix), where HeadBucket needs it on the whole
	// bucket, which a role limited to its prefixes does not have.
	if _, err := step("bucket", func(ctx context.Context) error {
		d, err := checkRead(ctx, b, b.loc)
		detail = d
		return err
	}); err != nil {
		return err
	}
	body := make([]byte, 4096)
	rand.Read(body)
	sum := OutputID(sha256.Sum256(body))
	probe := ActionID(sha256.Sum256(append([]byte("gobuildcache check "), body...)))
	if cfg.ReadOnly {
		fmt.Fprintf(out, "%-12s off (-read-only): nothing written to %s\n", "writes:", b.loc)
	} else {
		// A put these credentials may not make is no failure (a pull
		// request's role): the server then reads alone. One refused for
		// the encryption it asks for is a setting to change.
		sctx, cancel := context.WithTimeout(ctx, cfg.S3Timeout)
		start := time.Now()
		_, err := b.Put(sctx, probe, sum, int64(len(body)), strings.NewReader(string(body)))
		cancel()
		put := time.Since(start).Round(time.Microsecond)
		switch {
		case errKind(err) == KindWriteRefused && cfg.S3SSE != "" && encryptionRefused(err):
			fmt.Fprintf(out, "%-12s FAILED after %v\n", "put probe:", put)
			return fmt.Errorf("put probe: %v (the bucket will not store objects with -s3-sse=%s: a build would read it and upload nothing; change or drop -s3-sse)", oneLine(err), cfg.S3SSE)
		case errKind(err) == KindWriteRefused:
			fmt.Fprintf(out, "%-12s refused (%v): these credentials may not write %s; the server will read it and not upload (say -read-only to skip the attempt)%s\n", "put probe:", put, b.loc, sseHint(cfg, err))
		case err != nil:
			fmt.Fprintf(out, "%-12s FAILED after %v\n", "put probe:", put)
			return fmt.Errorf("put probe: %v%s", oneLine(err), hint(cfg, "put probe", err))
		default:
			fmt.Fprintf(out, "%-12s ok (%v)\n", "put probe:", put)
			get, err := step("get probe", func(ctx context.Context) error {
				e, err := b.getFrom(ctx, b.loc, probe)
				if err == nil {
					os.Remove(e.DiskPath)
				}
				return err
			})
			if err != nil {
				return err
			}
			del, err := step("delete probe", func(ctx context.Context) error {
				_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.loc.bucket, Key: aws.String(b.loc.actionKey(probe))})
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "round trip:  put %v, get %v, delete %v\n", put, get, del)
		}
	}

	var dangers []string
	for _, l := range b.reads {
		if _, err := step("read from", func(ctx context.Context) error {
			d, err := checkRead(ctx, b, l)
			detail = ": " + l.String() + d
			return err
		}); err != nil {
			return fmt.Errorf("%s: %w", l, err)
		}
		wrote, err := checkWriteRefused(ctx, cfg, l, probe, sum, body, tmp, log)
		switch {
		case wrote:
			fmt.Fprintf(out, "DANGER: these credentials can write %s, a read location: a job with them can plant entries that builds reading it will trust. Allow them reads alone there (see \"Trust and pull requests\" in README.md).\n", l)
			if err != nil {
				fmt.Fprintf(out, "DANGER: %v\n", oneLine(err))
			}
			dangers = append(dangers, l.String())
		case err != nil:
			return fmt.Errorf("read location %s: could not tell whether these credentials can write it: %v", l, oneLine(err))
		default:
			fmt.Fprintf(out, "%-12s %s: as expected: these credentials cannot write it (the write was refused)\n", "read from:", l)
		}
	}
	if len(b.reads) > 0 || cfg.ReadOnly {
		fmt.Fprintln(out, "\nIAM: a job that reads a location must not be able to write it; the policies of a trusted")
		fmt.Fprintln(out, "and of a pull-request role are in README.md, \"Trust and pull requests\".")
	} else {
		fmt.Fprint(out, "\n"+iamPolicy(cfg.S3Bucket))
	}
	if len(dangers) > 0 {
		return fmt.Errorf("DANGER: these credentials can write %s, which this job only reads: fix the IAM policy", strings.Join(dangers, ", "))
	}
	fmt.Fprintln(out, "\nremote cache OK")
	return nil
}

// checkRead lists location l and reads one of its entries if it has any
// (else a key it has not, which must be a miss). It returns what it found,
// for the report.
func checkRead(ctx context.Context, b *S3Backend, l s3Location) (string, error) {
	if err := b.elsewhere(l); err != nil {
		return "", err
	}
	dir := l.actionDir()
	list, err := b.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: &l.bucket, Prefix: &dir, MaxKeys: aws.Int32(1)})
	if err != nil {
		return "", s3ListError(l.bucket+"/"+dir, err)
	}
	id := ActionID(sha256.Sum256([]byte("gobuildcache check: no such entry")))
	found := len(list.Contents) > 0
	if found {
		if id, err = parseHexID(strings.TrimPrefix(aws.ToString(list.Contents[0].Key), dir)); err != nil {
			return "", fmt.Errorf("list %s: %w", dir, err)
		}
	}
	e, err := b.getFrom(ctx, l, id)
	switch {
	case err == nil:
		os.Remove(e.DiskPath)
		return ", listed and read an entry", nil
	case errKind(err) == KindDenied:
		if found {
			return "", err
		}
		return ", listed; a missing key reads as 403, which is a miss", nil
	case errors.Is(err, ErrNotFound) && !found:
		return ", listed (no entries yet)", nil
	}
	return "", err
}

// checkWriteRefused tries to write (and then deletes) a probe object in the
// read location l, with a client that treats l as its write location, and
// reports whether the write succeeded.
func checkWriteRefused(ctx context.Context, cfg *Config, l s3Location, probe ActionID, sum OutputID, body []byte, tmp string, log *slog.Logger) (wrote bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.S3Timeout)
	defer cancel()
	lc := *cfg
	// As a job that writes it would: with no ReadOnly session of our own
	// asking, so that only the IAM policy can refuse.
	lc.S3Bucket, lc.S3Prefix, lc.S3ReadFrom, lc.ReadOnly = l.bucket, l.prefix, nil, false
	w, err := newS3FromConfig(ctx, &lc, tmp, nil, log)
	if err != nil {
		return false, err
	}
	defer w.Close(ctx)
	_, err = w.Put(ctx, probe, sum, int64(len(body)), strings.NewReader(string(body)))
	// A refusal may be for the encryption the write asked for, not for
	// the write: a bucket policy that denies uploads without a given
	// encryption, or a KMS key these credentials may not use. A job's
	// program may ask for any, so each is tried before the write counts
	// as refused (a directory bucket's session decides alone).
	for _, mode := range append([]string{""}, s3EncryptionModes...) {
		if errKind(err) != KindWriteRefused || isDirectoryBucket(l.bucket) {
			break
		}
		if mode != cfg.S3SSE {
			w.sse = s3Encryption{Mode: types.ServerSideEncryption(mode)}
			_, err = w.Put(ctx, probe, sum, int64(len(body)), strings.NewReader(string(body)))
		}
	}
	switch {
	case errKind(err) == KindWriteRefused:
		return false, nil
	case err != nil:
		return false, err
	}
	// It was written: take it away again at once.
	if _, err := w.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &l.bucket, Key: aws.String(l.actionKey(probe))}); err != nil {
		return true, fmt.Errorf("the probe object %s is left there: %v", l.actionKey(probe), err)
	}
	return true, nil
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

// insecureEndpoint reports whether endpoint is plain HTTP to a host other
// than this machine: there a man in the middle can answer gets with
// entries of his making (SigV4 signs requests, not answers; an entry's
// body is checked against its output ID, but which output an action has
// is the answer's word).
func insecureEndpoint(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "http" {
		return false
	}
	if u.Hostname() == "localhost" {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip == nil || !ip.IsLoopback()
}

// kmsDenied reports whether a refusal is KMS's: the object is encrypted
// (or is to be) with a key that does not exist, is disabled, or the
// credentials may not use. S3 names the KMS action or key in its message,
// or answers with a KMS error code.
func kmsDenied(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "kms:") || strings.Contains(msg, "KMS.")
}

// sseHint is what a refused write may want of cfg beside permission: a
// bucket policy may deny a PutObject that asks for no encryption, or for
// another kind; or the KMS key (err) may not be the credentials' to use.
func sseHint(cfg *Config, err error) string {
	switch {
	case kmsDenied(err):
		return "; the KMS key must exist and be enabled, and the credentials need kms:GenerateDataKey on it (check -s3-sse-kms-key-id)"
	case isDirectoryBucket(cfg.S3Bucket):
		return ""
	case cfg.S3SSE == "":
		return "; if a bucket policy requires server-side encryption headers, set -s3-sse"
	}
	asked := "-s3-sse=" + cfg.S3SSE
	if cfg.S3SSEKMSKeyID != "" {
		asked += " -s3-sse-kms-key-id=" + cfg.S3SSEKMSKeyID
	}
	return "; a bucket policy may require other encryption than " + asked
}

// hint suggests the usual cause of a failed check step.
func hint(cfg *Config, step string, err error) string {
	if configRefused(err) {
		return " (the AWS SDK refused its configuration before sending: check -s3-region and AWS_REGION, -s3-endpoint, AWS_USE_FIPS_ENDPOINT and AWS_USE_DUALSTACK_ENDPOINT)"
	}
	kind := classifyS3Error(err, false)
	if step == "read from" && (kind == KindNoBucket || kind == KindConfig) {
		return " (no such bucket, or one in another region: check -s3-read-from; a build leaves this location out and goes on with the others)"
	}
	var re *smithyhttp.ResponseError
	if step == "bucket" && errors.As(err, &re) && re.HTTPStatusCode() == 404 {
		return " (no such bucket: check -s3-bucket and -s3-region, and that -s3-endpoint is an S3 server)"
	}
	var se *expressSessionError
	if errors.As(err, &se) {
		zone, region := bucketZone(se.Bucket)
		switch kind {
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
	switch kind {
	case KindCredentials:
		return " (no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or GOBUILDCACHE_AWS_ACCESS_KEY_ID/GOBUILDCACHE_AWS_SECRET_ACCESS_KEY)"
	case KindAuth:
		return " (credentials rejected: see the IAM policy in README.md)"
	case KindDenied, KindWriteRefused:
		if kmsDenied(err) {
			return " (the KMS key that encrypts the objects must exist and be enabled, and the credentials need kms:Decrypt on it, and kms:GenerateDataKey to write)"
		}
		if cfg.S3BucketOwner != "" {
			return fmt.Sprintf(" (not allowed: see the IAM policy in README.md; or the bucket is not account %s's, -s3-expected-bucket-owner)", cfg.S3BucketOwner)
		}
		return " (not allowed: see the IAM policy in README.md)"
	case KindNoBucket:
		return " (no such bucket: check -s3-bucket and -s3-region, and that -s3-endpoint is an S3 server)"
	case KindConfig:
		return " (the bucket is in another region, or the request is malformed: check -s3-region and -s3-endpoint)"
	case KindRefused, KindDNS, KindTimeout, KindNetwork:
		return " (endpoint unreachable: check -s3-endpoint / AWS_ENDPOINT_URL_S3 and the network)"
	case KindTLS:
		if notTLS(err) {
			return " (the endpoint answers in plain HTTP, not TLS: check the scheme of -s3-endpoint / AWS_ENDPOINT_URL_S3)"
		}
		if bundle := os.Getenv("AWS_CA_BUNDLE"); bundle != "" {
			return fmt.Sprintf(" (the endpoint's certificate is signed by no CA of AWS_CA_BUNDLE=%s, which the AWS SDK trusts instead of the system's, or is for another host name, or has expired)", bundle)
		}
		return " (this machine does not trust the endpoint's certificate: for a private CA, set AWS_CA_BUNDLE, or ca_bundle in the AWS config file, to its PEM file)"
	}
	return ""
}

// oneLine flattens a multi-line error message.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
