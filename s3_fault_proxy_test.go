package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faultMode is what faultProxy does to the requests it gets.
type faultMode int32

const (
	faultPass    faultMode = iota // forward unchanged
	faultRefuse                   // listener closed: connections refused
	fault500                      // answer 500 InternalError
	fault503                      // answer 503 SlowDown
	faultStall                    // never answer
	faultReset                    // object downloads: headers, half the body, then abort
	faultCorrupt                  // object downloads: bytes flipped, same length
)

func (m faultMode) String() string {
	return [...]string{"pass", "refuse", "500", "503", "stall", "reset", "corrupt"}[m]
}

// faultProxy is a reverse proxy to an S3 endpoint that injects faults. It
// forwards requests with the Host header the client used, so that SigV4
// signatures (made for the proxy's host:port) stay valid at the endpoint.
type faultProxy struct {
	addr string // host:port, kept when the listener is closed and reopened
	rp   *httputil.ReverseProxy
	srv  *http.Server
	done chan struct{} // closed at cleanup: stalled handlers return

	mode atomic.Int32

	mu sync.Mutex
	ln net.Listener // nil while refusing

	requests  atomic.Int64 // requests seen, in any mode
	damaged   atomic.Int64 // object downloads cut off or corrupted
	packs     atomic.Int64 // of damaged, pack ranges
	untouched atomic.Int64 // object downloads in reset/corrupt mode passed as they were (empty)
}

type faultModeKey struct{}

// faultCounts is a snapshot of a faultProxy's counters.
type faultCounts struct{ requests, damaged, untouched, packs int64 }

func (c faultCounts) sub(d faultCounts) faultCounts {
	return faultCounts{c.requests - d.requests, c.damaged - d.damaged, c.untouched - d.untouched, c.packs - d.packs}
}

func newFaultProxy(t *testing.T, endpoint string) *faultProxy {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	quiet := log.New(io.Discard, "", 0)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	p := &faultProxy{addr: ln.Addr().String(), ln: ln, done: make(chan struct{})}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // what the client signed
		},
		Transport: transport,
		// Flush every write, so that a download cut off mid-body has
		// sent its headers and the first part.
		FlushInterval:  -1,
		ModifyResponse: p.modifyResponse,
		ErrorLog:       quiet,
	}
	p.srv = &http.Server{Handler: p, ErrorLog: quiet, ReadHeaderTimeout: time.Minute}
	go p.srv.Serve(ln)
	t.Cleanup(func() {
		close(p.done)
		p.srv.Close()
		transport.CloseIdleConnections()
	})
	return p
}

// URL is the endpoint URL clients use.
func (p *faultProxy) URL() string { return "http://" + p.addr }

func (p *faultProxy) snapshot() faultCounts {
	return faultCounts{p.requests.Load(), p.damaged.Load(), p.untouched.Load(), p.packs.Load()}
}

// setMode switches the proxy to m: refuse closes the listener, any other
// mode opens it again on the same address.
func (p *faultProxy) setMode(t *testing.T, m faultMode) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode.Store(int32(m))
	switch {
	case m == faultRefuse && p.ln != nil:
		p.ln.Close()
		p.ln = nil
	case m != faultRefuse && p.ln == nil:
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			t.Fatalf("fault proxy: listen again on %s: %v", p.addr, err)
		}
		p.ln = ln
		go p.srv.Serve(ln)
	}
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	mode := faultMode(p.mode.Load())
	switch mode {
	case faultRefuse:
		// A connection accepted just before the listener closed.
		panic(http.ErrAbortHandler)
	case fault500:
		faultS3Error(w, r, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	case fault503:
		faultS3Error(w, r, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case faultStall:
		// Take the request (its body too, so that the client waits for
		// an answer and a closed connection ends the context), and never
		// answer.
		io.Copy(io.Discard, r.Body)
		timer := time.NewTimer(60 * time.Second)
		defer timer.Stop()
		select {
		case <-r.Context().Done():
		case <-p.done:
		case <-timer.C:
		}
		panic(http.ErrAbortHandler) // no answer, ever
	default:
		p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), faultModeKey{}, mode)))
	}
}

// faultS3Error answers with an S3 error document.
func faultS3Error(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	io.Copy(io.Discard, r.Body) // so the client reads the answer, not a reset
	body := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+
		`<Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>fault-proxy</RequestId></Error>`,
		code, msg, r.URL.Path)
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// modifyResponse damages downloads of entries' objects and of pack ranges
// in reset and corrupt modes.
func (p *faultProxy) modifyResponse(res *http.Response) error {
	mode, _ := res.Request.Context().Value(faultModeKey{}).(faultMode)
	path := res.Request.URL.Path
	pack := strings.Contains(path, "/"+s3LayoutVersion+"/p/")
	if mode != faultReset && mode != faultCorrupt ||
		res.Request.Method != http.MethodGet || (res.StatusCode != http.StatusOK && res.StatusCode != http.StatusPartialContent) ||
		!strings.Contains(path, "/"+s3LayoutVersion+"/a/") && !pack {
		return nil
	}
	if pack {
		p.packs.Add(1)
	}
	if res.ContentLength <= 0 {
		p.untouched.Add(1) // nothing to damage
		return nil
	}
	p.damaged.Add(1)
	if mode == faultReset {
		res.Body = &faultCutBody{ReadCloser: res.Body, left: res.ContentLength / 2}
	} else {
		res.Body = &faultFlipBody{ReadCloser: res.Body, size: res.ContentLength}
	}
	return nil
}

var errFaultCut = errors.New("fault proxy: download cut off")

// faultCutBody yields the first left bytes and then fails, which makes the
// reverse proxy abort the connection mid-body.
type faultCutBody struct {
	io.ReadCloser
	left int64
}

func (c *faultCutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errFaultCut
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.ReadCloser.Read(p)
	c.left -= int64(n)
	if err == io.EOF {
		err = errFaultCut
	}
	return n, err
}

// faultFlipBody flips the first, middle and last bytes of a body of size
// bytes.
type faultFlipBody struct {
	io.ReadCloser
	off, size int64
}

func (f *faultFlipBody) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	for i := range n {
		if pos := f.off + int64(i); pos == 0 || pos == f.size/2 || pos == f.size-1 {
			p[i] ^= 0xff
		}
	}
	f.off += int64(n)
	return n, err
}
