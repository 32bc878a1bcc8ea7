package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// expressShim plays S3 Express One Zone in front of MinIO for the SDK, as
// strictly as the service does what a cache relies on:
//
//   - CreateSession (GET /<bucket>?session, SigV4-signed for s3express with
//     the base credentials) issues a session for one bucket and one mode.
//     A bucket the shim does not know is 404 NoSuchBucket; a mode the
//     bucket's policy does not allow the base credentials is 403
//     AccessDenied. With no mode asked for, the session is ReadWrite (the
//     service's documented default), so credentials allowed ReadOnly
//     sessions only are refused. refuseSessions and sessionDelay make
//     CreateSession fail or slow.
//   - Sessions last sessionLife (5 minutes by default, as on AWS; tests set
//     a few seconds). The expiry is given to the second, as AWS does. A
//     request signed with a session past its expiry is 400 ExpiredToken,
//     one whose token does not belong to its key 400 InvalidToken (the
//     service's codes for both).
//   - Every data request must be SigV4-signed for s3express with a session
//     key the shim issued for the bucket it addresses, and carry that
//     session's X-Amz-S3session-Token; the shim recomputes each signature.
//     Anything else is 403 AccessDenied and counted as a violation.
//   - A ReadOnly session may GetObject, HeadObject and ListObjectsV2; a
//     write is 403 AccessDenied (counted in readOnlyRefusals, not a
//     violation: the test decides whether it expected one).
//   - ListObjectsV2: a prefix not ending in "/" or a delimiter other than
//     "/" is 400 InvalidRequest with the service's message, start-after
//     too; the keys and common prefixes of each page come back in random
//     order, as a directory bucket's do.
//   - unavailableFor answers every data request 503 ServiceUnavailable for
//     a while (a directory bucket waking up after 90 days unused);
//     slowDowns answers the next n data requests 503 SlowDown.
//
// Each directory bucket maps onto a MinIO bucket of its own (the first onto
// the test's bucket): the shim rewrites the first path segment, re-signs
// the request as plain SigV4 for service s3 with MinIO's root credentials,
// and streams MinIO's answer back.
type expressShim struct {
	srv       *httptest.Server
	transport *http.Transport
	signer    *v4.Signer
	tg        s3Target

	minio                 *url.URL
	minioKey, minioSecret string
	baseKey, baseSecret   string

	createSessions   atomic.Int64 // CreateSession calls
	sessionsIssued   atomic.Int64 // of which issued a session
	dataRequests     atomic.Int64 // every other request
	violations       atomic.Int64 // requests that broke the rules (answered 4xx)
	expiredAnswers   atomic.Int64 // 400 ExpiredToken answers
	invalidAnswers   atomic.Int64 // 400 InvalidToken answers
	lateRequests     atomic.Int64 // valid requests in the last fifth of their session's life
	readOnlyRefusals atomic.Int64 // writes refused on a ReadOnly session
	unavailable      atomic.Int64 // 503 answers (SlowDown and waking up)

	mu              sync.Mutex
	buckets         map[string]*shimBucket  // by directory bucket name
	sessions        map[string]*shimSession // by session access key ID
	sessionLife     time.Duration
	sessionDelay    time.Duration // before answering CreateSession
	refuseSessions  int           // HTTP status for every CreateSession (0: none)
	unavailableTill time.Time
	slowDowns       int
	problems        []string       // the first few violations
	ops             map[string]int // data requests by operation
	hashes          map[string]int // X-Amz-Content-Sha256 kinds seen
	modes           map[string]int // sessions issued by mode
}

// shimBucket is one directory bucket the shim serves.
type shimBucket struct {
	minio  string   // the MinIO bucket that holds its objects
	region string   // the region requests must be signed for
	modes  []string // session modes the base credentials may create
}

type shimSession struct {
	secret, token, bucket, mode string
	issued, expires             time.Time
}

const (
	shimRegion    = "us-east-1"
	modeReadWrite = "ReadWrite"
	modeReadOnly  = "ReadOnly"
)

// startExpressShim serves an expressShim on 127.0.0.1 until t ends, with
// one directory bucket, express, mapped onto tg.Bucket and open to both
// session modes; addBucket adds more.
//
// MinIO itself would accept the "--x-s3" name (a hand-signed PUT creates
// it), but every SDK client treats such a name as a directory bucket,
// including the plain client the tests use to look behind the backend's
// back (rawClient): it would call CreateSession and sign for s3express.
// Under an ordinary name that client reaches MinIO directly.
func startExpressShim(t *testing.T, tg s3Target, express, baseKey, baseSecret string) *expressShim {
	t.Helper()
	minio, err := url.Parse(tg.Endpoint)
	if err != nil || minio.Host == "" {
		t.Fatalf("S3 endpoint %q: %v", tg.Endpoint, err)
	}
	s := &expressShim{
		transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:          64,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       30 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			DisableCompression:    true, // pass bodies through byte for byte
		},
		signer:      v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }),
		tg:          tg,
		minio:       minio,
		minioKey:    tg.AccessKey,
		minioSecret: tg.SecretKey,
		baseKey:     baseKey,
		baseSecret:  baseSecret,
		buckets:     map[string]*shimBucket{express: {minio: tg.Bucket, region: shimRegion, modes: []string{modeReadWrite, modeReadOnly}}},
		sessions:    map[string]*shimSession{},
		sessionLife: 5 * time.Minute,
		ops:         map[string]int{},
		hashes:      map[string]int{},
		modes:       map[string]int{},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.srv = httptest.NewUnstartedServer(s)
	s.srv.Listener.Close()
	s.srv.Listener = l
	s.srv.Config.ReadHeaderTimeout = 10 * time.Second
	s.srv.Config.IdleTimeout = 30 * time.Second
	s.srv.Start()
	t.Cleanup(func() {
		s.srv.Close()
		s.transport.CloseIdleConnections()
	})
	return s
}

// addBucket adds a directory bucket, stored in a new MinIO bucket, whose
// policy lets the base credentials create sessions of the given modes
// (none: every CreateSession is refused).
func (s *expressShim) addBucket(t *testing.T, name string, modes ...string) {
	t.Helper()
	minio := "gbcx-" + randomHex(6)
	createBucket(t, s3Target{Bucket: minio, Endpoint: s.tg.Endpoint, PathStyle: true, Region: shimRegion})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buckets[name] = &shimBucket{minio: minio, region: shimRegion, modes: modes}
}

// setBucketModes sets the session modes name's policy allows.
func (s *expressShim) setBucketModes(name string, modes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buckets[name].modes = modes
}

// minioBucket is the MinIO bucket behind a directory bucket.
func (s *expressShim) minioBucket(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buckets[name].minio
}

// setBucketRegion makes requests for name valid only when signed for
// region (the region of the bucket's zone).
func (s *expressShim) setBucketRegion(name, region string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buckets[name].region = region
}

// setSessionLife sets how long the sessions issued from now on last.
func (s *expressShim) setSessionLife(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessionLife = d
}

// setSessionFaults makes CreateSession wait delay before answering, and
// then, if status is 403 or 404, refuse as the service does.
func (s *expressShim) setSessionFaults(delay time.Duration, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessionDelay, s.refuseSessions = delay, status
}

// expireSessions makes every session issued so far expired, as if the
// requests signed with them had waited past their expiry.
func (s *expressShim) expireSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sess := range s.sessions {
		sess.expires = time.Now().Add(-time.Second)
	}
}

// unavailableFor answers every data request 503 ServiceUnavailable for d.
func (s *expressShim) unavailableFor(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unavailableTill = time.Now().Add(d)
}

// slowDown answers the next n data requests 503 SlowDown.
func (s *expressShim) slowDown(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slowDowns = n
}

// URL is the shim's endpoint, an IP address: the SDK then addresses the
// bucket path-style.
func (s *expressShim) URL() string { return s.srv.URL }

func (s *expressShim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Query().Has("session") {
		s.createSession(w, r)
		return
	}
	s.dataRequests.Add(1)
	op := shimOperation(r)
	hash := r.Header.Get("X-Amz-Content-Sha256")
	kind := hash
	if len(hash) == 64 && strings.Trim(hash, "0123456789abcdef") == "" {
		kind = "hex sha256"
	}
	s.mu.Lock()
	s.ops[op]++
	s.hashes[kind]++
	s.mu.Unlock()
	sess, err := s.checkSession(r)
	if err != nil {
		var se *shimError
		if errors.As(err, &se) {
			writeShimError(w, se.status, se.code, se.msg)
			return
		}
		s.violation("%s %s (%s): %v", r.Method, r.URL.Path, op, err)
		writeShimError(w, http.StatusForbidden, "AccessDenied", err.Error())
		return
	}
	if sess.mode == modeReadOnly && !shimReadOnlyOp(r) {
		s.readOnlyRefusals.Add(1)
		writeShimError(w, http.StatusForbidden, "AccessDenied", "Access Denied")
		return
	}
	if err := checkDirectoryListing(r); err != nil {
		s.violation("%s %s (%s): %v", r.Method, r.URL.Path, op, err)
		writeShimError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	if code, msg := s.overloaded(); code != "" {
		s.unavailable.Add(1)
		writeShimError(w, http.StatusServiceUnavailable, code, msg)
		return
	}
	s.forward(w, r, op)
}

// overloaded says whether to answer a data request 503, and how.
func (s *expressShim) overloaded() (code, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case time.Now().Before(s.unavailableTill):
		return "ServiceUnavailable", "Service is unable to handle request."
	case s.slowDowns > 0:
		s.slowDowns--
		return "SlowDown", "Please reduce your request rate."
	}
	return "", ""
}

// shimReadOnlyOp reports whether a ReadOnly session may make request r.
func shimReadOnlyOp(r *http.Request) bool {
	return r.Method == http.MethodGet || r.Method == http.MethodHead
}

// shimOperation names the S3 operation of a request, for counting.
func shimOperation(r *http.Request) string {
	q := r.URL.Query()
	switch {
	case q.Has("x-id"):
		return q.Get("x-id")
	case q.Get("list-type") == "2":
		return "ListObjectsV2"
	case q.Has("delete"):
		return "DeleteObjects"
	}
	return r.Method + " " + r.URL.Path
}

const shimSessionXML = `<?xml version="1.0" encoding="UTF-8"?>
<CreateSessionResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Credentials><SessionToken>%s</SessionToken><SecretAccessKey>%s</SecretAccessKey><AccessKeyId>%s</AccessKeyId><Expiration>%s</Expiration></Credentials></CreateSessionResult>`

// shimError is an answer the service itself would give, not a violation.
type shimError struct {
	status    int
	code, msg string
}

func (e *shimError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.code, e.msg) }

// createSession answers CreateSession with new session credentials, after
// checking that the request is SigV4-signed for s3express with the base
// credentials, for a bucket that exists, in a mode its policy allows.
func (s *expressShim) createSession(w http.ResponseWriter, r *http.Request) {
	s.createSessions.Add(1)
	s.mu.Lock()
	delay, refuse, life := s.sessionDelay, s.refuseSessions, s.sessionLife
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	name := strings.Trim(r.URL.Path, "/")
	s.mu.Lock()
	bucket := s.buckets[name]
	s.mu.Unlock()
	mode, err := func() (string, error) {
		a, err := parseShimAuth(r.Header.Get("Authorization"))
		if err != nil {
			return "", err
		}
		if a.akid != s.baseKey {
			return "", fmt.Errorf("signed with access key %q, not the base key", a.akid)
		}
		region := shimRegion
		if bucket != nil {
			region = bucket.region
		}
		if err := s.checkSignature(r, a, s.baseSecret, region); err != nil {
			return "", err
		}
		if bucket == nil || refuse == http.StatusNotFound {
			return "", &shimError{http.StatusNotFound, "NoSuchBucket", "The specified bucket does not exist"}
		}
		if refuse == http.StatusForbidden {
			return "", &shimError{http.StatusForbidden, "AccessDenied", "Access Denied"}
		}
		switch want := r.Header.Get("X-Amz-Create-Session-Mode"); want {
		case "":
			// "By default, a ReadWrite session is created" (CreateSession):
			// credentials that may only read are refused.
			if slices.Contains(bucket.modes, modeReadWrite) {
				return modeReadWrite, nil
			}
		case modeReadWrite, modeReadOnly:
			if slices.Contains(bucket.modes, want) {
				return want, nil
			}
		default:
			return "", &shimError{http.StatusBadRequest, "InvalidArgument", "invalid session mode"}
		}
		return "", &shimError{http.StatusForbidden, "AccessDenied", "Access Denied"}
	}()
	if err != nil {
		var se *shimError
		if errors.As(err, &se) {
			writeShimError(w, se.status, se.code, se.msg)
			return
		}
		s.violation("CreateSession %s: %v", r.URL.Path, err)
		writeShimError(w, http.StatusForbidden, "AccessDenied", err.Error())
		return
	}
	s.sessionsIssued.Add(1)
	akid := "SESS" + strings.ToUpper(randomHex(8))
	now := time.Now()
	sess := &shimSession{
		secret:  randomHex(20),
		token:   "sesstoken-" + randomHex(24),
		bucket:  name,
		mode:    mode,
		issued:  now,
		expires: now.Add(life).UTC().Truncate(time.Second),
	}
	answer := fmt.Sprintf(shimSessionXML, sess.token, sess.secret, akid, sess.expires.Format(time.RFC3339))
	s.mu.Lock()
	s.sessions[akid] = sess // from here on, expireSessions may change it
	s.modes[mode]++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/xml")
	io.WriteString(w, answer)
}

// checkSession checks that r is signed for s3express with a live session
// the shim issued for the bucket r addresses, and carries its token. An
// expired session or a token that is not the key's is answered as the
// service answers it (a *shimError); anything else is a violation.
func (s *expressShim) checkSession(r *http.Request) (*shimSession, error) {
	token := r.Header.Get("X-Amz-S3session-Token")
	if token == "" {
		return nil, errors.New("no X-Amz-S3session-Token header")
	}
	a, err := parseShimAuth(r.Header.Get("Authorization"))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	sess, ok := s.sessions[a.akid]
	var issued, expires time.Time
	var region string
	if ok {
		issued, expires = sess.issued, sess.expires
		if b := s.buckets[sess.bucket]; b != nil {
			region = b.region
		}
	}
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("signed with access key %q, not a session key the shim issued", a.akid)
	}
	if bucket, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/"); bucket != sess.bucket {
		return nil, fmt.Errorf("request for bucket %q with a session for %q", bucket, sess.bucket)
	}
	if err := s.checkSignature(r, a, sess.secret, region); err != nil {
		return nil, err
	}
	now := time.Now()
	switch {
	case token != sess.token:
		s.invalidAnswers.Add(1)
		return nil, &shimError{http.StatusBadRequest, "InvalidToken", "The provided token is malformed or otherwise invalid."}
	case !now.Before(expires):
		s.expiredAnswers.Add(1)
		return nil, &shimError{http.StatusBadRequest, "ExpiredToken", "The provided token has expired."}
	case expires.Sub(now) < expires.Sub(issued)/5:
		s.lateRequests.Add(1)
	}
	return sess, nil
}

// checkDirectoryListing rejects the ListObjectsV2 parameters that directory
// buckets reject, with the service's words.
func checkDirectoryListing(r *http.Request) error {
	q := r.URL.Query()
	if q.Get("list-type") != "2" {
		return nil
	}
	if p := q.Get("prefix"); p != "" && !strings.HasSuffix(p, "/") {
		return fmt.Errorf("This bucket does not support a prefix that does not end in a delimiter. Specify a prefix path ending with a delimiter and try again. (prefix %q)", p)
	}
	if d := q.Get("delimiter"); q.Has("delimiter") && d != "/" {
		return fmt.Errorf("This bucket does not support a delimiter other than /. (delimiter %q)", d)
	}
	if q.Has("start-after") {
		return errors.New("This bucket does not support StartAfter.")
	}
	return nil
}

// shimAuth is a parsed SigV4 Authorization header.
type shimAuth struct {
	akid, date, region, service string
	signedHeaders, signature    string
}

func parseShimAuth(h string) (shimAuth, error) {
	var a shimAuth
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return a, fmt.Errorf("Authorization %.40q is not AWS4-HMAC-SHA256", h)
	}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return a, fmt.Errorf("malformed Credential %q", v)
			}
			a.akid, a.date, a.region, a.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			a.signedHeaders = v
		case "Signature":
			a.signature = v
		}
	}
	if a.akid == "" || a.signedHeaders == "" || a.signature == "" {
		return a, errors.New("Authorization lacks Credential, SignedHeaders or Signature")
	}
	return a, nil
}

// checkSignature recomputes r's signature with secret over the headers the
// client says it signed, and checks the scope is s3express in region.
func (s *expressShim) checkSignature(r *http.Request, a shimAuth, secret, region string) error {
	if a.service != "s3express" || a.region != region {
		return fmt.Errorf("credential scope %s/%s, want s3express/%s", a.region, a.service, region)
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return fmt.Errorf("X-Amz-Date: %v", err)
	}
	if a.date != when.Format("20060102") {
		return fmt.Errorf("credential date %s does not match X-Amz-Date", a.date)
	}
	clone, err := http.NewRequest(r.Method, "http://"+r.Host+r.RequestURI, nil)
	if err != nil {
		return err
	}
	clone.Host = r.Host
	clone.ContentLength = r.ContentLength
	for _, h := range strings.Split(a.signedHeaders, ";") {
		if h == "host" || h == "content-length" {
			continue
		}
		v, ok := r.Header[http.CanonicalHeaderKey(h)]
		if !ok {
			return fmt.Errorf("signed header %s is missing", h)
		}
		clone.Header[http.CanonicalHeaderKey(h)] = v
	}
	err = s.signer.SignHTTP(r.Context(), aws.Credentials{AccessKeyID: a.akid, SecretAccessKey: secret}, clone,
		r.Header.Get("X-Amz-Content-Sha256"), a.service, a.region, when,
		func(o *v4.SignerOptions) { o.DisableSessionToken = true })
	if err != nil {
		return err
	}
	want, err := parseShimAuth(clone.Header.Get("Authorization"))
	if err != nil {
		return err
	}
	if want.signedHeaders != a.signedHeaders || want.signature != a.signature {
		return fmt.Errorf("signature does not match (signed headers %s)", a.signedHeaders)
	}
	return nil
}

// shimAuthHeaders are the client's authentication, which the shim replaces
// before passing a request on to MinIO.
var shimAuthHeaders = map[string]bool{
	"Authorization":         true,
	"X-Amz-S3session-Token": true,
	"X-Amz-Security-Token":  true,
	"X-Amz-Date":            true,
}

// shimHopHeaders are hop-by-hop headers, passed on in neither direction.
var shimHopHeaders = map[string]bool{
	"Connection":        true,
	"Keep-Alive":        true,
	"Proxy-Connection":  true,
	"Te":                true,
	"Trailer":           true,
	"Transfer-Encoding": true,
	"Upgrade":           true,
}

// forward re-signs r for MinIO (service s3, MinIO's root credentials, the
// bucket name mapped) and streams MinIO's response back; a listing's
// entries are shuffled on the way.
func (s *expressShim) forward(w http.ResponseWriter, r *http.Request, op string) {
	path, query, hasQuery := strings.Cut(r.RequestURI, "?")
	name, rest, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	s.mu.Lock()
	bucket := s.buckets[name]
	s.mu.Unlock()
	if bucket == nil {
		s.violation("%s %s: not a request for a directory bucket of the shim", r.Method, path)
		writeShimError(w, http.StatusBadRequest, "InvalidRequest", "request is not for a directory bucket")
		return
	}
	uri := "/" + bucket.minio
	if strings.Contains(strings.TrimPrefix(path, "/"), "/") {
		uri += "/" + rest
	}
	if hasQuery {
		uri += "?" + query
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, s.minio.Scheme+"://"+s.minio.Host+uri, nil)
	if err != nil {
		writeShimError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	// Keep the length exactly: with an unknown length Go would send the
	// body chunked, the signer would leave content-length out, and MinIO
	// would refuse the PUT.
	out.ContentLength = r.ContentLength
	out.Body = r.Body
	if r.ContentLength == 0 {
		out.Body = http.NoBody
	}
	for k, v := range r.Header {
		if !shimAuthHeaders[k] && !shimHopHeaders[k] && k != "Content-Length" { // out.ContentLength says it
			out.Header[k] = v
		}
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if payload == "" {
		payload = "UNSIGNED-PAYLOAD"
		out.Header.Set("X-Amz-Content-Sha256", payload)
	}
	err = s.signer.SignHTTP(r.Context(), aws.Credentials{AccessKeyID: s.minioKey, SecretAccessKey: s.minioSecret},
		out, payload, "s3", shimRegion, time.Now())
	if err != nil {
		writeShimError(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	resp, err := s.transport.RoundTrip(out)
	if err != nil {
		writeShimError(w, http.StatusBadGateway, "InternalError", err.Error())
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		if !shimHopHeaders[k] {
			w.Header()[k] = v
		}
	}
	if op == "ListObjectsV2" && resp.StatusCode == http.StatusOK {
		page, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			writeShimError(w, http.StatusBadGateway, "InternalError", err.Error())
			return
		}
		page = shuffleListing(page) // same bytes, another order: same length
		w.WriteHeader(resp.StatusCode)
		w.Write(page)
		return
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

var (
	shimContents       = regexp.MustCompile(`(?s)<Contents>.*?</Contents>`)
	shimCommonPrefixes = regexp.MustCompile(`(?s)<CommonPrefixes>.*?</CommonPrefixes>`)
)

// shuffleListing puts the keys and common prefixes of a ListObjectsV2 page
// in random order, each in the places the sorted ones held.
func shuffleListing(page []byte) []byte {
	for _, re := range []*regexp.Regexp{shimContents, shimCommonPrefixes} {
		locs := re.FindAllIndex(page, -1)
		if len(locs) < 2 {
			continue
		}
		// The elements are adjacent in MinIO's answer; shuffle within the
		// run they form.
		start, end := locs[0][0], locs[len(locs)-1][1]
		elems := make([][]byte, len(locs))
		for i, l := range locs {
			elems[i] = slices.Clone(page[l[0]:l[1]])
		}
		total := 0
		for _, e := range elems {
			total += len(e)
		}
		if total != end-start {
			continue // not adjacent: leave this page as it is
		}
		rand.Shuffle(len(elems), func(i, j int) { elems[i], elems[j] = elems[j], elems[i] })
		page = slices.Concat(page[:start], bytes.Join(elems, nil), page[end:])
	}
	return page
}

func writeShimError(w http.ResponseWriter, status int, code, msg string) {
	var esc bytes.Buffer
	xml.EscapeText(&esc, []byte(msg))
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Error><Code>%s</Code><Message>%s</Message><RequestId>shim</RequestId></Error>`, code, esc.String())
}

func (s *expressShim) violation(format string, args ...any) {
	s.violations.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.problems) < 10 {
		s.problems = append(s.problems, fmt.Sprintf(format, args...))
	}
}

func (s *expressShim) problemList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.problems...)
}

// counts returns a copy of one of the shim's tallies.
func (s *expressShim) counts(m *map[string]int) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(map[string]int, len(*m))
	for k, v := range *m {
		c[k] = v
	}
	return c
}

// summary is a one-line account of what the shim saw, for test logs.
func (s *expressShim) summary() string {
	return fmt.Sprintf("CreateSession %d (sessions issued %d, by mode %v), data requests %d, ExpiredToken %d, InvalidToken %d, late requests %d, ReadOnly refusals %d, 503s %d, violations %d",
		s.createSessions.Load(), s.sessionsIssued.Load(), s.counts(&s.modes), s.dataRequests.Load(), s.expiredAnswers.Load(),
		s.invalidAnswers.Load(), s.lateRequests.Load(), s.readOnlyRefusals.Load(), s.unavailable.Load(), s.violations.Load())
}

// shimFixedExpressCreds is an s3.ExpressCredentialsProvider that returns
// the same session credentials for any bucket, without CreateSession.
type shimFixedExpressCreds aws.Credentials

func (c shimFixedExpressCreds) Retrieve(context.Context, string) (aws.Credentials, error) {
	return aws.Credentials(c), nil
}

var _ s3.ExpressCredentialsProvider = shimFixedExpressCreds{}
