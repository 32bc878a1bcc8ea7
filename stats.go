package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Stats counts what the server did. All methods are safe for concurrent use.
type Stats struct {
	Gets, Hits, Misses     atomic.Int64
	Puts                   atomic.Int64
	BytesServed            atomic.Int64 // body bytes of get hits
	BytesStored            atomic.Int64 // body bytes of successful puts
	GetLatency, PutLatency latencyHistogram

	mu     sync.Mutex
	errors map[string]int64 // by kind
}

// AddError counts one error of the given kind ("get", "put", "protocol",
// "verify", ...).
func (s *Stats) AddError(kind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.errors == nil {
		s.errors = make(map[string]int64)
	}
	s.errors[kind]++
}

// StatsSnapshot is the stats as written by -stats-json.
type StatsSnapshot struct {
	Gets        int64            `json:"gets"`
	Hits        int64            `json:"hits"`
	Misses      int64            `json:"misses"`
	HitRate     float64          `json:"hit_rate"`
	Puts        int64            `json:"puts"`
	BytesServed int64            `json:"bytes_served"`
	BytesStored int64            `json:"bytes_stored"`
	Errors      map[string]int64 `json:"errors"`
	GetP50Us    int64            `json:"get_p50_us"`
	GetP99Us    int64            `json:"get_p99_us"`
	PutP50Us    int64            `json:"put_p50_us"`
	PutP99Us    int64            `json:"put_p99_us"`
}

// Snapshot returns a consistent-enough copy of the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	snap := StatsSnapshot{
		Gets:        s.Gets.Load(),
		Hits:        s.Hits.Load(),
		Misses:      s.Misses.Load(),
		Puts:        s.Puts.Load(),
		BytesServed: s.BytesServed.Load(),
		BytesStored: s.BytesStored.Load(),
		Errors:      map[string]int64{},
		GetP50Us:    s.GetLatency.Quantile(0.50).Microseconds(),
		GetP99Us:    s.GetLatency.Quantile(0.99).Microseconds(),
		PutP50Us:    s.PutLatency.Quantile(0.50).Microseconds(),
		PutP99Us:    s.PutLatency.Quantile(0.99).Microseconds(),
	}
	if snap.Gets > 0 {
		snap.HitRate = float64(snap.Hits) / float64(snap.Gets)
	}
	s.mu.Lock()
	for k, v := range s.errors {
		snap.Errors[k] = v
	}
	s.mu.Unlock()
	return snap
}

// errorSummary renders the errors by kind, "none" if there were none.
func (snap StatsSnapshot) errorSummary() string {
	if len(snap.Errors) == 0 {
		return "none"
	}
	kinds := make([]string, 0, len(snap.Errors))
	for k := range snap.Errors {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	for i, k := range kinds {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%d", k, snap.Errors[k])
	}
	return b.String()
}

// rows is the figures as label/value pairs, shared by the text table and
// the markdown summary.
func (snap StatsSnapshot) rows() [][2]string {
	return [][2]string{
		{"gets", fmt.Sprintf("%d (hits %d, misses %d, hit rate %.1f%%)", snap.Gets, snap.Hits, snap.Misses, 100*snap.HitRate)},
		{"puts", fmt.Sprint(snap.Puts)},
		{"bytes served", formatBytes(snap.BytesServed)},
		{"bytes stored", formatBytes(snap.BytesStored)},
		{"get latency", fmt.Sprintf("p50 %s, p99 %s", us(snap.GetP50Us), us(snap.GetP99Us))},
		{"put latency", fmt.Sprintf("p50 %s, p99 %s", us(snap.PutP50Us), us(snap.PutP99Us))},
		{"errors", snap.errorSummary()},
	}
}

// WriteText writes the compact table printed by -stats.
func (snap StatsSnapshot) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString("gobuildcache stats:\n")
	for _, r := range snap.rows() {
		fmt.Fprintf(&b, "  %-13s %s\n", r[0]+":", r[1])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteMarkdown writes the figures as a markdown table, for a GitHub
// Actions step summary.
func (snap StatsSnapshot) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("### gobuildcache\n\n| | |\n|---|---|\n")
	for _, r := range snap.rows() {
		fmt.Fprintf(&b, "| %s | %s |\n", r[0], r[1])
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSONFile writes the figures as one JSON object to path, replacing it.
func (snap StatsSnapshot) WriteJSONFile(path string) error {
	b, err := json.MarshalIndent(snap, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// appendFile appends what write produces to path (creating it).
func appendFile(path string, write func(io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func us(v int64) string {
	return time.Duration(v * int64(time.Microsecond)).String()
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// latencyHistogram records durations in logarithmic buckets, eight per
// doubling from 1µs, so quantiles are within about 9% and memory is fixed.
type latencyHistogram struct {
	buckets [histBuckets]atomic.Int64
}

const (
	histPerDoubling = 8
	histBuckets     = 28 * histPerDoubling // 1µs .. ~4.5 min
)

func (h *latencyHistogram) Observe(d time.Duration) {
	us := float64(d) / float64(time.Microsecond)
	i := 0
	if us > 1 {
		i = int(math.Log2(us) * histPerDoubling)
	}
	h.buckets[min(i, histBuckets-1)].Add(1)
}

// Quantile returns the q-th quantile (0 < q <= 1), 0 if nothing was
// recorded.
func (h *latencyHistogram) Quantile(q float64) time.Duration {
	var total int64
	for i := range h.buckets {
		total += h.buckets[i].Load()
	}
	if total == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(total)))
	var seen int64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= rank {
			// The bucket's geometric middle.
			mid := math.Exp2((float64(i) + 0.5) / histPerDoubling)
			return time.Duration(mid * float64(time.Microsecond))
		}
	}
	return 0
}
