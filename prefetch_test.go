package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestManifestFormat(t *testing.T) {
	ids := [][idLen]byte{[idLen]byte(actionID("a")), [idLen]byte(actionID("b"))}
	var buf bytes.Buffer
	buf.WriteString(manifestMagic)
	for _, id := range ids {
		buf.Write(id[:])
	}
	got := parseManifest(buf.Bytes())
	if len(got) != 2 || got[0] != ids[0] || got[1] != ids[1] {
		t.Fatalf("parse: %x", got)
	}
	for _, bad := range []string{"", "gbcm2\n", manifestMagic + "short", strings.Repeat("x", 70)} {
		if got := parseManifest([]byte(bad)); got != nil {
			t.Errorf("parseManifest(%q) = %d ids, want none", bad, len(got))
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

// FuzzManifest: the manifest parser never panics, and what it accepts is a
// whole number of IDs after the magic.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(manifestMagic + strings.Repeat("a", idLen)))
	f.Add([]byte(manifestMagic))
	f.Add([]byte("gbcm1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ids := parseManifest(b)
		if ids != nil && len(manifestMagic)+len(ids)*idLen != len(b) {
			t.Fatalf("%d bytes parsed as %d ids", len(b), len(ids))
		}
	})
}
