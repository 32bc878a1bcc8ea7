package main

import (
	"context"
	"sync"
	"time"
)

// flowLimit bounds the prefetch's requests in flight and adapts the bound
// to the remote, the way TCP adapts its window: every answer that comes
// back fast raises the bound by 1/bound (about one per round of answers),
// up to max; an answer that is slow, or a timeout or a "slow down", halves
// it, down to 1, at most once per flowCutEvery (one cut per episode of
// overload). An answer is slow when it took more than flowSlowFactor times
// the fastest answer seen plus flowSlowMargin. So eight machines that share
// one remote settle at what it answers in time, instead of piling up
// first-byte timeouts (which trip the breaker and turn into misses).
type flowLimit struct {
	mu       sync.Mutex
	bound    float64
	max      int
	inFlight int
	fastest  time.Duration
	lastCut  time.Time
	wake     chan struct{} // closed and replaced whenever a slot may be free
	now      func() time.Time
}

// An answer is slow when it took more than eight times the fastest plus
// half a second: well beyond what a busy machine's own scheduling adds (on
// two cores shared by eight builds, first bytes of 100-400 ms are common
// and harmless; halving on those serialized the packs and doubled the
// time), and below the remote's first-byte limit (attemptLimiter) once
// that has adapted.
const (
	flowSlowFactor = 8
	flowSlowMargin = 500 * time.Millisecond
	flowCutEvery   = 100 * time.Millisecond
)

func newFlowLimit(limit int) *flowLimit {
	n := max(limit, 1)
	return &flowLimit{bound: float64(n), max: n, wake: make(chan struct{}), now: time.Now}
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

// release frees a slot, taking note of how long its request took until the
// answer began, and whether it failed for overload (timeout, slow down).
// A request that failed otherwise, or was cancelled, passes took 0 and
// overloaded false: it says nothing about the remote's load.
func (l *flowLimit) release(took time.Duration, overloaded bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	if took > 0 && (l.fastest == 0 || took < l.fastest) {
		l.fastest = took
	}
	switch slow := took > l.fastest*flowSlowFactor+flowSlowMargin; {
	case overloaded || slow:
		if now := l.now(); now.Sub(l.lastCut) >= flowCutEvery {
			l.lastCut = now
			l.bound = max(l.bound/2, 1)
		}
	case took > 0:
		l.bound = min(l.bound+1/l.bound, float64(l.max))
	}
	close(l.wake)
	l.wake = make(chan struct{})
}

// limit returns the current bound.
func (l *flowLimit) limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.bound)
}
