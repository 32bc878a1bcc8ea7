package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// The job summary is one markdown table per summary file: GitHub Actions
// gives each step its own $GITHUB_STEP_SUMMARY and shows them in order, and
// every go command of a step (go build, go vet, go test, ...) starts its own
// server, which appends one row for itself when it exits:
//
//	### gobuildcache
//
//	| go command | gets | hit rate | local hits | remote hits | prefetched | misses | remote bytes | errors | wall time |
//	|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|
//	| `go build ./...` | 197 | 99.5% | 0 | 196 | 0 | 1 | ↓32.1 MiB ↑1.2 KiB | 0 | 3.2s |
//
// Concurrent go commands may exit at once: each row is appended with one
// write under an exclusive lock on the file (flock; a lock file where
// there is none), and the title and header are written, under the same
// lock, only when the file does not already end with this table.

const (
	jobSummaryTitle  = "### gobuildcache\n\n"
	jobSummaryHeader = "| go command | gets | hit rate | local hits | remote hits | prefetched | misses | remote bytes | errors | wall time |\n" +
		"|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
	// jobSummaryTail is how much of the end of the file is read to find
	// the header: GitHub accepts at most 1 MiB per step summary.
	jobSummaryTail = 1 << 20
	// maxCommandName bounds the first column.
	maxCommandName = 100
)

// jobSummaryRow is the table row of one go command named name, whose server
// ran for wall. Remote columns are "–" without a remote backend.
func (snap StatsSnapshot) jobSummaryRow(name string, wall time.Duration) string {
	dash := "–"
	hitRate, remoteHits, prefetched, remoteBytes := dash, dash, dash, dash
	if snap.Gets > 0 {
		hitRate = fmt.Sprintf("%.1f%%", 100*snap.HitRate)
	}
	errs := snap.RemoteErrors + snap.VerifyFailures
	for _, n := range snap.Errors {
		errs += n
	}
	if snap.Remote {
		remoteHits = strconv.FormatInt(snap.RemoteHits, 10)
		prefetched = strconv.FormatInt(snap.PrefetchObjects-snap.PrefetchWasted, 10)
		remoteBytes = "↓" + formatBytes(snap.RemoteBytesDown) + " ↑" + formatBytes(snap.RemoteBytesUp)
	}
	return fmt.Sprintf("| %s | %d | %s | %d | %s | %s | %d | %s | %d | %v |\n",
		markdownCode(name), snap.Gets, hitRate, snap.LocalHits, remoteHits, prefetched, snap.Misses, remoteBytes, errs, wall.Round(time.Millisecond))
}

// markdownCode renders s as inline code in a table cell: one line, at most
// maxCommandName runes, no backquote or pipe that would end the code or the
// cell.
func markdownCode(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > maxCommandName {
		s = string(r[:maxCommandName-1]) + "…"
	}
	s = strings.NewReplacer("`", "'", "|", "\\|").Replace(s)
	return "`" + s + "`"
}

// goCommandName names the go command that started this server: its command
// line where the OS tells (parentCommandLine), else "go (pid N)".
func goCommandName() string {
	ppid := os.Getppid()
	if args := parentCommandLine(ppid); len(args) > 0 {
		args[0] = args[0][strings.LastIndexAny(args[0], `/\`)+1:]
		for i, a := range args {
			if a == "" || strings.ContainsAny(a, " \t\"'") {
				args[i] = strconv.Quote(a)
			}
		}
		return strings.Join(args, " ")
	}
	return fmt.Sprintf("go (pid %d)", ppid)
}

// parentCommandLine returns the arguments of process pid, or nil where they
// cannot be read: on Linux from /proc/PID/cmdline.
func parentCommandLine(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// appendJobSummary appends row to the job summary file at path, after the
// title and header when the file does not already end with the table.
func appendJobSummary(path, row string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	unlock, err := lockFile(f)
	if err != nil {
		return fmt.Errorf("lock %s: %w", path, err)
	}
	defer unlock()
	tail, err := readTail(f, jobSummaryTail)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var b strings.Builder
	if !endsWithJobSummary(tail) {
		if len(tail) > 0 {
			if !bytes.HasSuffix(tail, []byte("\n")) {
				b.WriteString("\n")
			}
			b.WriteString("\n") // a blank line ends whatever came before
		}
		b.WriteString(jobSummaryTitle + jobSummaryHeader)
	}
	b.WriteString(row)
	_, err = f.WriteString(b.String()) // one write: O_APPEND keeps it whole; its error names the file
	return err
}

// endsWithJobSummary reports whether b ends with the table: its header
// followed by nothing but rows.
func endsWithJobSummary(b []byte) bool {
	i := bytes.LastIndex(b, []byte(jobSummaryHeader))
	if i < 0 {
		return false
	}
	for line := range strings.SplitSeq(string(b[i+len(jobSummaryHeader):]), "\n") {
		if line != "" && !(strings.HasPrefix(line, "| `") && strings.HasSuffix(line, " |")) {
			return false
		}
	}
	return bytes.HasSuffix(b, []byte("\n"))
}

// readTail returns the last n bytes of f (at most).
func readTail(f *os.File, n int64) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(fi.Size()-n, 0)
	b := make([]byte, fi.Size()-off)
	_, err = f.ReadAt(b, off)
	if err == io.EOF {
		err = nil
	}
	return b, err
}
