package main

import (
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// s3Refusal is an S3 error answer: the status and the error's code and
// message.
type s3Refusal struct {
	status        int
	code, message string
}

// newS3RuleProxy stands in front of a real S3 server (MinIO) and applies a
// rule that AWS S3 applies and the server does not: refuse returns the
// answer to give a request instead of forwarding it, or nil to forward it.
// It returns the endpoint URL for clients.
func newS3RuleProxy(t *testing.T, endpoint string, refuse func(r *http.Request) *s3Refusal) string {
	t.Helper()
	srv := httptest.NewServer(s3RuleHandler(t, endpoint, refuse))
	t.Cleanup(srv.Close)
	return srv.URL
}

// newS3TLSProxy stands in front of a real S3 server (MinIO) over HTTPS,
// with a certificate of its own CA, and forwards every request. It returns
// the endpoint URL for clients, a PEM file of the CA that clients must
// trust, and a count of the TLS connections clients opened.
func newS3TLSProxy(t *testing.T, endpoint string) (proxyURL, caFile string, conns *atomic.Int64) {
	t.Helper()
	srv := httptest.NewUnstartedServer(s3RuleHandler(t, endpoint, func(*http.Request) *s3Refusal { return nil }))
	conns = new(atomic.Int64)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes the tests fail
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile, conns
}

// s3RuleHandler forwards requests to endpoint but those refuse answers.
// Requests keep the Host header the client signed, so that signatures stay
// valid.
func s3RuleHandler(t *testing.T, endpoint string, refuse func(r *http.Request) *s3Refusal) http.Handler {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
	}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e := refuse(r); e != nil {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(e.status)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, e.code, e.message)
			return
		}
		proxy.ServeHTTP(w, r)
	})
}
