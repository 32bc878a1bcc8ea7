package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// trimClock is a settable clock, safe for concurrent use.
type trimClock struct{ ns atomic.Int64 }

func (c *trimClock) now() time.Time           { return time.Unix(0, c.ns.Load()) }
func (c *trimClock) set(t time.Time)          { c.ns.Store(t.UnixNano()) }
func (c *trimClock) advance(by time.Duration) { c.ns.Add(int64(by)) }

// newTrimDisks returns two backends on one directory, as two processes
// would have them (w writes, d trims), sharing one fake clock that starts
// at the real time, so that freshly written files are "now".
func newTrimDisks(t *testing.T) (w, d *DiskBackend, clock *trimClock) {
	t.Helper()
	dir := t.TempDir()
	clock = new(trimClock)
	clock.set(time.Now().Truncate(time.Second))
	for _, p := range []**DiskBackend{&w, &d} {
		b, err := NewDiskBackend(dir)
		if err != nil {
			t.Fatal(err)
		}
		b.now = clock.now
		*p = b
	}
	return w, d, clock
}

// setMtime makes path look last used ago before the clock's now.
func setMtime(t *testing.T, clock *trimClock, path string, ago time.Duration) {
	t.Helper()
	tm := clock.now().Add(-ago)
	if err := os.Chtimes(path, tm, tm); err != nil {
		t.Fatal(err)
	}
}

func mtimeOf(t *testing.T, path string) time.Time {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func trimOK(t *testing.T, d *DiskBackend, o TrimOptions) TrimResult {
	t.Helper()
	res, err := d.Trim(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

const day = 24 * time.Hour

func TestTrimByAge(t *testing.T) {
	w, d, clock := newTrimDisks(t)
	old := putString(t, w, "old", "old body")
	slack := putString(t, w, "slack", "not quite old enough") // within usedInterval of MaxAge
	recent := putString(t, w, "recent", "recent body")
	fresh := putString(t, w, "fresh", "fresh body")
	setMtime(t, clock, old.DiskPath, 5*day+usedInterval+time.Minute)
	setMtime(t, clock, slack.DiskPath, 5*day+30*time.Minute)
	setMtime(t, clock, recent.DiskPath, 4*day)

	res := trimOK(t, d, TrimOptions{MaxAge: 5 * day, MinAge: 10 * time.Minute})
	if exists(old.DiskPath) {
		t.Error("body unused for over MaxAge survived")
	}
	for _, e := range []Entry{slack, recent, fresh} {
		if !exists(e.DiskPath) {
			t.Errorf("body %s used within MaxAge was removed", e.DiskPath)
		}
	}
	if res.Bodies != 1 || res.Bytes != old.Size || res.Entries != 1 {
		t.Errorf("result %+v, want 1 body of %d bytes and 1 entry", res, old.Size)
	}
	if want := slack.Size + recent.Size + fresh.Size; res.Kept != want {
		t.Errorf("kept %d bytes, want %d", res.Kept, want)
	}
	if _, err := d.Get(context.Background(), actionID("old")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a trimmed entry: %v, want a miss", err)
	}
}

func TestTrimBySizeLRU(t *testing.T) {
	w, d, clock := newTrimDisks(t)
	before := time.Now()
	var es []Entry
	for i := range 10 {
		body := fmt.Sprintf("%-100d", i) // 100 bytes each
		e := putString(t, w, fmt.Sprint(i), body)
		// Entry 0 is the least recently used.
		setMtime(t, clock, e.DiskPath, 2*usedInterval+time.Duration(10-i)*time.Hour)
		es = append(es, e)
	}
	// 1000 bytes over a bound of 800: down to 720, so the 3 oldest go.
	res := trimOK(t, d, TrimOptions{MaxSize: 800, MaxAge: 30 * day, MinAge: 10 * time.Minute})
	for i, e := range es {
		if got, want := exists(e.DiskPath), i >= 3; got != want {
			t.Errorf("body %d exists=%v, want %v", i, got, want)
		}
	}
	if res.Bodies != 3 || res.Bytes != 300 || res.Kept != 700 || res.Entries != 3 {
		t.Errorf("result %+v, want 3 bodies, 300 bytes, 700 kept, 3 entries", res)
	}
	// What was recorded of the cache's contents before (landedManifests)
	// is out of date.
	removed := d.lastRemoval()
	if removed.Before(before) {
		t.Errorf("last removal %v, before the trim that removed bodies (%v)", removed, before)
	}
	// Under the bound now: nothing more goes, and the last removal stays.
	res = trimOK(t, d, TrimOptions{MaxSize: 800, MaxAge: 30 * day, MinAge: 10 * time.Minute})
	if res.Bodies != 0 || res.Kept != 700 || !d.lastRemoval().Equal(removed) {
		t.Errorf("second trim %+v, last removal %v (was %v); want nothing removed", res, d.lastRemoval(), removed)
	}
}

func TestTrimMinAgeProtects(t *testing.T) {
	w, d, clock := newTrimDisks(t)
	justUsed := putString(t, w, "a", "used five minutes ago")
	lagging := putString(t, w, "b", "mtime 65m old: may have been used just now")
	stale := putString(t, w, "c", "used three hours ago")
	setMtime(t, clock, justUsed.DiskPath, 5*time.Minute)
	setMtime(t, clock, lagging.DiskPath, 65*time.Minute)
	setMtime(t, clock, stale.DiskPath, 3*time.Hour)

	res := trimOK(t, d, TrimOptions{MaxSize: 1, MaxAge: 30 * day, MinAge: 10 * time.Minute})
	if !exists(justUsed.DiskPath) || !exists(lagging.DiskPath) {
		t.Error("a body used within MinAge (+ usedInterval) was removed")
	}
	if exists(stale.DiskPath) {
		t.Error("a body older than MinAge survived a trim far over MaxSize")
	}
	if res.Bodies != 1 || res.Kept != justUsed.Size+lagging.Size {
		t.Errorf("result %+v", res)
	}
	// MinAge wins over MaxAge too.
	res = trimOK(t, d, TrimOptions{MaxAge: time.Minute, MinAge: 10 * time.Minute})
	if res.Bodies != 0 || !exists(justUsed.DiskPath) {
		t.Errorf("MaxAge below MinAge removed a protected body: %+v", res)
	}
}

func TestTrimNeverRemovesHandedOut(t *testing.T) {
	ctx := context.Background()
	w, d, clock := newTrimDisks(t)
	put := putString(t, d, "put", "put by the trimming process")
	got := putString(t, w, "got", "got by the trimming process")
	other := putString(t, w, "other", "only another process saw this")
	if _, err := d.Get(ctx, actionID("got")); err != nil {
		t.Fatal(err)
	}
	for _, e := range []Entry{put, got, other} {
		setMtime(t, clock, e.DiskPath, 30*day)
	}
	res := trimOK(t, d, TrimOptions{MaxSize: 1, MaxAge: day, MinAge: 10 * time.Minute})
	if !exists(put.DiskPath) || !exists(got.DiskPath) {
		t.Error("a body this process handed out was removed")
	}
	if exists(other.DiskPath) {
		t.Error("an old body nobody here handed out survived")
	}
	if res.Bodies != 1 {
		t.Errorf("result %+v, want 1 body removed", res)
	}
	// The set is per process: the writer, which handed out "got" but not
	// "put", keeps the one and removes the other.
	setMtime(t, clock, got.DiskPath, 30*day)
	res = trimOK(t, w, TrimOptions{MaxSize: 1, MaxAge: day})
	if res.Bodies != 1 || !exists(got.DiskPath) || exists(put.DiskPath) {
		t.Errorf("writer's trim: %+v; got exists=%v (want true), put exists=%v (want false)",
			res, exists(got.DiskPath), exists(put.DiskPath))
	}
}

// TestTouchByAnotherUser: in a directory shared through a group, a hit on
// another user's body refreshes its time, so that a trim by any server does
// not take it for unused while this one has handed it out. Explicit times
// need the file's owner; the touch falls back to the kernel's "now",
// which needs write access only. Run as root on Linux with setpriv: the
// body belongs to one user and a child process of another touches it.
func TestTouchByAnotherUser(t *testing.T) {
	if path := os.Getenv("TEST_TOUCH_BODY"); path != "" { // the child
		d := &DiskBackend{now: time.Now}
		d.touchIfStale(path, time.Now().Add(-2*time.Hour))
		return
	}
	setpriv, err := exec.LookPath("setpriv")
	if runtime.GOOS != "linux" || os.Geteuid() != 0 || err != nil {
		t.Skip("needs root, Linux and setpriv, to act as two users")
	}
	dir, err := os.MkdirTemp("", "gobuildcache-touch-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	bin := filepath.Join(dir, "test.bin") // the test binary's own directory is root's alone
	data, err := os.ReadFile(os.Args[0])
	if err == nil {
		err = os.WriteFile(bin, data, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	body := filepath.Join(dir, "body")
	if err := os.WriteFile(body, []byte("a body in a shared cache"), 0o666); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chown(body, 1001, 1001); err != nil {
		t.Fatal(err)
	}
	os.Chmod(body, 0o666) // writable by the other user, as a group's member would be; the umask took it away
	os.Chtimes(body, old, old)
	cmd := exec.Command(setpriv, "--reuid=1002", "--regid=1002", "--clear-groups", bin, "-test.run=^TestTouchByAnotherUser$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TEST_TOUCH_BODY="+body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	fi, err := os.Stat(body)
	if err != nil {
		t.Fatal(err)
	}
	if age := time.Since(fi.ModTime()); age > time.Minute {
		t.Errorf("another user's use left the body's time %v old: a trim would take it for unused", age.Round(time.Minute))
	}
}

func TestTrimRecordsAndRepair(t *testing.T) {
	ctx := context.Background()
	w, d, clock := newTrimDisks(t)
	a := putString(t, w, "a", "shared body")
	putString(t, w, "a2", "shared body") // same body as a
	keep := putString(t, w, "keep", "kept body")
	setMtime(t, clock, a.DiskPath, 10*day)
	// A damaged record: a miss forever until a put, so trimmed too.
	damaged := d.actionPath(actionID("damaged"))
	os.MkdirAll(filepath.Dir(damaged), 0o755)
	os.WriteFile(damaged, []byte(strings.Repeat("x", 300)), 0o644)

	res := trimOK(t, d, TrimOptions{MaxAge: 5 * day})
	if res.Bodies != 1 || res.Entries != 3 {
		t.Errorf("result %+v, want 1 body and 3 records (a, a2, damaged)", res)
	}
	for _, k := range []string{"a", "a2"} {
		if exists(d.actionPath(actionID(k))) {
			t.Errorf("record %s of a removed body survived", k)
		}
		if _, err := d.Get(ctx, actionID(k)); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%s) after trim: %v, want a miss", k, err)
		}
	}
	if exists(damaged) {
		t.Error("damaged record survived")
	}
	if e, err := d.Get(ctx, actionID("keep")); err != nil {
		t.Errorf("Get(keep): %v", err)
	} else {
		checkEntry(t, e, []byte("kept body"))
	}

	// A record left pointing at a removed body (a trim of another process
	// removed it, say) is a miss too, and a put repairs it.
	os.Remove(keep.DiskPath)
	if _, err := d.Get(ctx, actionID("keep")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get with the body gone: %v, want a miss", err)
	}
	for _, k := range []string{"a", "keep"} {
		body := map[string]string{"a": "shared body", "keep": "kept body"}[k]
		putString(t, d, k, body)
		e, err := d.Get(ctx, actionID(k))
		if err != nil {
			t.Fatalf("Get(%s) after repair: %v", k, err)
		}
		checkEntry(t, e, []byte(body))
	}
}

func TestTrimRemovesStaleTemps(t *testing.T) {
	_, d, clock := newTrimDisks(t)
	stale := filepath.Join(d.tmpDir(), "put-stale")
	live := filepath.Join(d.tmpDir(), "put-live")
	os.WriteFile(stale, []byte("x"), 0o644)
	os.WriteFile(live, []byte("x"), 0o644)
	setMtime(t, clock, stale, 2*staleTempAge)
	trimOK(t, d, TrimOptions{MaxAge: 5 * day})
	if exists(stale) {
		t.Error("stale temp file survived")
	}
	if !exists(live) {
		t.Error("a live writer's temp file was removed")
	}
	if !exists(d.dir) || !exists(d.tmpDir()) {
		t.Error("trim removed the directory tree")
	}
}

func TestMaybeTrim(t *testing.T) {
	ctx := context.Background()
	w, d, clock := newTrimDisks(t)
	o := TrimOptions{MaxAge: 5 * day}
	every := trimEveryBounded
	maybe := func(b *DiskBackend, want bool) TrimResult {
		t.Helper()
		res, ran, err := b.MaybeTrim(ctx, o, every)
		if err != nil {
			t.Fatal(err)
		}
		if ran != want {
			t.Fatalf("MaybeTrim at %v ran=%v, want %v", clock.now(), ran, want)
		}
		return res
	}
	old := putString(t, w, "old", "old body")
	setMtime(t, clock, old.DiskPath, 10*day)
	if res := maybe(d, true); res.Bodies != 1 {
		t.Errorf("first MaybeTrim removed %d bodies, want 1", res.Bodies)
	}
	b, err := os.ReadFile(filepath.Join(d.dir, trimStampName))
	if err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(clock.now().Unix()) {
		t.Errorf("stamp %q, %v; want %d", b, err, clock.now().Unix())
	}
	maybe(d, false)
	maybe(w, false) // the stamp is shared by every process
	clock.advance(every / 2)
	maybe(d, false)
	clock.advance(every/2 + time.Second)
	maybe(w, true)
	maybe(d, false)

	// A stamp far in the future (a clock gone wrong) does not stop trims
	// for good; a damaged one neither.
	os.WriteFile(filepath.Join(d.dir, trimStampName), []byte(fmt.Sprint(clock.now().Add(48*time.Hour).Unix())), 0o644)
	maybe(d, true)
	os.WriteFile(filepath.Join(d.dir, trimStampName), []byte("garbage"), 0o644)
	maybe(d, true)
	maybe(d, false)
	// every 0: always.
	every = 0
	maybe(d, true)
	maybe(d, true)
}

func TestDiskHitTouchesStaleBody(t *testing.T) {
	ctx := context.Background()
	w, d, clock := newTrimDisks(t)
	e := putString(t, w, "k", "the body")
	rec := d.actionPath(actionID("k"))
	setMtime(t, clock, rec, 3*time.Hour)
	recMtime := mtimeOf(t, rec)

	// Used less than an hour ago: the hit costs no touch.
	setMtime(t, clock, e.DiskPath, 30*time.Minute)
	before := mtimeOf(t, e.DiskPath)
	if _, err := d.Get(ctx, actionID("k")); err != nil {
		t.Fatal(err)
	}
	if got := mtimeOf(t, e.DiskPath); !got.Equal(before) {
		t.Errorf("hit on a fresh body changed its mtime from %v to %v", before, got)
	}

	// More than an hour ago: the hit marks it used now.
	setMtime(t, clock, e.DiskPath, 2*time.Hour)
	if _, err := d.Get(ctx, actionID("k")); err != nil {
		t.Fatal(err)
	}
	if got := mtimeOf(t, e.DiskPath); !got.Equal(clock.now()) {
		t.Errorf("hit on a stale body left mtime %v, want now %v", got, clock.now())
	}
	if got := mtimeOf(t, rec); !got.Equal(recMtime) {
		t.Errorf("hit touched the record (%v, was %v); only bodies are tracked", got, recMtime)
	}

	// A put that finds its body already in place, stale, marks it used.
	setMtime(t, clock, e.DiskPath, 2*time.Hour)
	putString(t, w, "k2", "the body")
	if got := mtimeOf(t, e.DiskPath); !got.Equal(clock.now()) {
		t.Errorf("put reusing a stale body left mtime %v, want now %v", got, clock.now())
	}
}

// TestTrimConcurrent trims, in the process that serves them, while gets
// and puts run: no get or put may return an entry whose body is missing.
// MinAge is set so low that mtimes protect nothing: only the set of bodies
// handed out does. Every key has its own body, and most are old and not
// yet handed out when the trims start, so trims race with first hand-outs.
func TestTrimConcurrent(t *testing.T) {
	ctx := context.Background()
	w, d, clock := newTrimDisks(t)
	const keys = 256
	body := func(k int) string { return fmt.Sprintf("body of %d", k) }
	for k := range keys {
		e := putString(t, w, fmt.Sprint(k), body(k))
		setMtime(t, clock, e.DiskPath, 3*day)
	}
	o := TrimOptions{MaxSize: 1, MaxAge: day, MinAge: -2 * usedInterval}

	var handedOut sync.Map // DiskPath -> true
	check := func(what string, e Entry) {
		if _, err := os.Stat(e.DiskPath); err != nil {
			t.Errorf("%s returned an entry whose body is missing: %v", what, err)
		}
		handedOut.Store(e.DiskPath, true)
	}
	var wg sync.WaitGroup
	var removed, hits, misses atomic.Int64
	var trimming atomic.Int64 // trimmers still running
	trimming.Store(2)
	// busy keeps gets and puts going for at least min rounds and while
	// trims run (bounded), so that the two overlap.
	// They pause now and then so that first hand-outs spread over the
	// trims (pacing only: nothing depends on timing).
	busy := func(i, min int) bool {
		if i%16 == 15 {
			time.Sleep(time.Millisecond)
		}
		return i < min || i < 10*min && trimming.Load() > 0
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer trimming.Add(-1)
			for range 10 {
				res, err := d.Trim(ctx, o)
				if err != nil {
					t.Errorf("Trim: %v", err)
				}
				removed.Add(res.Bodies)
			}
		}()
	}
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; busy(i, 400); i++ {
				k := (i*37 + g*101) % keys
				e, err := d.Get(ctx, actionID(fmt.Sprint(k)))
				switch {
				case err == nil:
					hits.Add(1)
					check("Get", e)
				case errors.Is(err, ErrNotFound):
					misses.Add(1)
				default:
					t.Errorf("Get: %v", err)
				}
			}
		}()
	}
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; busy(i, 200); i++ {
				k := (i*53 + g*7) % (2 * keys) // old keys and new ones
				b := body(k)
				e, err := d.Put(ctx, actionID(fmt.Sprint(k)), outputID(b), int64(len(b)), strings.NewReader(b))
				if err != nil {
					t.Errorf("Put: %v", err)
					continue
				}
				check("Put", e)
			}
		}()
	}
	wg.Wait()

	// Everything this process handed out is still there.
	n := 0
	handedOut.Range(func(p, _ any) bool {
		n++
		if _, err := os.Stat(p.(string)); err != nil {
			t.Errorf("a body handed out earlier is gone: %v", err)
		}
		return true
	})
	t.Logf("%d bodies handed out (%d get hits, %d misses); the trims removed %d meanwhile", n, hits.Load(), misses.Load(), removed.Load())
	if n == 0 {
		t.Error("no get or put succeeded")
	}
}

// TestStoppedTrimDoesNotHoldOffTrims: the server runs its trim in the
// background and stops it at exit. MaybeTrim writes the stamp before it
// trims, so a trim stopped before it removed anything (a go command
// shorter than the walk of a large cache) still counts as the trim of the
// next 10 minutes (a day without -max-local-size) for every process: a
// cache far over -max-local-size stays there, and if every go command is
// that short, it is never trimmed.
func TestStoppedTrimDoesNotHoldOffTrims(t *testing.T) {
	w, d, clock := newTrimDisks(t)
	for i := range 20 {
		e := putString(t, w, fmt.Sprint("k", i), strings.Repeat(fmt.Sprint(i%10), 4096))
		setMtime(t, clock, e.DiskPath, 2*day)
	}
	o := defaultTrimOptions(16 << 10) // -max-local-size=16KiB; 80 KiB cached
	every := o.every()

	// A go command whose server exits while its trim is still walking.
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	res, ran, err := d.MaybeTrim(stopped, o, every)
	t.Logf("stopped trim: ran=%v res=%v err=%v", ran, res, err)

	// The next go command, a minute later, with all the time it needs.
	clock.advance(time.Minute)
	next, err := NewDiskBackend(d.root)
	if err != nil {
		t.Fatal(err)
	}
	next.now = clock.now
	res, ran, err = next.MaybeTrim(context.Background(), o, every)
	if err != nil {
		t.Fatal(err)
	}
	bodies, _ := w.walkBodies(context.Background())
	var total int64
	for _, b := range bodies {
		total += b.size
	}
	if total > o.MaxSize {
		t.Errorf("after a full trim chance: %d bytes cached, bound %d; MaybeTrim ran=%v (%v): the stopped trim, which removed nothing, holds off trims for %v",
			total, o.MaxSize, ran, res, every)
	}
}

// TestTrimKeepsWhatWasUsedWithinTheHour: README promises that -max-local-size
// never trims an entry "used in the last hour" (DESIGN: "used by anyone in
// the last hour, is never removed"). A hit refreshes a body's mtime only
// when it is an hour old, and the trim protects mtimes of the last
// MinAge+usedInterval = 70 minutes: so a body whose mtime was 59 minutes
// old when another go command (a parallel `go test`, a long build) was
// handed it is removed by the trim of any other process 12 minutes later,
// while that go command may still read it (a dependent's compile reads a
// cached package's export data from the DiskPath it was given).
func TestTrimKeepsWhatWasUsedWithinTheHour(t *testing.T) {
	ctx := context.Background()
	w, d, clock := newTrimDisks(t)
	e := putString(t, w, "dep", "export data of a package")
	setMtime(t, clock, e.DiskPath, 59*time.Minute)
	// A long build (process w) is handed the body now.
	got, err := w.Get(ctx, actionID("dep"))
	if err != nil {
		t.Fatal(err)
	}
	// 12 minutes later, another go command's server (process d) trims,
	// with the options the server uses, a cache over -max-local-size.
	clock.advance(12 * time.Minute)
	res := trimOK(t, d, defaultTrimOptions(1))
	if !exists(got.DiskPath) {
		t.Errorf("a body handed out 12 minutes ago was trimmed (%v); README: never one used in the last hour", res)
	}
}

// TestTrimByAgeWithTheLongestMaxAge: -local-max-age at the longest duration
// there is (a way to say "never by age") trims nothing for its age; the
// cutoff does not wrap around to the future, which would remove every body
// not used within the last two hours.
func TestTrimByAgeWithTheLongestMaxAge(t *testing.T) {
	cfg, err := parseConfig(cmdServe, []string{"-local-max-age=2562047h"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	w, d, clock := newTrimDisks(t)
	e := putString(t, w, "used yesterday", "a body used a day ago")
	setMtime(t, clock, e.DiskPath, day)
	o := defaultTrimOptions(0)
	o.MaxAge = cfg.LocalMaxAge
	if res := trimOK(t, d, o); !exists(e.DiskPath) || res.Bodies != 0 {
		t.Errorf("-local-max-age=%v removed a body used a day ago: %+v", cfg.LocalMaxAge, res)
	}
}

// stopAfterRemoval is a context that ends once one of paths is gone: the
// go command of a server exits while its trim removes bodies.
type stopAfterRemoval struct {
	context.Context
	paths []string
}

func (c stopAfterRemoval) Err() error {
	for _, p := range c.paths {
		if !exists(p) {
			return context.Canceled
		}
	}
	return nil
}

// TestStoppedTrimNotesWhatItRemoved: a trim stopped midway (its server's go
// command exited: a short go vet beside a trim of a large cache) after it
// removed bodies still notes the removal (v1/removed), so that what
// servers recorded of the cache's contents (landedManifests) is no longer
// believed: the next go commands would take the trimmed entries for local,
// prefetch none of them and fetch each on its own, on their critical path.
func TestStoppedTrimNotesWhatItRemoved(t *testing.T) {
	w, d, clock := newTrimDisks(t)
	var paths []string
	for i := range 4 {
		e := putString(t, w, fmt.Sprint("k", i), fmt.Sprintf("body %d", i))
		setMtime(t, clock, e.DiskPath, 10*day)
		paths = append(paths, e.DiskPath)
	}
	landed := d.remoteFile("landed", "mem")
	known := landedManifests{byName: make(map[string]landedManifest)}
	known.add("scope/m1", manifest{entries: []manifestEntry{{id: actionID("k0")}}}, time.Now())
	if err := known.save(landed); err != nil {
		t.Fatal(err)
	}

	res, err := d.Trim(stopAfterRemoval{context.Background(), paths}, defaultTrimOptions(0))
	if err == nil || res.Bodies == 0 {
		t.Fatalf("trim: %+v, %v; want it stopped after it removed a body", res, err)
	}
	if l := loadLandedManifests(landed, time.Now(), d.lastRemoval()); l.has("scope/m1") {
		t.Errorf("after a stopped trim removed %d bodies, a manifest recorded as landed before it is still believed (last removal %v)", res.Bodies, d.lastRemoval())
	}
}
