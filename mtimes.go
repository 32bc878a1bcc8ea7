package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The go command keys a cached test result on the size and modification
// time of every file the test opened, and of every entry of every directory
// it listed (hashOpen in cmd/go/internal/test). A fresh clone gives every
// file a new mtime, so on a new CI machine those tests run again however
// warm the cache. `gobuildcache mtimes` gives every git-tracked file, and
// every directory holding tracked files, an mtime derived from its content,
// so that two checkouts of the same commit stat the same:
//
//   - a regular file: from the SHA-256 of its bytes as they are in the work
//     tree (edited or not);
//   - a symbolic link (its own mtime, not its target's): from its target;
//   - a directory: from the names of its tracked entries, so that adding or
//     removing a tracked file changes it (an untracked file changes the
//     listing itself, which the go command also hashes);
//
// each mapped to a time in [mtimeEpoch, mtimeEpoch+mtimeSpan), nanoseconds
// included: fixed, in the past (older than the go command's 2-second
// "too new to cache" cutoff), and different for different content even of
// the same size. Files in initialized submodules are tracked files too
// (git ls-files --recurse-submodules); an uninitialized submodule's empty
// directory is stamped as a directory without entries. Untracked and
// ignored paths, and .git, are never touched. A tracked path missing from
// the work tree is left alone and counted; it is not a failure.
var (
	mtimeEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	mtimeSpan  = uint64(10 * 365 * 24 * time.Hour) // in nanoseconds
)

// mtimesResult is what setContentMtimes did.
type mtimesResult struct {
	Files, Dirs, Symlinks int64
	Missing               int64   // tracked, not in the work tree: left alone
	SymlinksSkipped       int64   // where a link's own mtime cannot be set (not Linux)
	Failed                []error // one per tracked path whose mtime could not be set
	Elapsed               time.Duration
}

// String is the one summary line.
func (r mtimesResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d files, %d directories, %d symlinks in %v", r.Files, r.Dirs, r.Symlinks, r.Elapsed.Round(time.Millisecond))
	if r.Missing > 0 {
		fmt.Fprintf(&b, "; %d tracked paths not in the work tree, left alone", r.Missing)
	}
	if r.SymlinksSkipped > 0 {
		fmt.Fprintf(&b, "; %d symlinks left alone (this OS cannot set a link's own mtime)", r.SymlinksSkipped)
	}
	if len(r.Failed) > 0 {
		fmt.Fprintf(&b, "; %d FAILED", len(r.Failed))
	}
	return b.String()
}

// errSymlinkTimes is returned by lchtimes where a symbolic link's own
// times cannot be set.
var errSymlinkTimes = errors.New("cannot set a symbolic link's own mtime on this OS")

// runMtimes is `gobuildcache mtimes [DIR]`: it stamps the work tree at dir
// ("" is the current directory), prints the summary line on out and each
// path it could not stamp on errOut (at most maxListed of them). The error
// is for a failure to start at all, or for paths that could not be set.
func runMtimes(dir string, out, errOut io.Writer) error {
	if dir == "" {
		dir = "."
	}
	res, err := setContentMtimes(dir)
	if err != nil {
		return err
	}
	const maxListed = 20
	for i, err := range res.Failed {
		if i == maxListed {
			fmt.Fprintf(errOut, "gobuildcache mtimes: ... and %d more\n", len(res.Failed)-maxListed)
			break
		}
		fmt.Fprintf(errOut, "gobuildcache mtimes: %v\n", err)
	}
	fmt.Fprintf(out, "gobuildcache mtimes: %s\n", res)
	if len(res.Failed) > 0 {
		return fmt.Errorf("could not set the mtime of %d tracked paths (listed above)", len(res.Failed))
	}
	return nil
}

// setContentMtimes stamps every tracked file and directory under dir, in
// parallel.
func setContentMtimes(dir string) (mtimesResult, error) {
	start := time.Now()
	var res mtimesResult
	paths, err := trackedPaths(dir)
	if err != nil {
		return res, err
	}
	dirs := trackedDirs(paths)
	paths, dirs = leaveOutReplacedDirs(dir, paths, dirs, &res)

	var next atomic.Int64
	var mu sync.Mutex // guards res.Failed
	fail := func(err error) {
		mu.Lock()
		res.Failed = append(res.Failed, err)
		mu.Unlock()
	}
	total := int64(len(paths) + len(dirs))
	workers := min(max(4, 2*runtime.GOMAXPROCS(0)), 32)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := sha256.New()
			buf := make([]byte, 64<<10)
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				var err error
				if i < int64(len(paths)) {
					err = stampPath(dir, paths[i], h, buf, &res)
				} else {
					d := dirs[i-int64(len(paths))]
					err = stampDir(dir, d.path, d.names, &res)
				}
				if err != nil {
					fail(err)
				}
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(res.Failed, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	res.Elapsed = time.Since(start)
	return res, nil
}

// trackedPaths lists the paths git tracks under dir, relative to dir, with
// '/' separators, each once, files of initialized submodules included.
func trackedPaths(dir string) ([]string, error) {
	if _, err := exec.LookPath("git"); err != nil {
		return nil, errors.New("git not found in PATH: mtimes asks git which files are tracked")
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, err
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	git := func(args ...string) ([]byte, error) {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			msg := strings.TrimSpace(stderr.String())
			if i := strings.IndexByte(msg, '\n'); i >= 0 {
				msg = msg[:i]
			}
			return nil, fmt.Errorf("git %s in %s: %v: %s", args[0], dir, err, msg)
		}
		return out, nil
	}
	inside, err := git("rev-parse", "--is-inside-work-tree")
	if (err != nil && strings.Contains(err.Error(), "not a git repository")) || (err == nil && strings.TrimSpace(string(inside)) != "true") {
		return nil, fmt.Errorf("%s is not in a git work tree", dir)
	}
	if err != nil {
		return nil, err // e.g. git's "detected dubious ownership"
	}
	out, err := git("ls-files", "-z", "--recurse-submodules")
	if err != nil {
		return nil, err
	}
	var paths []string
	for p := range strings.SplitSeq(string(out), "\x00") {
		if p != "" {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	return slices.Compact(paths), nil // an unmerged path is listed once per stage
}

// dirEntries is a directory holding tracked paths, with the names of its
// tracked entries, sorted.
type dirEntries struct {
	path  string // relative to the stamped dir, "" for the dir itself
	names []string
}

// trackedDirs returns every directory that holds tracked paths: dir itself
// and the parents of each path.
func trackedDirs(paths []string) []dirEntries {
	names := map[string][]string{}
	for _, p := range paths {
		for {
			i := strings.LastIndexByte(p, '/')
			parent, name := "", p
			if i >= 0 {
				parent, name = p[:i], p[i+1:]
			}
			known := len(names[parent]) > 0
			names[parent] = append(names[parent], name)
			if known || i < 0 {
				break // parent's own parents are already listed
			}
			p = parent
		}
	}
	dirs := make([]dirEntries, 0, len(names))
	for d, n := range names {
		slices.Sort(n)
		dirs = append(dirs, dirEntries{d, slices.Compact(n)})
	}
	return dirs
}

// leaveOutReplacedDirs leaves out of paths and dirs what lies below a
// tracked directory that is something else in the work tree (a symbolic
// link to shared fixtures, say): git sees those paths as deleted, so they
// are counted as missing, and nothing is stamped through the link, which
// leads outside the work tree.
func leaveOutReplacedDirs(dir string, paths []string, dirs []dirEntries, res *mtimesResult) ([]string, []dirEntries) {
	replaced := map[string]bool{}
	for _, d := range dirs {
		if d.path == "" {
			continue
		}
		if fi, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(d.path))); err == nil && !fi.IsDir() {
			replaced[d.path] = true
		}
	}
	if len(replaced) == 0 {
		return paths, dirs
	}
	below := func(rel string) bool {
		for i := strings.LastIndexByte(rel, '/'); i >= 0; i = strings.LastIndexByte(rel, '/') {
			if rel = rel[:i]; replaced[rel] {
				return true
			}
		}
		return false
	}
	paths = slices.DeleteFunc(paths, func(p string) bool {
		if below(p) {
			res.Missing++
			return true
		}
		return false
	})
	dirs = slices.DeleteFunc(dirs, func(d dirEntries) bool { return replaced[d.path] || below(d.path) })
	return paths, dirs
}

// stampPath gives the tracked path rel under dir its content mtime.
func stampPath(dir, rel string, h hash.Hash, buf []byte, res *mtimesResult) error {
	full := filepath.Join(dir, filepath.FromSlash(rel))
	fi, err := os.Lstat(full)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		atomic.AddInt64(&res.Missing, 1)
		return nil
	}
	if err != nil {
		return err
	}
	h.Reset()
	switch {
	case fi.Mode().IsRegular():
		io.WriteString(h, "gobuildcache mtimes file\x00")
		f, err := os.Open(full)
		if err != nil {
			return err
		}
		_, err = io.CopyBuffer(h, f, buf)
		f.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", full, err)
		}
		if err := lchtimes(full, contentTime(h)); err != nil {
			return err
		}
		atomic.AddInt64(&res.Files, 1)
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(full)
		if err != nil {
			return err
		}
		io.WriteString(h, "gobuildcache mtimes symlink\x00"+target)
		err = lchtimes(full, contentTime(h))
		if errors.Is(err, errSymlinkTimes) {
			atomic.AddInt64(&res.SymlinksSkipped, 1)
			return nil
		}
		if err != nil {
			return err
		}
		atomic.AddInt64(&res.Symlinks, 1)
	case fi.IsDir():
		// A gitlink of a submodule that is not checked out: an empty
		// directory (a checked-out one is listed by its files instead).
		return stampDir(dir, rel, nil, res)
	default:
		return fmt.Errorf("%s: tracked, but a %v in the work tree: left alone", full, fi.Mode().Type())
	}
	return nil
}

// stampDir gives the directory rel under dir the mtime of its tracked
// entries' names.
func stampDir(dir, rel string, names []string, res *mtimesResult) error {
	full := filepath.Join(dir, filepath.FromSlash(rel))
	h := sha256.New()
	io.WriteString(h, "gobuildcache mtimes dir\x00")
	for _, n := range names {
		io.WriteString(h, n+"\x00")
	}
	err := lchtimes(full, contentTime(h))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		atomic.AddInt64(&res.Missing, 1)
		return nil
	}
	if err != nil {
		return err
	}
	atomic.AddInt64(&res.Dirs, 1)
	return nil
}

// contentTime maps a hash to a time in [mtimeEpoch, mtimeEpoch+mtimeSpan).
func contentTime(h hash.Hash) time.Time {
	var sum [sha256.Size]byte
	ns := binary.BigEndian.Uint64(h.Sum(sum[:0])) % mtimeSpan
	return mtimeEpoch.Add(time.Duration(ns))
}
