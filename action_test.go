package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
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
		want := "GOCACHEPROG=" + bin + ` -backend=s3 -s3-bucket=my-bucket -s3-region=eu-west-1 -s3-read-from=s3://trusted/gobuildcache/main/ -read-only=true -prefetch-scope="ci / test's" -cache-dir='/cache dir' -stats=true -debug -upload-concurrency=4` + "\n"
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

	t.Run("default scope", func(t *testing.T) {
		// A comma in the workflow's name does not make the default a list.
		t.Setenv("GITHUB_WORKFLOW", "ci, lint")
		t.Setenv("GITHUB_JOB", "test")
		t.Setenv("RUNNER_OS", "Linux")
		t.Setenv("RUNNER_ARCH", "X64")
		err, out, tmp := runActionSetup(t, repo, map[string]string{"S3_BUCKET": "b", "MTIMES": "false"})
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if env := readOr(filepath.Join(tmp, "env")); !strings.Contains(env, `-prefetch-scope='ci_ lint-test-Linux-X64'`) {
			t.Errorf("GITHUB_ENV %q: want the default scope without its comma", env)
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
		err, out, tmp := runActionSetup(t, repo, map[string]string{"S3_BUCKET": "b", "S3_ENDPOINT": "http://127.0.0.1:1", "S3_PATH_STYLE": "true",
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
		err, out, tmp := runActionSetup(t, repo, map[string]string{"S3_BUCKET": "b", "MTIMES": "true"})
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

	t.Run("bad flag", func(t *testing.T) {
		err, out, tmp := runActionSetup(t, repo, map[string]string{"S3_BUCKET": "b", "FLAGS": "-s3-timeout=soon", "MTIMES": "true"})
		if err == nil || !strings.Contains(out, `::error::gobuildcache: invalid value "soon" for flag -s3-timeout: want a duration such as 30s or 2m (env GOBUILDCACHE_S3_TIMEOUT)`) {
			t.Errorf("want a one-line error naming the flag: %v\n%s", err, out)
		}
		if s := readOr(filepath.Join(tmp, "env")); s != "" {
			t.Errorf("GITHUB_ENV written after a bad flag: %q", s)
		}
	})
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
