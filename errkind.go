package main

import (
	"context"
	"errors"
)

// ErrKind is the kind of a failed remote request. A remote backend
// classifies its errors where they arise (S3Backend: s3_errors.go) and
// wraps them in a *kindError; the layers above (the circuit breaker, the
// stats) decide by kind and never look at a remote's own error types.
type ErrKind uint8

const (
	KindOther        ErrKind = iota // none of the below
	KindNotFound                    // no such entry: an answer, not a failure
	KindCanceled                    // the caller gave up: not the remote's fault
	KindVerify                      // a body that does not match its output ID (corrupt)
	KindTimeout                     // no answer in time
	KindRefused                     // connection refused
	KindReset                       // connection reset or closed mid-request
	KindDNS                         // the endpoint's name does not resolve
	KindNetwork                     // any other network failure
	KindThrottled                   // asked to slow down (503 SlowDown, 429)
	KindServer                      // a server error (5xx)
	KindAuth                        // credentials rejected or not allowed (401, 403)
	KindCredentials                 // no credentials found to sign with
	KindWriteRefused                // a write was refused (403 on a put) while reads may work
	KindDenied                      // a read was refused (403 on a get): that key's miss, not a failure
	KindSession                     // an S3 Express session expired or is invalid
	KindNoBucket                    // the bucket does not exist (or a write or listing got a bare 404: no S3 server there)
	KindConfig                      // a request the remote cannot serve as configured (wrong region, bad request)
	KindTooLarge                    // a body larger than its destination takes (a put's than one upload, a get's than the local disk's room): refused before it is sent or written
	KindLocationGone                // one location of several (-s3-read-from) cannot be used at all: left out, the others go on
	KindTLS                         // the endpoint's TLS certificate is not trusted, or the endpoint does not speak TLS
	KindSlowUpload                  // a write's deadline passed while its body was still being sent: a slow uplink, not a remote down
	KindLocal                       // the local disk could not take a get's body (full since its room was taken, out of file descriptors): the remote answered
)

// String is the kind's name in the stats (RemoteErrorsByKind). A refused
// write is counted as "auth", as it always was.
func (k ErrKind) String() string {
	switch k {
	case KindNotFound:
		return "not_found"
	case KindCanceled:
		return "canceled"
	case KindVerify:
		return "verify"
	case KindTimeout:
		return "timeout"
	case KindRefused:
		return "refused"
	case KindReset:
		return "reset"
	case KindDNS:
		return "dns"
	case KindNetwork:
		return "network"
	case KindThrottled:
		return "throttle"
	case KindServer:
		return "server"
	case KindAuth, KindWriteRefused:
		return "auth"
	case KindCredentials:
		return "credentials"
	case KindDenied:
		return "denied"
	case KindSession:
		return "session"
	case KindNoBucket:
		return "no_bucket"
	case KindConfig:
		return "config"
	case KindTooLarge:
		return "too_large"
	case KindLocationGone:
		return "location_gone"
	case KindTLS:
		return "tls"
	case KindSlowUpload:
		return "slow_upload"
	case KindLocal:
		return "local"
	}
	return "other"
}

// fatal reports whether retrying cannot fix an error of this kind: only a
// change of configuration or credentials can.
func (k ErrKind) fatal() bool {
	switch k {
	case KindAuth, KindCredentials, KindNoBucket, KindConfig, KindTLS:
		return true
	}
	return false
}

// kindError is an error classified by the layer it arose in.
type kindError struct {
	kind ErrKind
	err  error
}

func (e *kindError) Error() string { return e.err.Error() }
func (e *kindError) Unwrap() error { return e.err }

// withKind returns err classified as kind.
func withKind(kind ErrKind, err error) error { return &kindError{kind: kind, err: err} }

// errKind returns the kind of err: the one a remote gave it, or one that
// the sentinels and the context tell; KindOther for anything unclassified.
func errKind(err error) ErrKind {
	var ke *kindError
	switch {
	case err == nil:
		return KindOther
	case errors.As(err, &ke):
		return ke.kind
	case errors.Is(err, ErrNotFound):
		return KindNotFound
	case errors.Is(err, errVerify):
		return KindVerify
	case errors.Is(err, context.Canceled):
		return KindCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return KindTimeout
	}
	return KindOther
}
