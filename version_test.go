package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionLine(t *testing.T) {
	platform := " " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "b5a9be5224ad0123456789abcdef0123456789ab"
	for _, tc := range []struct {
		name string
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{"no build info", nil, false, "gobuildcache (devel)"},
		{"go install of a tag", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, true, "gobuildcache v1.4.0"},
		{"checkout, no version", &debug.BuildInfo{Settings: vcs(rev, "false")}, true, "gobuildcache (devel) rev b5a9be5224ad"},
		{"checkout, modified", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "true")}, true, "gobuildcache (devel) rev b5a9be5224ad (modified)"},
		{"pseudo-version names the revision", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261204231938-b5a9be5224ad+dirty"}, Settings: vcs(rev, "true")}, true, "gobuildcache v0.0.0-20261204231938-b5a9be5224ad+dirty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionLine(tc.info, tc.ok); got != tc.want+platform {
				t.Errorf("versionLine = %q, want %q", got, tc.want+platform)
			}
		})
	}
}

func TestVersionCommand(t *testing.T) {
	status, stdout, stderr := runMain(t, []string{"version"}, nil, "")
	if status != 0 || stderr != "" || !strings.HasPrefix(stdout, "gobuildcache ") || !strings.HasSuffix(stdout, runtime.GOOS+"/"+runtime.GOARCH+"\n") {
		t.Errorf("version: status %d, stdout %q, stderr %q", status, stdout, stderr)
	}
	status, stdout, stderr = runMain(t, []string{"version", "-v"}, nil, "")
	if status != 2 || stdout != "" || !strings.Contains(stderr, `takes no arguments, got "-v"`) {
		t.Errorf("version -v: status %d, stdout %q, stderr %q", status, stdout, stderr)
	}
}
