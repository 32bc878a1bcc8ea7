package main

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
)

// A manifest lists the action IDs one run of the go command used, in the
// order it first used them, and says where a fresh machine gets each one
// with the fewest requests (see prefetcher): small entries it carries
// whole (unless a manifest of a read location or further scope that the
// run read carries them: then it names them, and the next run takes them
// from there); most others sit in the run's packs (pack.go), a few large
// objects read with ranged GETs; the rest are fetched as their own
// objects. Stored,
// it is a zstd frame of:
//
//	"gbcm4\n", then per action ID, in first-use order, one record:
//	  'k' <action ID>                                          fetch its own object
//	  'e' <action ID> <output ID> <size, 4 bytes BE> <body>    the entry itself (size <= inlineMax)
//	  'p' <action ID> <output ID> <size, 4 bytes BE>           the next body of the current pack frame
//	and before the first 'p' of each pack frame:
//	  'f' <owner length, 1 byte> <owner> <pack, 2 bytes BE> <offset, 4 bytes BE> <length, 4 bytes BE>
//	      a zstd frame at bytes [offset, offset+length) of pack <pack>: the
//	      bodies of the 'p' records up to the next 'f', back to back. The
//	      owner is empty for this manifest's own packs, or the ID of an
//	      older manifest of the same scope and location whose pack holds
//	      the frame: a run refers to the frames recent packs hold instead of
//	      packing their entries again (see writePacks). A frame decodes as
//	      one stream, so a manifest lists every entry of each frame it
//	      names, in order, at the place of the first one it used.
//
// Nothing in a manifest or pack is trusted: every body is verified against
// its output ID, a record that does not fit rejects the whole manifest,
// and a pack that is gone or corrupt costs its entries a fetch of their
// own objects. Manifests of earlier versions are read too: "gbcm3\n"
// (frames without an owner: 'f' <pack> <offset> <length>), "gbcm2\n"
// (records 'k' and 'e' only) and "gbcm1\n" + 32-byte action IDs, not
// compressed. Where manifests and packs are kept is the remote's business
// (manifestStore; S3: s3Location).

const (
	manifestMagicV1   = "gbcm1\n"
	manifestMagicV2   = "gbcm2\n"
	manifestMagicV3   = "gbcm3\n"
	manifestMagic     = "gbcm4\n"
	maxManifestIDs    = 1 << 20
	maxManifestSize   = 64 << 20 // decoded
	maxManifestObject = 32 << 20 // stored
	inlineMax         = 64 << 10 // largest body a manifest carries
	inlineBudget      = 8 << 20  // body bytes one manifest carries at most
)

// manifest is a decoded manifest: its entries in first-use order, and the
// pack frames its packed entries sit in.
type manifest struct {
	entries []manifestEntry
	frames  []packFrame
	ids     map[ActionID]struct{} // the entries' IDs, if parsed (see keySet)
}

// keySet returns the set of m's action IDs: the one parseManifest built
// while it checked them for repeats, or a new one.
func (m manifest) keySet() map[ActionID]struct{} {
	if m.ids != nil {
		return m.ids
	}
	set := make(map[ActionID]struct{}, len(m.entries))
	for _, e := range m.entries {
		set[e.id] = struct{}{}
	}
	return set
}

// manifestEntry is one action ID of a manifest, with its entry if the
// manifest carries it (inline) or where its body sits in a pack (packed).
type manifestEntry struct {
	id       ActionID
	inline   bool
	packed   bool
	outputID OutputID // inline or packed
	body     []byte   // inline
	size     int64    // packed
	frame    int      // packed: its frame, an index into manifest.frames
	// written is when the manifest was written, as its reader learned
	// from its name (stampWritten), not part of the format: an entry it
	// lands is recorded as put then, no later than it was, as a fetched
	// one keeps its put time, so that `go clean -testcache` expires a
	// test result either way. Zero: the landing's own time.
	written time.Time
}

// carried returns a report of whether m carries an entry's body: whole,
// or in a frame of a pack.
func (m manifest) carried() func(ActionID) bool {
	set := make(map[ActionID]bool, len(m.entries))
	for _, e := range m.entries {
		if e.inline || e.packed {
			set[e.id] = true
		}
	}
	return func(id ActionID) bool { return set[id] }
}

// stampWritten records t, the time m was written, in its entries (see
// manifestEntry.written).
func (m manifest) stampWritten(t time.Time) {
	for i := range m.entries {
		m.entries[i].written = t
	}
}

// newManifestID returns the ID of a new manifest written at t by a server
// of job (loadJobID; "" for a manifest of no job): IDs sort by time, and
// end in their job's ID (manifestJob).
func newManifestID(t time.Time, job string) string {
	if job == "" {
		job = randomSuffix()
	}
	return fmt.Sprintf("%019d-%s", t.UnixNano(), job)
}

// manifestJob returns the job of the manifest a store names name: the end
// of its ID (a manifest written before jobs were named has a job of its
// own).
func manifestJob(name string) string {
	id := manifestID(name)
	return id[strings.IndexByte(id, '-')+1:]
}

// manifestIDPattern matches what newManifestID returns.
var manifestIDPattern = regexp.MustCompile(`^[0-9]{19}-[0-9a-f]{1,12}$`)

// manifestID returns the ID of the manifest a store names name (its last
// path element: every manifestStore names a manifest by a path ending in
// its ID).
func manifestID(name string) string { return name[strings.LastIndexByte(name, '/')+1:] }

// siblingManifest returns the name of manifest id in the same scope and
// location as the manifest named name.
func siblingManifest(name, id string) string {
	return name[:strings.LastIndexByte(name, '/')+1] + id
}

// encodeManifestObject returns the manifest m as it is stored: one zstd
// frame, whose header gives the decoded size (see decodeManifest).
func encodeManifestObject(m manifest) ([]byte, error) {
	enc := zstdEncoders.Get().(*zstd.Encoder)
	defer zstdEncoders.Put(enc)
	return enc.EncodeAll(encodeManifest(m), nil), nil
}

// encodeManifest returns the manifest m, before compression. The packed
// entries of a frame must follow each other in m.entries (others may come
// between), frames in the order they sit in their packs.
func encodeManifest(m manifest) []byte {
	var b bytes.Buffer
	b.WriteString(manifestMagic)
	frame := -1
	for _, e := range m.entries {
		switch {
		case e.inline:
			b.WriteByte('e')
			b.Write(e.id[:])
			b.Write(e.outputID[:])
			b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(e.body))))
			b.Write(e.body)
		case e.packed:
			if e.frame != frame {
				frame = e.frame
				f := m.frames[frame]
				b.WriteByte('f')
				b.WriteByte(byte(len(f.owner)))
				b.WriteString(f.owner)
				b.Write(binary.BigEndian.AppendUint16(nil, uint16(f.pack)))
				b.Write(binary.BigEndian.AppendUint32(nil, uint32(f.off)))
				b.Write(binary.BigEndian.AppendUint32(nil, uint32(f.n)))
			}
			b.WriteByte('p')
			b.Write(e.id[:])
			b.Write(e.outputID[:])
			b.Write(binary.BigEndian.AppendUint32(nil, uint32(e.size)))
		default:
			b.WriteByte('k')
			b.Write(e.id[:])
		}
	}
	return b.Bytes()
}

// decodeManifest returns the manifest as stored, an empty one if it is not
// one.
func decodeManifest(obj []byte) manifest {
	if bytes.HasPrefix(obj, []byte(manifestMagicV1)) {
		return parseManifest(obj)
	}
	d := getZstdDecoder(bytes.NewReader(obj))
	if d == nil {
		return manifest{}
	}
	defer zstdDecoders.Put(d)
	// The size the frame's header gives, else about 4x: the bodies
	// compress, the IDs do not. (Every page of a buffer is zeroed when it
	// is allocated, and a fresh page costs a fault; on some CI VMs that is
	// most of reading a manifest.) The header is not trusted beyond 16x:
	// a small object claiming a huge size would cost every reader the
	// buffer. A wrong size costs only growth.
	hint := 4 * int64(len(obj))
	var h zstd.Header
	if h.Decode(obj) == nil && h.HasFCS && h.FrameContentSize <= 16*uint64(len(obj)) {
		hint = int64(h.FrameContentSize)
	}
	b, err := readAllSized(d, hint, maxManifestSize)
	if err != nil || len(b) > maxManifestSize {
		return manifest{}
	}
	return parseManifest(b)
}

// readAllSized reads r to its end, or to limit+1 bytes, into a buffer
// sized for about hint bytes up front: io.ReadAll's many small steps of
// growth cost a later go command's server more CPU than decoding its
// manifests does.
func readAllSized(r io.Reader, hint, limit int64) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(int(min(max(hint, 0), limit)) + bytes.MinRead)
	_, err := b.ReadFrom(io.LimitReader(r, limit+1))
	return b.Bytes(), err
}

// parseManifest returns a decoded manifest (any version), an empty one if
// it is not one. Nothing in it is trusted: a record that does not fit
// rejects the whole manifest, and so does an action ID named twice, which
// no writer does: a few kilobytes of one ID repeated would otherwise
// compress to nothing and cost each reader a million entries.
func parseManifest(b []byte) manifest {
	seen := make(map[ActionID]struct{})
	if rest, ok := bytes.CutPrefix(b, []byte(manifestMagicV1)); ok {
		if len(rest)%idLen != 0 || len(rest)/idLen > maxManifestIDs {
			return manifest{}
		}
		entries := make([]manifestEntry, 0, len(rest)/idLen)
		for ; len(rest) > 0; rest = rest[idLen:] {
			id := ActionID(rest[:idLen])
			if _, dup := seen[id]; dup {
				return manifest{}
			}
			seen[id] = struct{}{}
			entries = append(entries, manifestEntry{id: id})
		}
		return manifest{entries: entries, ids: seen}
	}
	rest, ok := bytes.CutPrefix(b, []byte(manifestMagic))
	v2, v3 := false, false
	if !ok {
		rest, v3 = bytes.CutPrefix(b, []byte(manifestMagicV3))
		if !v3 {
			if rest, v2 = bytes.CutPrefix(b, []byte(manifestMagicV2)); !v2 {
				return manifest{}
			}
		}
	}
	var m manifest
	var frameBytes int64   // decoded bytes of the current frame so far
	frameHasEntry := false // every frame holds an entry
	for len(rest) > 0 {
		tag := rest[0]
		if v2 && tag != 'k' && tag != 'e' {
			return manifest{}
		}
		if tag == 'f' {
			var f packFrame
			rest = rest[1:]
			if !v3 {
				if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
					return manifest{}
				}
				f.owner, rest = string(rest[1:1+rest[0]]), rest[1+rest[0]:]
				if f.owner != "" && !manifestIDPattern.MatchString(f.owner) {
					return manifest{}
				}
			}
			if len(rest) < 10 || len(m.frames) == maxManifestIDs {
				return manifest{}
			}
			f.pack = int(binary.BigEndian.Uint16(rest))
			f.off = int64(binary.BigEndian.Uint32(rest[2:]))
			f.n = int64(binary.BigEndian.Uint32(rest[6:]))
			if f.n == 0 || f.off+f.n > packMaxObject || (len(m.frames) > 0 && !frameHasEntry) {
				return manifest{}
			}
			m.frames = append(m.frames, f)
			frameBytes, frameHasEntry, rest = 0, false, rest[10:]
			continue
		}
		if len(m.entries) == maxManifestIDs || len(rest) < 1+idLen {
			return manifest{}
		}
		e := manifestEntry{id: ActionID(rest[1 : 1+idLen])}
		if _, dup := seen[e.id]; dup {
			return manifest{}
		}
		seen[e.id] = struct{}{}
		rest = rest[1+idLen:]
		switch tag {
		case 'k':
		case 'e', 'p':
			if len(rest) < idLen+4 {
				return manifest{}
			}
			e.outputID = OutputID(rest[:idLen])
			size := int64(binary.BigEndian.Uint32(rest[idLen:]))
			rest = rest[idLen+4:]
			if tag == 'p' {
				frameBytes += size
				if len(m.frames) == 0 || size > packEntryMax || frameBytes > packFrameMax {
					return manifest{}
				}
				e.packed, e.size, e.frame = true, size, len(m.frames)-1
				frameHasEntry = true
				break
			}
			if size > inlineMax || size > int64(len(rest)) {
				return manifest{}
			}
			e.inline = true
			e.body, rest = rest[:size:size], rest[size:]
		default:
			return manifest{}
		}
		m.entries = append(m.entries, e)
	}
	if len(m.frames) > 0 && !frameHasEntry {
		return manifest{}
	}
	m.ids = seen
	return m
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

// prefetchScopes returns the manifest scopes of -prefetch-scope: the
// scope a run writes (and reads first) and, after commas, further scopes
// it reads and never writes, as a cache key's restore keys: a matrix leg's
// "test-linux,build" also reads what the build job's runs used. Each name
// is made safe for a key; duplicates and names left empty are dropped. By
// default the one scope is ciJob, the CI job's (ciJobScope), or where that
// is empty, one derived from the working directory (the go command's,
// usually the checkout).
//
// Every scope is the toolchain's own (toolchainTag; "" leaves the names
// as they are): a matrix of Go versions or targets under one job name
// keeps a scope per leg, whose manifests name only entries the leg can use.
func prefetchScopes(flag, toolchain, ciJob string) (own string, further []string) {
	seen := make(map[string]bool)
	add := func(name string) {
		s := scopeName(name)
		if s == "" {
			return
		}
		if toolchain != "" {
			s = scopeName(s + "." + toolchain)
		}
		if seen[s] {
			return
		}
		seen[s] = true
		if own == "" {
			own = s
		} else {
			further = append(further, s)
		}
	}
	names := strings.Split(flag, ",")
	add(names[0])
	if own == "" {
		add(ciJob)
	}
	if own == "" {
		wd, _ := os.Getwd()
		h := sha256.Sum256([]byte(wd))
		add("dir-" + hex.EncodeToString(h[:8]))
	}
	for _, name := range names[1:] {
		add(name)
	}
	return own, further
}

// ciJobScope returns the default scope of a job on a CI system that names
// its jobs in the environment: "" on any other machine, or if the job's
// name is missing. Runs of one job then share a scope whatever directory
// they build in, which some systems make differ between machines or
// between the slots of one machine (a Buildkite agent's name, a GitLab
// shell runner's concurrency slot, ...), and the jobs of one repository
// keep apart, though they build in the same directory. GitLab puts a
// matrix's values and a parallel job's index in the job's name, and the
// parallel jobs of Buildkite and CircleCI get their index added; a GitHub
// matrix's legs share their job's scope, as with the action's default
// (Go versions and targets are kept apart anyway: toolchainTag).
func ciJobScope(getenv func(string) string) string {
	// index is a parallel job's index, "" when the job is not split.
	index := func(i, total string) string {
		if n, err := strconv.Atoi(total); err == nil && n > 1 {
			return i
		}
		return ""
	}
	var job string
	var parts []string // of the name, job among them
	switch {
	case getenv("GITHUB_ACTIONS") == "true":
		job = getenv("GITHUB_JOB")
		parts = []string{"gh", getenv("GITHUB_REPOSITORY"), getenv("GITHUB_WORKFLOW"), job}
	case getenv("GITLAB_CI") == "true":
		job = getenv("CI_JOB_NAME")
		parts = []string{"gl", getenv("CI_PROJECT_PATH"), job}
	case getenv("BUILDKITE") == "true":
		job = cmp.Or(getenv("BUILDKITE_STEP_KEY"), getenv("BUILDKITE_LABEL"))
		parts = []string{"bk", getenv("BUILDKITE_PIPELINE_SLUG"), job, index(getenv("BUILDKITE_PARALLEL_JOB"), getenv("BUILDKITE_PARALLEL_JOB_COUNT"))}
	case getenv("CIRCLECI") == "true":
		job = getenv("CIRCLE_JOB")
		parts = []string{"cci", getenv("CIRCLE_PROJECT_REPONAME"), job, index(getenv("CIRCLE_NODE_INDEX"), getenv("CIRCLE_NODE_TOTAL"))}
	}
	if job == "" {
		return ""
	}
	return strings.Join(slices.DeleteFunc(parts, func(p string) bool { return p == "" }), "-")
}

// toolchainTag names the toolchain and target of the go command that
// started this server, from the environment every go command sets for the
// programs it starts (GOVERSION, GOOS, GOARCH, the architecture's level
// such as GOAMD64, and GOEXPERIMENT), for example
// "go1.26.8-linux-amd64-v1"; "" if no go command started it. No action ID
// of one toolchain and target is ever another's, so each keeps manifests
// of its own.
func toolchainTag(getenv func(string) string) string {
	version := getenv("GOVERSION")
	if version == "" {
		return ""
	}
	goarch := getenv("GOARCH")
	tag := version + "-" + getenv("GOOS") + "-" + goarch
	if v, ok := archLevelVar[goarch]; ok && getenv(v) != "" {
		tag += "-" + getenv(v)
	}
	if x := getenv("GOEXPERIMENT"); x != "" {
		tag += "-x-" + x
	}
	return tag
}

// archLevelVar is the go command's variable for each architecture's level
// (the instruction set it compiles for).
var archLevelVar = map[string]string{
	"386": "GO386", "amd64": "GOAMD64", "arm": "GOARM", "arm64": "GOARM64",
	"mips": "GOMIPS", "mipsle": "GOMIPS", "mips64": "GOMIPS64", "mips64le": "GOMIPS64",
	"ppc64": "GOPPC64", "ppc64le": "GOPPC64", "riscv64": "GORISCV64", "wasm": "GOWASM",
}

// scopeName returns name made safe for a key ("" if nothing is left). A
// name with letters beyond ASCII (a workflow named in Chinese, say), which
// would vanish whole, or one too long, ends in a hash of the name, so that
// names that differ only there stay apart.
func scopeName(name string) string {
	s := strings.Trim(scopeUnsafe.ReplaceAllString(name, "_"), "._")
	if len(s) > 100 || strings.ContainsFunc(name, func(r rune) bool { return r >= utf8.RuneSelf }) {
		h := sha256.Sum256([]byte(name))
		s = strings.TrimLeft(s[:min(len(s), 80)]+"-"+hex.EncodeToString(h[:8]), "-")
	}
	return s
}
