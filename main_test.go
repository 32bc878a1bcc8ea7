package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runMain runs the program in-process with the given environment.
func runMain(t *testing.T, args []string, env map[string]string, stdin string) (status int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string { return env[k] }
	status = run(args, strings.NewReader(stdin), &out, &errOut, getenv)
	return status, out.String(), errOut.String()
}

func TestHelpListsEveryFlag(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		status, out, _ := runMain(t, args, nil, "")
		if status != 0 {
			t.Fatalf("%v: exit %d", args, status)
		}
		for _, o := range options {
			if o.for_(cmdServe) && (!strings.Contains(out, "-"+o.flag) || !strings.Contains(out, "env "+o.env)) {
				t.Errorf("%v: help lacks -%s / %s:\n%s", args, o.flag, o.env, out)
			}
		}
		if !strings.Contains(out, `default "disk"`) {
			t.Errorf("help lacks defaults:\n%s", out)
		}
	}
	status, out, _ := runMain(t, []string{"clear", "-h"}, nil, "")
	if status != 0 {
		t.Fatalf("clear -h: exit %d", status)
	}
	for _, o := range options {
		if o.for_(cmdClear) && !strings.Contains(out, "-"+o.flag) {
			t.Errorf("clear -h lacks -%s", o.flag)
		}
	}
}

func TestConfigPrecedence(t *testing.T) {
	env := map[string]string{"CACHE_DIR": "/from/env", "DEBUG": "true", "BACKEND_TYPE": "disk", "UPLOAD_TIMEOUT": "5s"}
	c, err := parseConfig(cmdServe, []string{"-cache-dir=/from/flag"}, func(k string) string { return env[k] }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.CacheDir != "/from/flag" || !c.Debug || c.UploadTimeout.String() != "5s" {
		t.Fatalf("got %+v", c)
	}
	c, err = parseConfig(cmdServe, []string{"-debug=false"}, func(k string) string { return env[k] }, nil)
	if err != nil || c.Debug || c.CacheDir != "/from/env" {
		t.Fatalf("flag false over env true: %+v, %v", c, err)
	}
	c, err = parseConfig(cmdServe, nil, func(string) string { return "" }, nil)
	if err != nil || c.Backend != "disk" || c.CacheDir != filepath.Join(os.TempDir(), "gobuildcache") || c.S3Prefix != "gobuildcache/" {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
}

func TestBadConfigIsOneLineNamingFlagAndEnv(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{[]string{"-backend=tape"}, nil, []string{"-backend", "BACKEND_TYPE", "tape"}},
		{nil, map[string]string{"BACKEND_TYPE": "tape"}, []string{"-backend", "BACKEND_TYPE"}},
		{nil, map[string]string{"DEBUG": "maybe"}, []string{"-debug", "DEBUG", "maybe"}},
		{[]string{"-stats=maybe"}, nil, []string{"-stats", "PRINT_STATS"}},
		{[]string{"-upload-timeout=soon"}, nil, []string{"-upload-timeout", "UPLOAD_TIMEOUT"}},
		{[]string{"-backend=s3"}, nil, []string{"-s3-bucket", "S3_BUCKET"}},
		{[]string{"-no-such-flag"}, nil, []string{"-no-such-flag"}},
		{[]string{"frobnicate"}, nil, []string{"unknown command", "frobnicate"}},
		{[]string{"clear", "-local-only", "-remote-only"}, nil, []string{"-local-only", "-remote-only"}},
	}
	for _, tc := range cases {
		status, stdout, stderr := runMain(t, tc.args, tc.env, "")
		if status != 2 {
			t.Errorf("%v %v: exit %d, want 2", tc.args, tc.env, status)
		}
		if stdout != "" {
			t.Errorf("%v: wrote to stdout: %q", tc.args, stdout)
		}
		if strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: want one line, got %q", tc.args, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v: error %q does not mention %q", tc.args, stderr, w)
			}
		}
	}
}

func TestServeProtocolErrorExitsNonZero(t *testing.T) {
	dir := t.TempDir()
	stdin := getLine(1, actionID("a")) + `{"ID":2,"Command":` + "\n"
	status, stdout, stderr := runMain(t, []string{"-cache-dir=" + dir}, nil, stdin)
	if status == 0 {
		t.Fatal("exit 0 after malformed JSON")
	}
	if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "request 2") || !strings.Contains(stderr, "malformed JSON") {
		t.Errorf("stderr %q: want one line naming request 2", stderr)
	}
	// stdout holds only protocol JSON.
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var r Response
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Errorf("stdout line %q is not a response", line)
		}
	}
}

func TestServeStatsOutputs(t *testing.T) {
	dir := t.TempDir()
	statsJSON := filepath.Join(dir, "stats.json")
	summary := filepath.Join(dir, "summary.md")
	os.WriteFile(summary, []byte("earlier step\n"), 0o644)
	stdin := putLine(1, actionID("a"), outputID("body"), "body") + getLine(2, actionID("a")) + getLine(3, actionID("b")) + `{"ID":4,"Command":"close"}` + "\n"
	env := map[string]string{"GITHUB_STEP_SUMMARY": summary, "PRINT_STATS": "1", "DEBUG": "true"}
	status, stdout, stderr := runMain(t, []string{"-cache-dir=" + filepath.Join(dir, "c"), "-stats-json=" + statsJSON}, env, stdin)
	if status != 0 {
		t.Fatalf("exit %d: %s", status, stderr)
	}
	if n := strings.Count(stdout, "\n"); n != 5 {
		t.Errorf("want 5 reply lines, got %d: %s", n, stdout)
	}
	if !strings.Contains(stderr, "hit rate 50.0%") || !strings.Contains(stderr, "get latency") {
		t.Errorf("stats table missing from stderr:\n%s", stderr)
	}
	if n := strings.Count(stderr, "msg=request"); n != 3 {
		t.Errorf("debug: want one line per get/put request (3), got %d:\n%s", n, stderr)
	}
	var m map[string]any
	b, err := os.ReadFile(statsJSON)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]float64{"gets": 2, "hits": 1, "misses": 1, "puts": 1, "bytes_served": 4, "bytes_stored": 4} {
		if m[k] != want {
			t.Errorf("stats JSON %s = %v, want %v", k, m[k], want)
		}
	}
	md, _ := os.ReadFile(summary)
	if !strings.HasPrefix(string(md), "earlier step\n") || !strings.Contains(string(md), "\n\n"+jobSummaryTitle+jobSummaryHeader+"| `") || !strings.Contains(string(md), " | 2 | 50.0% | 1 | – | – | 1 | – | 0 | ") {
		t.Errorf("step summary:\n%s", md)
	}
}

func TestClearCommand(t *testing.T) {
	dir := t.TempDir()
	stdin := putLine(1, actionID("a"), outputID("body"), "body") + putLine(2, actionID("b"), outputID("xy"), "xy")
	if status, _, stderr := runMain(t, []string{"-cache-dir=" + dir}, nil, stdin); status != 0 {
		t.Fatal(stderr)
	}
	status, out, stderr := runMain(t, []string{"clear", "-cache-dir=" + dir}, nil, "")
	if status != 0 {
		t.Fatal(stderr)
	}
	if !strings.Contains(out, "2 entries") {
		t.Errorf("clear output %q", out)
	}
	status, out, _ = runMain(t, []string{"-cache-dir=" + dir}, nil, getLine(1, actionID("a")))
	if status != 0 || !strings.Contains(out, `"Miss":true`) {
		t.Errorf("after clear: %s", out)
	}
}
