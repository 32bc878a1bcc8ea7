package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/richardartoul/gobuildcache/internal/cachefmt"
)

// Stats counts what the server and its backends did. All methods are safe
// for concurrent use.
type Stats struct {
	Gets, Hits, Misses     atomic.Int64
	RemoteHits             atomic.Int64 // of Hits, those fetched from the remote
	Puts                   atomic.Int64
	BytesServed            atomic.Int64 // body bytes of get hits
	BytesStored            atomic.Int64 // body bytes of successful puts
	GetLatency, PutLatency latencyHistogram

	// Remote is set when a remote backend is configured; the remote
	// figures are printed only then.
	Remote                           atomic.Bool
	RemoteBytesDown, RemoteBytesUp   atomic.Int64
	RemoteGetLatency                 latencyHistogram
	RemotePutLatency                 latencyHistogram
	RemoteSkipped                    atomic.Int64 // requests not sent: circuit breaker open
	RemoteDenied                     atomic.Int64 // reads refused with 403: misses of those keys
	BreakerOpenings                  atomic.Int64 // times the circuit breaker opened
	VerifyFailures                   atomic.Int64 // remote bodies that did not match their output ID
	UploadsDone, UploadsFailed       atomic.Int64
	UploadsDropped, UploadsAbandoned atomic.Int64 // queue full; still pending at exit
	UploadsTooLarge                  atomic.Int64 // larger than the upload queue or than one S3 upload: never uploaded
	UploadsCarried                   atomic.Int64 // not sent on their own: this run's prefetch manifest or packs carry them
	PrefetchObjects, PrefetchBytes   atomic.Int64 // fetched ahead of the go command
	PrefetchWhole                    atomic.Int64 // of PrefetchObjects: carried whole by a manifest, no request of their own
	PrefetchMisses                   atomic.Int64 // named by a manifest, not in the bucket
	PrefetchWasted                   atomic.Int64 // prefetched, never asked for
	TrimmedEntries, TrimmedBytes     atomic.Int64 // removed from the local cache by trimming
	RemoteRequests                   atomic.Int64 // requests sent to the remote; retries not counted
	PackRanges, PackEntries          atomic.Int64 // ranged GETs of packs; entries landed from them
	PackFallbacks                    atomic.Int64 // pack entries fetched on their own instead
	PacksWritten, PackBytesUp        atomic.Int64 // packs stored at exit, and their bytes
	PrefetchInFlight                 atomic.Int64 // the prefetch's limit on requests in flight, at its end
	LookupsSkipped                   atomic.Int64 // misses answered without asking the remote (missPredictor)

	mu           sync.Mutex
	errors       map[string]int64 // by kind
	remoteErrors map[string]int64 // by kind
}

// AddError counts one error of the given kind ("get", "put", "protocol",
// "verify", ...).
func (s *Stats) AddError(kind string) { s.add(&s.errors, kind) }

// AddRemoteError counts one failed remote request of the given kind
// ("timeout", "refused", "server", "auth", ...).
func (s *Stats) AddRemoteError(kind string) { s.add(&s.remoteErrors, kind) }

func (s *Stats) add(m *map[string]int64, kind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if *m == nil {
		*m = make(map[string]int64)
	}
	(*m)[kind]++
}

// StatsSnapshot is the stats as written by -stats-json: the schema is
// cachefmt.Stats, which bench/ and chaos/ read.
type StatsSnapshot struct {
	cachefmt.Stats
}

// Snapshot returns a consistent-enough copy of the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	snap := StatsSnapshot{cachefmt.Stats{
		Gets:               s.Gets.Load(),
		Hits:               s.Hits.Load(),
		Misses:             s.Misses.Load(),
		RemoteHits:         s.RemoteHits.Load(),
		Puts:               s.Puts.Load(),
		BytesServed:        s.BytesServed.Load(),
		BytesStored:        s.BytesStored.Load(),
		Errors:             map[string]int64{},
		GetP50Us:           s.GetLatency.Quantile(0.50).Microseconds(),
		GetP99Us:           s.GetLatency.Quantile(0.99).Microseconds(),
		PutP50Us:           s.PutLatency.Quantile(0.50).Microseconds(),
		PutP99Us:           s.PutLatency.Quantile(0.99).Microseconds(),
		Remote:             s.Remote.Load(),
		RemoteErrorsByKind: map[string]int64{},
		RemoteSkipped:      s.RemoteSkipped.Load(),
		RemoteDenied:       s.RemoteDenied.Load(),
		BreakerOpenings:    s.BreakerOpenings.Load(),
		VerifyFailures:     s.VerifyFailures.Load(),
		RemoteBytesDown:    s.RemoteBytesDown.Load(),
		RemoteBytesUp:      s.RemoteBytesUp.Load(),
		RemoteGetP50Us:     s.RemoteGetLatency.Quantile(0.50).Microseconds(),
		RemoteGetP99Us:     s.RemoteGetLatency.Quantile(0.99).Microseconds(),
		RemotePutP50Us:     s.RemotePutLatency.Quantile(0.50).Microseconds(),
		RemotePutP99Us:     s.RemotePutLatency.Quantile(0.99).Microseconds(),
		UploadsDone:        s.UploadsDone.Load(),
		UploadsFailed:      s.UploadsFailed.Load(),
		UploadsDropped:     s.UploadsDropped.Load(),
		UploadsTooLarge:    s.UploadsTooLarge.Load(),
		UploadsAbandoned:   s.UploadsAbandoned.Load(),
		UploadsCarried:     s.UploadsCarried.Load(),
		PrefetchObjects:    s.PrefetchObjects.Load(),
		PrefetchBytes:      s.PrefetchBytes.Load(),
		PrefetchWhole:      s.PrefetchWhole.Load(),
		PrefetchMisses:     s.PrefetchMisses.Load(),
		PrefetchWasted:     s.PrefetchWasted.Load(),
		TrimmedEntries:     s.TrimmedEntries.Load(),
		TrimmedBytes:       s.TrimmedBytes.Load(),
		RemoteRequests:     s.RemoteRequests.Load(),
		PackRanges:         s.PackRanges.Load(),
		PackEntries:        s.PackEntries.Load(),
		PackFallbacks:      s.PackFallbacks.Load(),
		PacksWritten:       s.PacksWritten.Load(),
		PackBytesUp:        s.PackBytesUp.Load(),
		PrefetchInFlight:   s.PrefetchInFlight.Load(),
		CPUSeconds:         processCPU().Seconds(),
		LookupsSkipped:     s.LookupsSkipped.Load(),
	}}
	snap.LocalHits = snap.Hits - snap.RemoteHits
	if snap.Gets > 0 {
		snap.HitRate = float64(snap.Hits) / float64(snap.Gets)
	}
	s.mu.Lock()
	for k, v := range s.errors {
		snap.Errors[k] = v
	}
	for k, v := range s.remoteErrors {
		snap.RemoteErrorsByKind[k] = v
		snap.RemoteErrors += v
	}
	s.mu.Unlock()
	return snap
}

// kindSummary renders counts by kind, "none" if there are none.
func kindSummary(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	kinds := make([]string, 0, len(m))
	for k := range m {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var b strings.Builder
	for i, k := range kinds {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// rows is the figures as label/value pairs of the text table.
func (snap StatsSnapshot) rows() [][2]string {
	rows := [][2]string{
		{"gets", fmt.Sprintf("%d (hits %d, misses %d, hit rate %.1f%%)", snap.Gets, snap.Hits, snap.Misses, 100*snap.HitRate)},
	}
	if snap.Remote {
		rows = append(rows, [2]string{"hits", fmt.Sprintf("local %d, remote %d", snap.LocalHits, snap.RemoteHits)})
	}
	rows = append(rows,
		[2]string{"puts", fmt.Sprint(snap.Puts)},
		[2]string{"bytes served", formatBytes(snap.BytesServed)},
		[2]string{"bytes stored", formatBytes(snap.BytesStored)},
		[2]string{"get latency", fmt.Sprintf("p50 %s, p99 %s", us(snap.GetP50Us), us(snap.GetP99Us))},
		[2]string{"put latency", fmt.Sprintf("p50 %s, p99 %s", us(snap.PutP50Us), us(snap.PutP99Us))},
		[2]string{"errors", kindSummary(snap.Errors)},
	)
	if snap.TrimmedEntries > 0 || snap.TrimmedBytes > 0 {
		rows = append(rows, [2]string{"trimmed", fmt.Sprintf("%d entries, %s (local cache bound)", snap.TrimmedEntries, formatBytes(snap.TrimmedBytes))})
	}
	if snap.Remote {
		rows = append(rows,
			[2]string{"remote bytes", fmt.Sprintf("down %s, up %s", formatBytes(snap.RemoteBytesDown), formatBytes(snap.RemoteBytesUp))},
			[2]string{"remote get", fmt.Sprintf("p50 %s, p99 %s", us(snap.RemoteGetP50Us), us(snap.RemoteGetP99Us))},
			[2]string{"remote put", fmt.Sprintf("p50 %s, p99 %s", us(snap.RemotePutP50Us), us(snap.RemotePutP99Us))},
			[2]string{"prefetch", fmt.Sprintf("%d objects (%d of them whole in manifests), %s; %d asked for by this go command, %d not (wasted, or for the next); %d not in the bucket", snap.PrefetchObjects, snap.PrefetchWhole, formatBytes(snap.PrefetchBytes), snap.PrefetchObjects-snap.PrefetchWasted, snap.PrefetchWasted, snap.PrefetchMisses)},
			[2]string{"packs", fmt.Sprintf("read: %d ranges, %d entries (%d fetched on their own instead); written: %d, %s", snap.PackRanges, snap.PackEntries, snap.PackFallbacks, snap.PacksWritten, formatBytes(snap.PackBytesUp))},
			[2]string{"requests", fmt.Sprintf("%d to the remote, %d lookups skipped (predicted misses); this process used %.2fs CPU", snap.RemoteRequests, snap.LookupsSkipped, snap.CPUSeconds)},
			[2]string{"uploads", fmt.Sprintf("done %d, failed %d, dropped %d (queue full), too large %d, abandoned %d (at exit), carried %d (in packs and manifest)", snap.UploadsDone, snap.UploadsFailed, snap.UploadsDropped, snap.UploadsTooLarge, snap.UploadsAbandoned, snap.UploadsCarried)},
			[2]string{"remote errors", fmt.Sprintf("%d (%s); breaker opened %d times, skipped while disabled %d; verify failures %d", snap.RemoteErrors, kindSummary(snap.RemoteErrorsByKind), snap.BreakerOpenings, snap.RemoteSkipped, snap.VerifyFailures)},
		)
		if snap.RemoteDenied > 0 {
			rows = append(rows, [2]string{"reads denied", fmt.Sprintf("%d (403: misses of those keys; see gobuildcache check)", snap.RemoteDenied)})
		}
	}
	return rows
}

// WriteText writes the compact table printed by -stats.
func (snap StatsSnapshot) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString("gobuildcache stats:\n")
	for _, r := range snap.rows() {
		fmt.Fprintf(&b, "  %-14s %s\n", r[0]+":", r[1])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSONFile writes the figures as one JSON object to path, replacing it
// whole: servers that end at once with one file leave one's figures in it,
// not parts of two. The new file is renamed over the one a link leads to,
// and written in place where that cannot be done (not a regular file, a
// directory this user cannot write to).
func (snap StatsSnapshot) WriteJSONFile(path string) error {
	b, err := json.MarshalIndent(snap, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	target := path
	if p, err := filepath.EvalSymlinks(path); err == nil {
		target = p
	}
	if fi, err := os.Lstat(target); (err == nil && fi.Mode().IsRegular()) || errors.Is(err, fs.ErrNotExist) {
		if replaceFile(target, b) == nil {
			return nil
		}
	}
	return os.WriteFile(path, b, 0o644)
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

// count returns how many durations were recorded.
func (h *latencyHistogram) count() int64 {
	var n int64
	for i := range h.buckets {
		n += h.buckets[i].Load()
	}
	return n
}
