package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// shimFixedExpressCreds is an s3.ExpressCredentialsProvider that returns
// the same session credentials for any bucket, without CreateSession.
type shimFixedExpressCreds aws.Credentials

func (c shimFixedExpressCreds) Retrieve(context.Context, string) (aws.Credentials, error) {
	return aws.Credentials(c), nil
}

// expressShim plays S3 Express One Zone in front of MinIO for the SDK. It
// answers CreateSession itself, with session credentials of its own making;
// every other request must be signed with such a session (key and token),
// and is then re-signed as plain SigV4 for service s3 with MinIO's root
// credentials and passed on, its response streamed back unchanged.
type expressShim struct {
	srv       *httptest.Server
	transport *http.Transport
	signer    *v4.Signer

	expressBucket, minioBucket string
	minio                      *url.URL
	minioKey, minioSecret      string
	baseKey, baseSecret        string

	createSessions atomic.Int64 // CreateSession calls
	dataRequests   atomic.Int64 // every other request
	violations     atomic.Int64 // requests that broke the rules (answered 4xx)

	mu       sync.Mutex
	sessions map[string]shimSession // by session access key ID
	problems []string               // the first few violations
	ops      map[string]int         // data requests by operation
	hashes   map[string]int         // X-Amz-Content-Sha256 kinds seen
}

type shimSession struct {
	secret, token, bucket string
	expires               time.Time
}

const shimRegion = "us-east-1"

// startExpressShim serves an expressShim for the directory bucket express
// on 127.0.0.1 until t ends.
//
// The shim maps express onto tg.Bucket, an ordinary MinIO bucket, by
// rewriting the first path segment. MinIO itself would accept the
// "--x-s3" name (a hand-signed PUT creates it), but every SDK client treats
// such a name as a directory bucket, including the plain client this test
// uses to create the bucket and to look behind the backend's back
// (rawClient): it would call CreateSession and sign for s3express. Under an
// ordinary name that client reaches MinIO directly.
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
		signer:        v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }),
		expressBucket: express,
		minioBucket:   tg.Bucket,
		minio:         minio,
		minioKey:      tg.AccessKey,
		minioSecret:   tg.SecretKey,
		baseKey:       baseKey,
		baseSecret:    baseSecret,
		sessions:      map[string]shimSession{},
		ops:           map[string]int{},
		hashes:        map[string]int{},
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
	if err := s.checkSession(r); err != nil {
		s.violation("%s %s (%s): %v", r.Method, r.URL.Path, op, err)
		writeShimError(w, http.StatusForbidden, "AccessDenied", err.Error())
		return
	}
	if err := checkDirectoryListing(r); err != nil {
		s.violation("%s %s (%s): %v", r.Method, r.URL.Path, op, err)
		writeShimError(w, http.StatusBadRequest, "InvalidRequest", err.Error())
		return
	}
	s.forward(w, r)
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

// createSession answers CreateSession with new session credentials, valid
// for 5 minutes like those of S3 Express, after checking that the request
// is SigV4-signed for s3express with the base credentials.
func (s *expressShim) createSession(w http.ResponseWriter, r *http.Request) {
	s.createSessions.Add(1)
	err := func() error {
		if bucket := strings.Trim(r.URL.Path, "/"); bucket != s.expressBucket {
			return fmt.Errorf("session for bucket %q, want %q", bucket, s.expressBucket)
		}
		a, err := parseShimAuth(r.Header.Get("Authorization"))
		if err != nil {
			return err
		}
		if a.akid != s.baseKey {
			return fmt.Errorf("signed with access key %q, not the base key", a.akid)
		}
		return s.checkSignature(r, a, s.baseSecret)
	}()
	if err != nil {
		s.violation("CreateSession %s: %v", r.URL.Path, err)
		writeShimError(w, http.StatusForbidden, "AccessDenied", err.Error())
		return
	}
	akid := "SESS" + strings.ToUpper(randomHex(8))
	sess := shimSession{
		secret:  randomHex(20),
		token:   "sesstoken-" + randomHex(24),
		bucket:  s.expressBucket,
		expires: time.Now().Add(5 * time.Minute).UTC().Truncate(time.Second),
	}
	s.mu.Lock()
	s.sessions[akid] = sess
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/xml")
	fmt.Fprintf(w, shimSessionXML, sess.token, sess.secret, akid, sess.expires.Format(time.RFC3339))
}

// checkSession checks that r is signed for s3express with a live session
// the shim issued for the bucket r addresses, and carries its token.
func (s *expressShim) checkSession(r *http.Request) error {
	token := r.Header.Get("X-Amz-S3session-Token")
	if token == "" {
		return errors.New("no X-Amz-S3session-Token header")
	}
	a, err := parseShimAuth(r.Header.Get("Authorization"))
	if err != nil {
		return err
	}
	s.mu.Lock()
	sess, ok := s.sessions[a.akid]
	s.mu.Unlock()
	switch {
	case !ok:
		return fmt.Errorf("signed with access key %q, not a session key the shim issued", a.akid)
	case token != sess.token:
		return errors.New("X-Amz-S3session-Token is not the token of the session that signed the request")
	case time.Now().After(sess.expires):
		return fmt.Errorf("session expired at %s", sess.expires)
	}
	if bucket, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/"); bucket != sess.bucket {
		return fmt.Errorf("request for bucket %q with a session for %q", bucket, sess.bucket)
	}
	return s.checkSignature(r, a, sess.secret)
}

// checkDirectoryListing rejects the ListObjectsV2 parameters that directory
// buckets reject.
func checkDirectoryListing(r *http.Request) error {
	q := r.URL.Query()
	if q.Get("list-type") != "2" {
		return nil
	}
	if p := q.Get("prefix"); p != "" && !strings.HasSuffix(p, "/") {
		return fmt.Errorf("listing prefix %q does not end in a delimiter", p)
	}
	if d := q.Get("delimiter"); q.Has("delimiter") && d != "/" {
		return fmt.Errorf("listing delimiter %q is not /", d)
	}
	if q.Has("start-after") {
		return errors.New("listing with start-after")
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
// client says it signed, and checks the scope is s3express in shimRegion.
func (s *expressShim) checkSignature(r *http.Request, a shimAuth, secret string) error {
	if a.service != "s3express" || a.region != shimRegion {
		return fmt.Errorf("credential scope %s/%s, want s3express/%s", a.region, a.service, shimRegion)
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
// bucket name mapped) and streams MinIO's response back.
func (s *expressShim) forward(w http.ResponseWriter, r *http.Request) {
	path, query, hasQuery := strings.Cut(r.RequestURI, "?")
	rest, ok := strings.CutPrefix(path, "/"+s.expressBucket)
	if !ok || (rest != "" && !strings.HasPrefix(rest, "/")) {
		s.violation("%s %s: not a request for %s", r.Method, path, s.expressBucket)
		writeShimError(w, http.StatusBadRequest, "InvalidRequest", "request is not for the directory bucket")
		return
	}
	uri := "/" + s.minioBucket + rest
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
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
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
