package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// fakeSessions is a CreateSession that counts its calls, issues sessions
// of a given life by a clock the test moves, and can be held or failed.
type fakeSessions struct {
	mu      sync.Mutex
	now     time.Time
	life    time.Duration
	calls   atomic.Int64
	gate    chan struct{} // if set, each call waits for it (or its ctx)
	err     error
	modes   []types.SessionMode
	ctxErrs []error // each call's ctx.Err() when it answered
}

func (f *fakeSessions) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeSessions) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

func (f *fakeSessions) create(ctx context.Context, bucket string, mode types.SessionMode) (aws.Credentials, error) {
	n := f.calls.Add(1)
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.modes = append(f.modes, mode)
	f.ctxErrs = append(f.ctxErrs, ctx.Err())
	if err := ctx.Err(); err != nil {
		return aws.Credentials{}, err
	}
	if f.err != nil {
		return aws.Credentials{}, f.err
	}
	return aws.Credentials{AccessKeyID: fmt.Sprint("SESS", n), SecretAccessKey: "s", SessionToken: fmt.Sprint("token-", bucket, "-", n), CanExpire: true, Expires: f.now.Add(f.life)}, nil
}

func newFakeExpress(life time.Duration, readOnly ...string) (*expressSessions, *fakeSessions) {
	f := &fakeSessions{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), life: life}
	p := newExpressSessions(f.create, 5*time.Second, readOnly...)
	p.now = f.clock
	return p, f
}

// waitIdle waits for p's background CreateSessions to end.
func waitIdle(t *testing.T, p *expressSessions) {
	t.Helper()
	for range 500 {
		p.mu.Lock()
		busy := false
		for _, s := range p.buckets {
			busy = busy || s.pending != nil
		}
		p.mu.Unlock()
		if !busy {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("a CreateSession never ended")
}

func TestExpressSessionsShared(t *testing.T) {
	p, f := newFakeExpress(5 * time.Minute)
	f.gate = make(chan struct{})
	const n = 32
	var wg sync.WaitGroup
	tokens := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := p.Retrieve(t.Context(), "b--use1-az4--x-s3")
			if err != nil {
				t.Error(err)
			}
			tokens[i] = c.SessionToken
		}()
	}
	time.Sleep(20 * time.Millisecond)
	close(f.gate)
	wg.Wait()
	if c := f.calls.Load(); c != 1 {
		t.Errorf("%d concurrent first requests made %d CreateSessions, want 1", n, c)
	}
	for _, tok := range tokens {
		if tok != tokens[0] {
			t.Fatalf("concurrent requests got different sessions: %q, %q", tok, tokens[0])
		}
	}
	// Another bucket has its own session.
	c, err := p.Retrieve(t.Context(), "other--use1-az4--x-s3")
	if err != nil || c.SessionToken == tokens[0] || f.calls.Load() != 2 {
		t.Errorf("second bucket: %v, token %q, %d CreateSessions", err, c.SessionToken, f.calls.Load())
	}
}

// TestExpressSessionsLifetime: a session is refreshed in the background
// from half its life on, by a CreateSession that outlives the request that
// started it, and never handed out in its last fifth (at most 30 s).
func TestExpressSessionsLifetime(t *testing.T) {
	for _, life := range []time.Duration{3 * time.Second, 5 * time.Minute} {
		t.Run(life.String(), func(t *testing.T) {
			p, f := newFakeExpress(life)
			const bucket = "b--usw2-az1--x-s3"
			first, err := p.Retrieve(t.Context(), bucket)
			if err != nil {
				t.Fatal(err)
			}
			margin := min(30*time.Second, life/5)
			// Before half-life: the same session, no CreateSession.
			f.advance(life/2 - time.Millisecond)
			if c, _ := p.Retrieve(t.Context(), bucket); c.SessionToken != first.SessionToken || f.calls.Load() != 1 {
				t.Fatalf("before half-life: token %q, %d CreateSessions", c.SessionToken, f.calls.Load())
			}
			// At half-life: the request goes on with the current session and
			// starts the next one, under a context that is not the request's.
			f.gate = make(chan struct{})
			f.advance(time.Millisecond)
			ctx, cancel := context.WithCancel(t.Context())
			c, err := p.Retrieve(ctx, bucket)
			cancel() // the request is over
			if err != nil || c.SessionToken != first.SessionToken {
				t.Fatalf("at half-life: %v, token %q", err, c.SessionToken)
			}
			close(f.gate)
			waitIdle(t, p)
			if f.calls.Load() != 2 || f.ctxErrs[1] != nil {
				t.Fatalf("background refresh: %d CreateSessions, its context %v", f.calls.Load(), f.ctxErrs)
			}
			second, _ := p.Retrieve(t.Context(), bucket)
			if second.SessionToken == first.SessionToken {
				t.Fatal("the refreshed session is not used")
			}
			// The new session is never handed out within the margin: with
			// CreateSession failing, a request then gets the error, not the
			// dying session.
			f.err = &smithy.GenericAPIError{Code: "AccessDenied", Message: "Access Denied"}
			f.advance(life - margin)
			_, err = p.Retrieve(t.Context(), bucket)
			var se *expressSessionError
			if !errors.As(err, &se) || classifyS3Error(err, false) != KindAuth {
				t.Fatalf("session in its last %v handed out, or error untyped: %v (kind %s)", margin, err, classifyS3Error(err, false))
			}
		})
	}
}

// TestExpressSessionsExpiredToken: ExpiredToken and its kin are retried
// after dropping the session that signed the request, and only that one;
// other answers are left to the other retry rules.
func TestExpressSessionsExpiredToken(t *testing.T) {
	p, f := newFakeExpress(5 * time.Minute)
	const bucket = "b--use1-az4--x-s3"
	first, _ := p.Retrieve(t.Context(), bucket)
	if got := p.retryExpired(sessionRefused("AccessDenied", first.SessionToken)); got != aws.UnknownTernary {
		t.Errorf("AccessDenied: retry %v", got)
	}
	if got := p.retryExpired(sessionRefused("ExpiredToken", "")); got != aws.UnknownTernary {
		t.Errorf("ExpiredToken without a session token: retry %v", got)
	}
	if got := p.retryExpired(sessionRefused("ExpiredToken", "token-of-an-older-session")); got != aws.TrueTernary {
		t.Errorf("ExpiredToken: retry %v", got)
	}
	if c, _ := p.Retrieve(t.Context(), bucket); c.SessionToken != first.SessionToken || f.calls.Load() != 1 {
		t.Fatal("an old session's ExpiredToken dropped the current one")
	}
	for _, code := range []string{"ExpiredToken", "InvalidToken", "TokenRefreshRequired"} {
		cur, _ := p.Retrieve(t.Context(), bucket)
		calls := f.calls.Load()
		if got := p.retryExpired(sessionRefused(code, cur.SessionToken)); got != aws.TrueTernary {
			t.Errorf("%s: retry %v", code, got)
		}
		if c, _ := p.Retrieve(t.Context(), bucket); c.SessionToken == cur.SessionToken || f.calls.Load() != calls+1 {
			t.Errorf("%s: the refused session is still used", code)
		}
	}
	if kind := classifyS3Error(sessionRefused("ExpiredToken", first.SessionToken), false); kind != KindSession {
		t.Errorf("ExpiredToken is classified %q: it would switch the remote off", kind)
	}
}

func TestExpressSessionsModes(t *testing.T) {
	p, f := newFakeExpress(5*time.Minute, "trusted--use1-az4--x-s3")
	p.Retrieve(t.Context(), "trusted--use1-az4--x-s3")
	p.Retrieve(t.Context(), "own--use1-az4--x-s3")
	if len(f.modes) != 2 || f.modes[0] != types.SessionModeReadOnly || f.modes[1] != "" {
		t.Errorf("session modes asked for: %q, want ReadOnly for the read-only bucket and the service's choice for the other", f.modes)
	}
}

// TestExpressSessionsWaitEnds: a request waiting for a slow CreateSession
// gives up with its own context; the CreateSession goes on for the next.
func TestExpressSessionsWaitEnds(t *testing.T) {
	p, f := newFakeExpress(5 * time.Minute)
	f.gate = make(chan struct{})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.Retrieve(ctx, "b--use1-az4--x-s3"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Retrieve past its deadline: %v", err)
	}
	close(f.gate)
	if c, err := p.Retrieve(t.Context(), "b--use1-az4--x-s3"); err != nil || c.SessionToken == "" || f.calls.Load() != 1 {
		t.Fatalf("after the slow CreateSession: %v, %d calls", err, f.calls.Load())
	}
}

func TestClientRegion(t *testing.T) {
	for _, c := range []struct {
		bucket, configured, endpoint, want string
	}{
		{"cache--usw2-az1--x-s3", "", "", "us-west-2"},
		{"cache--usw2-az1--x-s3", "us-east-1", "", "us-west-2"}, // the zone decides on AWS
		{"cache--cnn1-pkx1-az1--x-s3", "", "", "cn-north-1"},    // a Local Zone
		{"cache--usw2-az1--x-s3", "us-east-1", "http://127.0.0.1:9000", "us-east-1"},
		{"cache--usw2-az1--x-s3", "", "http://127.0.0.1:9000", "us-west-2"},
		{"cache--zzz9-az1--x-s3", "eu-west-1", "", "eu-west-1"}, // a zone this table does not know
		{"cache--zzz9-az1--x-s3", "", "", "us-east-1"},
		{"plain-bucket", "eu-west-1", "", "eu-west-1"},
		{"plain-bucket", "", "", "us-east-1"},
	} {
		if got := clientRegion(c.bucket, c.configured, c.endpoint); got != c.want {
			t.Errorf("clientRegion(%q, %q, %q) = %q, want %q", c.bucket, c.configured, c.endpoint, got, c.want)
		}
	}
	// The client is built for it (no network: credentials resolve on use).
	t.Setenv("AWS_REGION", "us-east-1")
	c, err := newS3Client(t.Context(), S3Options{Bucket: "cache--usw2-az1--x-s3", Credentials: shimBaseCreds})
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Options().Region; r != "us-west-2" {
		t.Errorf("client for a usw2 directory bucket with AWS_REGION=us-east-1 signs for %s", r)
	}
}

// TestExpressSessionRefusalKinds: a refused session for a bucket the client
// writes means the credentials are no good there (auth, the breaker's
// business); a refused ReadOnly session, for a bucket it only reads (a read
// location), is a denied read: that key's miss.
func TestExpressSessionRefusalKinds(t *testing.T) {
	denied := &smithy.GenericAPIError{Code: "AccessDenied", Message: "Access Denied"}
	p := newExpressSessions(func(context.Context, string, types.SessionMode) (aws.Credentials, error) {
		return aws.Credentials{}, denied
	}, 5*time.Second, "ro--usw2-az1--x-s3")
	for bucket, want := range map[string]ErrKind{"rw--usw2-az1--x-s3": KindAuth, "ro--usw2-az1--x-s3": KindDenied} {
		_, err := p.Retrieve(t.Context(), bucket)
		if got := classifyS3Error(err, false); got != want {
			t.Errorf("refused session for %s: kind %v, want %v (%v)", bucket, got, want, err)
		}
	}
}

// TestGetCauseKeepsASessionError: a get whose own deadline passes just as
// its CreateSession fails on the session's deadline (the two are equal)
// keeps the session's error, typed, so that its kind and check's hint say a
// session could not be had; any other error of a get cut off by its
// deadline becomes the deadline. (CI once lost the type in this race.)
func TestGetCauseKeepsASessionError(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errGetDeadline)
	session := fmt.Errorf("operation error S3: GetObject, create s3 express session for b--use1-az4--x-s3: %w",
		&expressSessionError{Bucket: "b--use1-az4--x-s3", Err: fmt.Errorf("operation error S3: CreateSession: %w", context.DeadlineExceeded)})
	var se *expressSessionError
	if err := s3Error("get", "k", getCause(ctx, session), false); !errors.As(err, &se) || errKind(err) != KindTimeout {
		t.Errorf("session error after the get's deadline: %v (kind %v), want the typed session error, a timeout", err, errKind(err))
	}
	if err := getCause(ctx, errors.New("operation error S3: GetObject: canceled")); !errors.Is(err, errGetDeadline) {
		t.Errorf("other error after the get's deadline: %v, want the deadline", err)
	}
}
