package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func skipWithoutClaims(t *testing.T) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := tryLockFile(f, true); errors.Is(err, errNoClaims) {
		t.Skipf("no prefetch claims on %s", runtime.GOOS)
	}
}

// TestPrefetchClaim: one holder at a time; a watcher sees the claim, reads
// its plan, and sees it end; the plan goes with the claim.
func TestPrefetchClaim(t *testing.T) {
	skipWithoutClaims(t)
	dir := t.TempDir()
	lock, plan := filepath.Join(dir, "prefetch-x"), filepath.Join(dir, "prefetch-plan-x")
	if w := watchPrefetchClaim(context.Background(), lock, plan); w != nil {
		t.Fatal("a watch of a claim no one holds")
	}
	c, err := holdPrefetchClaim(lock, plan)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holdPrefetchClaim(lock, plan); !errors.Is(err, errClaimed) {
		t.Fatalf("second hold: %v, want errClaimed", err)
	}
	w := watchPrefetchClaim(context.Background(), lock, plan)
	if w == nil {
		t.Fatal("no watch of a held claim")
	}
	a, b := actionID("a"), actionID("b")
	if err := c.announce([]ActionID{a, b}); err != nil {
		t.Fatal(err)
	}
	// An announced entry is waited for until it is local.
	var polls atomic.Int64
	w.awaitEntry(context.Background(), a, func(ActionID) bool { return polls.Add(1) > 3 })
	if polls.Load() < 4 {
		t.Errorf("awaitEntry returned after %d looks; want it to wait until the entry is local", polls.Load())
	}
	if w.plan.Load() == nil || len(*w.plan.Load()) != 2 {
		t.Fatalf("plan read: %v", w.plan.Load())
	}
	// One not announced is not.
	polls.Store(0)
	w.awaitEntry(context.Background(), actionID("c"), func(ActionID) bool { return polls.Add(1) > 3 })
	if polls.Load() != 0 {
		t.Errorf("awaitEntry looked %d times for an entry not announced", polls.Load())
	}
	c.release()
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not see the claim end")
	}
	if _, err := os.Stat(plan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("plan after release: %v", err)
	}
	// Nothing is waited for once the claim has ended.
	w.awaitEntry(context.Background(), b, func(ActionID) bool { polls.Add(1); return false })
	if polls.Load() != 0 {
		t.Errorf("awaitEntry waited after the claim ended")
	}
	if c, err = holdPrefetchClaim(lock, plan); err != nil {
		t.Fatalf("hold after release: %v", err)
	}
	c.release()
}

// gatedBackend holds every entry fetch (get, pack range) until its gate
// opens.
type gatedBackend struct {
	*memBackend
	gate chan struct{}
}

func (g *gatedBackend) Get(ctx context.Context, id ActionID) (Entry, error) {
	<-g.gate
	return g.memBackend.Get(ctx, id)
}

func (g *gatedBackend) GetPackRange(ctx context.Context, name string, i int, off, n int64) (io.ReadCloser, error) {
	<-g.gate
	return g.memBackend.GetPackRange(ctx, name, i, off, n)
}

// TestPrefetchCommandAndServer: a server that starts while the prefetch
// command lands into its local cache fetches nothing itself: a get of an
// entry the command announced waits for it, and the server's own prefetch
// waits for the command's end, then finds the manifests landed.
func TestPrefetchCommandAndServer(t *testing.T) {
	skipWithoutClaims(t)
	ctx := context.Background()
	mem := newMemBackend(t)
	large := strings.Repeat("L", inlineMax+1)
	bodies := map[string]string{"small": "small body", "large": large, "large2": large + "2"}
	storeRun(t, mem, "job", bodies)

	disk := newTestDisk(t)
	opts := prefetchOptions{scope: "job", parallelism: 4, packs: true,
		landed:    disk.remoteFile("landed", "mem"),
		claimLock: disk.remoteFile("prefetch", "mem"), claimPlan: disk.remoteFile("prefetch-plan", "mem")}
	claim, err := holdPrefetchClaim(opts.claimLock, opts.claimPlan)
	if err != nil {
		t.Fatal(err)
	}
	gated := &gatedBackend{mem, make(chan struct{})}
	cmdOpts := opts
	cmdOpts.claim = claim
	cmdStats := new(Stats)
	cmd := newPrefetcher(newLocalTier(disk, gated, true, cmdStats), gated, cmdOpts, cmdStats, quietLog)
	landed := make(chan error, 1)
	go func() {
		defer claim.release()
		landed <- cmd.land(ctx)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for _, err := os.Stat(opts.claimPlan); err != nil; _, err = os.Stat(opts.claimPlan) {
		if time.Now().After(deadline) {
			t.Fatal("the command announced no plan")
		}
		time.Sleep(time.Millisecond)
	}

	// The server starts meanwhile, on the same directory.
	serverDisk, err := NewDiskBackend(disk.Dir())
	if err != nil {
		t.Fatal(err)
	}
	remote := &countingBackend{CacheBackend: mem}
	stats := new(Stats)
	srv := newPrefetcher(newLocalTier(serverDisk, remote, false, stats), mem, opts, stats, quietLog)
	srv.Started()
	if srv.other.Load() == nil {
		t.Fatal("the server does not watch the command's claim")
	}
	got := make(chan error, 1)
	go func() {
		e, err := srv.Get(ctx, actionID("large"))
		if err == nil {
			checkEntry(t, e, []byte(large))
		}
		got <- err
	}()
	close(gated.gate) // the command's fetches go on
	if err := <-got; err != nil {
		t.Fatalf("server get: %v", err)
	}
	if err := <-landed; err != nil {
		t.Fatalf("command: %v", err)
	}
	<-srv.done
	for k, body := range bodies {
		e, err := srv.Get(ctx, actionID(k))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		checkEntry(t, e, []byte(body))
	}
	if n := remote.gets.Load(); n != 0 {
		t.Errorf("the server fetched %d entries itself; want none (the command landed them)", n)
	}
	if n := stats.PrefetchObjects.Load(); n != 0 {
		t.Errorf("the server prefetched %d entries; want none (the command's manifests are landed)", n)
	}
	if n := cmdStats.PrefetchObjects.Load(); n != int64(len(bodies)) {
		t.Errorf("the command prefetched %d entries, want %d", n, len(bodies))
	}
	if err := srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPrefetchClaimIsTheScopes: two jobs on one machine that share a
// local cache directory and a remote but not a prefetch scope (matrix
// legs of other toolchains, two workflows on a self-hosted runner's
// default directory) land different entries: each one's prefetch command
// takes a claim, and neither one's servers wait for the other's landing.
// One scope's command and servers still share one claim.
func TestPrefetchClaimIsTheScopes(t *testing.T) {
	skipWithoutClaims(t)
	disk := newTestDisk(t)
	cfg := defaultConfig()
	cfg.Backend, cfg.S3Bucket = "s3", "bucket"
	optsOf := func(scope string) prefetchOptions {
		c := cfg
		c.PrefetchScope = scope
		return prefetchOptionsOf(&c, disk, func(string) string { return "" })
	}
	a, b := optsOf("leg-a"), optsOf("leg-b")
	claim, err := holdPrefetchClaim(a.claimLock, a.claimPlan)
	if err != nil {
		t.Fatal(err)
	}
	defer claim.release()
	if w := watchPrefetchClaim(context.Background(), b.claimLock, b.claimPlan); w != nil {
		t.Error("a server of scope leg-b waits for the landing of scope leg-a")
	}
	other, err := holdPrefetchClaim(b.claimLock, b.claimPlan)
	if err != nil {
		t.Errorf("the prefetch command of scope leg-b: %v, want a claim of its own", err)
	} else {
		other.release()
	}
	same := optsOf("leg-a")
	if w := watchPrefetchClaim(context.Background(), same.claimLock, same.claimPlan); w == nil {
		t.Error("a server of scope leg-a does not watch its own scope's claim")
	}
}
