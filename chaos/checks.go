//go:build linux

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/richardartoul/gobuildcache/internal/cachefmt"
)

// cacheStats is gobuildcache's -stats-json.
type cacheStats = cachefmt.Stats

// readStats reads one -stats-json file.
func readStats(path string) (cacheStats, error) {
	var st cacheStats
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %v", path, err)
	}
	return st, nil
}

// counterProblems lists what does not add up in st.
func counterProblems(st cacheStats) []string {
	var p []string
	if st.Hits+st.Misses != st.Gets {
		p = append(p, fmt.Sprintf("hits %d + misses %d != gets %d", st.Hits, st.Misses, st.Gets))
	}
	if st.LocalHits+st.RemoteHits != st.Hits || st.LocalHits < 0 || st.RemoteHits < 0 {
		p = append(p, fmt.Sprintf("local_hits %d + remote_hits %d != hits %d (or negative)", st.LocalHits, st.RemoteHits, st.Hits))
	}
	var byKind int64
	for _, n := range st.RemoteErrorsByKind {
		byKind += n
	}
	if byKind != st.RemoteErrors {
		p = append(p, fmt.Sprintf("remote_errors %d != sum of remote_errors_by_kind %d (%v)", st.RemoteErrors, byKind, st.RemoteErrorsByKind))
	}
	if !st.Remote {
		p = append(p, "remote is false with -backend=s3")
	}
	// Every put stored locally is handed to the uploader, which does,
	// fails, drops, abandons it, finds it too large or leaves it to the
	// packs and manifest that carry it (a put that failed locally is not).
	ups := st.UploadsDone + st.UploadsFailed + st.UploadsDropped + st.UploadsAbandoned + st.UploadsTooLarge + st.UploadsCarried
	if ups > st.Puts || len(st.Errors) == 0 && ups != st.Puts {
		p = append(p, fmt.Sprintf("puts %d (server errors %v) but uploads done %d + failed %d + dropped %d + abandoned %d + too large %d + carried %d = %d",
			st.Puts, st.Errors, st.UploadsDone, st.UploadsFailed, st.UploadsDropped, st.UploadsAbandoned, st.UploadsTooLarge, st.UploadsCarried, ups))
	}
	return p
}

// tempPrefix starts the names of gobuildcache's temp files in the fan-out
// directories: files being written, or left by a writer that was killed,
// which no get ever returns (trimming removes them once stale).
const tempPrefix = cachefmt.TempPrefix

// entryCheck is the result of walking one local cache directory.
type entryCheck struct {
	records, bodies int
	dangling        int      // records whose body is missing: a miss, not a wrong answer
	temps           int      // temp files (.tmp-*) a killed writer left; not entries
	bad             []string // entries whose bytes do not match their output ID
}

// bodyMemo remembers the SHA-256 of bodies already hashed, by path and
// file identity (inode, size, change time), so that a walk after every
// phase does not hash unchanged files again.
type bodyMemo map[string]memoEntry

type memoEntry struct {
	ino, size, ctimeNs int64
	sum                string
}

// checkCacheDir walks a gobuildcache local directory (layout v1) and checks
// every body against its name and every record against its body. memo may
// be nil (hash everything).
func checkCacheDir(dir string, memo bodyMemo) (entryCheck, error) {
	var c entryCheck
	v1 := filepath.Join(dir, cachefmt.LayoutVersion)
	if _, err := os.Stat(v1); os.IsNotExist(err) {
		return c, nil
	}
	sizes := map[string]int64{} // output ID -> body size
	oDir := filepath.Join(v1, "o")
	err := walkTwoLevels(oDir, func(shard, name, path string) error {
		if strings.HasPrefix(name, tempPrefix) {
			c.temps++
			return nil
		}
		c.bodies++
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() || !isHexID(name) || name[:2] != shard {
			c.bad = append(c.bad, fmt.Sprintf("%s: not a body file of the layout", path))
			return nil
		}
		sum, err := hashBody(path, fi, memo)
		if err != nil {
			return err
		}
		if sum != name {
			c.bad = append(c.bad, fmt.Sprintf("%s: body's SHA-256 is %s", path, sum))
			return nil
		}
		sizes[name] = fi.Size()
		return nil
	})
	if err != nil {
		return c, err
	}
	aDir := filepath.Join(v1, "a")
	err = walkTwoLevels(aDir, func(shard, name, path string) error {
		if strings.HasPrefix(name, tempPrefix) {
			c.temps++
			return nil
		}
		c.records++
		if !isHexID(name) || name[:2] != shard {
			c.bad = append(c.bad, fmt.Sprintf("%s: not a record file of the layout", path))
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rec, err := cachefmt.ParseRecord(b)
		out, size := hex.EncodeToString(rec.OutputID[:]), rec.Size
		if err != nil {
			c.bad = append(c.bad, fmt.Sprintf("%s: malformed record %q", path, b))
			return nil
		}
		have, found := sizes[out]
		if !found {
			if _, err := os.Lstat(filepath.Join(oDir, out[:2], out)); err == nil {
				// Present but already reported as bad above.
				c.bad = append(c.bad, fmt.Sprintf("%s: points to bad body %s", path, out))
			} else {
				c.dangling++
			}
			return nil
		}
		if have != size {
			c.bad = append(c.bad, fmt.Sprintf("%s: record says %d bytes, body %s has %d", path, size, out, have))
		}
		return nil
	})
	sort.Strings(c.bad)
	return c, err
}

// walkTwoLevels calls fn for every file dir/<shard>/<name>.
func walkTwoLevels(dir string, fn func(shard, name, path string) error) error {
	shards, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, s := range shards {
		if !s.IsDir() {
			if err := fn("", s.Name(), filepath.Join(dir, s.Name())); err != nil {
				return err
			}
			continue
		}
		files, err := os.ReadDir(filepath.Join(dir, s.Name()))
		if err != nil {
			return err
		}
		for _, f := range files {
			if err := fn(s.Name(), f.Name(), filepath.Join(dir, s.Name(), f.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func hashBody(path string, fi os.FileInfo, memo bodyMemo) (string, error) {
	var id memoEntry
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id = memoEntry{ino: int64(st.Ino), size: st.Size, ctimeNs: st.Ctim.Nano()}
	}
	if memo != nil {
		if m, ok := memo[path]; ok && id.ino != 0 && m.ino == id.ino && m.size == id.size && m.ctimeNs == id.ctimeNs {
			return m.sum, nil
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	id.sum = hex.EncodeToString(h.Sum(nil))
	if memo != nil && id.ino != 0 {
		memo[path] = id
	}
	return id.sum, nil
}

func isHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// readOutputs reads every file of dir by name.
func readOutputs(dir string) (map[string][]byte, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out[e.Name()] = b
	}
	return out, nil
}

// compareOutputs lists the binaries of got that are missing or differ from
// want.
func compareOutputs(got, want map[string][]byte) []string {
	var diffs []string
	for name, w := range want {
		g, ok := got[name]
		switch {
		case !ok:
			diffs = append(diffs, name+": missing")
		case !bytes.Equal(g, w):
			diffs = append(diffs, fmt.Sprintf("%s: %d bytes, sha256 %x; reference %d bytes, sha256 %x",
				name, len(g), sha256.Sum256(g), len(w), sha256.Sum256(w)))
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			diffs = append(diffs, name+": not built by the reference")
		}
	}
	sort.Strings(diffs)
	return diffs
}
