package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Trimming bounds the local cache directory. It follows the go command's
// own cache (cmd/go/internal/cache): a body's mtime says when it was last
// used, refreshed by a use only when it is more than usedInterval old, so a
// hit costs no extra system call in the common case; a trim removes what
// has not been used for long, and, when the directory is above a size
// bound, the least recently used bodies, then the action records left
// pointing at nothing.
//
// Other processes may use the directory during a trim. Removal races are
// harmless there: a record whose body is gone is a miss, and the next put
// writes the body again. What a trim must not do is remove a body that a
// live go command was handed and still reads: those of this process are
// kept in memory (markHandedOut) and never removed; those of other processes
// are protected by their mtime (TrimOptions.MinAge).

// usedInterval is how stale a body's mtime may get before a use refreshes
// it. The mtime therefore lags the last use by less than usedInterval, and
// a trim adds that much to every age it compares with.
const usedInterval = time.Hour

// Trim policy defaults for callers.
const (
	// defaultTrimMaxAge removes what no build used for five days, as the
	// go command does.
	defaultTrimMaxAge = 5 * 24 * time.Hour
	// defaultTrimMinAge protects, under size pressure, what any process
	// used in the last hour: a hit refreshes a body's mtime only once it
	// is usedInterval old, so an mtime up to MinAge+usedInterval old may
	// be a use of a moment ago.
	defaultTrimMinAge = usedInterval
	// trimEveryBounded and trimEveryUnbounded are how often MaybeTrim
	// trims with and without a size bound.
	trimEveryBounded   = 10 * time.Minute
	trimEveryUnbounded = 24 * time.Hour
)

// trimStampName is the file under v1 holding the unix time of the last
// trim of the directory by any process.
const trimStampName = "trim.txt"

// TrimOptions says what Trim removes.
type TrimOptions struct {
	// MaxSize bounds the total size of the bodies in bytes; 0 is no bound.
	// Above it, the least recently used bodies are removed until the total
	// is at most 90% of MaxSize (or nothing more may be removed).
	MaxSize int64
	// MaxAge removes bodies not used for that long (plus usedInterval); 0
	// removes nothing for its age.
	MaxAge time.Duration
	// MinAge protects bodies used less than that long ago (plus
	// usedInterval, since mtimes lag uses by up to that): nothing so
	// recently used is ever removed, whatever MaxSize says.
	MinAge time.Duration
}

// defaultTrimOptions returns the options callers use by default, with the
// given size bound (0 for none).
func defaultTrimOptions(maxSize int64) TrimOptions {
	return TrimOptions{MaxSize: maxSize, MaxAge: defaultTrimMaxAge, MinAge: defaultTrimMinAge}
}

// every returns how often MaybeTrim should trim with these options.
func (o TrimOptions) every() time.Duration {
	if o.MaxSize > 0 {
		return trimEveryBounded
	}
	return trimEveryUnbounded
}

// TrimResult is what a Trim did.
type TrimResult struct {
	Entries  int64         // action records removed
	Bodies   int64         // bodies removed
	Bytes    int64         // bytes of the bodies removed
	Kept     int64         // bytes of the bodies left
	Duration time.Duration // how long the trim took
}

func (r TrimResult) String() string {
	return fmt.Sprintf("removed %d entries, %d bodies (%s); kept %s; took %v",
		r.Entries, r.Bodies, formatBytes(r.Bytes), formatBytes(r.Kept), r.Duration.Round(time.Millisecond))
}

// markHandedOut records that path, a body, is handed out by this backend: Trim
// never removes it. Callers mark a body before they check that it exists.
func (d *DiskBackend) markHandedOut(path string) {
	d.inUseMu.Lock()
	if d.inUse == nil {
		d.inUse = make(map[string]struct{})
	}
	d.inUse[path] = struct{}{}
	d.inUseMu.Unlock()
}

// touchIfStale sets the mtime of path, a body just used, to now if mtime
// (its current one) is more than usedInterval old. In a directory shared
// through a group, the body may be another user's, whose times only its
// owner may set: then the kernel's "now" is set (touchNow), as any writer
// may. A failure is ignored: the body stays as it is, only less protected
// from a trim.
func (d *DiskBackend) touchIfStale(path string, mtime time.Time) {
	if now := d.now(); now.Sub(mtime) >= usedInterval {
		if os.Chtimes(path, now, now) != nil {
			touchNow(path)
		}
	}
}

// trimBody is one body found by Trim.
type trimBody struct {
	path  string
	size  int64
	mtime time.Time
}

// Trim removes bodies as o says, then the action records whose bodies are
// gone, then temp files of crashed writers. It never removes a body this
// backend handed out, nor one used within o.MinAge. It stops early, with
// ctx's error and what it did so far, if ctx ends.
func (d *DiskBackend) Trim(ctx context.Context, o TrimOptions) (TrimResult, error) {
	start := time.Now()
	var res TrimResult
	err := d.trim(ctx, o, &res)
	res.Duration = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("trim %s: %w", d.root, err)
	}
	return res, nil
}

func (d *DiskBackend) trim(ctx context.Context, o TrimOptions, res *TrimResult) error {
	now := d.now()
	// Nothing with an mtime after protect is removed: it may have been
	// used within MinAge.
	protect := now.Add(-o.MinAge - usedInterval)

	bodies, err := d.walkBodies(ctx)
	var total int64
	for _, b := range bodies {
		total += b.size
	}
	res.Kept = total
	if err != nil {
		return err
	}
	// present holds the bodies still in place, by path, with their size.
	present := make(map[string]int64, len(bodies))
	for _, b := range bodies {
		present[b.path] = b.size
	}
	// vanished counts bodies that went away, removed here or not.
	vanished := 0
	remove := func(b trimBody, before time.Time) {
		size, gone, removed := d.removeBody(b.path, before)
		if removed {
			res.Bodies++
			res.Bytes += size
		}
		if removed || gone {
			vanished++
			total -= b.size
			delete(present, b.path)
		}
	}
	// stopped ends a trim that ctx stopped midway: what it removed is
	// noted all the same (see noteRemoval).
	stopped := func(err error) error {
		res.Kept = total
		if vanished > 0 {
			d.noteRemoval()
		}
		return err
	}

	// By age.
	if o.MaxAge > 0 {
		// Two steps: -MaxAge-usedInterval would wrap around for the
		// longest durations (a way to say "never"), to a cutoff in the
		// future.
		cutoff := now.Add(-o.MaxAge).Add(-usedInterval)
		if protect.Before(cutoff) {
			cutoff = protect
		}
		kept := bodies[:0]
		for _, b := range bodies {
			if err := ctx.Err(); err != nil {
				return stopped(err)
			}
			if b.mtime.Before(cutoff) {
				remove(b, cutoff)
				if _, ok := present[b.path]; !ok {
					continue
				}
			}
			kept = append(kept, b)
		}
		bodies = kept
	}

	// By size, least recently used first, down to 90% of the bound.
	if o.MaxSize > 0 && total > o.MaxSize {
		target := o.MaxSize - o.MaxSize/10
		slices.SortFunc(bodies, func(a, b trimBody) int {
			if c := a.mtime.Compare(b.mtime); c != 0 {
				return c
			}
			return cmp.Compare(a.path, b.path)
		})
		for _, b := range bodies {
			if total <= target || !b.mtime.Before(protect) {
				break // the rest is newer still
			}
			if err := ctx.Err(); err != nil {
				return stopped(err)
			}
			remove(b, protect)
		}
	}
	res.Kept = total

	// Records whose body is gone: they are misses already, so this is
	// only tidying, done when this trim saw bodies go (it reads every
	// record). Then temp files of crashed writers.
	if vanished > 0 {
		d.noteRemoval()
		if err := d.trimRecords(ctx, present, res); err != nil {
			return err
		}
	}
	d.removeStaleTemps()
	return nil
}

// walkBodies lists the bodies under v1/o.
func (d *DiskBackend) walkBodies(ctx context.Context) ([]trimBody, error) {
	var bodies []trimBody
	err := d.walkFanOut(ctx, "o", func(path string, ent fs.DirEntry) {
		if !ent.Type().IsRegular() {
			return // damage; a put clears it
		}
		if fi, err := ent.Info(); err == nil {
			bodies = append(bodies, trimBody{path: path, size: fi.Size(), mtime: fi.ModTime()})
		}
	})
	return bodies, err
}

// walkFanOut calls f for each file in the fan-out directories of v1/<kind>.
// Each directory is read whole before f sees its files, so removing them
// does not disturb the listing. Directories that vanish are skipped.
func (d *DiskBackend) walkFanOut(ctx context.Context, kind string, f func(path string, ent fs.DirEntry)) error {
	base := filepath.Join(d.dir, kind)
	subs, err := os.ReadDir(base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, sub := range subs {
		if !sub.IsDir() {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		dir := filepath.Join(base, sub.Name())
		ents, err := os.ReadDir(dir)
		if err != nil && len(ents) == 0 {
			continue // removed meanwhile, or unreadable: nothing to trim
		}
		for _, ent := range ents {
			path := dir + string(filepath.Separator) + ent.Name()
			if strings.HasPrefix(ent.Name(), tempPrefix) {
				// A writer's temp file: not an entry; once stale, a
				// crashed writer's leftover.
				if fi, err := ent.Info(); err == nil && d.now().Sub(fi.ModTime()) > staleTempAge {
					os.Remove(path)
				}
				continue
			}
			f(path, ent)
		}
	}
	return nil
}

// removeBody removes the body at path unless this backend handed it out or
// its mtime, checked again now, is not before before. It reports the size
// removed, or gone if there was no body to remove.
func (d *DiskBackend) removeBody(path string, before time.Time) (size int64, gone, removed bool) {
	// Under the lock, so that markHandedOut followed by a stat (getLocal) sees
	// either no body or a body that stays.
	d.inUseMu.Lock()
	defer d.inUseMu.Unlock()
	if _, ok := d.inUse[path]; ok {
		return 0, false, false
	}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, true, false
	}
	if err != nil || !fi.Mode().IsRegular() || !fi.ModTime().Before(before) {
		return 0, false, false // used meanwhile, by another process
	}
	if err := os.Remove(path); err != nil {
		return 0, errors.Is(err, fs.ErrNotExist), false
	}
	return fi.Size(), false, true
}

// trimRecords removes the action records whose body is missing or of the
// wrong size (a miss in getLocal), and damaged ones (a miss too). present
// holds the bodies known to be in place.
func (d *DiskBackend) trimRecords(ctx context.Context, present map[string]int64, res *TrimResult) error {
	return d.walkFanOut(ctx, "a", func(path string, ent fs.DirEntry) {
		if !ent.Type().IsRegular() {
			return
		}
		var buf [128]byte
		n, err := readSmallFile(path, buf[:])
		if errors.Is(err, fs.ErrNotExist) {
			return // removed meanwhile
		}
		if err == nil {
			e, perr := parseActionRecord(buf[:n])
			if perr == nil {
				body := d.outputPath(e.OutputID)
				if size, ok := present[body]; ok && size == e.Size {
					return
				}
				// Perhaps written after the walk: look again.
				if size, _, ok := statBody(body); ok && size == e.Size {
					return
				}
			}
		} else if !errors.Is(err, errTooLarge) {
			return // unreadable: leave it
		}
		// A miss for getLocal. Should a put have replaced the record
		// since it was read, removing it costs that put's entry one
		// miss, nothing more.
		if err := os.Remove(path); err == nil {
			res.Entries++
		}
	})
}

// MaybeTrim runs Trim at most once per every across all the processes
// sharing the directory: the time of the last trim is kept in v1/trim.txt.
// It reports whether it trimmed. Two processes that look at the same time
// may both trim; that is harmless.
func (d *DiskBackend) MaybeTrim(ctx context.Context, o TrimOptions, every time.Duration) (TrimResult, bool, error) {
	now := d.now()
	stamp := filepath.Join(d.dir, trimStampName)
	last, readErr := os.ReadFile(stamp)
	if readErr == nil {
		if sec, err := strconv.ParseInt(strings.TrimSpace(string(last)), 10, 64); err == nil {
			// A stamp far in the future is a clock gone wrong: trim.
			if age := now.Sub(time.Unix(sec, 0)); age < every && age > -usedInterval {
				return TrimResult{}, false, nil
			}
		}
	}
	// Claim the trim before doing it, so that processes starting
	// meanwhile skip it. If the stamp cannot be written (a full disk,
	// say), trim all the same: that is when it is needed most.
	d.writeFile(stamp, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%d\n", now.Unix())
		return err
	})
	res, err := d.Trim(ctx, o)
	if err != nil && ctx.Err() != nil && res.Bodies == 0 {
		// Stopped (its server exited) before it removed anything: no trim
		// for the others to wait on. The stamp is put back as it was.
		if readErr == nil {
			d.writeFile(stamp, func(w io.Writer) error { _, err := w.Write(last); return err })
		} else {
			os.Remove(stamp)
		}
	}
	return res, true, err
}
