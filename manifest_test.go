package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestManifestFormat(t *testing.T) {
	small := []byte("a small object file")
	m := manifest{
		entries: []manifestEntry{
			{id: actionID("a")},
			{id: actionID("b"), inline: true, outputID: outputID(string(small)), body: small},
			{id: actionID("p1"), packed: true, outputID: outputID("x"), size: 1, frame: 0},
			{id: actionID("c"), inline: true, outputID: outputID(""), body: []byte{}},
			{id: actionID("p2"), packed: true, outputID: outputID("yy"), size: 2, frame: 0},
			{id: actionID("p3"), packed: true, outputID: outputID("zzz"), size: 3, frame: 1},
		},
		frames: []packFrame{{pack: 0, off: 0, n: 20}, {owner: "1796200759832245732-17ab1be5da5b", pack: 1, off: 7, n: 30}},
	}
	obj, err := encodeManifestObject(m)
	if err != nil {
		t.Fatal(err)
	}
	got := decodeManifest(obj)
	if len(got.entries) != len(m.entries) || !slices.Equal(got.frames, m.frames) {
		t.Fatalf("decoded %d entries, frames %v; want %d, %v", len(got.entries), got.frames, len(m.entries), m.frames)
	}
	for i, e := range got.entries {
		w := m.entries[i]
		if e.id != w.id || e.inline != w.inline || e.packed != w.packed || e.outputID != w.outputID ||
			!bytes.Equal(e.body, w.body) || e.size != w.size || e.frame != w.frame {
			t.Errorf("entry %d: %+v, want %+v", i, e, w)
		}
	}

	// Manifests of earlier versions are read: keys only, not compressed;
	// keys and whole entries.
	v1 := manifestMagicV1 + string(m.entries[0].id[:]) + string(m.entries[1].id[:])
	if got := decodeManifest([]byte(v1)).entries; len(got) != 2 || got[1].id != m.entries[1].id || got[1].inline {
		t.Fatalf("v1 manifest: %+v", got)
	}
	v2 := manifestMagicV2 + "k" + string(m.entries[0].id[:])
	if got := parseManifest([]byte(v2)).entries; len(got) != 1 || got[0].id != m.entries[0].id {
		t.Fatalf("v2 manifest: %+v", got)
	}

	// gbcm3: frames without an owner.
	v3 := manifestMagicV3 + "f\x00\x02\x00\x00\x00\x05\x00\x00\x00\x10" + "p" + strings.Repeat("a", 2*idLen) + "\x00\x00\x00\x01"
	if got := parseManifest([]byte(v3)); len(got.entries) != 1 || !got.entries[0].packed || len(got.frames) != 1 || got.frames[0] != (packFrame{pack: 2, off: 5, n: 16}) {
		t.Fatalf("v3 manifest: %+v", got)
	}

	long := append([]byte(manifestMagic+"e"), make([]byte, 2*idLen)...)
	long = binary.BigEndian.AppendUint32(long, inlineMax+1)
	long = append(long, make([]byte, inlineMax+1)...)
	id2 := strings.Repeat("a", 2*idLen)
	frame := "f\x00" + "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10"
	p1 := "p" + id2 + "\x00\x00\x00\x01"
	for _, bad := range []string{"", "gbcm9\n", manifestMagicV1 + "short", manifestMagic + "k short",
		manifestMagic + "x" + strings.Repeat("a", idLen), manifestMagic + "e" + id2 + "\x00\x00\x00\x09short",
		string(long), strings.Repeat("x", 70),
		manifestMagic + "p" + id2 + "\x00\x00\x00\x01",                       // packed before any frame
		manifestMagic + frame,                                                // a frame without entries
		manifestMagic + frame + frame + "p" + id2 + "\x00\x00\x00\x01",       // likewise
		manifestMagic + frame + "p" + id2 + "\x01\x00\x00\x01",               // larger than packEntryMax
		manifestMagic + "f\x00\x00\x00\x10\x00\x00\x00\x10\x00\x00\x00" + p1, // beyond packMaxObject
		manifestMagicV2 + frame + p1,                                         // packs in a v2 manifest
		manifestMagic + "f\x04../x" + frame[2:] + p1,                         // an owner that is not a manifest ID
		manifestMagic + "f\x30" + frame[2:] + p1,                             // an owner longer than the record
		manifestMagic + "k" + id2[:idLen] + "k" + id2[:idLen],                // an action ID named twice
		manifestMagic + frame + p1 + "k" + id2[:idLen],                       // likewise, packed and as a key
		manifestMagicV1 + id2,                                                // likewise, in a v1 manifest
	} {
		if got := parseManifest([]byte(bad)); got.entries != nil || got.frames != nil {
			t.Errorf("parseManifest(%q) = %d entries, want none", bad, len(got.entries))
		}
	}
}

func TestPrefetchScopes(t *testing.T) {
	for in, want := range map[string]string{
		"build":              "build",
		"ci job/linux amd64": "ci_job_linux_amd64",
		"../../etc":          "etc",
		"a\x00b":             "a_b",
	} {
		if got, further := prefetchScopes(in, "", ""); got != want || further != nil {
			t.Errorf("prefetchScopes(%q) = %q, %q, want %q alone", in, got, further, want)
		}
	}
	own, further := prefetchScopes("test-1, build,,test-1,../x", "", "")
	if own != "test-1" || !slices.Equal(further, []string{"build", "x"}) {
		t.Errorf("a list: %q, %q; want test-1 then build, x", own, further)
	}
	if got, _ := prefetchScopes(strings.Repeat("x", 300), "", ""); len(got) > 100 {
		t.Errorf("long scope kept %d bytes", len(got))
	}
	a, _ := prefetchScopes("", "", "")
	b, further := prefetchScopes(" , /", "", "")
	if a != b || !strings.HasPrefix(a, "dir-") || further != nil {
		t.Errorf("default scope %q, %q (%q): want one stable dir- name", a, b, further)
	}
	// Every scope is the toolchain's own, the default one too.
	own, further = prefetchScopes("test-1,build", "go1.26.8-linux-amd64-v1", "")
	if own != "test-1.go1.26.8-linux-amd64-v1" || !slices.Equal(further, []string{"build.go1.26.8-linux-amd64-v1"}) {
		t.Errorf("with a toolchain: %q, %q", own, further)
	}
	if d, _ := prefetchScopes("", "go1.26.8-linux-amd64-v1", ""); d != a+".go1.26.8-linux-amd64-v1" {
		t.Errorf("default scope with a toolchain: %q, want %q", d, a+".go1.26.8-linux-amd64-v1")
	}
	if got, _ := prefetchScopes(strings.Repeat("x", 300), "go1.26.8-linux-amd64-v1", ""); len(got) > 100 {
		t.Errorf("long scope with a toolchain kept %d bytes", len(got))
	}
	// On a CI system, the job is the default; a scope given wins over it.
	if got, _ := prefetchScopes("", "go1.26.8-linux-amd64-v1", "gl-group/api-test 2/4"); got != "gl-group_api-test_2_4.go1.26.8-linux-amd64-v1" {
		t.Errorf("default scope of a CI job: %q", got)
	}
	if got, _ := prefetchScopes("build", "", "gl-group/api-test"); got != "build" {
		t.Errorf("a scope given, on a CI system: %q, want build", got)
	}
}

// TestScopeNamesKeepNonASCIIApart: names that differ only in letters a
// key cannot hold (a workflow named in Chinese or Russian) stay apart,
// each a scope of its own, on a CI system by default as when given; an
// ASCII name stays as it is.
func TestScopeNamesKeepNonASCIIApart(t *testing.T) {
	tag := "go1.26.8-linux-amd64-v1"
	gh := func(workflow string) string {
		env := map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "o/r", "GITHUB_WORKFLOW": workflow, "GITHUB_JOB": "build"}
		own, _ := prefetchScopes("", tag, ciJobScope(func(k string) string { return env[k] }))
		return own
	}
	if a, b := gh("测试"), gh("发布"); a == b {
		t.Errorf("the build jobs of workflows 测试 and 发布 share scope %q", a)
	}
	if a, b := gh("Тесты"), gh("Сборка"); a == b {
		t.Errorf("the build jobs of workflows Тесты and Сборка share scope %q", a)
	}
	def, _ := prefetchScopes("", tag, "")
	for _, name := range []string{"测试", "发布", "ci-测试"} {
		got, _ := prefetchScopes(name, tag, "")
		if got == def || scopeName(got) != got {
			t.Errorf("scope %q: %q (the default %q)", name, got, def)
		}
		if other, _ := prefetchScopes(name+"x", tag, ""); other == got {
			t.Errorf("scopes %q and %q: both %q", name, name+"x", got)
		}
	}
	if got, _ := prefetchScopes("gh-o/r-CI-build", tag, ""); got != "gh-o_r-CI-build."+tag {
		t.Errorf("an ASCII scope: %q", got)
	}
}

// TestCIJobScope: on each CI system it knows, the default scope names the
// project and the job (a parallel job's index too, when split), whatever
// directory the job builds in; with the job's name missing, or on any other
// machine, there is none (the working directory's is used).
func TestCIJobScope(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{nil, ""},
		{map[string]string{"CI": "true", "JOB_NAME": "api/main"}, ""}, // Jenkins: its job names carry the branch
		{map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/api", "GITHUB_WORKFLOW": "CI", "GITHUB_JOB": "test"}, "gh-acme/api-CI-test"},
		{map[string]string{"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/api"}, ""},
		{map[string]string{"GITHUB_JOB": "test"}, ""},
		{map[string]string{"GITLAB_CI": "true", "CI_PROJECT_PATH": "group/api", "CI_JOB_NAME": "test: [linux, 1.26]"}, "gl-group/api-test: [linux, 1.26]"},
		{map[string]string{"GITLAB_CI": "true", "CI_PROJECT_PATH": "group/api"}, ""},
		{map[string]string{"BUILDKITE": "true", "BUILDKITE_PIPELINE_SLUG": "api", "BUILDKITE_LABEL": ":go: test"}, "bk-api-:go: test"},
		{map[string]string{"BUILDKITE": "true", "BUILDKITE_PIPELINE_SLUG": "api", "BUILDKITE_STEP_KEY": "test", "BUILDKITE_LABEL": ":go: test",
			"BUILDKITE_PARALLEL_JOB": "2", "BUILDKITE_PARALLEL_JOB_COUNT": "4"}, "bk-api-test-2"},
		{map[string]string{"CIRCLECI": "true", "CIRCLE_PROJECT_REPONAME": "api", "CIRCLE_JOB": "test", "CIRCLE_NODE_INDEX": "0", "CIRCLE_NODE_TOTAL": "1"}, "cci-api-test"},
		{map[string]string{"CIRCLECI": "true", "CIRCLE_PROJECT_REPONAME": "api", "CIRCLE_JOB": "test", "CIRCLE_NODE_INDEX": "3", "CIRCLE_NODE_TOTAL": "4"}, "cci-api-test-3"},
	} {
		if got := ciJobScope(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("ciJobScope(%v) = %q, want %q", tc.env, got, tc.want)
		}
	}
}

// TestToolchainTag: the tag names what partitions every action ID, from
// the environment the go command sets, and is empty without a go command.
func TestToolchainTag(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, ""},
		{map[string]string{"GOOS": "linux", "GOARCH": "amd64"}, ""},
		{map[string]string{"GOVERSION": "go1.26.8", "GOOS": "linux", "GOARCH": "amd64", "GOAMD64": "v1"}, "go1.26.8-linux-amd64-v1"},
		{map[string]string{"GOVERSION": "go1.27.3", "GOOS": "darwin", "GOARCH": "arm64", "GOARM64": "v8.0", "GOAMD64": "v3"}, "go1.27.3-darwin-arm64-v8.0"},
		{map[string]string{"GOVERSION": "go1.26.8", "GOOS": "linux", "GOARCH": "amd64", "GOAMD64": "v1", "GOEXPERIMENT": "greenteagc"}, "go1.26.8-linux-amd64-v1-x-greenteagc"},
		{map[string]string{"GOVERSION": "go1.26.8", "GOOS": "js", "GOARCH": "wasm"}, "go1.26.8-js-wasm"},
	} {
		if got := toolchainTag(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("toolchainTag(%v) = %q, want %q", c.env, got, c.want)
		}
	}
}

// FuzzManifest: the manifest parser never panics, and what it accepts
// respects the format's bounds and encodes back to the same bytes.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(manifestMagicV1 + strings.Repeat("a", idLen)))
	f.Add([]byte(manifestMagic + "k" + strings.Repeat("a", idLen)))
	f.Add([]byte(manifestMagic + "e" + strings.Repeat("a", 2*idLen) + "\x00\x00\x00\x02hi"))
	f.Add([]byte(manifestMagic + "f\x00\x01\x00\x00\x00\x00\x00\x00\x00\x10p" + strings.Repeat("a", 2*idLen) + "\x00\x00\x00\x02"))
	f.Add([]byte(manifestMagic + "f\x0d1234567890123456789-a\x00\x01\x00\x00\x00\x00\x00\x00\x00\x10p" + strings.Repeat("a", 2*idLen) + "\x00\x00\x00\x02"))
	f.Add([]byte("gbcm1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := parseManifest(b)
		entries := m.entries
		if entries == nil {
			return
		}
		for _, e := range entries {
			if len(e.body) > inlineMax || (!e.inline && e.body != nil) || e.size > packEntryMax ||
				(e.packed && (e.frame < 0 || e.frame >= len(m.frames))) {
				t.Fatalf("accepted %+v", e)
			}
		}
		if bytes.HasPrefix(b, []byte(manifestMagic)) && !bytes.Equal(encodeManifest(m), b) {
			t.Fatalf("%q parsed and encoded again differs", b)
		}
		if bytes.HasPrefix(b, []byte(manifestMagicV1)) && len(manifestMagicV1)+len(entries)*idLen != len(b) {
			t.Fatalf("%d bytes parsed as %d ids", len(b), len(entries))
		}
	})
}

// TestManifestObjectSize: a stored manifest's frame gives its decoded
// size (zstd writes none below 256 bytes), which decodeManifest sizes its
// buffer by.
func TestManifestObjectSize(t *testing.T) {
	m := manifest{entries: []manifestEntry{{id: actionID("k")}, {id: actionID("e"), inline: true, outputID: outputID("body"), body: []byte("body")}}}
	for i := range 10 {
		m.entries = append(m.entries, manifestEntry{id: actionID(strconv.Itoa(i))})
	}
	obj, err := encodeManifestObject(m)
	if err != nil {
		t.Fatal(err)
	}
	var h zstd.Header
	if err := h.Decode(obj); err != nil || !h.HasFCS || h.FrameContentSize != uint64(len(encodeManifest(m))) {
		t.Fatalf("frame header %+v (%v), want the content size %d", h, err, len(encodeManifest(m)))
	}
	if got := decodeManifest(obj); len(got.entries) != len(m.entries) || string(got.entries[1].body) != "body" {
		t.Fatalf("decoded %+v", got)
	}
}

// TestManifestObjectSizeNotTrusted: a small object whose frame claims a
// large decoded size (in one segment, so its window too) makes its reader
// allocate neither: not a manifest's buffer, not the decoder's window,
// which every body and pack range goes through too (zstdMaxWindow).
func TestManifestObjectSizeNotTrusted(t *testing.T) {
	content := []byte(manifestMagic)
	obj := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0} // zstd magic; one segment, an 8-byte size
	obj = binary.LittleEndian.AppendUint64(obj, 60<<20)
	block := uint32(1 | len(content)<<3) // the last block, raw
	obj = append(obj, byte(block), byte(block>>8), byte(block>>16))
	obj = append(obj, content...)
	allocated := func(f func()) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	if n := allocated(func() { decodeManifest(obj) }); n > 8<<20 {
		t.Errorf("decoding a %d-byte manifest allocated %d bytes", len(obj), n)
	}
	var err error
	if n := allocated(func() {
		d := getZstdDecoder(bytes.NewReader(obj))
		_, err = io.Copy(io.Discard, zstdReader{d, &sourceErr{}})
		zstdDecoders.Put(d)
	}); n > 8<<20 || !errors.Is(err, errVerify) {
		t.Errorf("decoding a %d-byte body: %d bytes allocated, error %v, want errVerify", len(obj), n, err)
	}
}

// TestPrefetchScopeAfterCommaIsNeverWritten: "names after commas
// are further scopes, read and never written" (README, -h). When the first
// name is empty or has no character left once made safe (a matrix value
// that is unset, a non-Latin name), the first further scope becomes the
// one this run WRITES its manifests to, and the CI job's default scope is
// not used.
func TestPrefetchScopeAfterCommaIsNeverWritten(t *testing.T) {
	for _, flag := range []string{",build", "тест,build", " ,build"} {
		own, further := prefetchScopes(flag, "", "gh-org-repo-ci-test")
		if own == "build" {
			t.Errorf("-prefetch-scope=%q: writes to scope %q (further %q); want build read only", flag, own, further)
		}
	}
}
