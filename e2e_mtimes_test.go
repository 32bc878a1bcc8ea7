package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// freshCheckoutModule is a module whose tests read files in every way the
// go command's test cache keys on: a testdata file, a golden file, a
// directory listing, and (for contrast) nothing at all.
var freshCheckoutModule = map[string]string{
	"go.mod": "module example.com/fresh\n\ngo 1.22\n",
	"reads/reads_test.go": `package reads

import (
	"os"
	"testing"
)

func TestReadsTestdata(t *testing.T) {
	b, err := os.ReadFile("testdata/input.txt")
	if err != nil || len(b) != 12 {
		t.Fatalf("%q, %v", b, err)
	}
}
`,
	"reads/testdata/input.txt": "hello world\n",
	"golden/golden.go":         "package golden\n\nfunc Render() string { return \"rendered\\n\" }\n",
	"golden/golden_test.go": `package golden

import (
	"os"
	"testing"
)

func TestGolden(t *testing.T) {
	want, err := os.ReadFile("testdata/render.golden")
	if err != nil || string(want) != Render() {
		t.Fatalf("%q, %v", want, err)
	}
}
`,
	"golden/testdata/render.golden": "rendered\n",
	"lists/lists_test.go": `package lists

import (
	"os"
	"testing"
)

func TestListsDir(t *testing.T) {
	entries, err := os.ReadDir("testdata/items")
	if err != nil || len(entries) < 2 {
		t.Fatalf("%v, %v", entries, err)
	}
}
`,
	"lists/testdata/items/one.txt": "1\n",
	"lists/testdata/items/two.txt": "2\n",
	"pure/pure_test.go":            "package pure\n\nimport \"testing\"\n\nfunc TestNothingRead(t *testing.T) {\n\tif 1+1 != 2 {\n\t\tt.Fatal()\n\t}\n}\n",
}

var freshCheckoutPackages = []string{"golden", "lists", "pure", "reads"}

// TestFreshCheckoutTestsCached is the promise for tests: CI machines with
// separate, empty local caches, sharing one bucket, each making a fresh
// clone at the same path. With `gobuildcache mtimes` after the clone,
// machine B reports every test as cached; without it, every test that reads
// a file runs again. After mtimes, a same-size edit of one testdata file
// runs exactly that package again, and an untracked file in a listed
// directory exactly the package that lists it.
func TestFreshCheckoutTestsCached(t *testing.T) {
	skipIfShortE2E(t)
	tg := s3TargetForTest(t)
	origin := gitRepo(t, freshCheckoutModule)
	bin := gobuildcacheBinary(t)
	base := t.TempDir()
	checkout := filepath.Join(base, "checkout") // the same path on every "VM"

	// vm clones origin at checkout (moving an earlier clone aside), runs
	// mtimes if asked, and returns a function running go test ./... there
	// with its own empty local cache.
	// Each VM's go commands write their stats rows to the VM's own step
	// summary.
	summaries := map[string]string{}
	vms := 0
	vm := func(name string, stamp bool) func() (string, map[string]bool) {
		t.Helper()
		vms++
		if _, err := os.Stat(checkout); err == nil {
			if err := os.Rename(checkout, filepath.Join(base, "aside-"+strings.Repeat("x", vms))); err != nil {
				t.Fatal(err)
			}
		}
		gitCmd(t, base, "clone", "-q", origin, checkout)
		cacheDir, gocache := t.TempDir(), t.TempDir()
		prog := strings.Join(append([]string{bin, "-cache-dir=" + cacheDir, "-stats"}, tg.args()...), " ")
		summaries[name] = filepath.Join(t.TempDir(), "step_summary")
		return func() (string, map[string]bool) {
			t.Helper()
			if stamp {
				mtimes(t, bin, checkout)
			}
			cmd := exec.Command("go", "test", "./...")
			cmd.Dir, cmd.Env = checkout, goEnv(gocache, "GOCACHEPROG="+prog, "GITHUB_STEP_SUMMARY="+summaries[name])
			var stderr strings.Builder
			cmd.Stderr = &stderr // the -stats tables
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("VM %s: go test: %v\n%s%s", name, err, out, stderr.String())
			}
			return string(out), cachedPackages(t, string(out))
		}
	}
	expect := func(what, out string, cached map[string]bool, ran ...string) {
		t.Helper()
		for _, pkg := range freshCheckoutPackages {
			if want := !slices.Contains(ran, pkg); cached[pkg] != want {
				t.Errorf("%s: %s cached %v, want %v:\n%s", what, pkg, cached[pkg], want, out)
			}
		}
	}

	out, cached := vm("A", true)()
	expect("VM A (empty bucket)", out, cached, freshCheckoutPackages...)

	// The problem, shown: a warm bucket, a fresh clone, no mtimes.
	out, cached = vm("B without mtimes", false)()
	expect("VM B without mtimes", out, cached, "golden", "lists", "reads")

	goTestB := vm("B", true)
	out, cached = goTestB()
	t.Logf("VM B's go test ./... after a fresh clone and gobuildcache mtimes:\n%s", out)
	expect("VM B with mtimes", out, cached)

	// Same size, different bytes: only the package reading it runs.
	if err := os.WriteFile(filepath.Join(checkout, "reads", "testdata", "input.txt"), []byte("hello again\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, cached = goTestB()
	expect("VM B after a same-size edit of reads/testdata/input.txt", out, cached, "reads")

	// An untracked file in a listed directory: only the package listing it.
	if err := os.WriteFile(filepath.Join(checkout, "lists", "testdata", "items", "untracked.txt"), []byte("3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, cached = goTestB()
	expect("VM B after an untracked file in lists/testdata/items", out, cached, "lists")

	// VM B's step summary: one table, a row for each of its three go
	// commands, named by their command lines.
	summary, _ := os.ReadFile(summaries["B"])
	t.Logf("VM B's step summary:\n%s", summary)
	rows := strings.Split(strings.TrimSuffix(strings.TrimPrefix(string(summary), jobSummaryTitle+jobSummaryHeader), "\n"), "\n")
	if len(rows) != 3 || strings.Count(string(summary), jobSummaryHeader) != 1 {
		t.Fatalf("VM B's step summary, want one table of 3 rows:\n%s", summary)
	}
	for _, r := range rows {
		if !strings.HasPrefix(r, "| `go test ./...` | ") {
			t.Errorf("row %q, want one named `go test ./...`", r)
		}
	}
}

// mtimes runs the real binary's mtimes command on dir.
func mtimes(t *testing.T, bin, dir string) {
	t.Helper()
	out, err := exec.Command(bin, "mtimes", dir).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "gobuildcache mtimes: ") {
		t.Fatalf("gobuildcache mtimes %s: %v\n%s", dir, err, out)
	}
}

// cachedPackages reads go test's output: for each package of
// freshCheckoutModule, whether its result was "(cached)".
func cachedPackages(t *testing.T, out string) map[string]bool {
	t.Helper()
	line := regexp.MustCompile(`(?m)^ok\s+example\.com/fresh/(\S+)\s+(\S+)`)
	m := map[string]bool{}
	for _, g := range line.FindAllStringSubmatch(out, -1) {
		m[g[1]] = g[2] == "(cached)"
	}
	if len(m) != len(freshCheckoutPackages) {
		t.Fatalf("go test output names %d packages, want %d:\n%s", len(m), len(freshCheckoutPackages), out)
	}
	return m
}
