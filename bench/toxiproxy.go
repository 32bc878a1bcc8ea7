package main

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

// toxiproxy is a toxiproxy-server this program started, listening on
// 127.0.0.1, driven through its HTTP API with plain net/http.
type toxiproxy struct {
	cmd    *exec.Cmd
	waited chan struct{}
	api    string // http://127.0.0.1:PORT
	client *http.Client
	rtt    time.Duration // the round trip currently added to the proxy
	proxy  string        // name of the proxy created by createProxy
}

const (
	toxStartTimeout = 15 * time.Second
	toxAPITimeout   = 10 * time.Second
)

// startToxiproxy starts bin on a free port of 127.0.0.1 and waits until
// its API answers. Its output goes to logPath.
func startToxiproxy(bin, logPath string) (*toxiproxy, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("toxiproxy server %s: %v (run scripts/toxiproxy.sh install)", bin, err)
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "-host", "127.0.0.1", "-port", strconv.Itoa(port))
		cmd.Stdout, cmd.Stderr = logf, logf
		setDeathSignal(cmd) // never outlive this program, even if it is killed
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting %s: %v", bin, err)
		}
		t := &toxiproxy{
			cmd:    cmd,
			waited: make(chan struct{}),
			api:    fmt.Sprintf("http://127.0.0.1:%d", port),
			client: &http.Client{Timeout: toxAPITimeout, Transport: &http.Transport{Proxy: nil}},
		}
		go func() { cmd.Wait(); close(t.waited) }()
		if lastErr = t.waitReady(); lastErr == nil {
			return t, nil
		}
		t.stop()
	}
	log, _ := os.ReadFile(logPath)
	return nil, fmt.Errorf("toxiproxy did not start: %v\n%s", lastErr, tail(string(log), 2000))
}

func (t *toxiproxy) waitReady() error {
	deadline := time.Now().Add(toxStartTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-t.waited:
			return errors.New("toxiproxy-server exited during startup")
		default:
		}
		if err := t.call("GET", "/version", nil, nil); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("API at %s not ready after %v", t.api, toxStartTimeout)
}

// stop kills the server and waits for it.
func (t *toxiproxy) stop() {
	if t == nil || t.cmd.Process == nil {
		return
	}
	t.cmd.Process.Kill()
	select {
	case <-t.waited:
	case <-time.After(5 * time.Second):
	}
}

// call sends one API request with body (if not nil) as JSON and decodes
// the answer into out (if not nil). Any status >= 300 is an error.
func (t *toxiproxy) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), toxAPITimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, t.api+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := t.client.Do(req)
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

// createProxy makes a proxy from a free port of 127.0.0.1 to upstream
// (host:port) and returns the address it listens on.
func (t *toxiproxy) createProxy(name, upstream string) (string, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return "", err
		}
		listen := fmt.Sprintf("127.0.0.1:%d", port)
		var out struct {
			Listen string `json:"listen"`
		}
		lastErr = t.call("POST", "/proxies", map[string]any{
			"name": name, "listen": listen, "upstream": upstream, "enabled": true,
		}, &out)
		if lastErr == nil {
			t.proxy = name
			if out.Listen != "" {
				listen = out.Listen
			}
			return listen, nil
		}
		t.call("DELETE", "/proxies/"+name, nil, nil)
	}
	return "", lastErr
}

// setRTT makes the proxy add rtt to every round trip: a latency toxic of
// rtt/2 on each direction (none for 0).
func (t *toxiproxy) setRTT(rtt time.Duration) error {
	if rtt == t.rtt {
		return nil
	}
	for _, stream := range []string{"upstream", "downstream"} {
		name := "rtt_" + stream
		if t.rtt > 0 {
			if err := t.call("DELETE", "/proxies/"+t.proxy+"/toxics/"+name, nil, nil); err != nil {
				return err
			}
		}
		if rtt > 0 {
			err := t.call("POST", "/proxies/"+t.proxy+"/toxics", map[string]any{
				"name": name, "type": "latency", "stream": stream, "toxicity": 1.0,
				"attributes": map[string]any{"latency": (rtt / 2).Milliseconds(), "jitter": 0},
			}, nil)
			if err != nil {
				return err
			}
		}
	}
	t.rtt = rtt
	return nil
}

// freePort returns a TCP port of 127.0.0.1 that nobody listened on a moment
// ago.
func freePort() (int, error) {
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
