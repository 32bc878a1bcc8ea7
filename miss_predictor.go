package main

import (
	"fmt"
	"os"
	"sync"
	"time"
)

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
//
// missStreak is 4: a pull request's job misses a few keys in each go
// command (the actions of what it changed), one round trip each on the go
// command's critical path. With 16 its later commands still asked the
// bucket for nearly every one of them (in the CI replay's run (7), after
// the build's 5 misses, vet asked all 9 of its own); with 8, run (3)'s
// vet still began with 9 remote misses in a row, 14-18 ms each at a 10 ms
// RTT, 150 ms of its 1.05 s. Probes bound what a wrong prediction costs.
//
// What the predictor learned outlives its server: a CI job's go commands
// (build, vet, test) each start one, and each would otherwise pay the
// streak's round trips again, on the same remote, a moment later. The
// server saves the streak and the probe interval at exit (save) to a file
// in the local cache directory named for the remote, and the next one loads
// them if they are at most missStateTTL old (load).
type missPredictor struct {
	mu       sync.Mutex
	streak   int  // remote misses in a row
	asked    int  // lookups since the last probe
	interval int  // lookups per probe; 0 before the first
	observed bool // observe was called: there is something to save
}

const (
	missStreak   = 4
	missProbe    = 4
	missProbeMax = 32
	missStateTTL = 10 * time.Minute // how long a saved streak is believed
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
	m.observed = true
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

// load takes the streak and interval saved at path by an earlier server,
// unless path is "", or the file is missing, unreadable or older than
// missStateTTL (then the predictor starts afresh).
func (m *missPredictor) load(path string, now time.Time) {
	if path == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var at int64
	var streak, interval int
	if _, err := fmt.Sscanf(string(b), "%d %d %d\n", &at, &streak, &interval); err != nil ||
		streak < 0 || interval < 0 || interval > missProbeMax {
		return
	}
	if age := now.Sub(time.Unix(0, at)); age < 0 || age > missStateTTL {
		return
	}
	m.mu.Lock()
	m.streak, m.interval = streak, interval
	m.mu.Unlock()
}

// save writes the streak and interval to path, as of now, for the next
// server (see load), if path is not "" and this server observed any
// lookup: one that learned nothing leaves an earlier server's state to
// age. The file is replaced whole (replaceFile): written in place, a reader
// could meet it cut short, which may still parse (a shorter interval).
func (m *missPredictor) save(path string, now time.Time) error {
	m.mu.Lock()
	line := fmt.Sprintf("%d %d %d\n", now.UnixNano(), m.streak, m.interval)
	observed := m.observed
	m.mu.Unlock()
	if path == "" || !observed {
		return nil
	}
	if err := replaceFile(path, []byte(line)); err != nil {
		return fmt.Errorf("save miss streak: %w", err)
	}
	return nil
}
