package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"time"
)

// landedManifests is what the servers of one local cache directory
// remember of the manifests whose entries are there already: a manifest a
// prefetch read and landed in full, or one a server wrote (its go command
// used every entry it names, so all are local). A later server (the next
// go command of the same CI job, say) that lists the same manifests takes
// them from here instead of fetching and decoding them again, and
// prefetches nothing for them: its server's CPU goes to the go command.
// It still needs what they name, to decide whether to write a manifest
// (named) and what its packs may refer to (packCover), so each is kept
// without the bodies it carries: the 'e' records of encodeManifest with
// empty bodies, which are never installed.
//
// The file (v1/landed-<h>, named for the remote as the breaker's
// marker is; see DiskBackend) is
//
//	"gbcl1\n", then per manifest:
//	  <name length, 2 bytes BE> <name> <recorded at, unix ns, 8 bytes BE>
//	  <length, 4 bytes BE> <the manifest without bodies, as encodeManifest>
//
// written whole to a temp file and renamed into place, so a reader sees
// one server's record or another's. Every server reads it at its start
// and again at its close, but needs only the few manifests it lists: a
// manifest is parsed when asked for (get), and one never asked for is
// written back as it was read. It only spares work: a manifest that is
// not in it, a file or manifest that does not parse, or one older than
// landedTTL is fetched as ever; an entry it wrongly calls local (trimmed,
// say) is fetched by the go command's own get. A manifest recorded before
// the local cache last removed entries (Trim, Clear:
// DiskBackend.lastRemoval) is not believed.
type landedManifests struct {
	byName map[string]landedManifest
}

// landedManifest is one manifest of a landedManifests: as read (raw) or
// as added (m).
type landedManifest struct {
	at  time.Time // when it was recorded
	raw []byte    // the manifest without bodies, as encodeManifest; nil if added
	m   manifest  // without bodies, if added
}

const (
	landedMagic = "gbcl1\n"
	// landedTTL: a manifest recorded longer ago is fetched again (a CI
	// job's go commands follow each other within minutes; a trim may
	// remove entries meanwhile on a machine that lives longer).
	landedTTL = time.Hour
	landedMax = 32 // manifests a record keeps, the most recently recorded
)

// loadLandedManifests reads the record at path as of now: the manifests
// recorded at most landedTTL ago and after removed, when the local cache
// last removed entries. It is empty if path is "" or the file is missing
// or does not parse.
func loadLandedManifests(path string, now, removed time.Time) landedManifests {
	l := landedManifests{byName: make(map[string]landedManifest)}
	if path == "" {
		return l
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return l
	}
	rest, ok := bytes.CutPrefix(b, []byte(landedMagic))
	if !ok {
		return l
	}
	byName := make(map[string]landedManifest)
	for len(rest) > 0 {
		if len(rest) < 2 {
			return l
		}
		n := int(binary.BigEndian.Uint16(rest))
		if len(rest) < 2+n+12 {
			return l
		}
		name := string(rest[2 : 2+n])
		rest = rest[2+n:]
		at := time.Unix(0, int64(binary.BigEndian.Uint64(rest)))
		size := binary.BigEndian.Uint32(rest[8:]) // not an int: on 32 bits one could be negative
		rest = rest[12:]
		if uint64(len(rest)) < uint64(size) {
			return l
		}
		raw := rest[:size:size]
		rest = rest[size:]
		if age := now.Sub(at); age >= 0 && age <= landedTTL && at.After(removed) {
			byName[name] = landedManifest{at: at, raw: raw}
		}
	}
	l.byName = byName
	return l
}

// get returns the manifest recorded as name, without bodies; not ok if
// none is, or it does not parse. Safe to call concurrently.
func (l landedManifests) get(name string) (manifest, bool) {
	lm, ok := l.byName[name]
	switch {
	case !ok:
		return manifest{}, false
	case lm.raw == nil:
		return lm.m, true
	}
	m := parseManifest(lm.raw)
	return m, m.entries != nil
}

// has reports whether a manifest is recorded as name, parsed or not.
func (l landedManifests) has(name string) bool {
	_, ok := l.byName[name]
	return ok
}

// add records the manifest m as name, at now.
func (l landedManifests) add(name string, m manifest, now time.Time) {
	l.byName[name] = landedManifest{at: now, m: withoutBodies(m)}
}

// withoutBodies returns m without the bodies it carries (m itself if it
// carries none); m is not changed.
func withoutBodies(m manifest) manifest {
	if !slices.ContainsFunc(m.entries, func(e manifestEntry) bool { return len(e.body) > 0 }) {
		return m
	}
	m.entries = slices.Clone(m.entries)
	for i := range m.entries {
		m.entries[i].body = nil
	}
	return m
}

// save writes the record to path ("": nowhere), keeping the landedMax
// most recently recorded manifests.
func (l landedManifests) save(path string) error {
	if path == "" || len(l.byName) == 0 {
		return nil
	}
	names := make([]string, 0, len(l.byName))
	for name := range l.byName {
		if len(name) <= 0xffff {
			names = append(names, name)
		}
	}
	slices.SortFunc(names, func(a, b string) int { return l.byName[b].at.Compare(l.byName[a].at) })
	names = names[:min(len(names), landedMax)]
	b := []byte(landedMagic)
	for _, name := range names {
		lm := l.byName[name]
		enc := lm.raw
		if enc == nil {
			enc = encodeManifest(lm.m)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
		b = append(b, name...)
		b = binary.BigEndian.AppendUint64(b, uint64(lm.at.UnixNano()))
		b = binary.BigEndian.AppendUint32(b, uint32(len(enc)))
		b = append(b, enc...)
	}
	if err := replaceFile(path, b); err != nil {
		return fmt.Errorf("save landed manifests: %w", err)
	}
	return nil
}
