// Package toxiproxy runs a toxiproxy-server (installed by
// scripts/toxiproxy.sh) on 127.0.0.1 and drives it through its HTTP API
// with plain net/http. The benchmark (bench/) adds round-trip time with it;
// the chaos suite (chaos/) injects faults.
package toxiproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"time"
)

const (
	startTimeout = 30 * time.Second // bound on the API answering after a start
	apiTimeout   = 10 * time.Second // bound on one API call
)

// Server is a toxiproxy-server this program started.
type Server struct {
	cmd    *exec.Cmd
	done   chan struct{} // closed once the process has exited
	api    string        // http://127.0.0.1:PORT
	client *http.Client
}

// Start starts bin on a free port of 127.0.0.1, writing its log (warnings
// and errors) to logPath, and waits until its API answers. A server that
// does not come up is tried again on another port, three times in all. On
// Linux the kernel kills the server if this program dies.
func Start(ctx context.Context, bin, logPath string) (*Server, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("toxiproxy server %s: %v (run scripts/toxiproxy.sh install)", bin, err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	var lastErr error
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "-host", "127.0.0.1", "-port", strconv.Itoa(port))
		cmd.Env = append(os.Environ(), "LOG_LEVEL=warn")
		cmd.Stdout, cmd.Stderr = logf, logf
		setDeathSignal(cmd)
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting %s: %v", bin, err)
		}
		s := &Server{
			cmd:    cmd,
			done:   make(chan struct{}),
			api:    fmt.Sprintf("http://127.0.0.1:%d", port),
			client: &http.Client{Timeout: apiTimeout, Transport: &http.Transport{Proxy: nil}},
		}
		go func() { cmd.Wait(); close(s.done) }()
		if lastErr = s.waitReady(ctx); lastErr == nil {
			return s, nil
		}
		s.Stop()
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	log, _ := os.ReadFile(logPath)
	return nil, fmt.Errorf("toxiproxy did not start: %v\n%s", lastErr, tail(string(log), 2000))
}

func (s *Server) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-s.done:
			return errors.New("toxiproxy-server exited during startup")
		default:
		}
		if err := s.call("GET", "/version", nil, nil); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("API at %s not ready after %v", s.api, startTimeout)
}

// Stop kills the server and waits (a few seconds at most) for it to exit.
func (s *Server) Stop() {
	if s == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
	}
}

// Pid returns the server's process ID.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Reset removes every toxic of every proxy and enables the proxies.
func (s *Server) Reset() error { return s.call("POST", "/reset", nil, nil) }

// Proxy is one proxy of a Server.
type Proxy struct {
	s      *Server
	name   string
	Listen string // host:port of 127.0.0.1 the proxy listens on
}

// CreateProxy makes a proxy named name from a free port of 127.0.0.1 to
// upstream (host:port).
func (s *Server) CreateProxy(name, upstream string) (*Proxy, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		listen := fmt.Sprintf("127.0.0.1:%d", port)
		var out struct {
			Listen string `json:"listen"`
		}
		lastErr = s.call("POST", "/proxies", map[string]any{
			"name": name, "listen": listen, "upstream": upstream, "enabled": true,
		}, &out)
		if lastErr == nil {
			if out.Listen != "" {
				listen = out.Listen
			}
			return &Proxy{s: s, name: name, Listen: listen}, nil
		}
		s.call("DELETE", "/proxies/"+name, nil, nil) // a half-made one, if any
	}
	return nil, lastErr
}

// AddToxic adds a toxic of type typ (latency, timeout, reset_peer, ...) to
// stream ("upstream": to the server, or "downstream") of p, applied to the
// fraction toxicity of connections, with the type's attributes.
func (p *Proxy) AddToxic(name, typ, stream string, toxicity float64, attrs map[string]any) error {
	return p.s.call("POST", "/proxies/"+p.name+"/toxics", map[string]any{
		"name": name, "type": typ, "stream": stream, "toxicity": toxicity, "attributes": attrs,
	}, nil)
}

// RemoveToxic removes the toxic called name from p.
func (p *Proxy) RemoveToxic(name string) error {
	return p.s.call("DELETE", "/proxies/"+p.name+"/toxics/"+name, nil, nil)
}

// call sends one API request with body (if not nil) as JSON and decodes
// the answer into out (if not nil). Any status >= 300 is an error.
func (s *Server) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.api+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("toxiproxy %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// FreePort returns a TCP port of 127.0.0.1 that nobody listened on a
// moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
