package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// expressSessions provides the session credentials that sign every request
// to an S3 Express One Zone directory bucket (s3.Options.ExpressCredentials),
// in place of the SDK's own provider, which a cache cannot live with: it
// uses a session up to its exact expiry, refreshes it early under the
// calling request's context (which ends, cancelling the refresh, when that
// request returns), and shares no refresh between concurrent operations.
//
// Here each bucket has one session at a time, made by CreateSession in the
// bucket's mode: ReadOnly where the cache only reads; otherwise none, which
// the service makes a ReadWrite session, and ReadOnly from the first time
// that is denied (credentials that may only read: the managed policy
// AmazonS3ExpressReadOnlyAccess), so that reads go on and each write is
// refused as a write. Of a session that lives L (five minutes on AWS):
//
//   - it is handed out until min(30 s, L/5) before its expiry, never later,
//     so that a request signed with it arrives before it expires;
//   - from L/2 on, the first request that uses it starts the next
//     CreateSession in the background, under a context of its own with its
//     own timeout, and goes on with the current session;
//   - a request that finds no usable session waits (as long as its own
//     context lets it) for the one CreateSession in flight for the bucket,
//     which every concurrent request shares;
//   - a request the service answers ExpiredToken, InvalidToken or
//     TokenRefreshRequired drops the session that signed it (if it is still
//     the bucket's) and is retried by the SDK with a fresh one
//     (retryExpired): an expired session is never the remote's failure.
//
// A CreateSession that fails comes back as an *expressSessionError that
// wraps the SDK's typed error (403 AccessDenied, 404 NoSuchBucket, a DNS or
// timeout error), so that it is classified like any other request's; the
// preflight middleware makes sure of that, since the SDK itself flattens a
// provider's error to text.
type expressSessions struct {
	// create makes a session: CreateSession, signed with the account's
	// credentials (createSessionWith).
	create createSessionFunc
	// readOnly lists the buckets read with ReadOnly sessions.
	readOnly map[string]bool
	// timeout bounds each CreateSession, which runs in the background under
	// a context of its own: it ends by itself, and a request made after
	// the backend's Close (the prefetcher's manifest) still gets a session.
	timeout time.Duration
	now     func() time.Time

	mu      sync.Mutex
	buckets map[string]*expressSession

	issued  atomic.Int64 // sessions made
	dropped atomic.Int64 // sessions the service refused before their time
}

var _ s3.ExpressCredentialsProvider = (*expressSessions)(nil)

// expressSession is one bucket's session, and the CreateSession in flight
// for it.
type expressSession struct {
	creds     aws.Credentials // zero until the first session
	useTill   time.Time       // handed out until then
	refreshAt time.Time       // the next session is made from then on
	pending   *sessionAttempt // nil unless a CreateSession runs
	readOnly  bool            // ask for ReadOnly sessions
}

// sessionAttempt is one CreateSession; done is closed when it has ended,
// with creds or err set.
type sessionAttempt struct {
	done  chan struct{}
	creds aws.Credentials
	err   error
}

const (
	expressMaxMargin = 30 * time.Second // at most this long before expiry a session is no longer used
)

// expressSessionError is a failed CreateSession.
type expressSessionError struct {
	Bucket string
	// ReadOnly: a ReadOnly session was asked for, for a bucket this client
	// only reads; its refusal means reads of it are denied, not that the
	// credentials are no good.
	ReadOnly bool
	Err      error
}

func (e *expressSessionError) Error() string {
	return fmt.Sprintf("create s3 express session for %s: %v", e.Bucket, e.Err)
}

func (e *expressSessionError) Unwrap() error { return e.Err }

// createSessionFunc makes a session for bucket in mode.
type createSessionFunc func(ctx context.Context, bucket string, mode types.SessionMode) (aws.Credentials, error)

// newExpressSessions returns a provider that makes its sessions with
// create, each call bounded by timeout; readOnly names the buckets to read
// with ReadOnly sessions.
func newExpressSessions(create createSessionFunc, timeout time.Duration, readOnly ...string) *expressSessions {
	p := &expressSessions{
		create:   create,
		readOnly: map[string]bool{},
		timeout:  timeout,
		now:      time.Now,
		buckets:  map[string]*expressSession{},
	}
	for _, b := range readOnly {
		p.readOnly[b] = true
	}
	return p
}

// createSessionWith makes sessions with client's CreateSession. client
// must not be the one that uses the sessions: CreateSession is signed with
// the account's credentials, and the provider exists before its client.
func createSessionWith(client *s3.Client) createSessionFunc {
	return func(ctx context.Context, bucket string, mode types.SessionMode) (aws.Credentials, error) {
		out, err := client.CreateSession(ctx, &s3.CreateSessionInput{Bucket: aws.String(bucket), SessionMode: mode})
		if err != nil {
			return aws.Credentials{}, err
		}
		c := out.Credentials
		if c == nil || c.AccessKeyId == nil || c.SecretAccessKey == nil || c.SessionToken == nil || c.Expiration == nil {
			return aws.Credentials{}, errors.New("CreateSession answered without complete credentials")
		}
		return aws.Credentials{
			AccessKeyID:     *c.AccessKeyId,
			SecretAccessKey: *c.SecretAccessKey,
			SessionToken:    *c.SessionToken,
			Source:          "s3express CreateSession",
			CanExpire:       true,
			Expires:         *c.Expiration,
		}, nil
	}
}

// Retrieve implements s3.ExpressCredentialsProvider: a session for bucket
// that stays valid long enough to sign and send a request with.
func (p *expressSessions) Retrieve(ctx context.Context, bucket string) (aws.Credentials, error) {
	p.mu.Lock()
	s := p.buckets[bucket]
	if s == nil {
		s = &expressSession{readOnly: p.readOnly[bucket]}
		p.buckets[bucket] = s
	}
	now := p.now()
	if s.creds.SessionToken != "" && now.Before(s.useTill) {
		if !now.Before(s.refreshAt) && s.pending == nil {
			p.start(bucket, s)
		}
		c := s.creds
		p.mu.Unlock()
		return c, nil
	}
	if s.pending == nil {
		p.start(bucket, s)
	}
	a, readOnly := s.pending, s.readOnly
	p.mu.Unlock()
	select {
	case <-a.done:
		return a.creds, a.err
	case <-ctx.Done():
		return aws.Credentials{}, &expressSessionError{Bucket: bucket, ReadOnly: readOnly, Err: fmt.Errorf("gave up waiting: %w", context.Cause(ctx))}
	}
}

// start begins a CreateSession for bucket in the background; p.mu is held.
func (p *expressSessions) start(bucket string, s *expressSession) {
	a := &sessionAttempt{done: make(chan struct{})}
	s.pending = a
	mode := types.SessionMode("")
	if s.readOnly {
		mode = types.SessionModeReadOnly
	}
	go func() {
		defer close(a.done)
		ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
		defer cancel()
		creds, err := p.create(ctx, bucket, mode)
		if mode == "" && isAccessDenied(err) {
			// A ReadWrite session denied: credentials that may only read.
			if c, rerr := p.create(ctx, bucket, types.SessionModeReadOnly); rerr == nil {
				creds, err, mode = c, nil, types.SessionModeReadOnly
			}
		}
		now := p.now()
		life := creds.Expires.Sub(now)
		if err == nil && life <= 0 {
			err = fmt.Errorf("the session expires at %s, before now by this machine's clock (%s)", creds.Expires.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		s.pending = nil
		if err != nil {
			a.err = &expressSessionError{Bucket: bucket, ReadOnly: mode == types.SessionModeReadOnly, Err: err}
			// A refresh that failed while the session still serves: try
			// again halfway to the end of its use, not on every request.
			if now.Before(s.useTill) {
				s.refreshAt = now.Add(s.useTill.Sub(now) / 2)
			}
			return
		}
		p.issued.Add(1)
		s.readOnly = mode == types.SessionModeReadOnly
		a.creds = creds
		s.creds = creds
		s.useTill = creds.Expires.Add(-min(expressMaxMargin, life/5))
		s.refreshAt = now.Add(life / 2)
	}()
}

// isAccessDenied reports whether err is the service's 403 AccessDenied.
func isAccessDenied(err error) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == "AccessDenied"
}

// drop forgets the session whose token the service refused, if it is still
// a bucket's, so that the next request makes a new one.
func (p *expressSessions) drop(token string) {
	if token == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.buckets {
		if s.creds.SessionToken == token && !s.useTill.IsZero() {
			s.useTill = time.Time{}
			p.dropped.Add(1)
		}
	}
}

// sessionTokenCodes are the service's answers to a request signed with a
// session it no longer accepts.
var sessionTokenCodes = map[string]bool{"ExpiredToken": true, "InvalidToken": true, "TokenRefreshRequired": true}

// retryExpired is a retry.IsErrorRetryable: an S3 Express request refused
// for its session token drops that session and is retried (the SDK
// retrieves the credentials again for every attempt, so the retry makes or
// waits for a fresh session).
func (p *expressSessions) retryExpired(err error) aws.Ternary {
	token := refusedSessionToken(err)
	if token == "" {
		return aws.UnknownTernary
	}
	p.drop(token)
	return aws.TrueTernary
}

// refusedSessionToken returns the S3 Express session token of a request the
// service refused for it (ExpiredToken and its kin), or "". A request not
// signed with a session (plain S3 with expired STS credentials) is not
// one: a new session would not help it.
func refusedSessionToken(err error) string {
	var api smithy.APIError
	if !errors.As(err, &api) || !sessionTokenCodes[api.ErrorCode()] {
		return ""
	}
	var re *smithyhttp.ResponseError
	if !errors.As(err, &re) || re.Response == nil || re.Response.Response == nil || re.Response.Request == nil {
		return ""
	}
	return re.Response.Request.Header.Get("X-Amz-S3session-Token")
}

// preflight is an SDK middleware that gets the session for an operation's
// directory bucket before the SDK does: a CreateSession that fails then
// fails the operation with its own, typed error (the SDK would flatten it
// to text), and the SDK's own Retrieve that follows finds the session made.
func (p *expressSessions) preflight(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("gobuildcacheExpressSession",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			if bucket := expressInputBucket(in.Parameters); bucket != "" {
				if _, err := p.Retrieve(ctx, bucket); err != nil {
					return middleware.InitializeOutput{}, middleware.Metadata{}, err
				}
			}
			return next.HandleInitialize(ctx, in)
		}), middleware.Before)
}

// expressInputBucket is the directory bucket an object operation addresses,
// or "" (other operations, and CreateSession itself, are signed otherwise).
func expressInputBucket(params any) string {
	var b *string
	switch in := params.(type) {
	case *s3.GetObjectInput:
		b = in.Bucket
	case *s3.PutObjectInput:
		b = in.Bucket
	case *s3.HeadObjectInput:
		b = in.Bucket
	case *s3.DeleteObjectInput:
		b = in.Bucket
	case *s3.DeleteObjectsInput:
		b = in.Bucket
	case *s3.ListObjectsV2Input:
		b = in.Bucket
	case *s3.CreateMultipartUploadInput:
		b = in.Bucket
	case *s3.UploadPartInput:
		b = in.Bucket
	case *s3.CompleteMultipartUploadInput:
		b = in.Bucket
	case *s3.AbortMultipartUploadInput:
		b = in.Bucket
	}
	if b == nil || !isDirectoryBucket(*b) {
		return ""
	}
	return *b
}
