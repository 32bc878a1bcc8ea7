package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestManifestFormat(t *testing.T) {
	small := []byte("a small object file")
	entries := []manifestEntry{
		{id: [idLen]byte(actionID("a"))},
		{id: [idLen]byte(actionID("b")), inline: true, outputID: [idLen]byte(outputID(string(small))), body: small},
		{id: [idLen]byte(actionID("c")), inline: true, outputID: [idLen]byte(outputID("")), body: []byte{}},
	}
	var frame bytes.Buffer
	if err := zstdTo(&frame, bytes.NewReader(encodeManifest(entries))); err != nil {
		t.Fatal(err)
	}
	got := decodeManifest(frame.Bytes())
	if len(got) != len(entries) {
		t.Fatalf("decoded %d entries, want %d", len(got), len(entries))
	}
	for i, m := range got {
		w := entries[i]
		if m.id != w.id || m.inline != w.inline || m.outputID != w.outputID || !bytes.Equal(m.body, w.body) {
			t.Errorf("entry %d: %+v, want %+v", i, m, w)
		}
	}

	// Manifests of the first version (keys only, not compressed) are read.
	v1 := manifestMagicV1 + string(entries[0].id[:]) + string(entries[1].id[:])
	if got := decodeManifest([]byte(v1)); len(got) != 2 || got[1].id != entries[1].id || got[1].inline {
		t.Fatalf("v1 manifest: %+v", got)
	}

	long := append([]byte(manifestMagic+"e"), make([]byte, 2*idLen)...)
	long = binary.BigEndian.AppendUint32(long, inlineMax+1)
	long = append(long, make([]byte, inlineMax+1)...)
	for _, bad := range []string{"", "gbcm3\n", manifestMagicV1 + "short", manifestMagic + "k short",
		manifestMagic + "x" + strings.Repeat("a", idLen), manifestMagic + "e" + strings.Repeat("a", 2*idLen) + "\x00\x00\x00\x09short",
		string(long), strings.Repeat("x", 70)} {
		if got := parseManifest([]byte(bad)); got != nil {
			t.Errorf("parseManifest(%q) = %d entries, want none", bad, len(got))
		}
	}
}

func TestPrefetchScope(t *testing.T) {
	for in, want := range map[string]string{
		"build":              "build",
		"ci job/linux amd64": "ci_job_linux_amd64",
		"../../etc":          "etc",
		"a\x00b":             "a_b",
	} {
		if got := prefetchScope(in); got != want {
			t.Errorf("prefetchScope(%q) = %q, want %q", in, got, want)
		}
	}
	if got := prefetchScope(strings.Repeat("x", 300)); len(got) > 100 {
		t.Errorf("long scope kept %d bytes", len(got))
	}
	if a, b := prefetchScope(""), prefetchScope(""); a != b || !strings.HasPrefix(a, "dir-") {
		t.Errorf("default scope %q, %q: want a stable dir- name", a, b)
	}
}

// FuzzManifest: the manifest parser never panics, and what it accepts
// respects the format's bounds and encodes back to the same bytes.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(manifestMagicV1 + strings.Repeat("a", idLen)))
	f.Add([]byte(manifestMagic + "k" + strings.Repeat("a", idLen)))
	f.Add([]byte(manifestMagic + "e" + strings.Repeat("a", 2*idLen) + "\x00\x00\x00\x02hi"))
	f.Add([]byte("gbcm1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries := parseManifest(b)
		if entries == nil {
			return
		}
		for _, m := range entries {
			if len(m.body) > inlineMax || (!m.inline && m.body != nil) {
				t.Fatalf("accepted %+v", m)
			}
		}
		if bytes.HasPrefix(b, []byte(manifestMagic)) && !bytes.Equal(encodeManifest(entries), b) {
			t.Fatalf("%q parsed and encoded again differs", b)
		}
		if bytes.HasPrefix(b, []byte(manifestMagicV1)) && len(manifestMagicV1)+len(entries)*idLen != len(b) {
			t.Fatalf("%d bytes parsed as %d ids", len(b), len(entries))
		}
	})
}

// TestManifestNotRewritten: a run that one of the manifests it read
// already describes (all its entries, and at most a tenth more) writes no
// manifest, unless a manifest could not be read or the newest is more than
// a day old.
func TestManifestNotRewritten(t *testing.T) {
	p := &prefetcher{s3: &S3Backend{prefix: "ci/"}, scope: "job"}
	a, b, c := [idLen]byte(actionID("a")), [idLen]byte(actionID("b")), [idLen]byte(actionID("c"))
	name := func(age time.Duration) string {
		return fmt.Sprintf("%s%019d-abc", p.manifestDir(), time.Now().Add(-age).UnixNano())
	}
	lists := [][]manifestEntry{{{id: a}}, {{id: b}}}
	if p.named([][idLen]byte{a}) {
		t.Fatal("named before any manifest was read")
	}
	lists = [][]manifestEntry{{{id: a}, {id: b}}, {{id: c}}}
	p.noteRead([]string{name(time.Hour), name(2 * time.Hour)}, lists)
	if !p.named([][idLen]byte{b, a, b}) || !p.named([][idLen]byte{c}) {
		t.Error("the entries of a manifest read: not named")
	}
	if p.named([][idLen]byte{a}) {
		t.Error("a manifest naming twice what the run used: named")
	}
	if p.named([][idLen]byte{a, c}) {
		t.Error("entries of two manifests: named")
	}

	p = &prefetcher{s3: p.s3, scope: "job"}
	p.noteRead([]string{name(25 * time.Hour)}, lists[:1])
	if p.named([][idLen]byte{a}) {
		t.Error("newest manifest a day old: named (not renewed)")
	}
	p = &prefetcher{s3: p.s3, scope: "job"}
	p.noteRead([]string{name(time.Hour), name(2 * time.Hour)}, [][]manifestEntry{{{id: a}}, nil})
	if p.named([][idLen]byte{a}) {
		t.Error("a manifest unreadable: named")
	}
}
