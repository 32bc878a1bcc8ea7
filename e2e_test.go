package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests run the real binary under the real go command.

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// gobuildcacheBinary builds the binary once per test run, static
// (CGO_ENABLED=0) as the releases, make build and the GitHub Action build it.
func gobuildcacheBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gobuildcache-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "gobuildcache")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// testModule writes a small module: a chain of packages, a test, and a
// command.
func testModule(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":          "module example.com/e2e\n\ngo 1.22\n",
		"a/a.go":          "package a\n\nimport \"strings\"\n\nfunc A() string { return strings.ToUpper(\"a\") }\n",
		"b/b.go":          "package b\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/e2e/a\"\n)\n\nfunc B() string { return fmt.Sprintf(\"%s-b\", a.A()) }\n",
		"b/b_test.go":     "package b\n\nimport \"testing\"\n\nfunc TestB(t *testing.T) {\n\tif B() != \"A-b\" {\n\t\tt.Fatal(B())\n\t}\n}\n",
		"c/c.go":          "package c\n\nimport \"example.com/e2e/b\"\n\nfunc C() int { return len(b.B()) }\n",
		"c/c_test.go":     "package c\n\nimport \"testing\"\n\nfunc TestC(t *testing.T) {\n\tif C() != 3 {\n\t\tt.Fatal(C())\n\t}\n}\n",
		"cmd/app/main.go": "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/e2e/c\"\n)\n\nfunc main() { fmt.Println(c.C()) }\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// goEnv is the environment for a go command in the test module: isolated
// from the user's settings (gobuildcache's variables, prefixed or bare,
// included) and from the CI system the tests run on (whose job would be
// every server's default scope: ciJobScope), offline.
func goEnv(gocache string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOCACHE", "GOCACHEPROG", "GOFLAGS", "GOPROXY", "GOWORK", "GOTOOLCHAIN", "GO111MODULE", "GITHUB_STEP_SUMMARY",
			"GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "CIRCLECI":
			continue
		}
		isBare := func(o option) bool { return o.bare == k && !strings.HasPrefix(k, "AWS_") } // AWS_REGION is the SDK's too
		if strings.HasPrefix(k, envPrefix) || slices.ContainsFunc(options, isBare) {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "GOCACHE="+gocache, "GOFLAGS=-buildvcs=false", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local")
	return append(env, extra...)
}

type goRun struct {
	binary         []byte
	buildOut       string // go build's output
	testOut        string // go test's output
	stats          StatsSnapshot
	buildStatsFile string
}

// buildStats reads the stats of the go build command.
func (r goRun) buildStats(t *testing.T) StatsSnapshot {
	t.Helper()
	var st StatsSnapshot
	b, err := os.ReadFile(r.buildStatsFile)
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		t.Fatalf("build stats: %v", err)
	}
	return st
}

// buildAndTest runs go build and go test in mod with GOCACHEPROG pointing
// at gobuildcache over cacheDir (or the plain cache if cacheDir is "").
func buildAndTest(t *testing.T, mod, cacheDir, tag string) (goRun, error) {
	return buildAndTestWith(t, mod, cacheDir, tag)
}

// buildAndTestWith is buildAndTest with more gobuildcache flags.
func buildAndTestWith(t *testing.T, mod, cacheDir, tag string, flags ...string) (goRun, error) {
	return buildAndTestEnv(t, mod, cacheDir, tag, nil, flags...)
}

// buildAndTestEnv is buildAndTestWith with more environment variables.
func buildAndTestEnv(t *testing.T, mod, cacheDir, tag string, env []string, flags ...string) (goRun, error) {
	t.Helper()
	gocache := t.TempDir()
	extra := env
	statsFile := filepath.Join(t.TempDir(), "stats.json")
	prog := func() string {
		return strings.Join(append([]string{gobuildcacheBinary(t), "-cache-dir=" + cacheDir, "-stats-json=" + statsFile}, flags...), " ")
	}
	if cacheDir != "" {
		extra = append(extra, "GOCACHEPROG="+prog())
	}
	progVar := len(extra) - 1
	var r goRun
	exe := filepath.Join(t.TempDir(), "app-"+tag)
	build := exec.Command("go", "build", "-o", exe, "./cmd/app")
	build.Dir, build.Env = mod, goEnv(gocache, extra...)
	out, err := build.CombinedOutput()
	r.buildOut = string(out)
	if err != nil {
		return r, fmt.Errorf("go build (%s): %v\n%s", tag, err, out)
	}
	if r.binary, err = os.ReadFile(exe); err != nil {
		return r, err
	}
	if cacheDir != "" {
		// Each go command starts its own gobuildcache; the test run's
		// stats replace the build's, so keep them apart.
		r.buildStatsFile = statsFile
		statsFile = filepath.Join(t.TempDir(), "stats.json")
		extra[progVar] = "GOCACHEPROG=" + prog()
	}
	test := exec.Command("go", "test", "./...")
	test.Dir, test.Env = mod, goEnv(gocache, extra...)
	out, err = test.CombinedOutput()
	r.testOut = string(out)
	if err != nil {
		return r, fmt.Errorf("go test (%s): %v\n%s", tag, err, out)
	}
	if cacheDir != "" {
		b, err := os.ReadFile(statsFile)
		if err != nil {
			return r, fmt.Errorf("stats: %v", err)
		}
		if err := json.Unmarshal(b, &r.stats); err != nil {
			return r, err
		}
	}
	return r, nil
}

func skipIfShortE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with the go command skipped in -short mode")
	}
}

// moduleWithReference writes the test module and builds it with the plain
// Go cache, for reference.
func moduleWithReference(t *testing.T) (string, goRun) {
	t.Helper()
	skipIfShortE2E(t)
	mod := testModule(t)
	ref, err := buildAndTest(t, mod, "", "plain")
	if err != nil {
		t.Fatal(err)
	}
	return mod, ref
}

func TestEndToEndGoCommand(t *testing.T) {
	mod, ref := moduleWithReference(t)
	logGoVersion(t)

	cacheDir := t.TempDir()
	first, err := buildAndTest(t, mod, cacheDir, "first")
	if err != nil {
		t.Fatal(err)
	}
	if first.stats.Puts == 0 {
		t.Fatalf("first run stored nothing: %+v", first.stats)
	}
	second, err := buildAndTest(t, mod, cacheDir, "second")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second go test: %+v", second.stats)
	for _, pkg := range []string{"example.com/e2e/b", "example.com/e2e/c"} {
		if !regexp.MustCompile(`ok\s+` + regexp.QuoteMeta(pkg) + `\s+\(cached\)`).MatchString(second.testOut) {
			t.Errorf("second go test did not report %s as (cached):\n%s", pkg, second.testOut)
		}
	}
	if second.stats.Misses != 0 || second.stats.Hits == 0 || second.stats.Hits != second.stats.Gets {
		t.Errorf("second go test: %d gets, %d hits, %d misses; want all hits", second.stats.Gets, second.stats.Hits, second.stats.Misses)
	}
	for name, r := range map[string]goRun{"first": first, "second": second} {
		if !bytes.Equal(r.binary, ref.binary) {
			t.Errorf("%s binary differs from the one built with the plain Go cache", name)
		}
	}
}

func TestEndToEndConcurrentSharedDir(t *testing.T) {
	mod, ref := moduleWithReference(t)
	cacheDir := t.TempDir()
	var wg sync.WaitGroup
	runs := make([]goRun, 2)
	errs := make([]error, 2)
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runs[i], errs[i] = buildAndTest(t, mod, cacheDir, fmt.Sprint("concurrent", i))
		}()
	}
	wg.Wait()
	for i := range runs {
		if errs[i] != nil {
			t.Fatalf("run %d: %v", i, errs[i])
		}
		if !bytes.Equal(runs[i].binary, ref.binary) {
			t.Errorf("run %d: binary differs from the plain Go cache's", i)
		}
	}
}

// TestCrashMidPut kills the server while it reads a large body and checks
// a new server on the same directory does not return the entry.
func TestCrashMidPut(t *testing.T) {
	bin := gobuildcacheBinary(t)
	dir := t.TempDir()
	body := bytes.Repeat([]byte("crash test body "), 4<<20) // 64 MiB
	sum := outputID(string(body))
	key := actionID("crash")

	cmd := exec.Command(bin, "-cache-dir="+dir)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := bufio.NewReader(stdout)
	if _, err := out.ReadBytes('\n'); err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(Request{ID: 1, Command: CmdPut, ActionID: key[:], OutputID: sum[:], BodySize: int64(len(body))})
	io.WriteString(stdin, string(req)+"\n\n\"")
	enc := base64.StdEncoding.EncodeToString(body)
	io.WriteString(stdin, enc[:len(enc)/2])
	// Wait until the body is being written (a temp file next to where the
	// body will go), then kill.
	bodyDir := filepath.Join(dir, "v1", "o", fmt.Sprintf("%x", sum[:1]))
	tempFiles := func() []string {
		m, _ := filepath.Glob(filepath.Join(bodyDir, tempPrefix+"*"))
		return m
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && len(tempFiles()) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if len(tempFiles()) == 0 {
		t.Log("no temp file was seen; the kill came before the write began")
	}
	d, err := NewDiskBackend(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(t.Context(), key); err == nil {
		t.Fatal("a put killed mid-body left an entry that get returns")
	}
	if runtime.GOOS != "windows" {
		if _, err := os.Stat(d.outputPath(sum)); err == nil {
			t.Fatal("a partial body sits under its final name")
		}
	}
}

// TestEndToEndBareVariablesOfOtherTools: generic variables that other tools
// set, with values gobuildcache cannot use (a Node DEBUG pattern, a docker
// BACKEND_TYPE), leave the build green: the go command prints one warning
// line for each and builds with the cache (on the disk backend, in the
// directory CACHE_DIR names).
func TestEndToEndBareVariablesOfOtherTools(t *testing.T) {
	skipIfShortE2E(t)
	mod := testModule(t)
	cacheDir := t.TempDir()
	logGoVersion(t)
	build := exec.Command("go", "build", "./...")
	build.Dir = mod
	build.Env = goEnv(t.TempDir(), "GOCACHEPROG="+gobuildcacheBinary(t), "DEBUG=express:*", "BACKEND_TYPE=docker", "CACHE_DIR="+cacheDir)
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("go build ./... printed:\n%s", out)
	want := "gobuildcache: warning: ignoring BACKEND_TYPE=\"docker\": want disk or s3 (gobuildcache's own setting is GOBUILDCACHE_BACKEND or -backend)\n" +
		"gobuildcache: warning: ignoring DEBUG=\"express:*\": want true or false (gobuildcache's own setting is GOBUILDCACHE_DEBUG or -debug)\n"
	if string(out) != want {
		t.Errorf("go build printed:\n%s\nwant:\n%s", out, want)
	}
	records, _ := filepath.Glob(filepath.Join(cacheDir, "v1", "a", "*", "*"))
	if len(records) == 0 {
		t.Errorf("nothing was stored under CACHE_DIR %s", cacheDir)
	}
}

// TestEndToEndUnusableCacheDir: a cache directory that cannot be used (here
// CACHE_DIR names a file) leaves the build green: the go command prints
// one warning line, and the cache goes to the default directory.
func TestEndToEndUnusableCacheDir(t *testing.T) {
	skipIfShortE2E(t)
	mod := testModule(t)
	tmp := t.TempDir()
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "./...")
	build.Dir = mod
	build.Env = goEnv(t.TempDir(), "GOCACHEPROG="+gobuildcacheBinary(t), "CACHE_DIR="+notADir, "TMPDIR="+tmp)
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want := "gobuildcache: warning: cannot use the cache directory of CACHE_DIR: open disk cache " + notADir
	if !strings.HasPrefix(string(out), want) || strings.Count(string(out), "\n") != 1 {
		t.Errorf("go build printed:\n%s\nwant one line starting %q", out, want)
	}
	records, _ := filepath.Glob(filepath.Join(tmp, "gobuildcache", "v1", "a", "*", "*"))
	if len(records) == 0 {
		t.Errorf("nothing was stored under the default directory in %s", tmp)
	}
}

// TestUnderAnAddressSpaceLimit: under a limit on address space (ulimit -v
// 1 GB, which a warm go build runs under) the server serves. Near such a
// limit the Go runtime's own start is what fails, and a cgo-linked binary's
// more often than a static one's (here 11 of 500 starts at 1 GB, against 0
// of 500): that is why the binary is built static. The huge-page ballast,
// which is not allocated under a limit, is TestNoBallastUnderAddressSpaceLimit's.
func TestUnderAnAddressSpaceLimit(t *testing.T) {
	skipIfShortE2E(t) // it builds the binary
	if runtime.GOOS != "linux" {
		t.Skip("ulimit -v as on Linux")
	}
	cmd := exec.Command("sh", "-c", `ulimit -v 1000000 && exec "$0" -cache-dir="$1"`, gobuildcacheBinary(t), t.TempDir())
	cmd.Stdin = strings.NewReader(putLine(1, actionID("a"), outputID("body"), "body") + getLine(2, actionID("a")) + `{"ID":3,"Command":"close"}` + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("gobuildcache under ulimit -v: %v\n%s\n%s", err, out, stderr.Bytes())
	}
	if !strings.Contains(string(out), `"ID":2,"OutputID"`) {
		t.Errorf("no hit: %s", out)
	}
}

// logGoVersion logs the go command the end-to-end tests run (the one on
// PATH; under GOTOOLCHAIN=goX.Y.Z go test, that toolchain's).
func logGoVersion(t *testing.T) {
	out, err := exec.Command("go", "version").CombinedOutput()
	if err != nil {
		t.Fatalf("go version: %v\n%s", err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
}

// The go command that started the server can go away with a get still
// in flight (it exited, crashed, was killed): the read end of the
// server's stdout is closed. The server's answer then meets a broken
// pipe on fd 1, and the Go runtime kills the process with SIGPIPE unless
// SIGPIPE is handled: the server never reaches finish (pending uploads,
// scratch files) nor its statistics. It should see the end of stdin and
// finish as it does when the go command goes away without close.
func TestBrokenStdoutIsNoKill(t *testing.T) {
	bin := gobuildcacheBinary(t)
	dir := t.TempDir()
	statsFile := filepath.Join(dir, "stats.json")
	cmd := exec.Command(bin, "-cache-dir="+filepath.Join(dir, "cache"), "-stats-json="+statsFile)
	cmd.Env = append(os.Environ(), "GOBUILDCACHE_BACKEND=disk")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = stdoutW
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stdoutW.Close()
	line, err := bufio.NewReader(stdoutR).ReadString('\n')
	if err != nil || !strings.Contains(line, "KnownCommands") {
		t.Fatalf("capabilities: %q %v", line, err)
	}
	// The go command goes away: its end of our stdout closes...
	stdoutR.Close()
	// ...with a get it had sent still to be answered.
	id := actionID("x")
	req, _ := json.Marshal(Request{ID: 1, Command: CmdGet, ActionID: id[:]})
	fmt.Fprintf(stdin, "%s\n\n", req)
	stdin.Close()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Errorf("server killed by %v after the go command went away (stderr %q)", ws.Signal(), stderr.String())
		}
	}
	if _, serr := os.Stat(statsFile); serr != nil {
		t.Errorf("-stats-json file not written: %v (wait: %v)", serr, err)
	}
}
