package main

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestManifestFormat(t *testing.T) {
	small := []byte("a small object file")
	entries := []manifestEntry{
		{id: actionID("a")},
		{id: actionID("b"), inline: true, outputID: outputID(string(small)), body: small},
		{id: actionID("c"), inline: true, outputID: outputID(""), body: []byte{}},
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
