package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The mtimes scenario: `gobuildcache mtimes` on a generated git work tree
// of many files, as a CI job runs it right after a checkout (the files'
// bytes in the page cache, their mtimes new). Before each run every file's
// mtime is set to now again, as a fresh checkout's would be. Baselines in
// the same runs: `git ls-files -z`, the listing mtimes starts from, and the
// first `git status` after mtimes, which re-reads every file because the
// index's stat data no longer match (mtimes' cost to a job that runs git
// status or git diff afterwards), and a second one.

// mtimesTree writes a git repository of n files in dir: 20 top-level
// directories of 50 subdirectories each, files of 256 B to 8.2 KiB of
// text-like bytes; it returns their total size.
func mtimesTree(dir string, n int) (int64, error) {
	var total int64
	line := []byte("\tfmt.Println(\"the quick brown fox jumps over the lazy dog\", i, j)\n")
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("pkg%02d", i%20), fmt.Sprintf("sub%02d", (i/20)%50), fmt.Sprintf("file%05d.go", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return 0, err
		}
		size := 256 + (i*7919)%8192
		b := bytes.Repeat(line, size/len(line)+1)[:size]
		copy(b, fmt.Sprintf("// file %d\n", i))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return 0, err
		}
		total += int64(size)
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"-c", "user.name=b", "-c", "user.email=b@example.com", "commit", "-q", "-m", "tree"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("git %s: %v\n%s", args[0], err, out)
		}
	}
	return total, nil
}

// touchAll gives every file and directory under dir but .git the mtime now.
func touchAll(dir string) error {
	now := time.Now()
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == ".git" {
			return filepath.SkipDir
		}
		return os.Chtimes(p, now, now)
	})
}

// timeCmd runs name args in dir and returns its wall time and stdout.
func timeCmd(dir, name string, args ...string) (time.Duration, string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errOut.String())
	}
	return d, out.String(), nil
}

// benchMtimes runs the scenario on a tree of n files in a new directory
// under work and returns its report as markdown, without a heading.
func benchMtimes(work, bin string, n, runs int) (string, error) {
	dir, err := os.MkdirTemp(work, "mtimes-tree-")
	if err != nil {
		return "", err
	}
	start := time.Now()
	size, err := mtimesTree(dir, n)
	if err != nil {
		return "", err
	}
	logf("mtimes: generated and committed %d files (%s) in %s", n, fmtBytes(size), time.Since(start).Round(time.Second))
	var tLs, tMtimes, tStatus1, tStatus2 []time.Duration
	var summary string
	for i := range runs {
		if err := touchAll(dir); err != nil {
			return "", err
		}
		// Refresh the index, so that only mtimes' changes are left for the
		// first status below to find.
		if _, _, err := timeCmd(dir, "git", "status", "--porcelain"); err != nil {
			return "", err
		}
		syncDisks()
		steps := []struct {
			dst  *[]time.Duration
			name string
			args []string
		}{
			{&tLs, "git", []string{"ls-files", "-z"}},
			{&tMtimes, bin, []string{"mtimes", dir}},
			{&tStatus1, "git", []string{"status", "--porcelain"}},
			{&tStatus2, "git", []string{"status", "--porcelain"}},
		}
		for _, s := range steps {
			d, out, err := timeCmd(dir, s.name, s.args...)
			if err != nil {
				return "", err
			}
			if s.name == bin {
				summary = strings.TrimSpace(out)
			} else if s.args[0] == "status" && out != "" {
				return "", fmt.Errorf("git status after mtimes: the tree is not clean:\n%.500s", out)
			}
			*s.dst = append(*s.dst, d)
		}
		logf("mtimes: run %d/%d: %s", i+1, runs, summary)
	}
	var s strings.Builder
	fmt.Fprintf(&s, "- %d runs, median (min-max); load average at the end %s\n", runs, loadAverage())
	fmt.Fprintf(&s, "- tree: a git repository of %d files (%s, 256 B to 8.2 KiB each) in up to 1,000 directories (20 of 50 each); "+
		"before each run every file's mtime is set to now (a fresh checkout's), the index refreshed and `sync` run; "+
		"the files' bytes are in the page cache, as right after a checkout\n\n", n, fmtBytes(size))
	s.WriteString("| step | wall time |\n|---|---|\n")
	fmt.Fprintf(&s, "| `git ls-files -z` (the listing mtimes starts from) | %s |\n", spread(tLs))
	fmt.Fprintf(&s, "| `gobuildcache mtimes` (hash every file, set %d files' and the directories' mtimes) | %s, %.0f files/s |\n", n, spread(tMtimes), float64(n)/median(seconds(tMtimes)))
	fmt.Fprintf(&s, "| `git status`, first after mtimes (re-reads every file: the index's stat data changed) | %s |\n", spread(tStatus1))
	fmt.Fprintf(&s, "| `git status`, again | %s |\n\n", spread(tStatus2))
	fmt.Fprintf(&s, "mtimes' own line (last run): `%s`\n\n", summary)
	return s.String(), nil
}

// loadAverage is the first three fields of /proc/loadavg, "?" elsewhere.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

func seconds(ds []time.Duration) []float64 {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = d.Seconds()
	}
	return xs
}

// runMtimesBench is -mtimes: the scenario alone, its report on stdout and
// in outDir/mtimes.md.
func runMtimesBench(bin, outDir string, n, runs int) error {
	if n < 1 || runs < 1 {
		return fmt.Errorf("-mtimes-files and -mtimes-runs must be positive")
	}
	work, err := os.MkdirTemp("", "gobuildcache-bench-mtimes-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	head := fmt.Sprintf("# gobuildcache mtimes benchmark: a %d-file tree\n\n- %s; %s\n", n, time.Now().UTC().Format("2006-01-02 15:04 UTC"), machineDescription())
	md, err := benchMtimes(work, bin, n, runs)
	if err != nil {
		return err
	}
	md = head + md
	fmt.Print(md)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(outDir, "mtimes.md")
	logf("wrote %s", path)
	return os.WriteFile(path, []byte(md), 0o644)
}
