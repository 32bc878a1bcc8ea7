// Package cachefmt is what gobuildcache writes that other programs read:
// the JSON of -stats-json (Stats) and the action records of the local
// cache directory (Record). The product writes them; bench/ and chaos/
// read them through this package, so that a change shows in all three.
package cachefmt

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Stats is the JSON object that -stats-json writes: one per server, that
// is per go command.
type Stats struct {
	Gets        int64            `json:"gets"`
	Hits        int64            `json:"hits"`
	Misses      int64            `json:"misses"`
	HitRate     float64          `json:"hit_rate"`
	LocalHits   int64            `json:"local_hits"`
	RemoteHits  int64            `json:"remote_hits"`
	Puts        int64            `json:"puts"`
	BytesServed int64            `json:"bytes_served"`
	BytesStored int64            `json:"bytes_stored"`
	Errors      map[string]int64 `json:"errors"`
	GetP50Us    int64            `json:"get_p50_us"`
	GetP99Us    int64            `json:"get_p99_us"`
	PutP50Us    int64            `json:"put_p50_us"`
	PutP99Us    int64            `json:"put_p99_us"`

	Remote             bool             `json:"remote"`
	RemoteErrors       int64            `json:"remote_errors"`
	RemoteErrorsByKind map[string]int64 `json:"remote_errors_by_kind"`
	RemoteSkipped      int64            `json:"remote_skipped"`
	RemoteDenied       int64            `json:"remote_denied"` // reads refused with 403: misses of those keys
	BreakerOpenings    int64            `json:"breaker_openings"`
	VerifyFailures     int64            `json:"verify_failures"`
	RemoteBytesDown    int64            `json:"remote_bytes_down"`
	RemoteBytesUp      int64            `json:"remote_bytes_up"`
	RemoteGetP50Us     int64            `json:"remote_get_p50_us"`
	RemoteGetP99Us     int64            `json:"remote_get_p99_us"`
	RemotePutP50Us     int64            `json:"remote_put_p50_us"`
	RemotePutP99Us     int64            `json:"remote_put_p99_us"`
	UploadsDone        int64            `json:"uploads_done"`
	UploadsFailed      int64            `json:"uploads_failed"`
	UploadsDropped     int64            `json:"uploads_dropped"`
	UploadsAbandoned   int64            `json:"uploads_abandoned"`
	UploadsCarried     int64            `json:"uploads_carried"`
	UploadsTooLarge    int64            `json:"uploads_too_large"`
	PrefetchObjects    int64            `json:"prefetch_objects"`
	PrefetchBytes      int64            `json:"prefetch_bytes"`
	PrefetchWhole      int64            `json:"prefetch_whole"`
	PrefetchMisses     int64            `json:"prefetch_misses"`
	PrefetchWasted     int64            `json:"prefetch_wasted"`
	TrimmedEntries     int64            `json:"trimmed_entries"`
	TrimmedBytes       int64            `json:"trimmed_bytes"`
	// Added with packs (older writers leave them zero).
	RemoteRequests   int64   `json:"remote_requests"`    // requests sent to the remote (gets, puts, lists, manifests, pack ranges); retries not counted
	PackRanges       int64   `json:"pack_ranges"`        // ranged GETs of packs by the prefetch
	PackEntries      int64   `json:"pack_entries"`       // of PrefetchObjects: entries landed from packs
	PackFallbacks    int64   `json:"pack_fallbacks"`     // pack entries fetched on their own instead (range failed or entry did not verify)
	PacksWritten     int64   `json:"packs_written"`      // packs stored at exit
	PackBytesUp      int64   `json:"pack_bytes_up"`      // stored bytes of those packs (compressed)
	PrefetchInFlight int64   `json:"prefetch_in_flight"` // the prefetch's requests in flight when it ended (adaptive; see prefetcher)
	CPUSeconds       float64 `json:"cpu_seconds"`        // user+system CPU time of this gobuildcache process (0 where unknown)
	LookupsSkipped   int64   `json:"lookups_skipped"`    // misses answered without asking the remote: keys no manifest names, while the remote kept missing them (-predict-misses)
}

// The local cache directory's layout (see DiskBackend):
//
//	<dir>/v1/a/<aa>/<actionID hex>   an action record (Record)
//	<dir>/v1/o/<oo>/<outputID hex>   a body
//
// Files being written are named TempPrefix* in the directory they go to.
const (
	LayoutVersion = "v1"
	TempPrefix    = ".tmp-"
)

// IDLen is the length in bytes of an action or output ID (a SHA-256).
const IDLen = 32

// Record is an action record: which body an action has, how long it is,
// and when it was put.
type Record struct {
	OutputID [IDLen]byte
	Size     int64
	Time     time.Time
}

// Format returns the record as stored: "<outputID hex> <size> <unix ns>\n".
func (r Record) Format() string {
	return hex.EncodeToString(r.OutputID[:]) + " " + strconv.FormatInt(r.Size, 10) + " " + strconv.FormatInt(r.Time.UnixNano(), 10) + "\n"
}

// ParseRecord parses what Format wrote. It is strict: any deviation is an
// error, so a damaged record is never taken for a hit.
func ParseRecord(b []byte) (Record, error) {
	line, ok := strings.CutSuffix(string(b), "\n")
	if !ok {
		return Record{}, errors.New("action record: no newline")
	}
	f := strings.Split(line, " ")
	if len(f) != 3 {
		return Record{}, errors.New("action record: want 3 fields")
	}
	var r Record
	if len(f[0]) != 2*IDLen {
		return Record{}, fmt.Errorf("action record: invalid id %.80q: length %d, want %d", f[0], len(f[0]), 2*IDLen)
	}
	if _, err := hex.Decode(r.OutputID[:], []byte(f[0])); err != nil {
		return Record{}, fmt.Errorf("action record: invalid id %.80q: not hex", f[0])
	}
	size, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || size < 0 {
		return Record{}, fmt.Errorf("action record: bad size %q", f[1])
	}
	ns, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return Record{}, fmt.Errorf("action record: bad time %q", f[2])
	}
	r.Size, r.Time = size, time.Unix(0, ns)
	return r, nil
}
