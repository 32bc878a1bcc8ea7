package main

import "sync"

// A missPredictor tells the prefetcher when to stop asking the remote for
// keys that no manifest it read names. Such keys are what changed since
// the runs that wrote those manifests (or everything, on an empty bucket),
// and every remote lookup of one costs the go command a round trip on its
// critical path (the CI replay's cold job waits on about 1,300 of them).
// Once missStreak lookups of them in a row have missed, the
// predictor says to answer them from the local cache alone, except one in
// every missProbe, which still asks the remote; a hit, probe or not, ends
// the streak. A prediction that is wrong costs the go command a rebuild of
// that one action, never a wrong result.
type missPredictor struct {
	mu     sync.Mutex
	streak int // remote misses in a row
	asked  int // lookups since the streak reached missStreak
}

const (
	missStreak = 16
	missProbe  = 4
)

// ask reports whether a lookup of an unnamed key should go to the remote.
func (m *missPredictor) ask() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.streak < missStreak {
		return true
	}
	m.asked++
	return m.asked%missProbe == 0
}

// observe records what a remote lookup of an unnamed key found.
func (m *missPredictor) observe(hit bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if hit {
		m.streak, m.asked = 0, 0
		return
	}
	m.streak++
}
