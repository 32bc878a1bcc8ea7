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

// gitCmd runs git in dir, isolated from the user's configuration, and
// returns its output.
func gitCmd(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com",
		"-c", "protocol.file.allow=always", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// gitRepo makes a repository in a new directory from files (path ->
// content; a content starting with "->" is a symbolic link to the rest),
// commits them all, and returns its path.
func gitRepo(t testing.TB, files map[string]string) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	gitCmd(t, dir, "init", "-q")
	gitCmd(t, dir, "add", "-A")
	gitCmd(t, dir, "commit", "-q", "-m", "files")
	return dir
}

// mtimesTree is a repository with what mtimes must handle: names with
// spaces and non-ASCII letters, a symbolic link, nested directories, an
// ignored file, and (added by the caller) a submodule.
var mtimesTree = map[string]string{
	".gitignore":                  "*.log\n",
	"go.mod":                      "module example.com/m\n",
	"a.go":                        "package m\n",
	"testdata/with space.txt":     "spaces\n",
	"testdata/ünïcødé/日本語.golden": "golden\n",
	"testdata/deep/er/x.txt":      "x\n",
	"testdata/link":               "->with space.txt",
}

// mtimesOf returns the mtime of each path under dir (not following links).
func mtimesOf(t *testing.T, dir string, paths ...string) map[string]time.Time {
	t.Helper()
	m := map[string]time.Time{}
	for _, p := range paths {
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		m[p] = fi.ModTime()
	}
	return m
}

func runMtimesCmd(t *testing.T, dir string) (status int, stdout, stderr string) {
	t.Helper()
	return runMain(t, []string{"mtimes", dir}, nil, "")
}

// TestMtimesSameContentSameStat: two clones of one commit, made at
// different times, stat the same after mtimes, the times are in the past,
// and what is not tracked keeps its mtime.
func TestMtimesSameContentSameStat(t *testing.T) {
	sub := gitRepo(t, map[string]string{"lib/sub.txt": "in a submodule\n"})
	origin := gitRepo(t, mtimesTree)
	gitCmd(t, origin, "submodule", "add", "-q", sub, "third_party/sub")
	gitCmd(t, origin, "commit", "-q", "-m", "submodule")

	tracked := []string{".", ".gitignore", ".gitmodules", "go.mod", "a.go", "testdata", "testdata/with space.txt",
		"testdata/ünïcødé", "testdata/ünïcødé/日本語.golden", "testdata/deep", "testdata/deep/er",
		"testdata/deep/er/x.txt", "testdata/link", "third_party", "third_party/sub", "third_party/sub/lib",
		"third_party/sub/lib/sub.txt"}
	clone := func(name string) string {
		dir := filepath.Join(t.TempDir(), name)
		gitCmd(t, filepath.Dir(dir), "clone", "-q", "--recurse-submodules", origin, dir)
		return dir
	}
	a := clone("a")
	time.Sleep(20 * time.Millisecond) // b's checkout mtimes differ from a's
	b := clone("b")
	untracked := filepath.Join(b, "testdata", "untracked.txt")
	ignored := filepath.Join(b, "build.log")
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, p := range []string{untracked, ignored} {
		os.WriteFile(p, []byte("not tracked\n"), 0o644)
		os.Chtimes(p, old, old)
	}

	for _, dir := range []string{a, b} {
		status, stdout, stderr := runMtimesCmd(t, dir)
		if status != 0 || stderr != "" {
			t.Fatalf("mtimes %s: exit %d, stderr %q", dir, status, stderr)
		}
		symlinks := 1
		if runtime.GOOS != "linux" {
			symlinks = 0
		}
		want := "gobuildcache mtimes: 8 files, 8 directories, " + string(rune('0'+symlinks)) + " symlinks in "
		if !strings.HasPrefix(stdout, want) || strings.Count(stdout, "\n") != 1 {
			t.Errorf("summary %q, want one line starting %q", stdout, want)
		}
	}
	ma, mb := mtimesOf(t, a, tracked...), mtimesOf(t, b, tracked...)
	for _, p := range tracked {
		if !ma[p].Equal(mb[p]) {
			t.Errorf("%s: mtime %v in one clone, %v in the other", p, ma[p], mb[p])
		}
		if !ma[p].Before(mtimeEpoch.Add(time.Duration(mtimeSpan))) || ma[p].Before(mtimeEpoch) {
			t.Errorf("%s: mtime %v, want between %v and 10 years later", p, ma[p], mtimeEpoch)
		}
	}
	if ma["a.go"].Nanosecond() == 0 && ma["go.mod"].Nanosecond() == 0 {
		t.Errorf("mtimes without nanoseconds: %v, %v", ma["a.go"], ma["go.mod"])
	}
	if ma["testdata/link"].Equal(ma["testdata/with space.txt"]) {
		t.Error("the symlink has its target's mtime: it was followed")
	}
	for _, p := range []string{untracked, ignored} {
		if fi, err := os.Stat(p); err != nil || !fi.ModTime().Equal(old) {
			t.Errorf("%s is not tracked, but its mtime changed: %v", p, fi.ModTime())
		}
	}

	// A same-size edit changes the file's mtime, and only its own; a
	// tracked file added changes its directory's.
	edited := filepath.Join(b, "testdata", "deep", "er", "x.txt")
	os.WriteFile(edited, []byte("y\n"), 0o644)
	os.WriteFile(filepath.Join(b, "testdata", "new.txt"), []byte("new\n"), 0o644)
	gitCmd(t, b, "add", "testdata/new.txt")
	if status, _, stderr := runMtimesCmd(t, b); status != 0 {
		t.Fatalf("mtimes after an edit: exit %d: %s", status, stderr)
	}
	mb = mtimesOf(t, b, tracked...)
	for _, p := range tracked {
		changed := p == "testdata/deep/er/x.txt" || p == "testdata"
		if changed == ma[p].Equal(mb[p]) {
			t.Errorf("%s: mtime %v before, %v after; changed %v, want %v", p, ma[p], mb[p], !changed, changed)
		}
	}

	// A subdirectory of the work tree: only it and below.
	sub2 := filepath.Join(a, "testdata", "deep")
	if status, stdout, _ := runMtimesCmd(t, sub2); status != 0 || !strings.Contains(stdout, " 1 files, 2 directories, 0 symlinks") {
		t.Errorf("mtimes on a subdirectory: exit %d, %q", status, stdout)
	}
}

// TestMtimesFailures: what mtimes cannot do is one clear line and an exit
// status that is non-zero only when a tracked path kept its old mtime.
func TestMtimesFailures(t *testing.T) {
	repo := gitRepo(t, mtimesTree)

	t.Run("not a work tree", func(t *testing.T) {
		status, stdout, stderr := runMtimesCmd(t, t.TempDir())
		if status != 1 || stdout != "" || !strings.HasSuffix(stderr, "is not in a git work tree\n") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("exit %d, stdout %q, stderr %q", status, stdout, stderr)
		}
		status, _, stderr = runMtimesCmd(t, filepath.Join(repo, "no such dir"))
		if status != 1 || !strings.Contains(stderr, "no such file or directory") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("missing dir: exit %d, stderr %q", status, stderr)
		}
	})
	t.Run("no git", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		status, _, stderr := runMtimesCmd(t, repo)
		if status != 1 || stderr != "gobuildcache mtimes: git not found in PATH: mtimes asks git which files are tracked\n" {
			t.Errorf("exit %d, stderr %q", status, stderr)
		}
	})
	t.Run("tracked file deleted", func(t *testing.T) {
		// Nothing to set, and both machines see the same absence: a note
		// in the summary, not a failure.
		clone := filepath.Join(t.TempDir(), "c")
		gitCmd(t, repo, "clone", "-q", repo, clone)
		os.Remove(filepath.Join(clone, "testdata", "deep", "er", "x.txt"))
		os.Remove(filepath.Join(clone, "testdata", "deep", "er"))
		status, stdout, stderr := runMtimesCmd(t, clone)
		if status != 0 || stderr != "" || !strings.Contains(stdout, "; 2 tracked paths not in the work tree, left alone") {
			t.Errorf("exit %d, stdout %q, stderr %q", status, stdout, stderr)
		}
	})
	t.Run("file it cannot write", func(t *testing.T) {
		// An immutable file: the one case where even root's utimensat
		// fails (EPERM), as a read-only mount would.
		clone := filepath.Join(t.TempDir(), "c")
		gitCmd(t, repo, "clone", "-q", repo, clone)
		locked := filepath.Join(clone, "testdata", "with space.txt")
		if out, err := exec.Command("chattr", "+i", locked).CombinedOutput(); err != nil {
			t.Skipf("cannot make a file immutable here (needs root, chattr and ext4/xfs/btrfs): %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("chattr", "-i", locked).Run() })
		before := mtimesOf(t, clone, "testdata/with space.txt")
		status, stdout, stderr := runMtimesCmd(t, clone)
		wantErr := "gobuildcache mtimes: utimensat " + locked + ": operation not permitted\n" +
			"gobuildcache mtimes: could not set the mtime of 1 tracked paths (listed above)\n"
		if status != 1 || stderr != wantErr {
			t.Errorf("exit %d, stderr %q, want %q", status, stderr, wantErr)
		}
		if !strings.Contains(stdout, "5 files, 5 directories, 1 symlinks in ") || !strings.HasSuffix(stdout, "; 1 FAILED\n") {
			t.Errorf("summary %q", stdout)
		}
		if after := mtimesOf(t, clone, "testdata/with space.txt"); !after["testdata/with space.txt"].Equal(before["testdata/with space.txt"]) {
			t.Error("the immutable file's mtime changed")
		}
		if m := mtimesOf(t, clone, "a.go"); m["a.go"].After(mtimeEpoch.Add(time.Duration(mtimeSpan))) {
			t.Error("the other files were not stamped")
		}
	})
}

func TestMtimesUsage(t *testing.T) {
	status, stdout, _ := runMain(t, []string{"mtimes", "-h"}, nil, "")
	if status != 0 || !strings.HasPrefix(stdout, "usage: gobuildcache mtimes [DIR]\n") || !strings.Contains(stdout, "trade-off") {
		t.Errorf("mtimes -h: exit %d:\n%s", status, stdout)
	}
	if _, stdout, _ := runMain(t, []string{"help"}, nil, ""); !strings.Contains(stdout, "gobuildcache mtimes [DIR]") {
		t.Errorf("help does not list mtimes:\n%s", stdout)
	}
	status, _, stderr := runMain(t, []string{"mtimes", "a", "b"}, nil, "")
	if status != 2 || stderr != "gobuildcache: unexpected argument \"b\" (run 'gobuildcache help')\n" {
		t.Errorf("two directories: exit %d, %q", status, stderr)
	}
}

// A tracked directory replaced in the work tree by a symbolic link to a
// directory outside it (a common way to bring large fixtures in): git
// sees the tracked files beneath as deleted, and the README promises that
// a tracked path missing from the work tree is left alone, and that
// nothing but tracked paths is touched. mtimes instead follows the link
// and stamps the files and directories outside the work tree.
func TestMtimesDoesNotFollowASymlinkedDirectory(t *testing.T) {
	repo := gitRepo(t, map[string]string{
		"go.mod":             "module example.com/m\n",
		"fixtures/big.txt":   "tracked content\n",
		"fixtures/sub/x.txt": "x\n",
	})
	outside := t.TempDir()
	for _, p := range []string{"big.txt", "sub/x.txt"} {
		full := filepath.Join(outside, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("shared fixture, not in git\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	for _, p := range []string{"big.txt", "sub/x.txt", "sub"} {
		if err := os.Chtimes(filepath.Join(outside, p), old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(filepath.Join(repo, "fixtures")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(repo, "fixtures")); err != nil {
		t.Fatal(err)
	}
	// git's own view: the tracked files are deleted from the work tree.
	if st := gitCmd(t, repo, "status", "--porcelain"); !strings.Contains(st, " D fixtures/big.txt") {
		t.Fatalf("git status does not see fixtures/big.txt as deleted:\n%s", st)
	}

	res, err := setContentMtimes(repo)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("result: %s", res)
	for _, p := range []string{"big.txt", "sub/x.txt", "sub"} {
		fi, err := os.Lstat(filepath.Join(outside, p))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(old) {
			t.Errorf("%s, outside the work tree, got mtime %v from mtimes (want it left at %v)", filepath.Join(outside, p), fi.ModTime(), old)
		}
	}
	if res.Missing != 2 {
		t.Errorf("Missing = %d, want 2 (git sees both tracked files as deleted)", res.Missing)
	}
}
