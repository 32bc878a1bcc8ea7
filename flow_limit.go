package main

import (
	"context"
	"sync"
	"time"
)

// flowLimit bounds the prefetch's requests in flight and adapts the bound
// to the remote, the way TCP adapts its window. It starts small (a quarter
// of max) and, while nothing is slow, grows by one with every fast answer
// (doubling each round trip), up to max; once something was slow it grows
// by 1/bound per fast answer (about one per round). An answer that is
// slow, or a timeout or a "slow down", halves it, down to 1, at most once
// per flowCutEvery (one cut per episode of overload). An answer is slow
// when it took more than flowSlowFactor times the fastest answer seen plus
// flowSlowMargin. So eight machines that share one remote settle at what
// it answers in time, instead of all sending their most at once. (The
// prefetch's requests are marked speculative, so that their timeouts are
// its own to handle, not the circuit breaker's: see withSpeculative.)
type flowLimit struct {
	mu        sync.Mutex
	bound     float64
	max       float64
	slowStart bool // nothing was slow yet
	inFlight  int
	fastest   time.Duration
	lastCut   time.Time
	wake      chan struct{} // closed and replaced whenever a slot may be free
	now       func() time.Time
}

// An answer is slow when it took more than eight times the fastest plus
// half a second: well beyond what a busy machine's own scheduling adds (on
// two cores shared by eight builds, first bytes of 100-400 ms are common
// and harmless), and below the remote's first-byte limit once that has
// adapted (attemptLimiter).
const (
	flowSlowFactor = 8
	flowSlowMargin = 500 * time.Millisecond
	flowCutEvery   = 100 * time.Millisecond
)

func newFlowLimit(limit int) *flowLimit {
	n := float64(max(limit, 1))
	return &flowLimit{bound: max(n/4, 1), max: n, slowStart: true, wake: make(chan struct{}), now: time.Now}
}

// acquire waits for a slot: until fewer requests than the bound are in
// flight, or ctx is done.
func (l *flowLimit) acquire(ctx context.Context) error {
	for {
		l.mu.Lock()
		if l.inFlight < int(l.bound) {
			l.inFlight++
			l.mu.Unlock()
			return nil
		}
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// observe takes note of how long a request took until its answer began,
// and whether it failed for overload (timeout, slow down). A request that
// failed otherwise, or was cancelled, says nothing of the remote's load:
// it passes took 0 and overloaded false, which changes nothing.
func (l *flowLimit) observe(took time.Duration, overloaded bool) {
	if took <= 0 && !overloaded {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if took > 0 && (l.fastest == 0 || took < l.fastest) {
		l.fastest = took
	}
	switch slow := took > l.fastest*flowSlowFactor+flowSlowMargin; {
	case overloaded || slow:
		l.slowStart = false
		if now := l.now(); now.Sub(l.lastCut) >= flowCutEvery {
			l.lastCut = now
			l.bound = max(l.bound/2, 1)
		}
	case l.slowStart:
		l.bound = min(l.bound+1, l.max)
	default:
		l.bound = min(l.bound+1/l.bound, l.max)
	}
	l.signal()
}

// release frees a slot.
func (l *flowLimit) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	l.signal()
}

// signal wakes the waiters of acquire. l.mu is held.
func (l *flowLimit) signal() {
	close(l.wake)
	l.wake = make(chan struct{})
}

// limit returns the current bound.
func (l *flowLimit) limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.bound)
}
