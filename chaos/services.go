//go:build linux

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
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

const (
	minioUser     = "chaosadmin"
	minioPassword = "chaos-secret-key-0123456789"
	bucketName    = "chaos-cache"
	serviceReady  = 60 * time.Second // bound on a server's start
)

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// child is a server process this program started.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startChild(bin string, args, env []string, logf *os.File) (*child, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	return c, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends sig, and SIGKILL if the process is still there after grace.
func (c *child) stop(sig syscall.Signal, grace time.Duration) {
	if c == nil || c.exited() {
		return
	}
	c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
		return
	case <-time.After(grace):
	}
	c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
	}
}

// minio is a MinIO server on 127.0.0.1 that can be killed and restarted on
// the same port and data directory.
type minio struct {
	bin, dataDir, logPath string
	port, consolePort     int

	mu  sync.Mutex
	cur *child
}

func (m *minio) endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", m.port) }
func (m *minio) hostPort() string { return fmt.Sprintf("127.0.0.1:%d", m.port) }

// start starts the server on free ports and waits until it is healthy.
func (m *minio) start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var lastErr error
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		var err error
		if m.port, err = freePort(); err != nil {
			return err
		}
		if m.consolePort, err = freePort(); err != nil {
			return err
		}
		if lastErr = m.startOnce(ctx); lastErr == nil {
			return nil
		}
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return lastErr
}

// restart starts the server again on the same port and data directory.
func (m *minio) restart(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if lastErr = m.startOnce(ctx); lastErr == nil {
			return nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second) // the port may still be held for a moment
	}
	return lastErr
}

func (m *minio) startOnce(ctx context.Context) error {
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	env := append(os.Environ(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioPassword,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off")
	c, err := startChild(m.bin, []string{"server", "--address", m.hostPort(),
		"--console-address", fmt.Sprintf("127.0.0.1:%d", m.consolePort), "--quiet", m.dataDir}, env, logf)
	if err != nil {
		return fmt.Errorf("starting minio: %v", err)
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	deadline := time.Now().Add(serviceReady)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if c.exited() {
			return fmt.Errorf("minio exited during startup (see %s)", m.logPath)
		}
		resp, err := hc.Get(m.endpoint() + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				m.cur = c
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.stop(syscall.SIGKILL, time.Second)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("minio not healthy after %v (see %s)", serviceReady, m.logPath)
}

// kill stops the server with sig (SIGKILL after 10 s).
func (m *minio) kill(sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cur.stop(sig, 10*time.Second)
	m.cur = nil
}

func (m *minio) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur != nil && !m.cur.exited()
}

// createBucket makes the bucket, straight at MinIO (not through the proxy).
func createBucket(ctx context.Context, endpoint string) error {
	client := s3.NewFromConfig(aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider(minioUser, minioPassword, ""),
	}, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
	})
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucketName)})
	if err != nil {
		return fmt.Errorf("creating bucket %s: %v", bucketName, err)
	}
	_, err = client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucketName)})
	return err
}

// toxi is a toxiproxy-server on 127.0.0.1 with one proxy, driven through
// its HTTP API.
type toxi struct {
	proc   *child
	api    string
	listen string // host:port of the proxy
	hc     *http.Client
}

const proxyName = "s3"

func startToxi(ctx context.Context, bin, logPath, upstream string) (*toxi, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	var lastErr error
	for attempt := 0; attempt < 3 && ctx.Err() == nil; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		env := append(os.Environ(), "LOG_LEVEL=warn")
		c, err := startChild(bin, []string{"-host", "127.0.0.1", "-port", strconv.Itoa(port)}, env, logf)
		if err != nil {
			return nil, fmt.Errorf("starting toxiproxy: %v", err)
		}
		t := &toxi{proc: c, api: fmt.Sprintf("http://127.0.0.1:%d", port),
			hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}}
		if lastErr = t.waitReady(ctx, c); lastErr == nil {
			if lastErr = t.createProxy(upstream); lastErr == nil {
				return t, nil
			}
		}
		c.stop(syscall.SIGKILL, time.Second)
	}
	return nil, fmt.Errorf("toxiproxy did not start: %v (see %s)", lastErr, logPath)
}

func (t *toxi) waitReady(ctx context.Context, c *child) error {
	deadline := time.Now().Add(serviceReady)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if c.exited() {
			return errors.New("toxiproxy-server exited during startup")
		}
		if err := t.call("GET", "/version", nil); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("toxiproxy API not ready")
}

func (t *toxi) stop() {
	if t != nil {
		t.proc.stop(syscall.SIGKILL, time.Second)
	}
}

// call sends one API request, body (if not nil) as JSON.
func (t *toxi) call(method, path string, body any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, t.api+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("toxiproxy %s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

func (t *toxi) createProxy(upstream string) error {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		listen := fmt.Sprintf("127.0.0.1:%d", port)
		lastErr = t.call("POST", "/proxies", map[string]any{
			"name": proxyName, "listen": listen, "upstream": upstream, "enabled": true})
		if lastErr == nil {
			t.listen = listen
			return nil
		}
		t.call("DELETE", "/proxies/"+proxyName, nil)
	}
	return lastErr
}

// addToxic adds a toxic to the proxy.
func (t *toxi) addToxic(name, typ, stream string, toxicity float64, attrs map[string]any) error {
	return t.call("POST", "/proxies/"+proxyName+"/toxics", map[string]any{
		"name": name, "type": typ, "stream": stream, "toxicity": toxicity, "attributes": attrs})
}

func (t *toxi) removeToxic(name string) error {
	return t.call("DELETE", "/proxies/"+proxyName+"/toxics/"+name, nil)
}

// reset removes every toxic and enables the proxy.
func (t *toxi) reset() error { return t.call("POST", "/reset", nil) }
