package main

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// releaseTag is the release a binary of scripts/release.sh was built as
// (-ldflags -X main.releaseTag=TAG): such a build records no VCS data
// (-buildvcs=false), so that it is the same bytes on every machine.
var releaseTag string

// versionLine is what `gobuildcache version` prints: the module version
// the binary was built from (its release tag for a release binary,
// "(devel)" when the build knows neither),
// the VCS revision and whether the tree was modified, when the build
// recorded them, then the Go toolchain and platform. A bug report or an
// inventory of what runs in CI quotes it.
func versionLine(info *debug.BuildInfo, ok bool) string {
	v := "(devel)"
	var rev string
	modified := false
	if ok {
		if info.Main.Version != "" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if v == "(devel)" && releaseTag != "" {
		v = releaseTag
	}
	parts := []string{"gobuildcache", v}
	// A pseudo-version (v0.0.0-<time>-<rev>[+dirty]) says both already.
	if rev = rev[:min(len(rev), 12)]; rev != "" && !strings.Contains(v, rev) {
		parts = append(parts, "rev", rev)
		if modified {
			parts = append(parts, "(modified)")
		}
	}
	parts = append(parts, runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH)
	return strings.Join(parts, " ")
}
