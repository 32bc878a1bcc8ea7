package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// s3Error returns the error of a failed SDK request for op on key,
// classified: a missing object wraps ErrNotFound, anything else is a
// *kindError (see ErrKind). write says whether the request stores
// something, where a 403 means a refused write rather than no access. A
// read refused with 403 (KindDenied) is a miss of that key and wraps
// ErrNotFound too: a location the credentials may not read, or a missing
// key where s3:ListBucket is not allowed, which S3 answers with 403.
func s3Error(op, key string, err error, write bool) error {
	return s3ErrorOf(op, key, err, classifyS3Error(err, write))
}

// s3ErrorOf is s3Error for an error already classified as kind.
func s3ErrorOf(op, key string, err error, kind ErrKind) error {
	switch kind {
	case KindNotFound:
		return fmt.Errorf("%s %s: %w", op, key, ErrNotFound)
	case KindDenied:
		return fmt.Errorf("%s %s: %w", op, key, withKind(kind, fmt.Errorf("%w: %w", ErrNotFound, err)))
	default:
		return fmt.Errorf("%s %s: %w", op, key, withKind(kind, err))
	}
}

// noCredentials reports whether err is the SDK finding no credentials to
// sign with: the request never reached the bucket, so no status code in
// err is the bucket's (an EC2 metadata endpoint that answers 403 on a
// machine without a role is not a refused write). For a refused S3
// Express session it is the CreateSession request's own error that says
// so, however the SDK wraps the session's error in the request's.
func noCredentials(err error) bool {
	var se *expressSessionError
	if errors.As(err, &se) {
		err = se.Err
	}
	msg := err.Error()
	return strings.Contains(msg, "get identity: ") || strings.Contains(msg, "failed to retrieve credentials") ||
		strings.Contains(msg, "no EC2 IMDS role found") || strings.Contains(msg, "static credentials are empty")
}

// configRefused reports whether err is the SDK refusing its own
// configuration before sending anything: a region that is no region
// (AWS_REGION="us east 1"), or FIPS or dual-stack endpoints asked for with
// a custom endpoint. No request can succeed until the configuration
// changes.
func configRefused(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "resolve endpoint: ") || strings.Contains(msg, "bind auth scheme params: ")
}

// encryptionRefused reports whether a request was refused for its
// server-side encryption: a kind the server does not support (MinIO:
// InvalidArgument "The encryption method is not supported" for
// aws:kms:dsse), one that is not valid (AWS:
// InvalidEncryptionAlgorithmError), or an object stored with a form of
// encryption the request did not give (SSE-C).
func encryptionRefused(err error) bool {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return false
	}
	switch api.ErrorCode() {
	case "InvalidArgument", "InvalidRequest", "InvalidEncryptionAlgorithmError", "NotImplemented":
		return strings.Contains(strings.ToLower(api.ErrorMessage()), "encrypt")
	}
	return false
}

// needsContentMD5 reports whether err is a PutObject refused for want of
// a Content-MD5 (or x-amz-checksum-) header: what AWS S3 and others
// (Backblaze B2) answer for a bucket with Object Lock default retention,
// whose every write takes a retention period.
func needsContentMD5(err error) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == "InvalidRequest" && strings.Contains(api.ErrorMessage(), "Content-MD5")
}

// s3ListError is s3Error for a listing of what, which no missing key can
// fail: a 404 to one says the bucket is not there, or the endpoint is not
// an S3 server's.
func s3ListError(what string, err error) error {
	kind := classifyS3Error(err, false)
	if kind == KindNotFound {
		kind = KindNoBucket
	}
	return s3ErrorOf("list", what, err, kind)
}

// classifyS3Error names the kind of an error returned by the SDK.
func classifyS3Error(err error, write bool) ErrKind {
	if refusedSessionToken(err) != "" {
		return KindSession // refused even after a retry with a new session
	}
	// A write is never answered "no such key": a 404 to one says the
	// bucket is not there, or the endpoint is not an S3 server's (the
	// wrong port or path, a proxy's answer). It must not pass for a
	// miss, which the breaker takes for the remote working.
	notFound := KindNotFound
	if write {
		notFound = KindNoBucket
	}
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return notFound
	}
	// No credentials to sign with: any status code in err is not the
	// bucket's (noCredentials). After the typed misses above, the common
	// error, so that a miss formats no message.
	if noCredentials(err) {
		return KindCredentials
	}
	if configRefused(err) {
		return KindConfig
	}
	// Not allowed: for a write, writing is refused; for a read, that key
	// may not be read. Either way the credentials work.
	denied := KindDenied
	if write {
		denied = KindWriteRefused
	}
	var se *expressSessionError
	if errors.As(err, &se) {
		// A refused CreateSession refuses reads and writes alike: the
		// credentials are no good for that bucket (KindAuth), unless it
		// was a ReadOnly session for a bucket this client only reads
		// (a read location): then reads of it are denied, each a miss.
		denied = KindAuth
		if se.ReadOnly {
			denied = KindDenied
		}
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		code := api.ErrorCode()
		if encryptionRefused(err) {
			// This write's encryption (-s3-sse) is one the server
			// will not store, or this object's one it will not serve
			// as asked: writes stop, or the key misses; the rest works.
			return denied
		}
		if strings.HasPrefix(code, "KMS.") || strings.HasPrefix(code, "kms:") {
			// The object's KMS key (AWS: KMS.NotFoundException,
			// KMS.DisabledException, ...; MinIO: kms:KeyNotFound, as a
			// 404) cannot be used: this write refused or this object
			// unreadable, the bucket no less there.
			if strings.Contains(code, "Throttl") {
				return KindThrottled
			}
			return denied
		}
		switch code {
		case "NotFound", "NoSuchKey":
			return notFound
		case "NoSuchBucket":
			return KindNoBucket
		case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException":
			return KindConfig // the bucket is in another region
		case "AccessDenied", "Forbidden":
			return denied
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "InvalidTokenId", "AllAccessDisabled":
			return KindAuth // the credentials themselves (InvalidTokenId: MinIO's InvalidToken)
		case "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "TooManyRequestsException":
			return KindThrottled
		}
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		switch code := re.HTTPStatusCode(); {
		case code == 404 && write:
			return KindNoBucket
		case code == 403:
			return denied
		case code == 401:
			return KindAuth
		case code == 429, code == 503:
			// 503: SlowDown, or a directory bucket waking up.
			return KindThrottled
		case code >= 500:
			return KindServer
		}
	}
	if tlsRefused(err) {
		return KindTLS
	}
	msg := err.Error()
	switch {
	case errors.Is(err, context.Canceled):
		return KindCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return KindRefused
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || strings.Contains(msg, "connection reset"):
		// io.EOF: the connection closed before any answer (a server that
		// went away mid-request).
		return KindReset
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return KindDNS
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return KindTimeout
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return KindNetwork
	}
	return KindOther
}

// tlsRefused reports whether err is a TLS failure that no retry can fix:
// the endpoint's certificate is not one this machine trusts (an unknown
// authority, another host's name, expired), or the endpoint does not speak
// TLS (notTLS).
func tlsRefused(err error) bool {
	var verify *tls.CertificateVerificationError
	return errors.As(err, &verify) || notTLS(err)
}

// notTLS reports whether err says the endpoint answered a TLS handshake
// with something else: net/http's own error for an HTTP answer has no
// type of its own, so its text is read, but not for an error the server
// answered with (every miss's 404 passes through here, from retryOnce).
func notTLS(err error) bool {
	var header tls.RecordHeaderError
	if errors.As(err, &header) {
		return true
	}
	var api smithy.APIError
	return !errors.As(err, &api) && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}
