package main

import "sync"

// A missPredictor tells the prefetcher when to stop asking the remote for
// keys that no manifest it read names. Such keys are what changed since
// the runs that wrote those manifests (or everything, on an empty bucket),
// and every remote lookup of one costs the go command a round trip on its
// critical path (the CI replay's cold job waits on about 1,300 of them).
// Once missStreak lookups of them in a row have missed, the predictor says
// to answer them from the local cache alone, except probes, which still
// ask the remote: first one in missProbe, and each probe that misses
// doubles the interval, up to one in missProbeMax. A hit, probe or not,
// ends the streak. A prediction that is wrong costs the go command a
// rebuild of that one action, never a wrong result.
type missPredictor struct {
	mu       sync.Mutex
	streak   int // remote misses in a row
	asked    int // lookups since the last probe
	interval int // lookups per probe; 0 before the first
}

const (
	missStreak   = 16
	missProbe    = 4
	missProbeMax = 32
)

// ask reports whether a lookup of an unnamed key should go to the remote.
func (m *missPredictor) ask() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.streak < missStreak {
		return true
	}
	m.asked++
	if m.asked < max(m.interval, missProbe) {
		return false
	}
	m.asked = 0
	return true
}

// observe records what a remote lookup of an unnamed key found.
func (m *missPredictor) observe(hit bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case hit:
		m.streak, m.asked, m.interval = 0, 0, 0
	case m.streak >= missStreak: // a probe
		m.interval = min(2*max(m.interval, missProbe), missProbeMax)
		m.streak++
	default:
		m.streak++
	}
}
