package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"

	"github.com/klauspost/compress/zstd"
)

// A pack holds the bodies of many entries back to back, so that a fresh
// machine gets them with a few large ranged GETs instead of one GET each.
// The run that writes a manifest writes its packs first: the entries it
// used that the manifest does not carry whole, in the order the go command
// first asked for them. A pack is a sequence of zstd frames, each holding
// the bodies of consecutive entries (about packFrameRaw bytes decoded; an
// entry never spans two frames), so that any run of consecutive frames is
// one range that decodes as one stream. Its manifest says, for each frame,
// where it sits, and for each entry, its frame, output ID and size
// (manifest.go). A pack is never overwritten (its name is its manifest's,
// which is new) and is deleted with its manifest (manifestStore). Newer
// manifests of its scope name its frames instead of packing the same
// entries again, for as long as it is recent (packCovering).
//
// Packs only accelerate: the entries' own objects stay the source of
// truth. A pack that is gone, stale, cut short or corrupt costs its
// entries a fetch of their own objects; every body from a pack is verified
// against its output ID before it lands.

const (
	packFrameRaw  = 1 << 20  // decoded bytes per frame, about
	packEntryMax  = 16 << 20 // larger entries are not packed: fetched on their own
	packFrameMax  = packFrameRaw + packEntryMax
	packTarget    = 32 << 20  // stored bytes per pack: a pack is closed once it is this large
	packMaxObject = 256 << 20 // stored bytes per pack that a reader accepts
	packRunMax    = 1 << 30   // decoded bytes a run packs at most; the rest are fetched on their own
	packRangeMax  = 8 << 20   // stored bytes one ranged GET asks for, about
	packRangeMin  = 256 << 10 // stored bytes of a manifest's first range: the ranges double up to packRangeMax
)

// packFrame is one zstd frame of a pack: bytes [off, off+n) of pack
// number pack of the manifest owner ("": the manifest naming the frame;
// else the ID of an older manifest of its scope and location).
type packFrame struct {
	owner  string
	pack   int
	off, n int64
}

// frameKey is where a frame sits, whichever manifests name it: the
// manifest whose pack holds it (as its store names it), the pack, the
// offset.
type frameKey struct {
	manifest string
	pack     int
	off      int64
}

// key returns where f, named by the manifest named name, sits.
func (f packFrame) key(name string) frameKey {
	if f.owner != "" {
		name = siblingManifest(name, f.owner)
	}
	return frameKey{name, f.pack, f.off}
}

// packBuilder builds a run's packs from its entries' bodies, in order.
// Frames are compressed on up to compressors goroutines at once (a run's
// exit waits for its packs, and the build no longer needs the cores) and
// appended to the pack in order. Each full pack is handed to emit as it is
// closed, with its number.
type packBuilder struct {
	emit        func(i int, data []byte)
	compressors int // frames compressed at once; at least 1

	frames  []packFrame   // appended to a pack, in order
	pending []chan []byte // frames being compressed, in order, after frames
	raw     []byte        // decoded bytes of the frame being built
	pack    []byte        // stored bytes of the pack being built
	packs   int           // packs emitted
	// spare holds buffers of frames done with, decoded or compressed, for
	// the next frames: memory already in use costs nothing to write again.
	spare chan []byte
}

// add reads a body of size bytes from body into the packs and returns the
// index of its frame. If body fails or ends early, nothing of it stays in
// the packs.
func (b *packBuilder) add(body io.Reader, size int64) (int, error) {
	if len(b.raw) > 0 && int64(len(b.raw))+size > packFrameRaw {
		b.closeFrame()
	}
	if b.raw == nil {
		b.raw = b.buffer()
	}
	n := len(b.raw)
	b.raw = slices.Grow(b.raw, int(size))[:n+int(size)]
	if _, err := io.ReadFull(body, b.raw[n:]); err != nil {
		b.raw = b.raw[:n]
		return 0, err
	}
	return len(b.frames) + len(b.pending), nil
}

// closeFrame starts compressing the frame being built, once fewer than
// compressors frames are being compressed.
func (b *packBuilder) closeFrame() {
	if len(b.raw) == 0 {
		return
	}
	for len(b.pending) >= max(b.compressors, 1) {
		b.appendFrame()
	}
	raw, dst, out := b.raw, b.buffer(), make(chan []byte, 1)
	b.raw = nil
	b.pending = append(b.pending, out)
	go func() {
		enc := zstdEncoders.Get().(*zstd.Encoder)
		defer zstdEncoders.Put(enc)
		out <- enc.EncodeAll(raw, dst)
		b.recycle(raw)
	}()
}

// buffer returns an empty buffer for a frame's bytes.
func (b *packBuilder) buffer() []byte {
	if b.spare == nil {
		b.spare = make(chan []byte, 2*max(b.compressors, 1)+1)
	}
	select {
	case buf := <-b.spare:
		return buf[:0]
	default:
		return make([]byte, 0, packFrameRaw)
	}
}

// recycle keeps buf for buffer, if there is room.
func (b *packBuilder) recycle(buf []byte) {
	select {
	case b.spare <- buf:
	default:
	}
}

// appendFrame waits for the oldest frame being compressed and appends it
// to the pack, which it closes if it is large enough.
func (b *packBuilder) appendFrame() {
	data := <-b.pending[0]
	b.pending = b.pending[1:]
	if b.pack == nil {
		b.pack = make([]byte, 0, packTarget+packFrameMax)
	}
	b.frames = append(b.frames, packFrame{pack: b.packs, off: int64(len(b.pack)), n: int64(len(data))})
	b.pack = append(b.pack, data...)
	b.recycle(data)
	if len(b.pack) >= packTarget {
		b.closePack()
	}
}

func (b *packBuilder) closePack() {
	if len(b.pack) == 0 {
		return
	}
	b.emit(b.packs, b.pack) // handed over: a new buffer follows
	b.pack = nil
	b.packs++
}

// finish closes the last frame and pack and returns the frames.
func (b *packBuilder) finish() []packFrame {
	b.closeFrame()
	for len(b.pending) > 0 {
		b.appendFrame()
	}
	b.closePack()
	return b.frames
}

// packRange is one ranged GET: consecutive frames of one pack, and the
// entries they hold, in order.
type packRange struct {
	manifest string // name of the manifest whose pack it reads
	pack     int
	off, n   int64
	entries  []*manifestEntry
}

// plannedFrame is a frame a prefetch reads, with the entries it holds in
// order (as the first manifest naming it lists them).
type plannedFrame struct {
	key     frameKey
	n       int64
	entries []*manifestEntry
}

// frameIndex is where the packed entries of some manifests sit: each
// frame once, however many manifests name it, with its entries as the
// first manifest naming it lists them.
type frameIndex struct {
	frames map[frameKey]*plannedFrame
	of     []map[*manifestEntry]*plannedFrame // per manifest: each packed entry's frame
}

// indexFrames returns the frame index of ms, the manifests infos name.
func indexFrames(infos []manifestInfo, ms []manifest) frameIndex {
	idx := frameIndex{frames: make(map[frameKey]*plannedFrame), of: make([]map[*manifestEntry]*plannedFrame, len(ms))}
	for i := range ms {
		if len(ms[i].frames) == 0 {
			continue
		}
		idx.of[i] = make(map[*manifestEntry]*plannedFrame)
		mine := make([]*plannedFrame, len(ms[i].frames)) // frames this manifest lists first
		for k, f := range ms[i].frames {
			key := f.key(infos[i].name)
			if idx.frames[key] == nil {
				idx.frames[key] = &plannedFrame{key: key, n: f.n}
				mine[k] = idx.frames[key]
			}
		}
		for j := range ms[i].entries {
			e := &ms[i].entries[j]
			if !e.packed {
				continue
			}
			pf := idx.frames[ms[i].frames[e.frame].key(infos[i].name)]
			if mine[e.frame] != nil {
				pf.entries = append(pf.entries, e)
			}
			idx.of[i][e] = pf
		}
	}
	return idx
}

// frame returns the frame of e, a packed entry of manifest i (nil if the
// index has none).
func (x frameIndex) frame(i int, e *manifestEntry) *plannedFrame {
	if i >= len(x.of) {
		return nil
	}
	return x.of[i][e]
}

// ref returns f as a manifest names a frame of another's pack: its owner
// set to the ID of the manifest whose pack holds it.
func (f *plannedFrame) ref() packFrame {
	return packFrame{owner: manifestID(f.key.manifest), pack: f.key.pack, off: f.key.off, n: f.n}
}

// planRanges groups frames, in the order a prefetch wants them, into
// ranged GETs: adjacent frames of one pack, each range about packRangeMin
// stored bytes for a pack's first, twice the one before for each next one,
// up to packRangeMax (the go command's first gets wait for the first
// range; later ones arrive while it works). A range comes in the order of
// its first frame.
func planRanges(frames []*plannedFrame) []*packRange {
	type pack struct {
		manifest string
		i        int
	}
	byPack := make(map[pack][]*plannedFrame)
	var packs []pack
	rank := make(map[*plannedFrame]int, len(frames))
	for i, f := range frames {
		k := pack{f.key.manifest, f.key.pack}
		if byPack[k] == nil {
			packs = append(packs, k)
		}
		byPack[k] = append(byPack[k], f)
		rank[f] = i
	}
	var ranges []*packRange
	first := make(map[*packRange]int)
	for _, k := range packs {
		fs := byPack[k]
		slices.SortFunc(fs, func(a, b *plannedFrame) int { return cmp.Compare(a.key.off, b.key.off) })
		var cur *packRange
		made := 0
		for _, f := range fs {
			limit := min(int64(packRangeMin)<<min(max(made-1, 0), 8), packRangeMax)
			if cur == nil || f.key.off != cur.off+cur.n || cur.n+f.n > limit {
				cur = &packRange{manifest: k.manifest, pack: k.i, off: f.key.off}
				ranges = append(ranges, cur)
				first[cur] = rank[f]
				made++
			}
			cur.n += f.n
			cur.entries = append(cur.entries, f.entries...)
			first[cur] = min(first[cur], rank[f])
		}
	}
	slices.SortStableFunc(ranges, func(a, b *packRange) int { return cmp.Compare(first[a], first[b]) })
	return ranges
}

// readPackRange decodes the stream of a range and hands each entry's body
// to land, in order, as an io.Reader of exactly its size; land need not
// read it all. It returns the entries it did not reach (the stream broke
// off or did not decode) and why.
func readPackRange(r *packRange, stream io.Reader, land func(e *manifestEntry, body io.Reader)) ([]*manifestEntry, error) {
	src := &sourceErr{r: stream}
	dec := getZstdDecoder(src)
	if dec == nil {
		if src.err != nil {
			return r.entries, src.err
		}
		return r.entries, fmt.Errorf("%w: pack range is not zstd", errVerify)
	}
	defer zstdDecoders.Put(dec)
	z := zstdReader{dec, src}
	for i, e := range r.entries {
		body := &io.LimitedReader{R: z, N: e.size}
		land(e, body)
		if _, err := copyBuffered(io.Discard, body); err != nil {
			return r.entries[i:], err
		}
		if body.N > 0 {
			return r.entries[i:], fmt.Errorf("%w: pack range ends early", errVerify)
		}
	}
	return nil, nil
}
