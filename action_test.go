package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// runActionSetup runs the GitHub Action's script (action/setup.sh) as the
// runner would, with fake GITHUB_* files, and returns its exit error and
// output, and the runner's temp dir.
func runActionSetup(t *testing.T, workspace string, inputs map[string]string) (err error, out, runnerTemp string) {
	t.Helper()
	root, _ := os.Getwd()
	runnerTemp = t.TempDir()
	err, out = runActionSetupIn(t, runnerTemp, root, workspace, inputs)
	return err, out, runnerTemp
}

// runActionSetupIn is runActionSetup with the runner's temp dir and the
// action's checkout given.
func runActionSetupIn(t *testing.T, runnerTemp, actionPath, workspace string, inputs map[string]string) (err error, out string) {
	t.Helper()
	root, _ := os.Getwd()
	cmd := exec.Command("bash", filepath.Join(root, "action", "setup.sh"))
	cmd.Env = append(os.Environ(),
		"GITHUB_ACTION_PATH="+actionPath, "GITHUB_WORKSPACE="+workspace, "RUNNER_TEMP="+runnerTemp,
		"GITHUB_ENV="+filepath.Join(runnerTemp, "env"), "GITHUB_PATH="+filepath.Join(runnerTemp, "path"),
		"GITHUB_STEP_SUMMARY="+filepath.Join(runnerTemp, "summary"))
	for k, v := range inputs {
		cmd.Env = append(cmd.Env, "INPUT_"+k+"="+v)
	}
	b, err := cmd.CombinedOutput()
	return err, string(b)
}

func readOr(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func TestActionSetup(t *testing.T) {
	skipIfShortE2E(t) // it builds the binary with the go command
	repo := gitRepo(t, map[string]string{"go.mod": "module m\n", "testdata/in.txt": "in\n"})

	t.Run("s3", func(t *testing.T) {
		t.Setenv("GITHUB_ACTION_REF", "v9.8.7")
		err, out, tmp := runActionSetup(t, repo, map[string]string{
			"S3_BUCKET": "my-bucket", "AWS_REGION": "eu-west-1", "READ_ONLY": "true", "S3_PATH_STYLE": "false", "S3_READ_FROM": "s3://trusted/gobuildcache/main/",
			"PREFETCH_SCOPE": "ci / test's", "CACHE_DIR": "/cache dir", "STATS": "true", "MTIMES": "true",
			"WORKING_DIRECTORY": ".", "FLAGS": "-debug  -upload-concurrency=4",
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !strings.Contains(out, "\ngobuildcache ") && !strings.HasPrefix(out, "gobuildcache ") || !strings.Contains(out, " (action ref v9.8.7)\n") {
			t.Errorf("output lacks the version line with the action's ref:\n%s", out)
		}
		if strings.Contains(out, "::warning::") {
			t.Errorf("a warning with a go command that knows GOCACHEPROG:\n%s", out)
		}
		bin := filepath.Join(tmp, "gobuildcache", "gobuildcache")
		want := "GOCACHEPROG=" + bin + ` -backend=s3 -s3-bucket=my-bucket -s3-region=eu-west-1 -s3-read-from=s3://trusted/gobuildcache/main/ -read-only=true "-prefetch-scope=ci / test's" '-cache-dir=/cache dir' -stats=true -debug -upload-concurrency=4` + "\n"
		if got := readOr(filepath.Join(tmp, "env")); got != want {
			t.Errorf("GITHUB_ENV:\n%s\nwant:\n%s", got, want)
		}
		if got := readOr(filepath.Join(tmp, "path")); got != filepath.Dir(bin)+"\n" {
			t.Errorf("GITHUB_PATH: %q", got)
		}
		if out, err := exec.Command(bin, "help").Output(); err != nil || !strings.Contains(string(out), "mtimes") {
			t.Errorf("the installed binary: %v\n%s", err, out)
		}
		summary := readOr(filepath.Join(tmp, "summary"))
		if !strings.HasPrefix(summary, "gobuildcache mtimes: 2 files, 2 directories, 0 symlinks in ") || strings.Count(summary, "\n") != 1 {
			t.Errorf("step summary %q", summary)
		}
		fi, err := os.Stat(filepath.Join(repo, "testdata", "in.txt"))
		if err != nil || fi.ModTime().After(mtimeEpoch.Add(time.Duration(mtimeSpan))) {
			t.Errorf("the workspace has no content mtimes: %v %v", fi.ModTime(), err)
		}
	})

	t.Run("prefetch early", func(t *testing.T) {
		// The prefetch runs on after the step: here against an endpoint
		// that starts every answer and never finishes it, until the test
		// lets it go (the first byte comes at once, so only -s3-timeout
		// would end the wait).
		t.Setenv("AWS_ACCESS_KEY_ID", "test-key")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var conns []net.Conn
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				go func() {
					c.Read(make([]byte, 64<<10)) // the request
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: 100000\r\n\r\n<?xml")
				}()
			}
		}()
		release := func() {
			ln.Close()
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			conns = nil
			mu.Unlock()
		}
		defer release()
		err, out, tmp := runActionSetup(t, repo, map[string]string{
			"S3_BUCKET": "bkt", "S3_ENDPOINT": "http://" + ln.Addr().String(), "S3_PATH_STYLE": "true", "AWS_REGION": "us-east-1",
			"CACHE_DIR": t.TempDir(), "MTIMES": "false", "PREFETCH_EARLY": "true", "FLAGS": "-s3-timeout=60s",
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		log := filepath.Join(tmp, "gobuildcache", "prefetch.log")
		if !strings.Contains(out, "gobuildcache: prefetch started in the background (its output: "+log+")\n") {
			t.Errorf("output does not say the prefetch started:\n%s", out)
		}
		if got := readOr(log); strings.Contains(got, "landed") {
			t.Fatalf("the prefetch ended before the step did (the step waited for it, or it never asked the endpoint): %q", got)
		}
		release()
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(readOr(log), "gobuildcache prefetch: landed 0 entries") {
			if time.Now().After(deadline) {
				t.Fatalf("the background prefetch did not end with its line: %q", readOr(log))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("default scope", func(t *testing.T) {
		// A comma in the workflow's name does not make the default a list;
		// a name with both kinds of quotes, or a line break, is no bad
		// input: the default is one word of GOCACHEPROG, and names the
		// scope that the name with them does.
		t.Setenv("GITHUB_JOB", "test")
		t.Setenv("RUNNER_OS", "Linux")
		t.Setenv("RUNNER_ARCH", "X64")
		for _, tc := range []struct{ workflow, want string }{
			{"ci, lint", `'-prefetch-scope=ci_ lint-test-Linux-X64'`},
			{`Bob's "nightly" CI`, `'-prefetch-scope=Bob s  nightly  CI-test-Linux-X64'`},
			{"two\nlines", `'-prefetch-scope=two lines-test-Linux-X64'`},
		} {
			t.Setenv("GITHUB_WORKFLOW", tc.workflow)
			err, out, tmp := runActionSetup(t, repo, map[string]string{"S3_BUCKET": "bkt", "MTIMES": "false"})
			if err != nil {
				t.Errorf("workflow %q: %v\n%s", tc.workflow, err, out)
				continue
			}
			if env := readOr(filepath.Join(tmp, "env")); !strings.Contains(env, tc.want) {
				t.Errorf("workflow %q: GITHUB_ENV %q, want %s", tc.workflow, env, tc.want)
			}
			scope := strings.Trim(strings.TrimPrefix(tc.want, "'-prefetch-scope="), "'")
			if name := tc.workflow + "-test-Linux-X64"; !strings.Contains(name, ",") && scopeName(scope) != scopeName(name) {
				t.Errorf("workflow %q: scope %q, where the name itself is %q", tc.workflow, scopeName(scope), scopeName(name))
			}
		}
	})

	t.Run("spaces and lines reach the go command whole", func(t *testing.T) {
		// The go command splits GOCACHEPROG at spaces, a quote counting
		// only around a whole word: a workflow's name with a space (the
		// default scope), a cache directory with one and the binary's own
		// path with one are each one word, and a flags input of several
		// lines gives every line's flags. Then a real go build is green
		// (the remote refuses connections, which never fails a build).
		t.Setenv("GITHUB_WORKFLOW", "CI Tests")
		t.Setenv("GITHUB_JOB", "test")
		t.Setenv("AWS_ACCESS_KEY_ID", "test-key")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
		t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
		mod := gitRepo(t, map[string]string{"go.mod": "module m\n\ngo 1.24\n", "main.go": "package main\n\nfunc main() {}\n"})
		runnerTemp := filepath.Join(t.TempDir(), "runner temp")
		cacheDir := filepath.Join(t.TempDir(), "cache dir")
		root, _ := os.Getwd()
		err, out := runActionSetupIn(t, runnerTemp, root, mod, map[string]string{
			"S3_BUCKET": "bkt", "S3_ENDPOINT": "http://127.0.0.1:1", "S3_PATH_STYLE": "true", "AWS_REGION": "us-east-1",
			"CACHE_DIR": cacheDir, "MTIMES": "false", "FLAGS": "-upload-timeout=5s\n-read-only\n",
		})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		prog := strings.TrimSuffix(strings.TrimPrefix(readOr(filepath.Join(runnerTemp, "env")), "GOCACHEPROG="), "\n")
		for _, want := range []string{"'" + filepath.Join(runnerTemp, "gobuildcache", "gobuildcache") + "' ", "'-prefetch-scope=CI Tests-test-", "'-cache-dir=" + cacheDir + "'", " -upload-timeout=5s -read-only"} {
			if !strings.Contains(prog, want) {
				t.Errorf("GOCACHEPROG %q lacks %q", prog, want)
			}
		}
		build := exec.Command("go", "build", "-o", os.DevNull, ".")
		build.Dir = mod
		build.Env = append(os.Environ(), "GOCACHEPROG="+prog, "GOCACHE="+t.TempDir(), "GOFLAGS=", "GOTOOLCHAIN=local")
		if b, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build with the action's GOCACHEPROG: %v\n%s", err, b)
		}
		if _, err := os.Stat(filepath.Join(cacheDir, "v1")); err != nil {
			t.Errorf("the cache directory with a space was not the server's: %v", err)
		}
	})

	t.Run("disk, not a git work tree", func(t *testing.T) {
		// mtimes failing costs test cache hits, never the job.
		ws := t.TempDir()
		err, out, tmp := runActionSetup(t, ws, map[string]string{"CACHE_DIR": "/c", "STATS": "false", "MTIMES": "true"})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		bin := filepath.Join(tmp, "gobuildcache", "gobuildcache")
		if got, want := readOr(filepath.Join(tmp, "env")), "GOCACHEPROG="+bin+" -backend=disk -cache-dir=/c\n"; got != want {
			t.Errorf("GITHUB_ENV %q, want %q", got, want)
		}
		if want := "::warning::gobuildcache mtimes: " + ws + "/. is not in a git work tree: tests that read files may run again\n"; !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
		if s := readOr(filepath.Join(tmp, "summary")); s != "" {
			t.Errorf("step summary %q", s)
		}
	})

	t.Run("check", func(t *testing.T) {
		// An unreachable remote: check fails, and that is a warning.
		err, out, tmp := runActionSetup(t, repo, map[string]string{"S3_BUCKET": "bkt", "S3_ENDPOINT": "http://127.0.0.1:1", "S3_PATH_STYLE": "true",
			"S3_READ_FROM": "s3://trusted/main/", "CHECK": "true", "MTIMES": "false"})
		if err != nil || !strings.Contains(out, "::warning::gobuildcache check: ") || readOr(filepath.Join(tmp, "env")) == "" {
			t.Errorf("check of an unreachable remote: want a warning and GOCACHEPROG set: %v\n%s", err, out)
		}
	})

	t.Run("cache-binary", func(t *testing.T) {
		// A job that finds no binary in the Actions cache builds one and
		// leaves it there for the cache's post step to save.
		tmp := t.TempDir()
		root, _ := os.Getwd()
		inputs := map[string]string{"CACHE_BINARY": "true", "MTIMES": "false"}
		err, out := runActionSetupIn(t, tmp, root, repo, inputs)
		cached := filepath.Join(tmp, "gobuildcache-bin", "gobuildcache")
		if err != nil || strings.Contains(out, "from the Actions cache") {
			t.Fatalf("first job: want a build: %v\n%s", err, out)
		}
		if b, err := exec.Command(cached, "version").Output(); err != nil || !strings.HasPrefix(string(b), "gobuildcache ") {
			t.Fatalf("the binary left for the cache: %v %q", err, b)
		}
		// The next job, whose cache step restored it, builds nothing: from
		// a checkout without the source it could not.
		err, out = runActionSetupIn(t, tmp, t.TempDir(), repo, inputs)
		if err != nil || !strings.Contains(out, "gobuildcache: the binary from the Actions cache (input cache-binary)\n") {
			t.Fatalf("second job: want the cached binary: %v\n%s", err, out)
		}
		if out, err := exec.Command(filepath.Join(tmp, "gobuildcache", "gobuildcache"), "version").Output(); err != nil {
			t.Errorf("the installed binary: %v %s", err, out)
		}
		// A cached file that does not run is built over.
		if err := os.WriteFile(cached, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		err, out = runActionSetupIn(t, tmp, root, repo, inputs)
		if err != nil || strings.Contains(out, "from the Actions cache") {
			t.Fatalf("a broken cached binary: want a build: %v\n%s", err, out)
		}
		if b, err := exec.Command(cached, "version").Output(); err != nil || !strings.HasPrefix(string(b), "gobuildcache ") {
			t.Errorf("the broken binary was not replaced: %v %q", err, b)
		}
		// Without the input, nothing is cached.
		tmp = t.TempDir()
		if err, out := runActionSetupIn(t, tmp, root, repo, map[string]string{"MTIMES": "false"}); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(tmp, "gobuildcache-bin")); err == nil {
			t.Errorf("a binary left for the cache without cache-binary")
		}
	})

	t.Run("the tool does not build", func(t *testing.T) {
		// A go command whose build fails, as with the job's module proxy
		// down or GOPROXY=off: the job goes on without the cache.
		fake := t.TempDir()
		if err := os.WriteFile(filepath.Join(fake, "go"), []byte("#!/bin/sh\necho 'go: example.com/m@v1.0.0: module lookup disabled by GOPROXY=off' >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PATH", fake+string(os.PathListSeparator)+os.Getenv("PATH"))
		err, out, tmp := runActionSetup(t, repo, map[string]string{"S3_BUCKET": "bkt", "MTIMES": "true"})
		if err != nil {
			t.Fatalf("the step failed: %v\n%s", err, out)
		}
		if !strings.Contains(out, "::warning::gobuildcache did not build (go: example.com/m@v1.0.0: module lookup disabled by GOPROXY=off): this job runs without the cache\n") {
			t.Errorf("want a warning naming the build's error:\n%s", out)
		}
		if s := readOr(filepath.Join(tmp, "env")) + readOr(filepath.Join(tmp, "path")); s != "" {
			t.Errorf("GITHUB_ENV or GITHUB_PATH written without a binary: %q", s)
		}
	})

	t.Run("a go command without GOCACHEPROG", func(t *testing.T) {
		// Go before 1.24: go env prints an unknown variable as empty.
		real, err := exec.LookPath("go")
		if err != nil {
			t.Fatal(err)
		}
		fake := t.TempDir()
		script := "#!/bin/sh\nif [ \"$1\" = env ]; then case \"$2\" in GOCACHEPROG) echo;; GOVERSION) echo go1.23.4;; *) exec " + real + " \"$@\";; esac; exit 0; fi\nexec " + real + " \"$@\"\n"
		if err := os.WriteFile(filepath.Join(fake, "go"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PATH", fake+string(os.PathListSeparator)+os.Getenv("PATH"))
		err, out, tmp := runActionSetup(t, repo, map[string]string{"MTIMES": "false"})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !strings.Contains(out, "::warning::gobuildcache: this job's go command (go1.23.4) does not know GOCACHEPROG, which Go 1.24 and later use: the job runs without the cache\n") {
			t.Errorf("want a warning naming the go version:\n%s", out)
		}
		if !strings.HasPrefix(readOr(filepath.Join(tmp, "env")), "GOCACHEPROG=") {
			t.Errorf("GOCACHEPROG not exported (a later step may switch Go)")
		}
	})

	t.Run("windows", func(t *testing.T) {
		// Git Bash on a Windows runner: the go command runs GOCACHEPROG only
		// by a name with an executable extension.
		fake := t.TempDir()
		if err := os.WriteFile(filepath.Join(fake, "uname"), []byte("#!/bin/sh\necho MINGW64_NT-10.0-20348\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Setenv("PATH", fake+string(os.PathListSeparator)+os.Getenv("PATH"))
		err, out, tmp := runActionSetup(t, repo, map[string]string{"MTIMES": "false", "CACHE_BINARY": "true"})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		bin := filepath.Join(tmp, "gobuildcache", "gobuildcache.exe")
		if got, want := readOr(filepath.Join(tmp, "env")), "GOCACHEPROG="+bin+" -backend=disk -stats=true\n"; got != want {
			t.Errorf("GITHUB_ENV %q, want %q", got, want)
		}
		if _, err := os.Stat(filepath.Join(tmp, "gobuildcache-bin", "gobuildcache.exe")); err != nil {
			t.Errorf("the binary left for the Actions cache: %v", err)
		}
	})

	t.Run("a job that cross-compiles", func(t *testing.T) {
		// GOOS and GOARCH in the job's environment are its build's targets:
		// the tool is still built for this machine.
		goos, goarch := "windows", "arm64"
		if runtime.GOOS == "windows" {
			goos = "linux"
		}
		if runtime.GOARCH == "arm64" {
			goarch = "amd64"
		}
		t.Setenv("GOOS", goos)
		t.Setenv("GOARCH", goarch)
		err, out, tmp := runActionSetup(t, repo, map[string]string{"MTIMES": "false"})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out, err := exec.Command(filepath.Join(tmp, "gobuildcache", "gobuildcache"), "version").Output(); err != nil {
			t.Errorf("the installed binary does not run here: %v %s", err, out)
		}
	})

	t.Run("booleans as YAML writes them", func(t *testing.T) {
		// True and TRUE are true, False and FALSE false, as for any
		// action (@actions/core's getBooleanInput).
		err, out, tmp := runActionSetup(t, repo, map[string]string{"S3_BUCKET": "bkt", "S3_PATH_STYLE": "True", "READ_ONLY": "TRUE", "STATS": "False", "MTIMES": "FALSE", "CACHE_DIR": "/c"})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if got, want := readOr(filepath.Join(tmp, "env")), " -backend=s3 -s3-bucket=bkt -s3-path-style=true -read-only=true -cache-dir=/c\n"; !strings.HasSuffix(got, want) {
			t.Errorf("GITHUB_ENV %q, want it to end in %q", got, want)
		}
		if strings.Contains(out, "gobuildcache mtimes:") {
			t.Errorf("mtimes ran with mtimes: FALSE:\n%s", out)
		}
	})

	t.Run("cache-dir as actions/cache reads a path", func(t *testing.T) {
		// A relative path is in the workspace and ~ the home directory,
		// not a directory of those names in each go command's working
		// directory (a cache per step's directory, inside the checkout).
		b, err := exec.Command("go", "env", "GOCACHE", "GOPATH", "GOMODCACHE").Output()
		if err != nil {
			t.Fatal(err)
		}
		for i, dir := range strings.Split(strings.TrimSpace(string(b)), "\n") { // the build's, not the new home's
			t.Setenv([]string{"GOCACHE", "GOPATH", "GOMODCACHE"}[i], dir)
		}
		home := t.TempDir()
		t.Setenv("HOME", home)
		for in, want := range map[string]string{".gocache": "-cache-dir=" + repo + "/.gocache", "~/go cache": "'-cache-dir=" + home + "/go cache'", "/abs": "-cache-dir=/abs"} {
			err, out, tmp := runActionSetup(t, repo, map[string]string{"CACHE_DIR": in, "MTIMES": "false", "STATS": "false"})
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if got := readOr(filepath.Join(tmp, "env")); !strings.HasSuffix(got, " -backend=disk "+want+"\n") {
				t.Errorf("cache-dir %q: GITHUB_ENV %q, want it to end in %s", in, got, want)
			}
		}
	})

	t.Run("bad flag", func(t *testing.T) {
		err, out, tmp := runActionSetup(t, repo, map[string]string{"S3_BUCKET": "bkt", "FLAGS": "-s3-timeout=soon", "MTIMES": "true"})
		if err == nil || !strings.Contains(out, `::error::gobuildcache: invalid value "soon" for flag -s3-timeout: want a duration such as 30s or 2m (env GOBUILDCACHE_S3_TIMEOUT)`) {
			t.Errorf("want a one-line error naming the flag: %v\n%s", err, out)
		}
		if s := readOr(filepath.Join(tmp, "env")); s != "" {
			t.Errorf("GITHUB_ENV written after a bad flag: %q", s)
		}
		// Flags each valid but not together stop the step too, not every
		// go command after it.
		err, out, tmp = runActionSetup(t, repo, map[string]string{"S3_BUCKET": "bkt", "FLAGS": "-s3-sse-kms-key-id=mykey", "MTIMES": "false"})
		if err == nil || !strings.Contains(out, "::error::gobuildcache: -s3-sse-kms-key-id (GOBUILDCACHE_S3_SSE_KMS_KEY_ID) needs -s3-sse=aws:kms") {
			t.Errorf("want a one-line error naming the flags that do not go together: %v\n%s", err, out)
		}
		if s := readOr(filepath.Join(tmp, "env")); s != "" {
			t.Errorf("GITHUB_ENV written after flags that do not go together: %q", s)
		}
	})
}

// TestActionBooleanInputs: a boolean input that is neither true nor false
// stops the step with one line naming it, before anything is built: taken
// as false, read-only: yes wrote the cache and check: True checked
// nothing.
func TestActionBooleanInputs(t *testing.T) {
	// A go command that cannot build: the step must stop before it.
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "go"), []byte("#!/bin/sh\necho 'go: the test forbids the go command here' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fake+string(os.PathListSeparator)+os.Getenv("PATH"))
	for _, tc := range []struct{ input, env, value string }{
		{"read-only", "READ_ONLY", "yes"},
		{"check", "CHECK", "1"},
		{"s3-path-style", "S3_PATH_STYLE", "on"},
		{"mtimes", "MTIMES", "no"},
		{"cache-binary", "CACHE_BINARY", "tru"},
	} {
		err, out, tmp := runActionSetup(t, t.TempDir(), map[string]string{"S3_BUCKET": "bkt", tc.env: tc.value})
		if want := "::error::gobuildcache: input " + tc.input + " is \"" + tc.value + "\": want true or false\n"; err == nil || !strings.Contains(out, want) {
			t.Errorf("%s: %s: want the step stopped with %q: %v\n%s", tc.input, tc.value, want, err, out)
		}
		if strings.Contains(out, "the test forbids") {
			t.Errorf("%s: %s: the step went on to the build:\n%s", tc.input, tc.value, out)
		}
		if s := readOr(filepath.Join(tmp, "env")); s != "" {
			t.Errorf("%s: %s: GITHUB_ENV written: %q", tc.input, tc.value, s)
		}
	}
}

// TestActionKey: the key of the cached binary names the toolchain and
// target, and changes with the source the build reads, not with its tests.
func TestActionKey(t *testing.T) {
	skipIfShortE2E(t) // it runs the go command
	root, _ := os.Getwd()
	src := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(src, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	key := func() string {
		t.Helper()
		out := filepath.Join(t.TempDir(), "output")
		cmd := exec.Command("bash", filepath.Join(root, "action", "key.sh"))
		cmd.Env = append(os.Environ(), "GITHUB_ACTION_PATH="+src, "GITHUB_OUTPUT="+out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("key.sh: %v\n%s", err, b)
		}
		line := strings.TrimSuffix(readOr(out), "\n")
		k, ok := strings.CutPrefix(line, "key=")
		if !ok || strings.Contains(k, "\n") {
			t.Fatalf("GITHUB_OUTPUT %q: want one key= line", line)
		}
		return k
	}
	write("go.mod", "module m\n")
	write("main.go", "package main\n\nfunc main() {}\n")
	write("main_test.go", "package main\n")
	k1 := key()
	if want := "gobuildcache-bin-" + runtime.GOOS + "-" + runtime.GOARCH + "-" + runtime.Version() + "-"; !strings.HasPrefix(k1, want) {
		t.Errorf("key %q: want the prefix %q", k1, want)
	}
	if k := key(); k != k1 {
		t.Errorf("the same source: key %q, then %q", k1, k)
	}
	write("main_test.go", "package main\n\n// a test changed\n")
	if k := key(); k != k1 {
		t.Errorf("a test changed: key %q, then %q", k1, k)
	}
	write("main.go", "package main\n\nfunc main() { println() }\n")
	if k := key(); k == k1 {
		t.Errorf("the source changed, the key did not: %q", k)
	}
	// A go command that cannot say (a toolchain it cannot fetch) costs
	// the key its toolchain, never the job.
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "go"), []byte("#!/bin/sh\necho 'go: toolchain not available' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fake+string(os.PathListSeparator)+os.Getenv("PATH"))
	if k := key(); !strings.HasPrefix(k, "gobuildcache-bin-") || !strings.Contains(k, "-unknown-") {
		t.Errorf("key without a toolchain: %q", k)
	}
}

// TestActionSourceHashWindows: the source's hash does not depend on the
// runner's sha256sum: Git Bash's (Windows runners) reads files in binary
// mode and writes "HASH *NAME" where Linux's writes "HASH  NAME", and a hash
// differing from the one release.txt names (computed on Linux) would make
// every Windows job compile the source instead of running the release's
// binary.
func TestActionSourceHashWindows(t *testing.T) {
	real, err := exec.LookPath("sha256sum")
	if err != nil {
		t.Skip("no sha256sum")
	}
	root, _ := os.Getwd()
	hash := func(path string) string {
		t.Helper()
		cmd := exec.Command("bash", filepath.Join(root, "action", "source-hash.sh"), root)
		cmd.Env = append(os.Environ(), "PATH="+path)
		b, err := cmd.CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(b))) != 32 {
			t.Fatalf("source-hash.sh: %v %q", err, b)
		}
		return string(b)
	}
	gitBash := t.TempDir()
	if err := os.WriteFile(filepath.Join(gitBash, "sha256sum"), []byte("#!/bin/sh\nexec "+real+" --binary \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if linux, windows := hash(os.Getenv("PATH")), hash(gitBash+string(os.PathListSeparator)+os.Getenv("PATH")); linux != windows {
		t.Errorf("source hash %q with a sha256sum in text mode, %q in binary mode (Git Bash)", strings.TrimSpace(linux), strings.TrimSpace(windows))
	}
}

// TestActionInputs: every input of action.yml reaches action/setup.sh as
// its INPUT_ variable, and the script reads it.
func TestActionInputs(t *testing.T) {
	yml := readOr("action.yml")
	setup := readOr(filepath.Join("action", "setup.sh"))
	inputs, _, ok := strings.Cut(yml, "\nruns:")
	if !ok || !strings.Contains(inputs, "\ninputs:\n") {
		t.Fatal("action.yml: no inputs before runs")
	}
	n := 0
	for _, line := range strings.Split(inputs, "\n") {
		name, ok := strings.CutSuffix(strings.TrimPrefix(line, "  "), ":")
		if !ok || !strings.HasPrefix(line, "  ") || strings.HasPrefix(line, "   ") {
			continue
		}
		n++
		env := "INPUT_" + strings.ReplaceAll(strings.ToUpper(name), "-", "_")
		if !strings.Contains(yml, "        "+env+": ${{ inputs."+name+" }}\n") {
			t.Errorf("input %s: the setup step does not pass it as %s", name, env)
		}
		if !strings.Contains(setup, env) {
			t.Errorf("input %s: action/setup.sh does not read %s", name, env)
		}
	}
	if n < 15 {
		t.Errorf("found %d inputs in action.yml; the parsing is off", n)
	}
}

// TestActionRelease: with action/release.txt naming a release of the
// action's own source (scripts/release.sh), the action runs the release's
// binary, checked against the SHA-256 the file names, and compiles
// nothing; a download that is not that binary, a failed download, a source
// that is not the release's, or a machine the release has no binary for,
// compiles the source as before.
func TestActionRelease(t *testing.T) {
	skipIfShortE2E(t) // it builds the binary with the go command
	root, _ := os.Getwd()
	src := t.TempDir()
	files, err := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range strings.Split(strings.TrimSuffix(string(files), "\x00"), "\x00") {
		fi, err := os.Stat(filepath.Join(root, name))
		if err != nil || strings.HasPrefix(name, "bench-results/") {
			continue // deleted in the work tree, or not needed
		}
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), b, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}

	// The release's assets, served as GitHub's releases would be.
	const tag = "v9.8.7"
	var mu sync.Mutex
	requests := 0
	serve := func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(src, "dist", path.Base(r.URL.Path)))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		h := serve
		mu.Unlock()
		h(w, r)
	}))
	defer srv.Close()
	setServe := func(h func(http.ResponseWriter, *http.Request)) {
		mu.Lock()
		defer mu.Unlock()
		serve, requests = h, 0
	}
	served := func() int {
		mu.Lock()
		defer mu.Unlock()
		return requests
	}
	host := runtime.GOOS + "-" + runtime.GOARCH
	cmd := exec.Command("bash", filepath.Join(src, "scripts", "release.sh"), "write", tag, runtime.GOOS+"/"+runtime.GOARCH)
	cmd.Env = append(os.Environ(), "RELEASE_URL="+srv.URL+"/download/"+tag+"/")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh write: %v\n%s", err, b)
	}
	release := readOr(filepath.Join(src, "action", "release.txt"))
	if !strings.Contains(release, "\ntag "+tag+"\n") || !strings.Contains(release, "\nbinary "+host+" ") {
		t.Fatalf("action/release.txt:\n%s", release)
	}

	// The release workflow's check: the build is the one named...
	verify := func() (string, error) {
		b, err := exec.Command("bash", filepath.Join(src, "scripts", "release.sh"), "verify", tag).CombinedOutput()
		return string(b), err
	}
	if out, err := verify(); err != nil || !strings.Contains(out, "every binary is the one action/release.txt names") {
		t.Fatalf("release.sh verify: %v\n%s", err, out)
	}
	// ... and a build that is not is refused.
	forged := strings.Replace(release, "\nbinary "+host+" ", "\nbinary "+host+" 0", 1)
	if err := os.WriteFile(filepath.Join(src, "action", "release.txt"), []byte(forged), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := verify(); err == nil || !strings.Contains(out, "the build is not the one action/release.txt names") {
		t.Errorf("release.sh verify of another hash: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(src, "action", "release.txt"), []byte(release), 0o644); err != nil {
		t.Fatal(err)
	}

	// A go command that compiles nothing: the release must not need it.
	realGo, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	noBuild := t.TempDir()
	script := "#!/bin/sh\nif [ \"$1\" = build ]; then echo 'go build: the test forbids compiling here' >&2; exit 1; fi\nexec " + realGo + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(noBuild, "go"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	repo := gitRepo(t, map[string]string{"go.mod": "module m\n"})
	inputs := map[string]string{"S3_BUCKET": "bkt", "MTIMES": "false"}
	version := func(tmp string) string {
		b, err := exec.Command(filepath.Join(tmp, "gobuildcache", "gobuildcache"), "version").Output()
		if err != nil {
			t.Fatalf("the installed binary: %v", err)
		}
		return string(b)
	}

	t.Run("the release's binary", func(t *testing.T) {
		t.Setenv("PATH", noBuild+string(os.PathListSeparator)+os.Getenv("PATH"))
		// A fresh runner's: no go command has made it yet.
		gocache := filepath.Join(t.TempDir(), "go-build")
		t.Setenv("GOCACHE", gocache)
		tmp := t.TempDir()
		err, out := runActionSetupIn(t, tmp, src, repo, inputs)
		if err != nil || !strings.Contains(out, "gobuildcache: release "+tag+"'s binary, SHA-256 verified against action/release.txt\n") {
			t.Fatalf("want the release's binary: %v\n%s", err, out)
		}
		// The go command expires test results by a file in its GOCACHE,
		// and writes none where that directory is not there yet: the
		// action makes it, so that a job beginning with go clean
		// -testcache expires what the remote would serve.
		clean := exec.Command("go", "clean", "-testcache")
		clean.Dir = repo
		if b, err := clean.CombinedOutput(); err != nil {
			t.Fatalf("go clean -testcache: %v\n%s", err, b)
		}
		if _, err := os.Stat(filepath.Join(gocache, "testexpire.txt")); err != nil {
			t.Errorf("go clean -testcache after the action expired nothing: %v", err)
		}
		if v := version(tmp); !strings.HasPrefix(v, "gobuildcache "+tag+" ") {
			t.Errorf("version %q: want the release's tag", v)
		}
		if !strings.HasPrefix(readOr(filepath.Join(tmp, "env")), "GOCACHEPROG=") {
			t.Errorf("GOCACHEPROG not exported")
		}
		if n := served(); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})

	compiles := func(t *testing.T, want string, requests int) {
		t.Helper()
		tmp := t.TempDir()
		err, out := runActionSetupIn(t, tmp, src, repo, inputs)
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("want %q: %v\n%s", want, err, out)
		}
		if v := version(tmp); !strings.HasPrefix(v, "gobuildcache (devel) ") {
			t.Errorf("version %q: want the action's source compiled", v)
		}
		if n := served(); n != requests {
			t.Errorf("%d requests, want %d", n, requests)
		}
	}
	t.Run("a download that is not the binary named", func(t *testing.T) {
		// Another program, which must never run: it would leave a mark.
		mark := filepath.Join(t.TempDir(), "ran")
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		fmt.Fprintf(zw, "#!/bin/sh\ntouch %s\necho gobuildcache %s\n", mark, tag)
		zw.Close()
		setServe(func(w http.ResponseWriter, r *http.Request) { w.Write(gz.Bytes()) })
		compiles(t, "::warning::gobuildcache: the download of release "+tag+"'s binary for "+host+" has SHA-256 ", 1)
		if _, err := os.Stat(mark); err == nil {
			t.Errorf("the download ran")
		}
	})
	t.Run("no download", func(t *testing.T) {
		setServe(http.NotFound)
		compiles(t, "gobuildcache: release "+tag+"'s binary did not download (curl: (22) The requested URL returned error: 404", 1) // curl retries only what may pass
	})
	t.Run("another machine's release", func(t *testing.T) {
		setServe(http.NotFound)
		other := strings.ReplaceAll(release, "\nbinary "+host+" ", "\nbinary plan9-"+runtime.GOARCH+" ")
		if err := os.WriteFile(filepath.Join(src, "action", "release.txt"), []byte(other), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(filepath.Join(src, "action", "release.txt"), []byte(release), 0o644)
		compiles(t, "gobuildcache: release "+tag+" has no binary for "+host+": compiling the action's source\n", 0)
	})
	t.Run("a source changed since the release", func(t *testing.T) {
		setServe(http.NotFound)
		f, err := os.OpenFile(filepath.Join(src, "version.go"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(f, "\n// changed after the release")
		f.Close()
		compiles(t, "gobuildcache: the action's source is not release "+tag+"'s (action/release.txt): compiling it\n", 0)
		// ... which the release workflow's check refuses too.
		if out, err := verify(); err == nil || !strings.Contains(out, "the source is not the one action/release.txt names") {
			t.Errorf("release.sh verify of a changed source: %v\n%s", err, out)
		}
	})
}
