package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/richardartoul/gobuildcache/internal/cachefmt"
)

// TestJobSummaryThreeGoCommands: a step running go build, go vet and go
// test gets one table with three rows, after what the step wrote before;
// something written after the table starts a new one.
func TestJobSummaryThreeGoCommands(t *testing.T) {
	path := filepath.Join(t.TempDir(), "step_summary")
	os.WriteFile(path, []byte("earlier output"), 0o644)
	remote := StatsSnapshot{cachefmt.Stats{Gets: 200, Hits: 150, Misses: 50, HitRate: 0.75, LocalHits: 100, RemoteHits: 50,
		Remote: true, PrefetchObjects: 40, PrefetchWasted: 10, RemoteBytesDown: 3 << 20, RemoteBytesUp: 1536,
		Errors: map[string]int64{"put": 1}, RemoteErrors: 2}}
	rows := []struct {
		name string
		snap StatsSnapshot
		wall time.Duration
	}{
		{"go build ./...", remote, 3200 * time.Millisecond},
		{"go vet ./...", StatsSnapshot{}, 45 * time.Millisecond},
		{"go test -run 'A|B' ./pkg/`x`", StatsSnapshot{cachefmt.Stats{Gets: 4, Hits: 1, Misses: 3, HitRate: 0.25, LocalHits: 1}}, time.Minute},
	}
	for _, r := range rows {
		if err := appendJobSummary(path, r.snap.jobSummaryRow(r.name, r.wall)); err != nil {
			t.Fatal(err)
		}
	}
	want := "earlier output\n\n### gobuildcache\n\n" +
		"| go command | gets | hit rate | local hits | remote hits | prefetched | misses | remote bytes | errors | wall time |\n" +
		"|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n" +
		"| `go build ./...` | 200 | 75.0% | 100 | 50 | 30 | 50 | ↓3.0 MiB ↑1.5 KiB | 3 | 3.2s |\n" +
		"| `go vet ./...` | 0 | – | 0 | – | – | 0 | – | 0 | 45ms |\n" +
		"| `go test -run 'A\\|B' ./pkg/'x'` | 4 | 25.0% | 1 | – | – | 3 | – | 0 | 1m0s |\n"
	got, _ := os.ReadFile(path)
	if string(got) != want {
		t.Fatalf("summary:\n%s\nwant:\n%s", got, want)
	}

	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("a later line of the step's own\n")
	f.Close()
	appendJobSummary(path, rows[1].snap.jobSummaryRow(rows[1].name, rows[1].wall))
	got, _ = os.ReadFile(path)
	if n := strings.Count(string(got), jobSummaryHeader); n != 2 || !strings.HasSuffix(string(got), "own\n\n"+jobSummaryTitle+jobSummaryHeader+"| `go vet ./...` | 0 | – | 0 | – | – | 0 | – | 0 | 45ms |\n") {
		t.Errorf("after a line of the step's own, want a new table:\n%s", got)
	}

	if long := markdownCode(strings.Repeat("x", 300)); len([]rune(long)) != maxCommandName+2 {
		t.Errorf("a long command is %d runes", len([]rune(long)))
	}
}

// TestJobSummaryConcurrent: go commands exiting at once, in several
// processes each with several goroutines, give one header and every row
// whole.
func TestJobSummaryConcurrent(t *testing.T) {
	if path := os.Getenv("GOBUILDCACHE_TEST_SUMMARY_CHILD"); path != "" {
		at, _ := strconv.ParseInt(os.Getenv("GOBUILDCACHE_TEST_SUMMARY_AT"), 10, 64)
		appendRows(t, path, "proc"+strconv.Itoa(os.Getpid()), time.Unix(0, at))
		return
	}
	path := filepath.Join(t.TempDir(), "step_summary")
	at := time.Now().Add(time.Second) // all at once, once every process has started
	const procs = 6
	var wg sync.WaitGroup
	errs := make([]error, procs)
	for i := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestJobSummaryConcurrent$", "-test.count=1")
			cmd.Env = append(os.Environ(), "GOBUILDCACHE_TEST_SUMMARY_CHILD="+path, "GOBUILDCACHE_TEST_SUMMARY_AT="+strconv.FormatInt(at.UnixNano(), 10))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("child: %v\n%s", err, out)
			}
		}()
	}
	appendRows(t, path, "parent", at)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	got := string(b)
	if !strings.HasPrefix(got, jobSummaryTitle+jobSummaryHeader) || strings.Count(got, jobSummaryHeader) != 1 || strings.Count(got, jobSummaryTitle) != 1 {
		t.Fatalf("want exactly one title and header, first:\n%s", got)
	}
	rows := strings.Split(strings.TrimSuffix(strings.TrimPrefix(got, jobSummaryTitle+jobSummaryHeader), "\n"), "\n")
	seen := map[string]bool{}
	for _, r := range rows {
		name, _, ok := strings.Cut(strings.TrimPrefix(r, "| `"), "` | 7 | 100.0% | 7 | – | – | 0 | – | 0 | 1ms |")
		if !ok || seen[name] {
			t.Errorf("row broken or repeated: %q", r)
		}
		seen[name] = true
	}
	if want := (procs + 1) * rowsPerProcess; len(seen) != want {
		t.Errorf("%d intact rows, want %d", len(seen), want)
	}
}

const rowsPerProcess = 8

// appendRows appends rowsPerProcess rows from as many goroutines at once,
// at time at, each with a long name, so that a torn write would show.
func appendRows(t *testing.T, path, who string, at time.Time) {
	var wg sync.WaitGroup
	snap := StatsSnapshot{cachefmt.Stats{Gets: 7, Hits: 7, HitRate: 1, LocalHits: 7}}
	for i := range rowsPerProcess {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(at))
			name := fmt.Sprintf("go test %s-%d %s", who, i, strings.Repeat("y", 60))
			if err := appendJobSummary(path, snap.jobSummaryRow(name, time.Millisecond)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

// TestGoCommandName: the row is named by the parent's command line.
func TestGoCommandName(t *testing.T) {
	if os.Getenv("GOBUILDCACHE_TEST_NAME_CHILD") != "" {
		fmt.Print(goCommandName())
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGoCommandName$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GOBUILDCACHE_TEST_NAME_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	name := string(out)
	if runtime.GOOS != "linux" {
		if !strings.HasPrefix(name, "go (pid ") {
			t.Errorf("name %q", name)
		}
		return
	}
	want := filepath.Base(os.Args[0]) + " "
	if !strings.HasPrefix(name, want) || !strings.Contains(name, "-test.") {
		t.Errorf("name %q, want this test binary's command line (%s...)", name, want)
	}
}
