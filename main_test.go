package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
			env := "env " + o.envName() + ", " // options newer than the original interface have no bare variable
			if o.bare != "" {
				env = "env " + o.envName() + " (or " + o.bare + ")"
			}
			if o.for_(cmdServe) && (!strings.Contains(out, "-"+o.flag) || !strings.Contains(out, env)) {
				t.Errorf("%v: help lacks -%s / %s / %s:\n%s", args, o.flag, o.envName(), o.bare, out)
			}
		}
		if !strings.Contains(out, `default "disk"`) {
			t.Errorf("help lacks defaults:\n%s", out)
		}
	}
	// prefetch takes the server's flags, to land what its servers would.
	status, out, _ := runMain(t, []string{"prefetch", "-h"}, nil, "")
	if status != 0 || !strings.HasPrefix(out, "usage: gobuildcache prefetch [flags]\n") {
		t.Fatalf("prefetch -h: exit %d\n%s", status, out)
	}
	for _, o := range options {
		if o.for_(cmdServe) != o.for_(cmdPrefetch) || o.for_(cmdPrefetch) && !strings.Contains(out, "-"+o.flag) {
			t.Errorf("prefetch -h: -%s is the server's (%v) or listed, not both", o.flag, o.for_(cmdServe))
		}
	}
	if _, help, _ := runMain(t, []string{"help"}, nil, ""); !strings.Contains(help, "  gobuildcache prefetch [flags]") {
		t.Errorf("help does not list the prefetch command:\n%s", help)
	}
	status, out, _ = runMain(t, []string{"clear", "-h"}, nil, "")
	if status != 0 {
		t.Fatalf("clear -h: exit %d", status)
	}
	for _, o := range options {
		if o.for_(cmdClear) && (!strings.Contains(out, "-"+o.flag) || !strings.Contains(out, o.envName())) {
			t.Errorf("clear -h lacks -%s / %s", o.flag, o.envName())
		}
	}
}

// TestConfigSources: a flag wins over the prefixed variable, which wins over
// the bare one, which wins over the default; an unusable value in a bare
// variable is ignored with a one-line warning naming it and the settings
// meant for gobuildcache; a bare variable that a flag or the prefixed
// variable overrides is not even read.
func TestConfigSources(t *testing.T) {
	def := defaultConfig()
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want func(c *Config) bool
		// warns has one entry per warning line: the strings it contains.
		warns [][]string
	}{
		{name: "defaults", want: func(c *Config) bool {
			return c.Backend == "disk" && c.CacheDir == filepath.Join(os.TempDir(), "gobuildcache") && c.S3Prefix == "gobuildcache/" && !c.Debug
		}},
		{name: "bare fallback",
			env: map[string]string{"CACHE_DIR": "/b", "DEBUG": "true", "BACKEND_TYPE": "s3", "S3_BUCKET": "bkt", "UPLOAD_TIMEOUT": "5s",
				"UPLOAD_CONCURRENCY": "3", "MAX_LOCAL_SIZE": "10GiB", "AWS_REGION": "eu-west-1", "COMPRESSION": "none", "S3_PREFIX": "p"},
			want: func(c *Config) bool {
				return c.CacheDir == "/b" && c.Debug && c.Backend == "s3" && c.S3Bucket == "bkt" && c.UploadTimeout == 5*time.Second &&
					c.UploadWorkers == 3 && c.MaxLocalSize == 10<<30 && c.S3Region == "eu-west-1" && c.Compression == "none" && c.S3Prefix == "p/"
			}},
		{name: "prefixed wins over bare",
			env: map[string]string{"GOBUILDCACHE_CACHE_DIR": "/p", "CACHE_DIR": "/b", "GOBUILDCACHE_BACKEND": "disk", "BACKEND_TYPE": "s3",
				"GOBUILDCACHE_S3_REGION": "us-west-2", "AWS_REGION": "eu-west-1", "GOBUILDCACHE_STATS": "1", "PRINT_STATS": "false",
				"GOBUILDCACHE_PREFETCH_PACKS": "false", "PREFETCH_PACKS": "true", "GOBUILDCACHE_PREDICT_MISSES": "false", "PREDICT_MISSES": "true"},
			want: func(c *Config) bool {
				return c.CacheDir == "/p" && c.Backend == "disk" && c.S3Region == "us-west-2" && c.Stats && !c.PrefetchPacks && !c.PredictMisses
			}},
		{name: "flag wins over both", args: []string{"-cache-dir=/f", "-debug=false"},
			env:  map[string]string{"GOBUILDCACHE_CACHE_DIR": "/p", "CACHE_DIR": "/b", "GOBUILDCACHE_DEBUG": "true", "DEBUG": "true"},
			want: func(c *Config) bool { return c.CacheDir == "/f" && !c.Debug }},
		{name: "overridden bad bare is not read", args: []string{"-debug"},
			env:  map[string]string{"DEBUG": "express:*", "GOBUILDCACHE_BACKEND": "disk", "BACKEND_TYPE": "docker"},
			want: func(c *Config) bool { return c.Debug && c.Backend == "disk" }},
		{name: "bad bare bool and enum",
			env:  map[string]string{"DEBUG": "express:*", "BACKEND_TYPE": "docker", "PREFETCH_PACKS": "sometimes", "PREDICT_MISSES": "maybe"},
			want: func(c *Config) bool { return !c.Debug && c.Backend == "disk" && c.PrefetchPacks && c.PredictMisses },
			warns: [][]string{
				{"ignoring BACKEND_TYPE=\"docker\"", "want disk or s3", "GOBUILDCACHE_BACKEND", "-backend"},
				{"ignoring DEBUG=\"express:*\"", "want true or false", "GOBUILDCACHE_DEBUG", "-debug"},
				{"ignoring PREFETCH_PACKS=\"sometimes\"", "want true or false", "GOBUILDCACHE_PREFETCH_PACKS", "-prefetch-packs"},
				{"ignoring PREDICT_MISSES=\"maybe\"", "want true or false", "GOBUILDCACHE_PREDICT_MISSES", "-predict-misses"},
			}},
		{name: "encryption and owner",
			env: map[string]string{"GOBUILDCACHE_BACKEND": "s3", "GOBUILDCACHE_S3_BUCKET": "bkt", "GOBUILDCACHE_S3_SSE": "aws:kms",
				"GOBUILDCACHE_S3_SSE_KMS_KEY_ID": "arn:aws:kms:us-east-1:111122223333:key/k", "GOBUILDCACHE_S3_EXPECTED_BUCKET_OWNER": "111122223333"},
			want: func(c *Config) bool {
				return c.S3SSE == "aws:kms" && c.S3SSEKMSKeyID == "arn:aws:kms:us-east-1:111122223333:key/k" && c.S3BucketOwner == "111122223333"
			}},
		{name: "bare s3 without a bucket",
			env:   map[string]string{"BACKEND_TYPE": "s3"},
			want:  func(c *Config) bool { return c.Backend == "disk" },
			warns: [][]string{{"ignoring BACKEND_TYPE=s3", "no bucket", "-s3-bucket", "GOBUILDCACHE_S3_BUCKET", "S3_BUCKET", "disk backend"}}},
		{name: "half an AWS key",
			env:   map[string]string{"GOBUILDCACHE_BACKEND": "s3", "GOBUILDCACHE_S3_BUCKET": "bkt", "GOBUILDCACHE_AWS_ACCESS_KEY_ID": "AKIA", "GOBUILDCACHE_AWS_SECRET_ACCESS_KEY": ""},
			want:  func(c *Config) bool { return c.Backend == "s3" && credentialsOf(c) == nil },
			warns: [][]string{{"ignoring GOBUILDCACHE_AWS_ACCESS_KEY_ID", "GOBUILDCACHE_AWS_SECRET_ACCESS_KEY is not set", "the AWS SDK's own credentials"}}},
		{name: "half an AWS key on the disk backend", env: map[string]string{"GOBUILDCACHE_AWS_SECRET_ACCESS_KEY": "s"},
			want: func(c *Config) bool { return c.Backend == "disk" }},
		{name: "bare int, duration, size out of range or unparsable",
			env: map[string]string{"UPLOAD_CONCURRENCY": "0", "LOCAL_MAX_AGE": "30m", "S3_TIMEOUT": "soon", "MAX_LOCAL_SIZE": "lots", "PREFETCH_CONCURRENCY": "many"},
			want: func(c *Config) bool {
				return c.UploadWorkers == def.UploadWorkers && c.LocalMaxAge == def.LocalMaxAge && c.S3Timeout == def.S3Timeout &&
					c.MaxLocalSize == def.MaxLocalSize && c.PrefetchConcurrency == def.PrefetchConcurrency
			},
			warns: [][]string{
				{"S3_TIMEOUT=\"soon\"", "GOBUILDCACHE_S3_TIMEOUT"},
				{"UPLOAD_CONCURRENCY=\"0\"", "from 1 to 1024", "GOBUILDCACHE_UPLOAD_CONCURRENCY"},
				{"PREFETCH_CONCURRENCY=\"many\"", "GOBUILDCACHE_PREFETCH_CONCURRENCY"},
				{"MAX_LOCAL_SIZE=\"lots\"", "GOBUILDCACHE_MAX_LOCAL_SIZE"},
				{"LOCAL_MAX_AGE=\"30m\"", "at least 1h", "GOBUILDCACHE_LOCAL_MAX_AGE"},
			}},
		{name: "bare strings that cannot be used",
			env: map[string]string{"S3_ENDPOINT": "localhost:9000", "S3_PREFIX": "/abs", "COMPRESSION": "gzip", "UPLOAD_TIMEOUT": "-1s"},
			want: func(c *Config) bool {
				return c.S3Endpoint == "" && c.S3Prefix == def.S3Prefix && c.Compression == "zstd" && c.UploadTimeout == def.UploadTimeout
			},
			warns: [][]string{
				{"S3_PREFIX=\"/abs\"", "GOBUILDCACHE_S3_PREFIX"},
				{"S3_ENDPOINT=\"localhost:9000\"", "want a URL", "GOBUILDCACHE_S3_ENDPOINT"},
				{"UPLOAD_TIMEOUT=\"-1s\"", "GOBUILDCACHE_UPLOAD_TIMEOUT"},
				{"COMPRESSION=\"gzip\"", "GOBUILDCACHE_COMPRESSION"},
			}},
		{name: "bare bucket that is no bucket's name",
			env:   map[string]string{"BACKEND_TYPE": "s3", "S3_BUCKET": "s3://cache"},
			want:  func(c *Config) bool { return c.Backend == "disk" && c.S3Bucket == "" },
			warns: [][]string{{"S3_BUCKET=\"s3://cache\"", "not a bucket name", "GOBUILDCACHE_S3_BUCKET"}, {"ignoring BACKEND_TYPE=s3", "no bucket"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(cmdServe, tc.args, func(k string) string { return tc.env[k] }, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(c) {
				t.Errorf("got %+v", c)
			}
			if len(c.Warnings) != len(tc.warns) {
				t.Fatalf("warnings %q, want %d", c.Warnings, len(tc.warns))
			}
			for i, w := range c.Warnings { // in the order of the options
				if strings.Contains(w, "\n") {
					t.Errorf("warning %q is not one line", w)
				}
				for _, sub := range tc.warns[i] {
					if !strings.Contains(w, sub) {
						t.Errorf("warning %q does not mention %q", w, sub)
					}
				}
			}
		})
	}
}

// TestBareWarningsDoNotStopTheServer: the warnings reach stderr, one line
// each, and the server serves.
func TestBareWarningsDoNotStopTheServer(t *testing.T) {
	env := map[string]string{"DEBUG": "express:*", "BACKEND_TYPE": "docker", "CACHE_DIR": t.TempDir()}
	stdin := putLine(1, actionID("a"), outputID("body"), "body") + getLine(2, actionID("a")) + `{"ID":3,"Command":"close"}` + "\n"
	status, stdout, stderr := runMain(t, nil, env, stdin)
	if status != 0 {
		t.Fatalf("exit %d: %s", status, stderr)
	}
	want := "gobuildcache: warning: ignoring BACKEND_TYPE=\"docker\": want disk or s3 (gobuildcache's own setting is GOBUILDCACHE_BACKEND or -backend)\n" +
		"gobuildcache: warning: ignoring DEBUG=\"express:*\": want true or false (gobuildcache's own setting is GOBUILDCACHE_DEBUG or -debug)\n"
	if stderr != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, want)
	}
	if !strings.Contains(stdout, `"ID":2,"OutputID"`) {
		t.Errorf("no hit: %s", stdout)
	}
}

func TestBadConfigIsOneLineNamingFlagAndEnv(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{[]string{"-backend=tape"}, nil, []string{"-backend", "GOBUILDCACHE_BACKEND", "tape"}},
		{nil, map[string]string{"GOBUILDCACHE_BACKEND": "tape"}, []string{"-backend", "GOBUILDCACHE_BACKEND", "tape"}},
		{nil, map[string]string{"GOBUILDCACHE_BACKEND": "tape", "BACKEND_TYPE": "disk"}, []string{"-backend", "GOBUILDCACHE_BACKEND"}},
		{nil, map[string]string{"GOBUILDCACHE_DEBUG": "express:*"}, []string{"-debug", "GOBUILDCACHE_DEBUG", "express:*"}},
		{[]string{"-stats=maybe"}, nil, []string{"-stats", "GOBUILDCACHE_STATS"}},
		{[]string{"-upload-timeout=soon"}, nil, []string{"-upload-timeout", "GOBUILDCACHE_UPLOAD_TIMEOUT"}},
		{[]string{"-upload-concurrency=0"}, nil, []string{"-upload-concurrency", "GOBUILDCACHE_UPLOAD_CONCURRENCY", "1 to 1024"}},
		{nil, map[string]string{"GOBUILDCACHE_UPLOAD_CONCURRENCY": "2000"}, []string{"-upload-concurrency", "GOBUILDCACHE_UPLOAD_CONCURRENCY", "2000"}},
		{nil, map[string]string{"GOBUILDCACHE_LOCAL_MAX_AGE": "1m"}, []string{"-local-max-age", "GOBUILDCACHE_LOCAL_MAX_AGE", "at least 1h"}},
		{[]string{"-max-local-size=lots"}, nil, []string{"-max-local-size", "GOBUILDCACHE_MAX_LOCAL_SIZE"}},
		{nil, map[string]string{"GOBUILDCACHE_S3_ENDPOINT": "localhost:9000"}, []string{"-s3-endpoint", "GOBUILDCACHE_S3_ENDPOINT"}},
		{[]string{"-s3-prefix=../x"}, nil, []string{"-s3-prefix", "GOBUILDCACHE_S3_PREFIX"}},
		{[]string{"-cache-dir="}, nil, []string{"-cache-dir", "GOBUILDCACHE_CACHE_DIR"}},
		{[]string{"-backend=s3"}, nil, []string{"-s3-bucket", "GOBUILDCACHE_S3_BUCKET"}},
		{[]string{"-backend=s3", "-s3-bucket=a/b"}, nil, []string{"-s3-bucket", "GOBUILDCACHE_S3_BUCKET", `"a/b"`, "not a bucket name"}},
		{nil, map[string]string{"GOBUILDCACHE_S3_BUCKET": "my bucket"}, []string{"-s3-bucket", "GOBUILDCACHE_S3_BUCKET", "not a bucket name"}},
		{[]string{"check", "-backend=s3", "-s3-bucket=arn:aws:s3:us-east-1:111122223333:accesspoint/ci"}, nil, []string{"-s3-bucket", "GOBUILDCACHE_S3_BUCKET", "an ARN", "alias"}},
		{nil, map[string]string{"GOBUILDCACHE_BACKEND": "s3"}, []string{"-s3-bucket", "GOBUILDCACHE_S3_BUCKET"}},
		{[]string{"-no-such-flag"}, nil, []string{"-no-such-flag"}},
		{[]string{"frobnicate"}, nil, []string{"unknown command", "frobnicate"}},
		{[]string{"clear", "-local-only", "-remote-only"}, nil, []string{"-local-only (GOBUILDCACHE_LOCAL_ONLY)", "-remote-only (GOBUILDCACHE_REMOTE_ONLY)"}},
		{[]string{"clear", "-remote-only"}, nil, []string{"-remote-only (GOBUILDCACHE_REMOTE_ONLY)", "-backend=s3 (GOBUILDCACHE_BACKEND)"}},
		{[]string{"clear", "-remote-only"}, map[string]string{"BACKEND_TYPE": "disk"}, []string{"-remote-only (GOBUILDCACHE_REMOTE_ONLY)", "-backend=s3 (BACKEND_TYPE)"}},
		{[]string{"clear", "-backend=s3", "-s3-bucket=bkt", "-s3-prefix=", "-s3-endpoint=http://127.0.0.1:1", "-cache-dir=" + os.DevNull + "/x"}, nil, []string{"-s3-prefix (GOBUILDCACHE_S3_PREFIX)", "-all-prefixes (GOBUILDCACHE_ALL_PREFIXES)"}},
		{[]string{"check"}, nil, []string{"-backend=s3 (GOBUILDCACHE_BACKEND)", "-s3-bucket (GOBUILDCACHE_S3_BUCKET)"}},
		{nil, map[string]string{"GOBUILDCACHE_S3_EXPECTED_BUCKET_OWNER": "my-account"}, []string{"-s3-expected-bucket-owner", "GOBUILDCACHE_S3_EXPECTED_BUCKET_OWNER", "12 digits"}},
		{[]string{"-s3-sse=aes256"}, nil, []string{"-s3-sse", "GOBUILDCACHE_S3_SSE", "AES256 or aws:kms or aws:kms:dsse"}},
		{nil, map[string]string{"GOBUILDCACHE_S3_SSE_KMS_KEY_ID": "alias/ci"}, []string{"-s3-sse-kms-key-id (GOBUILDCACHE_S3_SSE_KMS_KEY_ID)", "-s3-sse=aws:kms or aws:kms:dsse (GOBUILDCACHE_S3_SSE)"}},
		{[]string{"-s3-sse=AES256", "-s3-sse-kms-key-id=k"}, nil, []string{"-s3-sse-kms-key-id (GOBUILDCACHE_S3_SSE_KMS_KEY_ID)", "-s3-sse=aws:kms"}},
		{[]string{"-backend=s3", "-s3-bucket=cache--use1-az4--x-s3", "-s3-sse=aws:kms"}, nil, []string{"-s3-sse (GOBUILDCACHE_S3_SSE)", "general purpose buckets", "cache--use1-az4--x-s3"}},
		// clear is run by hand: ignoring either would widen what it deletes.
		{[]string{"clear"}, map[string]string{"CLEAR_LOCAL_ONLY": "1", "CLEAR_REMOTE_ONLY": "1"}, []string{"-local-only (CLEAR_LOCAL_ONLY)", "-remote-only (CLEAR_REMOTE_ONLY)"}},
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
			t.Errorf("%v %v: want one line, got %q", tc.args, tc.env, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v %v: error %q does not mention %q", tc.args, tc.env, stderr, w)
			}
		}
	}
}

// TestWarningsBeforeTheError: a bare variable ignored with a warning may
// be why the settings then do not go together; the warning comes first.
func TestWarningsBeforeTheError(t *testing.T) {
	status, stdout, stderr := runMain(t, nil, map[string]string{"GOBUILDCACHE_BACKEND": "s3", "S3_BUCKET": "arn:aws:s3:::mybucket"}, "")
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if status != 2 || stdout != "" || len(lines) != 2 ||
		!strings.Contains(lines[0], "warning: ignoring S3_BUCKET=") || !strings.Contains(lines[1], "-s3-bucket (GOBUILDCACHE_S3_BUCKET)") {
		t.Errorf("exit %d, stdout %q, stderr %q: want the warning about S3_BUCKET, then the error naming -s3-bucket, exit 2", status, stdout, stderr)
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

// TestStatsJSONOfServersAtOnce: go commands that end at once with one
// -stats-json file (a job-wide GOBUILDCACHE_STATS_JSON, a go command run
// by a test) leave one of them whole in it, never parts of two; and a
// file named through a link is written where the link leads.
func TestStatsJSONOfServersAtOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stats.json")
	for round := range 300 {
		var wg sync.WaitGroup
		for w := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var snap StatsSnapshot
				snap.Errors = map[string]int64{strings.Repeat("x", 50+100*w): int64(round)} // lengths differ
				if err := snap.WriteJSONFile(path); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(b) {
			t.Fatalf("round %d: %s is not one JSON object:\n%s", round, path, b)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d files left in %s, want 1", len(ents), dir)
	}
	target := filepath.Join(t.TempDir(), "target.json")
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := (StatsSnapshot{}).WriteJSONFile(link); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(target); err != nil || !json.Valid(b) {
		t.Errorf("through a link: %q, %v", b, err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the link was replaced: %v, %v", fi, err)
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

	// With the default directory writable by every user, the server uses
	// the user's own, and clear clears that one.
	tmp, home := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv("XDG_CACHE_HOME", home)
	t.Setenv("HOME", home)
	if err := os.Mkdir(filepath.Join(tmp, "gobuildcache"), 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(tmp, "gobuildcache"), 0o777)
	if status, _, stderr := runMain(t, nil, nil, stdin); status != 0 {
		t.Fatal(stderr)
	}
	u, _ := userCacheDir()
	status, out, stderr = runMain(t, []string{"clear"}, nil, "")
	if status != 0 || !strings.HasPrefix(out, "cleared local cache "+u+": 2 entries, ") {
		t.Errorf("clear of the default: exit %d, %q %q; want the user's own %s cleared", status, out, stderr, u)
	}
}

// TestClearRemoteOnlyLeavesTheLocalDirAlone: clear -remote-only clears the
// bucket alone, so the local cache directory plays no part: one that
// cannot be used (CACHE_DIR set by another program to a file, a path that
// cannot be made) is no reason to leave the bucket as it is, and none is
// made.
// clearS3 is an S3 endpoint for clear: its listing names one object under
// p/, and deletes counts the DeleteObjects it is sent.
func clearS3(t *testing.T) (url string, deletes *atomic.Int32) {
	deletes = new(atomic.Int32)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Query().Get("list-type") == "2":
			w.Header().Set("Content-Type", "application/xml")
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bkt</Name><KeyCount>1</KeyCount><IsTruncated>false</IsTruncated><Contents><Key>p/v1/a/00</Key><Size>5</Size></Contents></ListBucketResult>`)
		case r.Method == http.MethodPost && r.URL.Query().Has("delete"):
			deletes.Add(1)
			w.Header().Set("Content-Type", "application/xml")
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Deleted><Key>p/v1/a/00</Key></Deleted></DeleteResult>`)
		default:
			writeShimError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL, deletes
}

func TestClearRemoteOnlyLeavesTheLocalDirAlone(t *testing.T) {
	url, deletes := clearS3(t)
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	notMade := filepath.Join(t.TempDir(), "not-made")
	for _, dir := range []string{file, notMade} {
		deletes.Store(0)
		env := map[string]string{"CACHE_DIR": dir, "GOBUILDCACHE_AWS_ACCESS_KEY_ID": "k", "GOBUILDCACHE_AWS_SECRET_ACCESS_KEY": "s"}
		status, out, stderr := runMain(t, []string{"clear", "-remote-only", "-backend=s3", "-s3-bucket=bkt", "-s3-prefix=p/",
			"-s3-endpoint=" + url, "-s3-path-style", "-s3-region=us-east-1"}, env, "")
		if status != 0 || !strings.Contains(out, "cleared s3://bkt/p/: 1 objects") || deletes.Load() != 1 {
			t.Errorf("clear -remote-only with CACHE_DIR=%s: exit %d, %q %q, %d deletes; want the bucket cleared", dir, status, out, stderr, deletes.Load())
		}
	}
	if _, err := os.Stat(notMade); err == nil {
		t.Errorf("clear -remote-only made the local cache directory %s", notMade)
	}
}

// TestClearRefusesTheRemoteWhenReadOnly: -read-only says never to write
// to the remote cache, and clear deleting everything under the prefix is
// writing it: with -read-only set, by flag or variable, clear refuses to
// touch the bucket (one line naming the setting) and deletes nothing
// there; with -local-only it clears the local directory as ever.
func TestClearRefusesTheRemoteWhenReadOnly(t *testing.T) {
	url, deletes := clearS3(t)
	remote := []string{"clear", "-backend=s3", "-s3-bucket=bkt", "-s3-prefix=p/", "-s3-endpoint=" + url, "-s3-path-style", "-s3-region=us-east-1"}
	creds := map[string]string{"GOBUILDCACHE_AWS_ACCESS_KEY_ID": "k", "GOBUILDCACHE_AWS_SECRET_ACCESS_KEY": "s"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		name string // what the error names
	}{
		{[]string{"-read-only"}, nil, "-read-only (GOBUILDCACHE_READ_ONLY)"},
		{nil, map[string]string{"GOBUILDCACHE_READ_ONLY": "true"}, "-read-only (GOBUILDCACHE_READ_ONLY)"},
		{nil, map[string]string{"READ_ONLY": "1"}, "-read-only (READ_ONLY)"},
		{[]string{"-remote-only"}, map[string]string{"GOBUILDCACHE_READ_ONLY": "true"}, "-read-only (GOBUILDCACHE_READ_ONLY)"},
	} {
		env := map[string]string{"CACHE_DIR": t.TempDir()}
		for k, v := range creds {
			env[k] = v
		}
		for k, v := range tc.env {
			env[k] = v
		}
		deletes.Store(0)
		status, out, stderr := runMain(t, append(append([]string{}, remote...), tc.args...), env, "")
		if status != 2 || deletes.Load() != 0 || !strings.Contains(stderr, tc.name) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("clear %v with %v: exit %d, %q %q, %d deletes; want exit 2, one line naming %s, nothing deleted", tc.args, tc.env, status, out, stderr, deletes.Load(), tc.name)
		}
		deletes.Store(0)
		status, out, stderr = runMain(t, append(append([]string{}, remote...), append(tc.args, "-local-only")...), env, "")
		if wantLocal := !slices.Contains(tc.args, "-remote-only"); wantLocal && (status != 0 || deletes.Load() != 0 || !strings.HasPrefix(out, "cleared local cache ")) {
			t.Errorf("clear -local-only %v with %v: exit %d, %q %q, %d deletes; want the local directory cleared alone", tc.args, tc.env, status, out, stderr, deletes.Load())
		}
	}
	// Without it, the same clear deletes.
	deletes.Store(0)
	status, out, stderr := runMain(t, remote, map[string]string{"CACHE_DIR": t.TempDir(), "GOBUILDCACHE_AWS_ACCESS_KEY_ID": "k", "GOBUILDCACHE_AWS_SECRET_ACCESS_KEY": "s"}, "")
	if status != 0 || deletes.Load() != 1 {
		t.Errorf("clear: exit %d, %q %q, %d deletes", status, out, stderr, deletes.Load())
	}
}

// TestServeFallsBackFromAnUnusableCacheDir: a cache directory the server
// cannot use, whatever set it, is one warning line naming what set it and
// where the server went instead, and the go command's requests are served:
// the default directory, else the user's own under os.UserCacheDir, else a
// temporary one removed at exit. The default, in the temp dir every user
// shares, is not used unless it is this user's alone (on Unix).
func TestServeFallsBackFromAnUnusableCacheDir(t *testing.T) {
	tmp, home := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv("XDG_CACHE_HOME", home)
	t.Setenv("HOME", home)
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	userDir := filepath.Join(home, "gobuildcache")
	if ucd, err := os.UserCacheDir(); err == nil {
		userDir = filepath.Join(ucd, "gobuildcache") // macOS, Windows
	}
	stdin := putLine(1, actionID("a"), outputID("body"), "body") + getLine(2, actionID("a")) + `{"ID":3,"Command":"close"}` + "\n"
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		block []string // made files, so that these directories cannot be used
		setup func(t *testing.T, dflt string)
		want  []string // in the one warning line
		in    string   // the directory the entry went to, "" for a temporary one
	}{
		{name: "bare variable", env: map[string]string{"CACHE_DIR": notADir},
			want: []string{"cache directory of CACHE_DIR", notADir, "using " + filepath.Join(tmp, "gobuildcache")}, in: filepath.Join(tmp, "gobuildcache")},
		{name: "prefixed variable", env: map[string]string{"GOBUILDCACHE_CACHE_DIR": notADir},
			want: []string{"cache directory of GOBUILDCACHE_CACHE_DIR", notADir}, in: filepath.Join(tmp, "gobuildcache")},
		{name: "flag", args: []string{"-cache-dir=" + notADir},
			want: []string{"cache directory of -cache-dir", notADir}, in: filepath.Join(tmp, "gobuildcache")},
		{name: "the default, made by someone else", block: []string{filepath.Join(tmp, "gobuildcache")},
			want: []string{"cache directory of the default", "using " + userDir}, in: userDir},
		{name: "the default, writable by every user", setup: func(t *testing.T, dflt string) {
			if err := os.Mkdir(dflt, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dflt, 0o777); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"cache directory of the default", "writable by every user", "using " + userDir}, in: userDir},
		{name: "the default, a link", setup: func(t *testing.T, dflt string) {
			if err := os.Symlink(t.TempDir(), dflt); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"cache directory of the default", "symbolic link", "using " + userDir}, in: userDir},
		{name: "the default, another user's", setup: func(t *testing.T, dflt string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root, to give the directory to another user")
			}
			if err := os.Mkdir(dflt, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dflt, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"cache directory of the default", "belongs to another user (uid 65534)", "using " + userDir}, in: userDir},
		{name: "a path that is not UTF-8", args: []string{"-cache-dir=" + filepath.Join(tmp, "cache-\xff")},
			want: []string{"cache directory of -cache-dir", "not UTF-8", "using " + filepath.Join(tmp, "gobuildcache")}, in: filepath.Join(tmp, "gobuildcache")},
		{name: "nothing usable but a temporary directory", env: map[string]string{"CACHE_DIR": notADir},
			block: []string{filepath.Join(tmp, "gobuildcache"), userDir},
			want:  []string{"cache directory of CACHE_DIR", notADir, filepath.Join(tmp, "gobuildcache"), userDir, "for this go command alone"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, b := range tc.block {
				os.RemoveAll(b)
				if err := os.WriteFile(b, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.Remove(b) })
			}
			if tc.setup != nil {
				dflt := filepath.Join(tmp, "gobuildcache")
				os.RemoveAll(dflt)
				tc.setup(t, dflt)
				t.Cleanup(func() { os.RemoveAll(dflt) })
			}
			before, _ := filepath.Glob(filepath.Join(tmp, "gobuildcache-*"))
			status, stdout, stderr := runMain(t, tc.args, tc.env, stdin)
			if status != 0 {
				t.Fatalf("exit %d: %s", status, stderr)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "gobuildcache: warning: ") {
				t.Errorf("stderr %q: want one warning line", stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("warning %q does not mention %q", stderr, w)
				}
			}
			if !strings.Contains(stdout, `"ID":2,"OutputID"`) {
				t.Errorf("no hit: %s", stdout)
			}
			if tc.in != "" {
				// Every path the go command is given names the file.
				for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
					var r Response
					json.Unmarshal([]byte(line), &r)
					if _, err := os.Stat(r.DiskPath); r.DiskPath != "" && err != nil {
						t.Errorf("reply %d: DiskPath %q: %v", r.ID, r.DiskPath, err)
					}
				}
				if records, _ := filepath.Glob(filepath.Join(tc.in, "v1", "a", "*", "*")); len(records) != 1 {
					t.Errorf("%d records in %s, want 1", len(records), tc.in)
				}
				os.RemoveAll(tc.in)
			}
			if after, _ := filepath.Glob(filepath.Join(tmp, "gobuildcache-*")); len(after) != len(before) {
				t.Errorf("temporary directories %v left after exit (before: %v)", after, before)
			}
		})
	}
}

// TestServeWithAnAWSConfigThatDoesNotLoad: the AWS SDK's own settings in the
// environment, often meant for another step of the job (here AWS_PROFILE
// naming a profile this machine lacks), turn the remote off for the go
// command with one warning line; the build is served from the local cache.
// check fails on them.
func TestServeWithAnAWSConfigThatDoesNotLoad(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "aws-config")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_CONFIG_FILE", empty)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", empty)
	t.Setenv("AWS_PROFILE", "gobuildcache-test-no-such-profile")
	statsJSON := filepath.Join(dir, "stats.json")
	args := []string{"-backend=s3", "-s3-bucket=bkt", "-s3-endpoint=http://127.0.0.1:1", "-cache-dir=" + filepath.Join(dir, "cache"), "-stats-json=" + statsJSON}
	stdin := putLine(1, actionID("a"), outputID("body"), "body") + getLine(2, actionID("a")) + `{"ID":3,"Command":"close"}` + "\n"
	status, stdout, stderr := runMain(t, args, nil, stdin)
	if status != 0 {
		t.Fatalf("exit %d: %s", status, stderr)
	}
	if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "AWS configuration does not load") || !strings.Contains(stderr, "gobuildcache-test-no-such-profile") {
		t.Errorf("stderr %q: want one warning line naming the profile", stderr)
	}
	if !strings.Contains(stdout, `"ID":2,"OutputID"`) {
		t.Errorf("no local hit: %s", stdout)
	}
	var snap StatsSnapshot
	if b, err := os.ReadFile(statsJSON); err != nil || json.Unmarshal(b, &snap) != nil {
		t.Fatalf("stats JSON: %v", err)
	}
	if snap.RemoteErrorsByKind["config"] != 1 || snap.Hits != 1 {
		t.Errorf("remote errors %v, hits %d: want one config error and the hit", snap.RemoteErrorsByKind, snap.Hits)
	}

	// check, which is asked about the remote, fails on it: the version
	// first, then one line.
	status, stdout, stderr = runMain(t, []string{"check", "-backend=s3", "-s3-bucket=bkt", "-s3-endpoint=http://127.0.0.1:1"}, nil, "")
	if status != 1 || !strings.HasPrefix(stdout, "version:     gobuildcache ") || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "gobuildcache-test-no-such-profile") {
		t.Errorf("check: exit %d, stdout %q, stderr %q: want 1, the version, one line naming the profile", status, stdout, stderr)
	}
}

// TestCollectGarbage: GOGC=off in the environment does not reach the
// server's heap; any other setting stays.
func TestCollectGarbage(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	collectGarbage()
	if got := debug.SetGCPercent(250); got != 100 {
		t.Errorf("with the collector off: GOGC %d after collectGarbage, want 100", got)
	}
	collectGarbage()
	if got := debug.SetGCPercent(100); got != 250 {
		t.Errorf("with GOGC=250: %d after collectGarbage, want 250 kept", got)
	}
}

// TestPrefetchCommandWithoutARemote: the prefetch command on the disk
// backend has nothing to land and says so, exit 0; a bad flag is one line
// naming it and its variable, exit 2, as for the server.
func TestPrefetchCommandWithoutARemote(t *testing.T) {
	status, _, stderr := runMain(t, []string{"prefetch", "-cache-dir=" + t.TempDir()}, nil, "")
	if status != 0 || stderr != "gobuildcache prefetch: nothing to do: it lands a remote cache's entries (-backend=s3, -prefetch)\n" {
		t.Errorf("prefetch on the disk backend: exit %d, %q", status, stderr)
	}
	status, _, stderr = runMain(t, []string{"prefetch", "-prefetch-concurrency=many"}, nil, "")
	if status != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "-prefetch-concurrency") || !strings.Contains(stderr, "GOBUILDCACHE_PREFETCH_CONCURRENCY") {
		t.Errorf("prefetch with a bad flag: exit %d, %q", status, stderr)
	}
}

// TestClearRefusesUnusableBareSettings: clear is run by hand and
// deletes; config.go's own rule for it is that "ignoring any of these would
// widen what clear deletes". An unusable CLEAR_LOCAL_ONLY (a "yes" for
// true) or S3_PREFIX (a leading "/") must not be ignored by clear: ignoring
// the first deletes the shared remote cache the user asked to keep, and
// ignoring the second deletes s3://BUCKET/gobuildcache/, a location the
// user never named.
func TestClearRefusesUnusableBareSettings(t *testing.T) {
	args := []string{"-backend=s3", "-s3-bucket=bkt"}
	for _, env := range []map[string]string{
		{"CLEAR_LOCAL_ONLY": "yes"},
		{"CLEAR_LOCAL_ONLY": "on"},
		{"S3_PREFIX": "/team/cache/"},
		{"S3_PREFIX": "team//cache/"},
	} {
		c, err := parseConfig(cmdClear, args, func(k string) string { return env[k] }, nil)
		if err != nil {
			continue // refused: good
		}
		remoteCleared := c.Backend == "s3" && !c.LocalOnly
		if remoteCleared {
			t.Errorf("clear %v with %v: accepted (warnings %q); it would delete s3://%s/%s (local-only %v)",
				args, env, c.Warnings, c.S3Bucket, c.S3Prefix, c.LocalOnly)
		}
	}
}

// TestFlagsS3CanNeverTake: README: "A flag or a GOBUILDCACHE_
// variable is meant for gobuildcache alone, so a bad value there stops the
// program with one line naming the flag and the variable, and exit status
// 2." A region no endpoint can be built from, and a prefix that is not
// UTF-8 (S3 keys are UTF-8), are accepted; the go command then runs with a
// remote that fails every request.
func TestFlagsS3CanNeverTake(t *testing.T) {
	for _, args := range [][]string{
		{"-backend=s3", "-s3-bucket=bkt", "-s3-region=us east 1"},
		{"-backend=s3", "-s3-bucket=bkt", "-s3-region=eu-west-1\t"},
		{"-backend=s3", "-s3-bucket=bkt", "-s3-prefix=caf\xe9/"},
	} {
		status, _, stderr := runMain(t, append(args, "-cache-dir="+t.TempDir()), nil, `{"ID":1,"Command":"close"}`+"\n")
		if status != 2 {
			t.Errorf("%q: exit %d (stderr %q), want 2 and one line naming the flag", args, status, stderr)
		}
	}
}

// TestUnusableBareEndpointTurnsTheRemoteOff: an S3_ENDPOINT that cannot be
// used (host:port without a scheme, meant for MinIO) must not send the
// cache to AWS S3, to a bucket of that name anyone may own; nor may an
// unusable S3_PREFIX move it to the default prefix. The remote is off,
// with a warning, as for BACKEND_TYPE=s3 without a bucket.
func TestUnusableBareEndpointTurnsTheRemoteOff(t *testing.T) {
	for _, env := range []map[string]string{
		{"BACKEND_TYPE": "s3", "S3_BUCKET": "gobuildcache", "S3_ENDPOINT": "minio.internal:9000"},
		{"BACKEND_TYPE": "s3", "S3_BUCKET": "gobuildcache", "S3_PREFIX": "/team/cache/"},
	} {
		cfg, err := parseConfig(cmdServe, nil, func(k string) string { return env[k] }, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Backend != "disk" {
			t.Errorf("%v: backend %s, prefix %q, endpoint %q (warnings %q); want the disk backend", env, cfg.Backend, cfg.S3Prefix, cfg.S3Endpoint, cfg.Warnings)
		}
		if w := strings.Join(cfg.Warnings, "\n"); !strings.Contains(w, "remote cache off") {
			t.Errorf("%v: warnings %q say nothing of the remote being off", env, cfg.Warnings)
		}
	}
}
