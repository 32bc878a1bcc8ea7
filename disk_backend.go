package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/richardartoul/gobuildcache/internal/cachefmt"
)

// DiskBackend stores entries in a local directory that any number of
// gobuildcache processes may share.
//
// Layout under Dir (all names are lowercase hex):
//
//	v1/a/<aa>/<actionID>   action record: "<outputID> <size> <put time, unix ns>\n"
//	v1/o/<oo>/<outputID>   body: exactly <size> bytes whose SHA-256 is <outputID>
//	v1/tmp/                spool files of queued uploads (asyncUploads)
//	v1/remote-down-<h>     a remote is failing until then (breakerBackend)
//	v1/miss-streak-<h>     how a remote has been missing (missPredictor)
//	v1/landed-<h>          manifests whose entries are here (landedManifests)
//	v1/prefetch-<h>        the prefetch command's claim, flocked while it lands (prefetchClaim);
//	                       <h> names its scopes too (prefetchOptionsOf)
//	v1/prefetch-plan-<h>   what it will land: action IDs, 32 bytes each (prefetchClaim)
//	v1/removed             when entries were last removed: "<unix ns>\n" (lastRemoval)
//
// <h> names the remote: 16 hex digits of the SHA-256 of its settings.
// <aa> and <oo> are the first two hex digits of the name below them. Bodies
// are content-addressed, so actions with equal outputs share one file. Every
// file is written as a temp file (.tmp-*) in the fan-out directory it goes
// to (remote downloads too: see bodyTempDir) and moved into place, body
// before record, so a reader sees either a whole entry or none, and a crash
// mid-put leaves only a temp file behind (removed once it is stale). A
// record is replaced by a rename; a body in place is never replaced (see
// placeBody) and only Trim and Clear remove one. Spreading temp files over
// the fan-out directories, rather than
// one directory, keeps parallel writers (prefetch) from contending for one
// directory's lock. A record whose body is missing or of the wrong size is a
// miss.
//
// Files are made mode 0666 and directories 0777, less the umask, as the go
// command makes its own cache's: users who share a directory (self-hosted
// runners, say) read each other's entries when their umask lets them (002
// and a common group). A body this user cannot read counts as missing (see
// canRead), so a put replaces it. The default directory, in the shared temp
// dir, is kept private by its root's mode instead (claimOwnDir).
type DiskBackend struct {
	dir  string // absolute path of the v1 directory
	root string // absolute path of Dir

	// Seams for tests.
	now        func() time.Time
	createTemp func(dir, pattern string) (tempFile, error)
	freeBytes  func(dir string) (int64, error)

	madeDirs sync.Map // fan-out directories known to exist

	// inUse is the set of body paths this backend has handed out (get
	// hits, puts, installs); Trim never removes them, since the go command
	// may read them until Close. See markHandedOut in trim.go.
	inUseMu sync.Mutex
	inUse   map[string]struct{}
}

var _ CacheBackend = (*DiskBackend)(nil)

// diskLayoutVersion names the directory holding the current layout; a
// future incompatible layout gets a new name instead of misreading this one.
const diskLayoutVersion = cachefmt.LayoutVersion

// staleTempAge is how old a temp file must be before it is taken for the
// leftover of a crashed writer and removed.
const staleTempAge = time.Hour

// tempPrefix starts the name of every temp file in a fan-out directory; no
// ID's hex starts so.
const tempPrefix = cachefmt.TempPrefix

// NewDiskBackend opens (creating if needed) a disk cache rooted at dir.
func NewDiskBackend(dir string) (*DiskBackend, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open disk cache %s: %w", dir, err)
	}
	d := &DiskBackend{
		root:       root,
		dir:        filepath.Join(root, diskLayoutVersion),
		now:        time.Now,
		createTemp: createTempFile,
		freeBytes:  freeBytes,
	}
	if err := os.MkdirAll(d.tmpDir(), 0o777); err != nil {
		return nil, fmt.Errorf("open disk cache %s: %w", dir, err)
	}
	if err := d.probeWrite(); err != nil {
		return nil, fmt.Errorf("open disk cache %s: %w", dir, err)
	}
	d.removeStaleTemps()
	return d, nil
}

// probeWrite creates and removes a temp file, so that a directory this
// process cannot write (another user's, a read-only mount) is found at
// open rather than at every put.
func (d *DiskBackend) probeWrite() error {
	f, err := d.createTemp(d.tmpDir(), tempPrefix+"probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// Dir returns the absolute path of the cache directory.
func (d *DiskBackend) Dir() string { return d.root }

func (d *DiskBackend) tmpDir() string { return filepath.Join(d.dir, "tmp") }

func (d *DiskBackend) actionPath(actionID ActionID) string {
	return d.path("a", actionID)
}

func (d *DiskBackend) outputPath(outputID OutputID) string {
	return d.path("o", outputID)
}

func (d *DiskBackend) path(kind string, id [idLen]byte) string {
	h := hex.EncodeToString(id[:])
	return d.dir + string(filepath.Separator) + kind + string(filepath.Separator) + h[:2] + string(filepath.Separator) + h
}

// Get implements CacheBackend.
func (d *DiskBackend) Get(ctx context.Context, actionID ActionID) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	return d.getLocal(actionID)
}

// getLocal is Get without a context: it never blocks
// on anything but the local file system. It costs one small read and one
// stat.
func (d *DiskBackend) getLocal(actionID ActionID) (Entry, error) {
	var buf [128]byte
	n, err := readSmallFile(d.actionPath(actionID), buf[:])
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Entry{}, fmt.Errorf("get %x: %w", actionID, ErrNotFound)
	case errors.Is(err, errTooLarge):
		return Entry{}, fmt.Errorf("get %x: damaged record: %w", actionID, ErrNotFound)
	case err != nil:
		return Entry{}, fmt.Errorf("get %x: %w", actionID, err)
	}
	e, err := parseActionRecord(buf[:n])
	if err != nil {
		// A damaged record is a miss; the next put replaces it.
		return Entry{}, fmt.Errorf("get %x: %v: %w", actionID, err, ErrNotFound)
	}
	e.DiskPath = d.outputPath(e.OutputID)
	// Trimming: mark the body in use before the stat, so that a Trim of
	// this process either removed it already (a miss here) or keeps it.
	d.markHandedOut(e.DiskPath)
	size, mtime, ok := statBody(e.DiskPath)
	if !ok || size != e.Size {
		return Entry{}, fmt.Errorf("get %x: body missing or wrong size: %w", actionID, ErrNotFound)
	}
	d.touchIfStale(e.DiskPath, mtime) // a syscall at most once an hour per body
	return e, nil
}

// fitsReserve is disk space left free when judging whether a body fits.
const fitsReserve = 64 << 20

// fits returns an error if a body of size bytes, outputID's, should not be
// stored: it is larger than the free space of the cache's file system, less
// a reserve that keeps the cache from filling the disk. It is checked
// before any byte is written. A body in place already fits: a put of it
// writes only its record (see putAt).
func (d *DiskBackend) fits(outputID OutputID, size int64) error {
	free, err := d.freeBytes(d.dir)
	if err != nil {
		return nil // unknown: let the write decide
	}
	if size > free-fitsReserve {
		if got, _, ok := statBody(d.outputPath(outputID)); ok && got == size {
			return nil
		}
		return fmt.Errorf("body of %s does not fit: %s free on the file system of %s", formatBytes(size), formatBytes(free), d.root)
	}
	return nil
}

// room returns how many bytes may be written to the cache's file system
// before it has only reserve bytes free (math.MaxInt64 if that is unknown).
func (d *DiskBackend) room(reserve int64) int64 {
	free, err := d.freeBytes(d.dir)
	if err != nil {
		return math.MaxInt64
	}
	return max(free-reserve, 0)
}

// Put implements CacheBackend.
func (d *DiskBackend) Put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	return d.PutAt(ctx, actionID, outputID, size, time.Time{}, body)
}

// PutAt is Put of an entry first put at the given time (a landed one's),
// or now if that is zero or later.
func (d *DiskBackend) PutAt(ctx context.Context, actionID ActionID, outputID OutputID, size int64, at time.Time, body io.Reader) (Entry, error) {
	if size < 0 {
		return Entry{}, fmt.Errorf("put %x: negative size %d", actionID, size)
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	now := d.now()
	if at.IsZero() || at.After(now) {
		at = now
	}
	e := Entry{OutputID: outputID, Size: size, Time: at, DiskPath: d.outputPath(outputID)}
	return d.putAt(actionID, e, body)
}

// putAt writes body as e's body unless a body of that output is already in
// place, then e's record under actionID.
func (d *DiskBackend) putAt(actionID ActionID, e Entry, body io.Reader) (Entry, error) {
	// Trimming: this body is handed out from here on (see getLocal).
	d.markHandedOut(e.DiskPath)
	// Bodies are content-addressed: one already in place need not be
	// written again (the caller still verifies what it sent).
	if size, mtime, ok := statBody(e.DiskPath); ok && size == e.Size {
		d.touchIfStale(e.DiskPath, mtime) // reused: it is used now
	} else {
		err := d.writeTemp(e.DiskPath, func(w io.Writer) error {
			_, err := copyBuffered(w, body)
			return err
		}, func(tmp, path string) error { return d.placeBody(tmp, path, e.Size) })
		if err != nil {
			return Entry{}, fmt.Errorf("put %x: %w", actionID, err)
		}
	}
	if err := d.writeRecord(actionID, e); err != nil {
		return e, fmt.Errorf("put %x: %w: %w", actionID, errNotRecorded, err)
	}
	return e, nil
}

// writeRecord atomically writes the action record of e.
func (d *DiskBackend) writeRecord(actionID ActionID, e Entry) error {
	record := formatActionRecord(e)
	return d.writeFile(d.actionPath(actionID), func(w io.Writer) error {
		_, err := io.WriteString(w, record)
		return err
	})
}

// remoteFile is the path of a file holding what servers learned of one
// remote (kind, see the layout above), named for the remote so that each
// remote has its own.
func (d *DiskBackend) remoteFile(kind string, remote ...string) string {
	h := sha256.Sum256([]byte(strings.Join(remote, "\x00")))
	return filepath.Join(d.dir, kind+"-"+hex.EncodeToString(h[:8]))
}

// install moves a file that already holds the verified body of e (as a
// CacheBackend's Get returns it) into the cache under actionID, keeping e's
// put time, and returns the local entry. The file at e.DiskPath is consumed.
// It is how the local tier keeps what it fetched from a remote without
// copying it again. A body placed whose record could not be written is
// returned with an error wrapping errNotRecorded, as Put returns it.
func (d *DiskBackend) install(actionID ActionID, e Entry) (Entry, error) {
	src := e.DiskPath
	defer os.Remove(src) // a no-op once renamed
	local := Entry{OutputID: e.OutputID, Size: e.Size, Time: e.Time, DiskPath: d.outputPath(e.OutputID)}
	d.markHandedOut(local.DiskPath) // trimming: handed out from here on
	size, mtime, ok := statBody(local.DiskPath)
	if ok && size == e.Size {
		d.touchIfStale(local.DiskPath, mtime) // reused: it is used now
	} else {
		if err := d.placeBody(src, local.DiskPath, e.Size); err != nil {
			// Another file system, say: fall back to a copy.
			f, oerr := os.Open(src)
			if oerr != nil {
				return Entry{}, fmt.Errorf("install %x: %w", actionID, err)
			}
			defer f.Close()
			return d.putAt(actionID, local, f)
		}
	}
	if err := d.writeRecord(actionID, local); err != nil {
		return local, fmt.Errorf("install %x: %w: %w", actionID, errNotRecorded, err)
	}
	return local, nil
}

// Close implements CacheBackend. A disk backend holds nothing open.
func (d *DiskBackend) Close(ctx context.Context) error { return nil }

// writeFile atomically replaces path with what fill writes: it writes a temp
// file (.tmp-*) in path's own fan-out directory and renames it into place.
func (d *DiskBackend) writeFile(path string, fill func(io.Writer) error) error {
	return d.writeTemp(path, fill, d.rename)
}

// tempFile is a new file being written: an *os.File, or on Linux a bare
// file descriptor (see createTempFile).
type tempFile interface {
	io.Writer
	Name() string
	Close() error
}

// writeTemp writes a temp file beside path with fill and moves it to path
// with place.
func (d *DiskBackend) writeTemp(path string, fill func(io.Writer) error, place func(tmp, path string) error) error {
	f, err := d.createTemp(d.fanOutDir(filepath.Dir(path)), tempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = fill(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = place(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// placeBody moves from, a file holding a whole body of size bytes, to to,
// the body's path, unless a body of that size is in place already: then it
// keeps that one and removes from. Bodies are content-addressed and only
// ever put in place whole and verified, so one of the right size is the
// same bytes. It never renames over a body nor removes one, which someone
// may have been handed: on Windows a file another process holds open can
// be neither, and everywhere the copy in place costs nothing. A file of
// another size at to is damage that nobody was handed; it is removed first.
//
// renameNoReplace makes "in place unless one is there already" one atomic
// step, so that of two processes putting the same body at once, the second
// keeps the first's. On a file system without hard links (not Windows) it
// is a rename after a look, and two such puts racing may still rename one
// over the other.
func (d *DiskBackend) placeBody(from, to string, size int64) error {
	for damaged := false; ; damaged = true {
		err := renameNoReplace(from, to)
		if errors.Is(err, fs.ErrNotExist) {
			if err = os.MkdirAll(filepath.Dir(to), 0o777); err == nil {
				err = renameNoReplace(from, to)
			}
		}
		if err == nil {
			return nil
		}
		if got, _, ok := statBody(to); ok && got == size {
			os.Remove(from) // the same bytes are in place
			return nil
		}
		switch {
		case errors.Is(err, fs.ErrExist) && !damaged:
			if err := os.RemoveAll(to); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
			return err
		default: // no hard links here, or from and to on different file systems
			return d.rename(from, to)
		}
	}
}

// createNew creates a new file in dir with create, named as os.CreateTemp
// names it (pattern's last "*" replaced by a random number), trying
// another name while create finds one taken (fs.ErrExist). Its mode is to
// be 0666 less the umask (see DiskBackend), where os.CreateTemp's is 0600.
func createNew[F any](dir, pattern string, create func(name string) (F, error)) (F, error) {
	prefix, suffix := pattern, ""
	if i := strings.LastIndexByte(pattern, '*'); i >= 0 {
		prefix, suffix = pattern[:i], pattern[i+1:]
	}
	for try := 0; ; try++ {
		f, err := create(dir + string(os.PathSeparator) + prefix + strconv.FormatUint(uint64(rand.Uint32()), 10) + suffix)
		if err == nil || !errors.Is(err, fs.ErrExist) || try == 100 {
			return f, err
		}
	}
}

// createSharedTemp is os.CreateTemp with createNew's mode, for a file that
// becomes part of the cache directory (a remote's body, a state file).
func createSharedTemp(dir, pattern string) (*os.File, error) {
	return createNew(dir, pattern, func(name string) (*os.File, error) {
		return os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
	})
}

// replaceFile atomically replaces path, a state file of the cache
// directory (not an entry: see DiskBackend.writeFile), with b: it writes a
// temp file beside it with createSharedTemp's mode and renames it into
// place.
func replaceFile(path string, b []byte) error {
	f, err := createSharedTemp(filepath.Dir(path), tempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// fanOutDir returns dir, a fan-out directory, after making sure it exists
// (once per process).
func (d *DiskBackend) fanOutDir(dir string) string {
	if _, ok := d.madeDirs.Load(dir); !ok {
		os.MkdirAll(dir, 0o777) // an error shows at the create that follows
		d.madeDirs.Store(dir, true)
	}
	return dir
}

// bodyTempDir is where a file meant to become the body of outputID is best
// written: its own directory, so that install is a rename within it.
func (d *DiskBackend) bodyTempDir(outputID OutputID) string {
	return d.fanOutDir(filepath.Dir(d.outputPath(outputID)))
}

// rename moves a file into place, creating its fan-out directory the first
// time. On Windows, renaming over a file fails while another process has it
// open or renames over it too (a record being read or put): rename retries
// then for up to a second, as the go command does (cmd/go/internal/robustio);
// readSmallFile likewise.
func (d *DiskBackend) rename(from, to string) error {
	err := os.Rename(from, to)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(to), 0o777); err == nil {
			err = os.Rename(from, to)
		}
	}
	if isSharingError(err) {
		err = retrySharing(func() error { return os.Rename(from, to) })
	}
	return err
}

// retrySharing calls f until it returns something other than a sharing
// error, for up to about a second.
func retrySharing(f func() error) error {
	err := f()
	for delay := time.Millisecond; isSharingError(err) && delay < time.Second; delay *= 2 {
		time.Sleep(delay)
		err = f()
	}
	return err
}

// isSharingError reports whether err is Windows refusing a rename because
// of another open handle: ERROR_ACCESS_DENIED (5) or ERROR_SHARING_VIOLATION
// (32). Elsewhere a rename has no such failure.
func isSharingError(err error) bool {
	var errno syscall.Errno
	return runtime.GOOS == "windows" && errors.As(err, &errno) && (errno == 5 || errno == 32)
}

// removeStaleTemps deletes temp files left by writers that crashed: any
// file of v1/tmp (spools and downloads) and the temp files of v1's own
// state files (replaceFile, writeFile). Files of live writers in other
// processes are young and left alone, and so is a spool that links a body.
func (d *DiskBackend) removeStaleTemps() {
	cutoff := d.now().Add(-staleTempAge)
	for _, dir := range []string{d.tmpDir(), d.dir} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, ent := range ents {
			if dir == d.dir && (ent.IsDir() || !strings.HasPrefix(ent.Name(), tempPrefix)) {
				continue
			}
			if fi, err := ent.Info(); err == nil && fi.ModTime().Before(cutoff) && !sharesBody(fi) {
				os.Remove(filepath.Join(dir, ent.Name()))
			}
		}
	}
}

// Clear removes every entry. The directory stays usable, also by other
// processes, which at worst see misses: temp files younger than
// staleTempAge are theirs (puts and downloads under way) and stay. It
// reports the number of action entries and the bytes of all files it
// removed.
func (d *DiskBackend) Clear(ctx context.Context) (entries, bytes int64, err error) {
	removed := false // anything, even if ctx stops the clear midway
	defer func() {
		if removed || err == nil {
			d.noteRemoval()
		}
	}()
	for _, kind := range []string{"a", "o", "tmp"} {
		base := filepath.Join(d.dir, kind)
		err := filepath.WalkDir(base, func(path string, ent fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if ent.IsDir() {
				return nil
			}
			fi, err := ent.Info()
			if err != nil {
				return nil // removed by someone else meanwhile
			}
			if temp := kind == "tmp" || strings.HasPrefix(ent.Name(), tempPrefix); temp && d.now().Sub(fi.ModTime()) < staleTempAge {
				return nil
			}
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			removed = true
			bytes += fi.Size()
			if kind == "a" && !strings.HasPrefix(ent.Name(), tempPrefix) {
				entries++
			}
			return nil
		})
		if err != nil {
			return entries, bytes, fmt.Errorf("clear %s: %w", d.root, err)
		}
	}
	return entries, bytes, nil
}

// noteRemoval records that entries were removed just now (Trim, Clear):
// see lastRemoval.
func (d *DiskBackend) noteRemoval() {
	now := strconv.FormatInt(time.Now().UnixNano(), 10) + "\n"
	// Best effort: without it, what others remember of this cache's
	// contents (landedManifests) stays believed until it expires, which
	// costs the go command a fetch of what it misses, never a wrong entry.
	_ = d.writeFile(filepath.Join(d.dir, "removed"), func(w io.Writer) error {
		_, err := io.WriteString(w, now)
		return err
	})
}

// lastRemoval returns when entries were last removed from this cache
// (Trim, Clear), or the zero time if never (or if it cannot tell).
// Whatever anyone recorded of which entries are here before then
// (landedManifests) is out of date.
func (d *DiskBackend) lastRemoval() time.Time {
	b, err := os.ReadFile(filepath.Join(d.dir, "removed"))
	if err != nil {
		return time.Time{}
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// formatActionRecord returns e's action record (the format is
// cachefmt.Record's, which chaos/ reads too).
func formatActionRecord(e Entry) string {
	return cachefmt.Record{OutputID: e.OutputID, Size: e.Size, Time: e.Time}.Format()
}

// parseActionRecord parses what formatActionRecord wrote, strictly.
func parseActionRecord(b []byte) (Entry, error) {
	r, err := cachefmt.ParseRecord(b)
	if err != nil {
		return Entry{}, err
	}
	return Entry{OutputID: r.OutputID, Size: r.Size, Time: r.Time}, nil
}

// errTooLarge is returned by readSmallFile for a file that does not fit.
var errTooLarge = errors.New("file too large")

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// copyBuffered is io.Copy with a pooled buffer, so large bodies cost no
// allocation and never more memory than one buffer.
func copyBuffered(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
}
