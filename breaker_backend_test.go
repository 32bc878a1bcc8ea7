package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/smithy-go"
)

// scriptedRemote is a mock whose every request fails with r.err (or
// succeeds if it is nil), counting requests.
type scriptedRemote struct {
	mockBackend
	err error
}

func newScriptedRemote(err error) *scriptedRemote {
	r := &scriptedRemote{err: err}
	r.GetFn = func(context.Context, ActionID) (Entry, error) { return Entry{}, r.err }
	r.PutFn = func(context.Context, ActionID, OutputID, int64, io.Reader) (Entry, error) { return Entry{}, r.err }
	r.ListManifestsFn = func(context.Context, string, int) ([]manifestInfo, error) { return nil, r.err }
	r.PutManifestFn = func(context.Context, string, string, []byte) error { return r.err }
	r.GetPackRangeFn = func(context.Context, string, int, int64, int64) (io.ReadCloser, error) { return nil, r.err }
	return r
}

func (r *scriptedRemote) count() int { return int(r.calls.Load()) }

func newTestBreaker(remote Remote, marker string) (*breakerBackend, *fakeClock, *Stats) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	stats := new(Stats)
	b := newBreakerBackend(remote, stats, newWarnings(quietLog), marker)
	b.now = clock.now
	return b, clock, stats
}

var (
	errRefused = withKind(KindRefused, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
	errTimeout = withKind(KindTimeout, fmt.Errorf("operation error S3: GetObject: %w", context.DeadlineExceeded))
)

func TestBreakerOpensAfterThreshold(t *testing.T) {
	ctx := context.Background()
	remote := newScriptedRemote(errRefused)
	b, clock, stats := newTestBreaker(remote, "")
	for i := 0; i < 10; i++ {
		b.Get(ctx, actionID("k"))
	}
	if remote.count() != breakerThreshold {
		t.Fatalf("%d requests reached a failing remote, want %d before the breaker opens", remote.count(), breakerThreshold)
	}
	snap := stats.Snapshot()
	if snap.RemoteErrorsByKind["refused"] != breakerThreshold || snap.RemoteSkipped != 10-breakerThreshold {
		t.Fatalf("stats %+v", snap)
	}
	// Uploads never probe; after the cooldown one get does.
	clock.advance(breakerCooldown + time.Millisecond)
	b.Put(ctx, actionID("k"), outputID(""), 0, strings.NewReader(""))
	if remote.count() != breakerThreshold {
		t.Fatal("an upload probed the remote")
	}
	remote.err = ErrNotFound
	if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, errBreakerOpen) {
		t.Fatalf("the get that probes: %v, want errBreakerOpen at once (the probe runs in the background)", err)
	}
	b.probes.Wait()
	if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the get after a successful probe: %v, want the remote's answer", err)
	}
	// Closed again.
	b.Put(ctx, actionID("k"), outputID(""), 0, strings.NewReader(""))
	if remote.count() != breakerThreshold+3 {
		t.Fatalf("breaker did not close after a successful probe: %d calls", remote.count())
	}
}

func TestBreakerTimeoutsOpenItAndItBacksOff(t *testing.T) {
	ctx := context.Background()
	remote := newScriptedRemote(errTimeout)
	b, clock, stats := newTestBreaker(remote, "")
	b.Get(ctx, actionID("k"))
	b.Get(ctx, actionID("k"))
	b.Get(ctx, actionID("k"))
	if remote.count() != breakerTimeouts || stats.Snapshot().RemoteErrorsByKind["timeout"] != breakerTimeouts {
		t.Fatalf("after one timeout: %d calls, stats %+v", remote.count(), stats.Snapshot())
	}
	// A failed probe doubles the cooldown.
	clock.advance(breakerCooldown + time.Millisecond)
	b.Get(ctx, actionID("k"))
	b.probes.Wait()
	clock.advance(breakerCooldown + time.Millisecond)
	b.Get(ctx, actionID("k"))
	if remote.count() != breakerTimeouts+1 {
		t.Fatalf("probed again before twice the cooldown: %d calls", remote.count())
	}
	clock.advance(breakerCooldown)
	b.Get(ctx, actionID("k"))
	b.probes.Wait()
	if remote.count() != breakerTimeouts+2 {
		t.Fatalf("no probe after twice the cooldown: %d calls", remote.count())
	}
}

// TestBreakerProbesInTheBackground: the get that is due to probe a remote
// that still hangs is answered at once; the probe waits for the remote on
// its own, and Close cancels it.
func TestBreakerProbesInTheBackground(t *testing.T) {
	ctx := context.Background()
	remote := newScriptedRemote(errTimeout)
	b, clock, _ := newTestBreaker(remote, "")
	for range breakerTimeouts {
		b.Get(ctx, actionID("k"))
	}
	hung := make(chan struct{})
	remote.GetFn = func(ctx context.Context, _ ActionID) (Entry, error) {
		close(hung)
		<-ctx.Done() // a black hole: no answer until the caller gives up
		return Entry{}, ctx.Err()
	}
	clock.advance(breakerCooldown + time.Millisecond)
	if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, errBreakerOpen) {
		t.Fatalf("the get that probes: %v, want errBreakerOpen at once", err)
	}
	<-hung
	if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, errBreakerOpen) {
		t.Fatalf("a get while the probe waits: %v, want errBreakerOpen", err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// A get after Close (a prefetch that outlived its wait) starts no probe.
	clock.advance(breakerMaxCooldown)
	if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, errBreakerOpen) {
		t.Fatalf("a get after Close: %v, want errBreakerOpen", err)
	}
	if n := remote.count(); n != breakerTimeouts+1 {
		t.Errorf("%d calls reached the remote, want %d: the opening timeouts and one probe", n, breakerTimeouts+1)
	}
}

func TestBreakerIgnoresMissesVerifyAndCallerCancel(t *testing.T) {
	remote := newScriptedRemote(nil)
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
	if remote.count() != 15 || snap.RemoteErrors != 0 || snap.VerifyFailures != 5 {
		t.Fatalf("%d calls, stats %+v", remote.count(), snap)
	}
}

func TestBreakerMarkerIsShared(t *testing.T) {
	ctx := context.Background()
	marker := filepath.Join(t.TempDir(), "remote-down")
	remote := newScriptedRemote(errTimeout)
	b, clock, _ := newTestBreaker(remote, marker)
	// The servers below read the marker with the real clock when they
	// start: the fake one starts at the real time, so that they agree.
	clock.t = time.Now()
	for range breakerTimeouts {
		b.Get(ctx, actionID("k"))
	}

	// A second server on the same cache dir starts with the remote off.
	remote2 := newScriptedRemote(ErrNotFound)
	b2 := newBreakerBackend(remote2, new(Stats), newWarnings(quietLog), marker)
	b2.now = clock.now
	b2.Get(ctx, actionID("k"))
	if remote2.count() != 0 {
		t.Fatal("second server called a remote the marker says is down")
	}
	// After the marker's time, it probes, succeeds and removes the marker.
	clock.advance(breakerMarkerMax)
	b2.Get(ctx, actionID("k"))
	b2.probes.Wait()
	if remote2.count() != 1 {
		t.Fatalf("no probe after the marker expired: %d calls", remote2.count())
	}
	if _, _, ok := readBreakerMarker(marker); ok {
		t.Fatal("marker survived a successful request")
	}

	// A marker far ahead (its writer's clock was ahead, or the file is
	// garbage) keeps the remote off for breakerMarkerMax at most.
	if err := writeBreakerMarker(marker, clock.now().Add(100*365*24*time.Hour), "timeout"); err != nil {
		t.Fatal(err)
	}
	remote3 := newScriptedRemote(ErrNotFound)
	b3 := newBreakerBackend(remote3, new(Stats), newWarnings(quietLog), marker)
	b3.now = clock.now
	clock.advance(breakerMarkerMax + time.Second)
	b3.Get(ctx, actionID("k"))
	b3.probes.Wait()
	if remote3.count() != 1 {
		t.Fatalf("a marker a century ahead: the remote asked %d times after breakerMarkerMax, want a probe", remote3.count())
	}
}

// TestBreakerSuspectsAfterMarker: a server that starts shortly after a
// marker's time (the job's next go command) answers its first gets as
// misses at once while one probe asks the remote; a remote that still
// fails opens the breaker again, one that answers (the probe, or a
// manifest listing, which goes ahead) ends the suspicion; an old marker
// changes nothing.
func TestBreakerSuspectsAfterMarker(t *testing.T) {
	ctx := context.Background()
	writeMarker := func(t *testing.T, till time.Time) string {
		marker := filepath.Join(t.TempDir(), "remote-down")
		if err := writeBreakerMarker(marker, till, "timeout"); err != nil {
			t.Fatal(err)
		}
		return marker
	}

	t.Run("still failing", func(t *testing.T) {
		marker := writeMarker(t, time.Now().Add(-time.Minute))
		release := make(chan struct{})
		remote := newScriptedRemote(errTimeout)
		remote.GetFn = func(context.Context, ActionID) (Entry, error) { <-release; return Entry{}, errTimeout }
		b := newBreakerBackend(remote, new(Stats), newWarnings(quietLog), marker)
		gets := make(chan error, 3)
		go func() {
			for range 3 { // the probe hangs: no get may wait for it
				_, err := b.Get(ctx, actionID("k"))
				gets <- err
			}
		}()
		for range 3 {
			select {
			case err := <-gets:
				if !errors.Is(err, errBreakerOpen) {
					t.Fatalf("get while suspecting the remote: %v, want errBreakerOpen", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("a get waited for the hung remote")
			}
		}
		close(release)
		b.probes.Wait()
		if remote.count() != 1 {
			t.Fatalf("%d requests reached the remote, want the one probe", remote.count())
		}
		if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, errBreakerOpen) || remote.count() != 1 {
			t.Fatalf("after the probe failed: %v, %d requests; want the breaker open", err, remote.count())
		}
		if till, _, ok := readBreakerMarker(marker); !ok || !till.After(time.Now()) {
			t.Fatalf("marker %v (ok %v): want it renewed for the next server", till, ok)
		}
	})

	t.Run("answers again", func(t *testing.T) {
		marker := writeMarker(t, time.Now().Add(-time.Minute))
		remote := newScriptedRemote(ErrNotFound)
		b := newBreakerBackend(remote, new(Stats), newWarnings(quietLog), marker)
		if _, err := b.ListManifests(ctx, "scope", 1); !errors.Is(err, ErrNotFound) {
			t.Fatalf("listing while suspecting the remote: %v, want it sent", err)
		}
		if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, ErrNotFound) || remote.count() != 2 {
			t.Fatalf("get after the remote answered: %v, %d requests; want it sent", err, remote.count())
		}
		if _, _, ok := readBreakerMarker(marker); ok {
			t.Fatal("marker survived the remote's answer")
		}
	})

	t.Run("old marker", func(t *testing.T) {
		marker := writeMarker(t, time.Now().Add(-breakerSuspectFor-time.Minute))
		remote := newScriptedRemote(ErrNotFound)
		b := newBreakerBackend(remote, new(Stats), newWarnings(quietLog), marker)
		if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, ErrNotFound) || remote.count() != 1 {
			t.Fatalf("get with a marker %v old: %v, %d requests; want it sent", breakerSuspectFor, err, remote.count())
		}
	})
}

// TestBreakerDeniedWriteKeepsReads: a refused write (a read-only role
// without -read-only) stops writes, and nothing else: no breaker, no
// marker for the next server, no manifest; reads go on.
func TestBreakerDeniedWriteKeepsReads(t *testing.T) {
	ctx := context.Background()
	denied := withKind(KindWriteRefused, errors.New("AccessDenied: denied"))
	remote := newScriptedRemote(denied)
	marker := filepath.Join(t.TempDir(), "breaker")
	b, _, stats := newTestBreaker(remote, marker)
	for range 5 {
		b.Put(ctx, actionID("k"), outputID(""), 0, strings.NewReader(""))
	}
	if err := b.PutManifest(ctx, "scope", newManifestID(time.Now(), ""), []byte("m")); !errors.Is(err, errWritesOff) {
		t.Errorf("manifest put after a refused write: %v, want errWritesOff", err)
	}
	if remote.count() != 1 {
		t.Fatalf("%d writes reached a remote that refuses writes, want 1", remote.count())
	}
	if _, _, ok := readBreakerMarker(marker); ok {
		t.Fatal("a refused write left a breaker marker: the next server would start with reads off")
	}
	remote.err = ErrNotFound
	for range 5 {
		b.Get(ctx, actionID("k"))
	}
	if _, err := b.ListManifests(ctx, "scope", 4); err != nil && !errors.Is(err, ErrNotFound) {
		t.Errorf("listing manifests after a refused write: %v", err)
	}
	s := stats.Snapshot()
	if remote.count() != 7 || s.RemoteErrorsByKind["auth"] != 1 || s.RemoteSkipped != 0 {
		t.Fatalf("reads after a denied write: %d calls, stats %+v", remote.count(), s)
	}
}

// TestBreakerDeniedReadIsAMiss: a read refused with 403 (a read location
// the credentials may not read) is that key's miss; however many there
// are, the breaker stays closed.
func TestBreakerDeniedReadIsAMiss(t *testing.T) {
	ctx := context.Background()
	remote := newScriptedRemote(s3Error("get", "k", &smithy.GenericAPIError{Code: "AccessDenied"}, false))
	marker := filepath.Join(t.TempDir(), "breaker")
	b, _, stats := newTestBreaker(remote, marker)
	for range 3 * breakerThreshold {
		if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("denied get: %v, want a miss", err)
		}
	}
	s := stats.Snapshot()
	if !b.allow() || remote.count() != 3*breakerThreshold || s.RemoteDenied != 3*breakerThreshold || s.RemoteErrors != 0 {
		t.Fatalf("denied reads: %d calls, stats %+v", remote.count(), s)
	}
	if _, _, ok := readBreakerMarker(marker); ok {
		t.Fatal("denied reads left a breaker marker")
	}
}

// TestBreakerBusyRemote: a directory bucket waking up after 90 days unused
// answers 503 for minutes. The breaker backs off, but asks again every few
// seconds, so the cache is back within seconds of the bucket, never shut
// off for long; a build that keeps asking meanwhile pays no timeouts.
func TestBreakerBusyRemote(t *testing.T) {
	ctx := context.Background()
	busy := withKind(KindThrottled, errors.New("api error ServiceUnavailable: Service is unable to handle request"))
	remote := newScriptedRemote(busy)
	b, clock, stats := newTestBreaker(remote, "")
	const waking = 3 * time.Minute
	start := clock.now()
	var back time.Time
	for clock.now().Sub(start) < 10*time.Minute {
		if clock.now().Sub(start) >= waking {
			remote.err = ErrNotFound // awake: answers again
		}
		if _, err := b.Get(ctx, actionID("k")); errors.Is(err, ErrNotFound) {
			back = clock.now()
			break
		}
		b.probes.Wait()
		clock.advance(500 * time.Millisecond)
	}
	if late := back.Sub(start) - waking; back.IsZero() || late > breakerBusyMaxCooldown {
		t.Errorf("the bucket answered again after %v; the breaker let the next request through %v later, want at most %v", waking, late, breakerBusyMaxCooldown)
	}
	if s := stats.Snapshot(); s.RemoteErrorsByKind["throttle"] == 0 || s.BreakerOpenings != 1 {
		t.Errorf("stats: errors %v, breaker openings %d", s.RemoteErrorsByKind, s.BreakerOpenings)
	}
}

// TestBreakerIgnoresSessionErrors: an S3 Express session refused even when
// new is counted, and never opens the breaker.
func TestBreakerIgnoresSessionErrors(t *testing.T) {
	ctx := context.Background()
	remote := newScriptedRemote(withKind(KindSession, errors.New("api error ExpiredToken: The provided token has expired.")))
	b, _, stats := newTestBreaker(remote, "")
	for range 10 {
		b.Get(ctx, actionID("k"))
	}
	if s := stats.Snapshot(); remote.count() != 10 || s.BreakerOpenings != 0 || s.RemoteErrorsByKind["session"] != 10 {
		t.Errorf("%d of 10 requests reached the remote; breaker openings %d, errors %v", remote.count(), s.BreakerOpenings, s.RemoteErrorsByKind)
	}
}

// TestBreakerProbeAnsweredWithSessionError: a probe answered with a
// refused session ends like any probe, so that later ones are sent: once
// the breaker is open (after timeouts) and once it suspects the remote
// (after another server's marker). Before, the breaker stayed off for the
// rest of the run.
func TestBreakerProbeAnsweredWithSessionError(t *testing.T) {
	ctx := context.Background()
	session := withKind(KindSession, errors.New("api error ExpiredToken: The provided token has expired."))
	recovered := func(t *testing.T, b *breakerBackend, remote *scriptedRemote, clock *fakeClock) {
		t.Helper()
		remote.err = ErrNotFound // the remote answers again
		for range 3 {
			if clock != nil {
				clock.advance(breakerMaxCooldown + time.Second)
			}
			b.Get(ctx, actionID("k"))
			b.probes.Wait()
		}
		if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, ErrNotFound) {
			t.Errorf("get after the remote recovered: %v; %d requests reached it", err, remote.count())
		}
	}
	t.Run("open", func(t *testing.T) {
		remote := newScriptedRemote(errTimeout)
		b, clock, _ := newTestBreaker(remote, "")
		for range breakerTimeouts {
			b.Get(ctx, actionID("k"))
		}
		clock.advance(breakerCooldown + time.Millisecond)
		remote.err = session
		b.Get(ctx, actionID("k")) // the probe
		b.probes.Wait()
		recovered(t, b, remote, clock)
	})
	t.Run("suspect", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "remote-down")
		writeBreakerMarker(marker, time.Now().Add(-time.Minute), "timeout")
		remote := newScriptedRemote(session)
		b := newBreakerBackend(remote, new(Stats), newWarnings(quietLog), marker)
		b.Get(ctx, actionID("k")) // the probe
		b.probes.Wait()
		recovered(t, b, remote, nil)
	})
}

// TestBreakerSpeculativeTimeouts: timeouts and "slow down" answers of the
// prefetch's requests are counted but never open the breaker (the prefetch
// sends fewer instead); a refused connection still does, and so do the go
// command's own timeouts.
func TestBreakerSpeculativeTimeouts(t *testing.T) {
	spec := withSpeculative(context.Background())
	for _, err := range []error{errTimeout, withKind(KindThrottled, errors.New("api error SlowDown"))} {
		remote := newScriptedRemote(err)
		b, _, stats := newTestBreaker(remote, "")
		for range 10 {
			b.Get(spec, actionID("k"))
			b.GetPackRange(spec, "m", 0, 0, 1)
		}
		if s := stats.Snapshot(); remote.count() != 20 || s.BreakerOpenings != 0 || s.RemoteErrors != 20 {
			t.Errorf("%v: %d of 20 speculative requests reached the remote; breaker openings %d, errors %v", err, remote.count(), s.BreakerOpenings, s.RemoteErrorsByKind)
		}
		b.Get(context.Background(), actionID("k"))
		b.Get(context.Background(), actionID("k"))
		b.Get(context.Background(), actionID("k"))
		if s := stats.Snapshot(); s.BreakerOpenings != 1 {
			t.Errorf("%v: the go command's own failures: breaker openings %d, want 1", err, s.BreakerOpenings)
		}
	}
	remote := newScriptedRemote(errRefused)
	b, _, stats := newTestBreaker(remote, "")
	for range breakerThreshold {
		b.Get(spec, actionID("k"))
	}
	if s := stats.Snapshot(); s.BreakerOpenings != 1 {
		t.Errorf("speculative requests refused: breaker openings %d, want 1", s.BreakerOpenings)
	}
}

// TestBreakerTooLarge: a body the remote cannot take in one upload is
// counted, said once, and says nothing of the remote's health.
func TestBreakerTooLarge(t *testing.T) {
	remote := newScriptedRemote(withKind(KindTooLarge, errors.New("put k: 6442450944 bytes, more than one PutObject takes")))
	b, _, stats := newTestBreaker(remote, "")
	for range 5 {
		b.Put(context.Background(), actionID("k"), outputID("x"), 1, strings.NewReader("x"))
	}
	if s := stats.Snapshot(); s.UploadsTooLarge != 5 || s.BreakerOpenings != 0 || s.RemoteErrors != 0 {
		t.Errorf("too large 5 times: %d counted, breaker openings %d, remote errors %d", s.UploadsTooLarge, s.BreakerOpenings, s.RemoteErrors)
	}
	// A get's body the local disk has no room for: a miss, counted, and
	// the remote answered.
	remote.err = withKind(KindTooLarge, fmt.Errorf("get k: %w: a body of 1.0 TiB", ErrNotFound))
	for range 5 {
		if _, err := b.Get(context.Background(), actionID("k")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get: %v, want a miss", err)
		}
	}
	if s := stats.Snapshot(); remote.count() != 10 || s.BreakerOpenings != 0 || s.RemoteErrorsByKind["too_large"] != 5 {
		t.Errorf("5 gets too large for the disk: %d requests of 10, breaker openings %d, errors %v", remote.count(), s.BreakerOpenings, s.RemoteErrorsByKind)
	}
}

// TestBreakerProbeOfASlowedRemote: a remote whose answers slowed down past
// the attempt bound that its fast answers set (400 ms, where it answered at
// once) is turned off, and used again once a probe finds it answering: the
// probe waits up to the ceiling, and its answer raises the bound. Before,
// every probe timed out at the old bound, and a remote that answers stayed
// off for the rest of the run.
func TestBreakerProbeOfASlowedRemote(t *testing.T) {
	var delay atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Duration(delay.Load())):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>")
	}))
	t.Cleanup(srv.Close)
	s3b, err := NewS3Backend(t.Context(), S3Options{Bucket: "b", Endpoint: srv.URL, PathStyle: true, Region: "us-east-1",
		Timeout: 10 * time.Second, TempDir: t.TempDir(), Credentials: shimBaseCreds})
	if err != nil {
		t.Fatal(err)
	}
	b, clock, _ := newTestBreaker(s3b, "")
	ctx := context.Background()
	for range 2 * minSamples { // fast answers: the bound goes down to its floor
		if _, err := b.Get(ctx, actionID("k")); errKind(err) != KindNotFound {
			t.Fatalf("get from a fast remote: %v", err)
		}
	}
	delay.Store(int64(400 * time.Millisecond))
	for range breakerTimeouts {
		if _, err := b.Get(ctx, actionID("k")); errKind(err) != KindTimeout {
			t.Fatalf("get slower than the bound: %v (kind %v), want a timeout", err, errKind(err))
		}
	}
	clock.advance(breakerCooldown + time.Millisecond)
	if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, errBreakerOpen) {
		t.Fatalf("the get that probes: %v, want errBreakerOpen", err)
	}
	b.probes.Wait()
	if _, err := b.Get(ctx, actionID("k")); errKind(err) != KindNotFound {
		t.Errorf("get after a probe of a remote that answers in 400 ms: %v (kind %v), want its answer, a miss", err, errKind(err))
	}
}

// smallReadBuffers is a listener whose connections take in little at a
// time: a client's upload goes at the pace its handler reads, as over a
// thin link, not into a loopback buffer of megabytes.
type smallReadBuffers struct{ net.Listener }

func (l smallReadBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(64 << 10)
	}
	return c, err
}

// TestBreakerSlowUplink: uploads that miss their deadline because the
// uplink is thin (their bodies still going out, the server taking them in
// all along: sixteen large uploads sharing 20 Mbit/s) are counted, but the
// remote answers: gets still reach it, and no marker turns it off for the
// job's next go commands. Before, two of them were two timeouts in a row:
// the breaker turned the remote off, reads included, and wrote the marker.
// A put that the server takes in whole and never answers still counts as
// a timeout.
func TestBreakerSlowUplink(t *testing.T) {
	var gets atomic.Int64
	var hang atomic.Bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			if hang.Load() {
				io.Copy(io.Discard, r.Body)
				<-r.Context().Done()
				return
			}
			buf := make([]byte, 64<<10) // every 20 ms: about 3 MiB/s
			for {
				if _, err := io.ReadFull(r.Body, buf); err != nil {
					break
				}
				select {
				case <-time.After(20 * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
			w.WriteHeader(http.StatusOK)
			return
		}
		gets.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>")
	}))
	srv.Listener = smallReadBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	// A put of 12 MiB gets 200 ms plus 1 s (putTimeout): at 3 MiB/s, not
	// enough.
	s3b, err := NewS3Backend(t.Context(), S3Options{Bucket: "b", Endpoint: srv.URL, PathStyle: true, Region: "us-east-1",
		Timeout: 200 * time.Millisecond, TempDir: t.TempDir(), Credentials: shimBaseCreds})
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "remote-down")
	b, _, stats := newTestBreaker(s3b, marker)
	ctx := context.Background()
	put := func(body string) error {
		_, err := b.Put(ctx, actionID(body), outputID(body), int64(len(body)), strings.NewReader(body))
		return err
	}
	errs := make(chan error, breakerThreshold)
	for i := range breakerThreshold { // as async workers send them
		go func() { errs <- put(fmt.Sprint(i, strings.Repeat("x", 12<<20))) }()
	}
	for range breakerThreshold {
		if err := <-errs; err == nil || errors.Is(err, errBreakerOpen) {
			t.Errorf("a put slower than its deadline: %v (kind %v), want it to fail at its deadline", err, errKind(err))
		}
	}
	if _, err := b.Get(ctx, actionID("k")); errKind(err) != KindNotFound || gets.Load() != 1 {
		t.Errorf("get after slow uploads: %v (kind %v), %d gets reached the remote; want its answer, a miss", err, errKind(err), gets.Load())
	}
	if s := stats.Snapshot(); s.BreakerOpenings != 0 {
		t.Errorf("breaker openings after slow uploads: %d, want 0 (errors %v)", s.BreakerOpenings, s.RemoteErrorsByKind)
	}
	if _, _, ok := readBreakerMarker(marker); ok {
		t.Error("slow uploads left a marker: the job's next go commands would not read the remote")
	}

	hang.Store(true)
	for i := range breakerTimeouts {
		if err := put(fmt.Sprint("small ", i)); errKind(err) != KindTimeout {
			t.Errorf("a put taken in and never answered: %v (kind %v), want a timeout", err, errKind(err))
		}
	}
	if _, err := b.Get(ctx, actionID("k")); !errors.Is(err, errBreakerOpen) {
		t.Errorf("get after %d puts never answered: %v, want errBreakerOpen", breakerTimeouts, err)
	}
}
