package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
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
// It returns the endpoint URL for clients. Requests keep the Host header
// the client signed, so that signatures stay valid.
func newS3RuleProxy(t *testing.T, endpoint string, refuse func(r *http.Request) *s3Refusal) string {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.Out.Host = pr.In.Host
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e := refuse(r); e != nil {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(e.status)
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, e.code, e.message)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
