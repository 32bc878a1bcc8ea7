package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// prefetchClaim is the hold of `gobuildcache prefetch` (prefetch_command.go)
// on a local cache directory while it lands a scope's entries there, before
// and beside the job's first go command. A server of the same directory
// that starts meanwhile watches the claim (watchPrefetchClaim) instead of
// fetching the same entries again: its own prefetch waits for the claim's
// end (then finds them landed: landedManifests), and a get of an entry the
// claim announced waits for it to land rather than fetching it too.
//
// Two files per remote and scopes (see DiskBackend): the claim,
// v1/prefetch-<h>, an empty file that the command holds an exclusive flock
// on while it runs (released by the kernel if it dies), and its plan,
// v1/prefetch-plan-<h>, the action IDs it will land (32 bytes each,
// nothing else), written whole and renamed into place once it has
// planned, removed before the lock is released. A plan is believed only
// while the lock is held. Where there is no flock (Windows) there are no
// claims: the command and the servers then land the same entries side by
// side, which is only slower.
type prefetchClaim struct {
	lock     *os.File
	unlock   func()
	planPath string
}

// errClaimed is returned by holdPrefetchClaim when another process holds
// the claim.
var errClaimed = errors.New("another prefetch is landing into this cache directory")

// errNoClaims is returned by holdPrefetchClaim where there is no flock.
var errNoClaims = errors.New("no file locks on this system")

const (
	// claimPoll is how often a watcher looks at the claim, and a get at
	// the local cache for an entry the claim announced.
	claimPoll = 2 * time.Millisecond
	// claimEntryWait bounds one get's wait for an announced entry. A get
	// that waits longer takes the claim for stalled: from then on no get
	// waits for it, and each fetches what it needs itself.
	claimEntryWait = 2 * time.Second
)

// holdPrefetchClaim takes the claim at lockPath (its plan at planPath),
// without waiting.
func holdPrefetchClaim(lockPath, planPath string) (*prefetchClaim, error) {
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("prefetch claim: %w", err)
	}
	unlock, err := tryLockFile(f, false)
	if err != nil {
		f.Close()
		if errors.Is(err, errLocked) {
			return nil, errClaimed
		}
		return nil, fmt.Errorf("prefetch claim: %w", err)
	}
	os.Remove(planPath) // a plan left by a killed holder
	return &prefetchClaim{lock: f, unlock: unlock, planPath: planPath}, nil
}

// announce tells the watchers which entries the holder will land.
func (c *prefetchClaim) announce(ids []ActionID) error {
	b := make([]byte, 0, len(ids)*len(ActionID{}))
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	if err := replaceFile(c.planPath, b); err != nil {
		return fmt.Errorf("prefetch plan: %w", err)
	}
	return nil
}

// release ends the claim: the plan goes, then the lock.
func (c *prefetchClaim) release() {
	os.Remove(c.planPath)
	c.unlock()
	c.lock.Close()
}

// claimWatch is a server's view of a claim another process holds.
type claimWatch struct {
	lockPath, planPath string
	plan               atomic.Pointer[map[ActionID]struct{}] // once read
	done               chan struct{}                         // closed when the claim ends (or the watch does)
	stalled            atomic.Bool                           // a get waited claimEntryWait in vain
}

// watchPrefetchClaim returns a watch of the claim at lockPath if another
// process holds it, else nil. The watch follows the claim until it ends or
// ctx does.
func watchPrefetchClaim(ctx context.Context, lockPath, planPath string) *claimWatch {
	if !claimHeld(lockPath) {
		return nil
	}
	w := &claimWatch{lockPath: lockPath, planPath: planPath, done: make(chan struct{})}
	go w.follow(ctx)
	return w
}

// claimHeld reports whether a process holds the claim at lockPath.
func claimHeld(lockPath string) bool {
	f, err := os.Open(lockPath)
	if err != nil {
		return false
	}
	defer f.Close()
	unlock, err := tryLockFile(f, true)
	if err != nil {
		return errors.Is(err, errLocked)
	}
	unlock()
	return false
}

// follow reads the plan once it is there and closes done when the claim
// ends.
func (w *claimWatch) follow(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(claimPoll)
	defer t.Stop()
	for {
		w.readPlan()
		if !claimHeld(w.lockPath) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (w *claimWatch) setPlan(b []byte) map[ActionID]struct{} {
	n := len(ActionID{})
	plan := make(map[ActionID]struct{}, len(b)/n)
	for ; len(b) >= n; b = b[n:] {
		plan[ActionID(b[:n])] = struct{}{}
	}
	w.plan.Store(&plan)
	return plan
}

// ended reports whether the claim has ended (or the watch has).
func (w *claimWatch) ended() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// awaitEntry waits, unless the claim has stalled, for its plan, and then,
// if the plan names actionID, until local finds it (reports true). It
// returns at once when the claim ends, and after claimEntryWait, taking
// the claim for stalled.
func (w *claimWatch) awaitEntry(ctx context.Context, actionID ActionID, local func(ActionID) bool) {
	if w.stalled.Load() || w.ended() {
		return
	}
	waiting := func() bool {
		plan := w.readPlan()
		if plan == nil {
			return true // not planned yet
		}
		_, ok := plan[actionID]
		return ok && !local(actionID)
	}
	if !waiting() { // most gets: no timers
		return
	}
	deadline := time.NewTimer(claimEntryWait)
	defer deadline.Stop()
	t := time.NewTicker(claimPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.done:
			return
		case <-deadline.C:
			w.stalled.Store(true)
			return
		case <-t.C:
			if w.stalled.Load() || !waiting() {
				return
			}
		}
	}
}

// readPlan returns the claim's plan, reading it if it has not been read
// yet (nil if it is not there yet).
func (w *claimWatch) readPlan() map[ActionID]struct{} {
	if p := w.plan.Load(); p != nil {
		return *p
	}
	b, err := os.ReadFile(w.planPath)
	if err != nil {
		return nil
	}
	return w.setPlan(b)
}

// wait waits until the claim ends, stalls (as a get found), or ctx ends.
func (w *claimWatch) wait(ctx context.Context) {
	t := time.NewTicker(10 * claimPoll)
	defer t.Stop()
	for !w.stalled.Load() {
		select {
		case <-ctx.Done():
			return
		case <-w.done:
			return
		case <-t.C:
		}
	}
}
