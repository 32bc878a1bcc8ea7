package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
)

// A manifest lists the action IDs one run of the go command used, in the
// order it first used them, and carries the small entries whole, so that a
// fresh machine gets most entries (by count) in one request instead of one
// request each (see prefetcher). Stored, it is a zstd frame of:
//
//	"gbcm2\n", then per action ID one record:
//	  'k' <action ID>                                  fetch it from the remote
//	  'e' <action ID> <output ID> <size, 4 bytes BE> <body>   the entry itself (size <= inlineMax)
//
// Bodies from a manifest are verified against their output ID like any
// other. Manifests of the first version, "gbcm1\n" + 32-byte action IDs, not
// compressed, are read too. Where manifests are kept is the remote's
// business (manifestStore; S3: s3Location).

const (
	manifestMagicV1   = "gbcm1\n"
	manifestMagic     = "gbcm2\n"
	maxManifestIDs    = 1 << 20
	maxManifestSize   = 64 << 20 // decoded
	maxManifestObject = 32 << 20 // stored
	inlineMax         = 64 << 10 // largest body a manifest carries
	inlineBudget      = 8 << 20  // body bytes one manifest carries at most
)

// manifestEntry is one action ID of a manifest, with its entry if the
// manifest carries it.
type manifestEntry struct {
	id       ActionID
	inline   bool
	outputID OutputID
	body     []byte
}

// encodeManifestObject returns the manifest of entries as it is stored.
func encodeManifestObject(entries []manifestEntry) ([]byte, error) {
	var frame bytes.Buffer
	if err := zstdTo(&frame, bytes.NewReader(encodeManifest(entries))); err != nil {
		return nil, err
	}
	return frame.Bytes(), nil
}

// encodeManifest returns the manifest of entries, before compression.
func encodeManifest(entries []manifestEntry) []byte {
	var b bytes.Buffer
	b.WriteString(manifestMagic)
	for _, m := range entries {
		if !m.inline {
			b.WriteByte('k')
			b.Write(m.id[:])
			continue
		}
		b.WriteByte('e')
		b.Write(m.id[:])
		b.Write(m.outputID[:])
		b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(m.body))))
		b.Write(m.body)
	}
	return b.Bytes()
}

// decodeManifest returns the entries of a manifest as stored, none if it
// is not one.
func decodeManifest(obj []byte) []manifestEntry {
	if bytes.HasPrefix(obj, []byte(manifestMagicV1)) {
		return parseManifest(obj)
	}
	d := getZstdDecoder(bytes.NewReader(obj))
	if d == nil {
		return nil
	}
	defer zstdDecoders.Put(d)
	b, err := io.ReadAll(io.LimitReader(d, maxManifestSize+1))
	if err != nil || len(b) > maxManifestSize {
		return nil
	}
	return parseManifest(b)
}

// parseManifest returns the entries of a decoded manifest (either version),
// none if it is not one. Nothing in it is trusted: a record that does not
// fit rejects the whole manifest.
func parseManifest(b []byte) []manifestEntry {
	if rest, ok := bytes.CutPrefix(b, []byte(manifestMagicV1)); ok {
		if len(rest)%idLen != 0 || len(rest)/idLen > maxManifestIDs {
			return nil
		}
		entries := make([]manifestEntry, 0, len(rest)/idLen)
		for ; len(rest) > 0; rest = rest[idLen:] {
			entries = append(entries, manifestEntry{id: ActionID(rest[:idLen])})
		}
		return entries
	}
	rest, ok := bytes.CutPrefix(b, []byte(manifestMagic))
	if !ok {
		return nil
	}
	var entries []manifestEntry
	for len(rest) > 0 {
		if len(entries) == maxManifestIDs || len(rest) < 1+idLen {
			return nil
		}
		tag := rest[0]
		m := manifestEntry{id: ActionID(rest[1 : 1+idLen])}
		rest = rest[1+idLen:]
		switch tag {
		case 'k':
		case 'e':
			if len(rest) < idLen+4 {
				return nil
			}
			m.inline, m.outputID = true, OutputID(rest[:idLen])
			size := binary.BigEndian.Uint32(rest[idLen:])
			rest = rest[idLen+4:]
			if size > inlineMax || uint64(size) > uint64(len(rest)) {
				return nil
			}
			m.body, rest = rest[:size:size], rest[size:]
		default:
			return nil
		}
		entries = append(entries, m)
	}
	return entries
}

// newestFirst sorts manifest names that start with their time (as every
// manifestStore names them) newest first, and keeps at most n (all if
// n < 0). Listings of S3 directory buckets are unordered, so a store sorts
// itself.
func newestFirst(names []string, n int) []string {
	slices.Sort(names)
	slices.Reverse(names)
	if n >= 0 && len(names) > n {
		names = names[:n]
	}
	return names
}

var scopeUnsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// prefetchScope returns the manifest scope: the flag's value made safe for
// a key, or by default one derived from the working directory (the go
// command's, usually the checkout, which CI machines of one job share).
func prefetchScope(flag string) string {
	if flag != "" {
		s := strings.Trim(scopeUnsafe.ReplaceAllString(flag, "_"), "._")
		if len(s) > 100 {
			h := sha256.Sum256([]byte(flag))
			s = s[:80] + "-" + hex.EncodeToString(h[:8])
		}
		if s != "" {
			return s
		}
	}
	wd, _ := os.Getwd()
	h := sha256.Sum256([]byte(wd))
	return "dir-" + hex.EncodeToString(h[:8])
}
