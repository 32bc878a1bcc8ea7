package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/smithy-go"
)

// scriptedRemote answers every request with err, counting requests.
type scriptedRemote struct {
	err   error
	calls int
}

func (r *scriptedRemote) Get(ctx context.Context, id []byte) (Entry, error) {
	r.calls++
	return Entry{}, r.err
}

func (r *scriptedRemote) Put(ctx context.Context, a, o []byte, size int64, body io.Reader) (Entry, error) {
	r.calls++
	return Entry{}, r.err
}

func (r *scriptedRemote) Close(ctx context.Context) error { return nil }

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestBreaker(remote CacheBackend, marker string) (*breakerBackend, *fakeClock, *Stats) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	stats := new(Stats)
	b := newBreakerBackend(remote, stats, newWarnings(quietLog), marker)
	b.now = clock.now
	return b, clock, stats
}

var (
	errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	errTimeout = fmt.Errorf("operation error S3: GetObject: %w", context.DeadlineExceeded)
)

func TestBreakerOpensAfterThreshold(t *testing.T) {
	ctx := context.Background()
	remote := &scriptedRemote{err: errRefused}
	b, clock, stats := newTestBreaker(remote, "")
	for i := 0; i < 10; i++ {
		b.Get(ctx, actionID("k"))
	}
	if remote.calls != breakerThreshold {
		t.Fatalf("%d requests reached a failing remote, want %d before the breaker opens", remote.calls, breakerThreshold)
	}
	snap := stats.Snapshot()
	if snap.RemoteErrorsByKind["refused"] != breakerThreshold || snap.RemoteSkipped != 10-breakerThreshold {
		t.Fatalf("stats %+v", snap)
	}
	// Uploads never probe; after the cooldown one get does.
	clock.advance(breakerCooldown + time.Millisecond)
	b.Put(ctx, actionID("k"), outputID(""), 0, strings.NewReader(""))
	if remote.calls != breakerThreshold {
		t.Fatal("an upload probed the remote")
	}
	remote.err = ErrNotFound
	if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("probe: %v", err)
	}
	// Closed again.
	b.Put(ctx, actionID("k"), outputID(""), 0, strings.NewReader(""))
	if remote.calls != breakerThreshold+2 {
		t.Fatalf("breaker did not close after a successful probe: %d calls", remote.calls)
	}
}

func TestBreakerTimeoutsOpenItAndItBacksOff(t *testing.T) {
	ctx := context.Background()
	remote := &scriptedRemote{err: errTimeout}
	b, clock, stats := newTestBreaker(remote, "")
	b.Get(ctx, actionID("k"))
	b.Get(ctx, actionID("k"))
	b.Get(ctx, actionID("k"))
	if remote.calls != breakerTimeouts || stats.Snapshot().RemoteErrorsByKind["timeout"] != breakerTimeouts {
		t.Fatalf("after one timeout: %d calls, stats %+v", remote.calls, stats.Snapshot())
	}
	// A failed probe doubles the cooldown.
	clock.advance(breakerCooldown + time.Millisecond)
	b.Get(ctx, actionID("k"))
	clock.advance(breakerCooldown + time.Millisecond)
	b.Get(ctx, actionID("k"))
	if remote.calls != breakerTimeouts+1 {
		t.Fatalf("probed again before twice the cooldown: %d calls", remote.calls)
	}
	clock.advance(breakerCooldown)
	b.Get(ctx, actionID("k"))
	if remote.calls != breakerTimeouts+2 {
		t.Fatalf("no probe after twice the cooldown: %d calls", remote.calls)
	}
}

func TestBreakerIgnoresMissesVerifyAndCallerCancel(t *testing.T) {
	remote := &scriptedRemote{}
	b, _, stats := newTestBreaker(remote, "")
	for _, err := range []error{ErrNotFound, fmt.Errorf("x: %w", errVerify)} {
		remote.err = err
		for range 5 {
			b.Get(context.Background(), actionID("k"))
		}
	}
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	remote.err = context.Canceled
	for range 5 {
		b.Put(cctx, actionID("k"), outputID(""), 0, strings.NewReader(""))
	}
	snap := stats.Snapshot()
	if remote.calls != 15 || snap.RemoteErrors != 0 || snap.VerifyFailures != 5 {
		t.Fatalf("%d calls, stats %+v", remote.calls, snap)
	}
}

func TestBreakerMarkerIsShared(t *testing.T) {
	ctx := context.Background()
	marker := filepath.Join(t.TempDir(), "remote-down")
	remote := &scriptedRemote{err: errTimeout}
	b, clock, _ := newTestBreaker(remote, marker)
	for range breakerTimeouts {
		b.Get(ctx, actionID("k"))
	}

	// A second server on the same cache dir starts with the remote off.
	remote2 := &scriptedRemote{err: ErrNotFound}
	b2 := newBreakerBackend(remote2, new(Stats), newWarnings(quietLog), marker)
	b2.now = clock.now
	b2.Get(ctx, actionID("k"))
	if remote2.calls != 0 {
		t.Fatal("second server called a remote the marker says is down")
	}
	// After the marker's time, it probes, succeeds and removes the marker.
	clock.advance(breakerMarkerMax)
	b2.Get(ctx, actionID("k"))
	if remote2.calls != 1 {
		t.Fatalf("no probe after the marker expired: %d calls", remote2.calls)
	}
	if _, _, ok := readBreakerMarker(marker); ok {
		t.Fatal("marker survived a successful request")
	}
}

func TestClassifyRemoteError(t *testing.T) {
	for err, want := range map[error]string{
		errRefused: "refused",
		errTimeout: "timeout",
		&net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}:      "dns",
		fmt.Errorf("read: %w", syscall.ECONNRESET):                           "reset",
		fmt.Errorf("request send failed: %w", io.EOF):                        "reset",
		errors.New("failed to retrieve credentials: no EC2 IMDS role found"): "credentials",
		errors.New("something else"):                                         "other",
	} {
		if got := classifyRemoteError(err); got != want {
			t.Errorf("classify(%v) = %s, want %s", err, got, want)
		}
	}
}

func TestBreakerDeniedWriteKeepsReads(t *testing.T) {
	ctx := context.Background()
	denied := &smithy.GenericAPIError{Code: "AccessDenied", Message: "denied"}
	remote := &scriptedRemote{err: denied}
	b, _, stats := newTestBreaker(remote, "")
	for range 5 {
		b.Put(ctx, actionID("k"), outputID(""), 0, strings.NewReader(""))
	}
	if remote.calls != 1 {
		t.Fatalf("%d writes reached a remote that refuses writes, want 1", remote.calls)
	}
	remote.err = ErrNotFound
	for range 5 {
		b.Get(ctx, actionID("k"))
	}
	if remote.calls != 6 || stats.Snapshot().RemoteErrorsByKind["auth"] != 1 {
		t.Fatalf("reads after a denied write: %d calls, stats %+v", remote.calls, stats.Snapshot())
	}
}
