//go:build linux

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/richardartoul/gobuildcache/internal/toxiproxy"
)

const (
	minioUser     = "chaosadmin"
	minioPassword = "chaos-secret-key-0123456789"
	bucketName    = "chaos-cache"
	serviceReady  = 60 * time.Second // bound on a server's start
)

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
		if m.port, err = toxiproxy.FreePort(); err != nil {
			return err
		}
		if m.consolePort, err = toxiproxy.FreePort(); err != nil {
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
