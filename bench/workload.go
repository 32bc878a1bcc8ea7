package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// workloadPart is one go command of the workload.
type workloadPart struct {
	name string
	args []string
}

// workload is the sequence of go commands one "VM" runs.
type workload struct {
	name  string // full or quick
	parts []workloadPart
	dir   string // module directory the go commands run in
	desc  string // for the report
}

// testPackages are small, quick standard-library packages whose tests
// measure test-result caching.
var testPackages = []string{"strings", "bytes", "errors", "sort", "unicode/utf8", "container/list", "path"}

const bigPackage = "github.com/aws/aws-sdk-go-v2/service/s3"

// newWorkload prepares the module directory under work: a copy of the
// repository's go.mod and go.sum, so that the larger package builds from the
// module cache, offline, whatever happens to the checkout meanwhile.
func newWorkload(work, repoRoot string, quick bool) (*workload, error) {
	dir := filepath.Join(work, "module")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var s3Version string
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			return nil, err
		}
		if f == "go.mod" {
			for _, line := range strings.Split(string(b), "\n") {
				fs := strings.Fields(line)
				if len(fs) >= 2 && fs[0] == bigPackage {
					s3Version = fs[1]
				}
				if len(fs) >= 3 && fs[0] == "require" && fs[1] == bigPackage {
					s3Version = fs[2]
				}
			}
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return nil, err
		}
	}
	w := &workload{name: "full", dir: dir}
	testPart := workloadPart{"test", append([]string{"test", "-short"}, testPackages...)}
	s3Part := workloadPart{"build s3", []string{"build", bigPackage}}
	if quick {
		w.name = "quick"
		w.parts = []workloadPart{testPart, s3Part}
	} else {
		w.parts = []workloadPart{{"build std", []string{"build", "std"}}, testPart, s3Part}
	}
	var cmds []string
	for _, p := range w.parts {
		cmds = append(cmds, "`go "+strings.Join(p.args, " ")+"`")
	}
	w.desc = strings.Join(cmds, ", then ")
	if s3Version != "" {
		w.desc += " (" + s3Version + ", from the module cache)"
	}
	return w, nil
}

// vm describes where one "machine" keeps its cache.
type vm struct {
	gocache string // GOCACHE
	prog    string // GOCACHEPROG, "" for the plain Go cache
	stats   string // directory for the -stats-json files of prog, one per go command ("" if prog is not gobuildcache)
}

// partResult is the wall time of one step of a run.
type partResult struct {
	name string
	d    time.Duration
}

// runResult is one timed run of a scenario.
type runResult struct {
	total       time.Duration
	parts       []partResult
	stats       map[string]int64 // summed over the run's go commands (*_seconds in microseconds); nil without gobuildcache
	statsKeys   map[string]bool  // fields present in the stats JSON
	serverCPU   time.Duration    // CPU time of MinIO and toxiproxy during the run
	testsCached int              // packages `go test` printed as (cached)
	testsTotal  int
}

// goEnv is the environment of every go command: this one, less everything
// that configures the go command's cache or gobuildcache, plus the
// benchmark's settings.
func goEnv(gocache, prog string) []string {
	drop := map[string]bool{
		"GOCACHE": true, "GOCACHEPROG": true, "GOFLAGS": true, "GOTOOLCHAIN": true, "GOPROXY": true,
		"GOWORK": true, "BACKEND_TYPE": true, "CACHE_DIR": true, "DEBUG": true, "PRINT_STATS": true,
		"STATS_JSON": true, "READ_ONLY": true, "GITHUB_STEP_SUMMARY": true,
		"AWS_ENDPOINT_URL": true, "AWS_ENDPOINT_URL_S3": true,
	}
	dropPrefixes := []string{"S3_", "UPLOAD_", "PREFETCH", "COMPRESSION", "CLEAR_", "GOBUILDCACHE_"}
	var env []string
outer:
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if drop[k] {
			continue
		}
		for _, p := range dropPrefixes {
			if strings.HasPrefix(k, p) {
				continue outer
			}
		}
		env = append(env, kv)
	}
	env = append(env,
		"GOCACHE="+gocache,
		// -mod=mod: the module dir is a copy; the go command may fix it up
		// (offline: GOPROXY=off) rather than fail on a go.mod being edited.
		"GOFLAGS=-buildvcs=false -mod=mod",
		"GOTOOLCHAIN=local",
		"GOPROXY=off",
		"GOWORK=off",
		"AWS_EC2_METADATA_DISABLED=true",
	)
	if prog != "" {
		env = append(env, "GOCACHEPROG="+prog)
	}
	return env
}

// runGo runs one go command in dir and returns its wall time and output.
func runGo(ctx context.Context, dir string, env []string, args ...string) (time.Duration, string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir, cmd.Env = dir, env
	// On interrupt, let the go command stop its GOCACHEPROG cleanly.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 20 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return d, out.String(), fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, tail(out.String(), 4000))
	}
	return d, out.String(), nil
}

// runWorkload runs every part of w on machine m (in order) and adds up
// the times and gobuildcache's statistics.
func runWorkload(ctx context.Context, w *workload, m vm) (runResult, error) {
	var r runResult
	env := goEnv(m.gocache, "")
	for i, p := range w.parts {
		statsFile := ""
		if m.prog != "" && m.stats != "" {
			statsFile = filepath.Join(m.stats, fmt.Sprintf("%d.json", i))
			os.Remove(statsFile)
			env = goEnv(m.gocache, m.prog+" -stats-json="+quoteArg(statsFile))
		} else if m.prog != "" {
			env = goEnv(m.gocache, m.prog) // not gobuildcache: no statistics
		}
		d, out, err := runGo(ctx, w.dir, env, p.args...)
		if err != nil {
			return r, err
		}
		r.total += d
		r.parts = append(r.parts, partResult{p.name, d})
		if p.args[0] == "test" {
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "ok ") {
					r.testsTotal++
					if strings.Contains(line, "(cached)") {
						r.testsCached++
					}
				}
			}
		}
		if statsFile != "" {
			st, keys, err := readStats(statsFile)
			if err != nil {
				return r, fmt.Errorf("go %s: %v", strings.Join(p.args, " "), err)
			}
			if r.stats == nil {
				r.stats, r.statsKeys = map[string]int64{}, map[string]bool{}
			}
			for k, v := range st {
				r.stats[k] += v
			}
			for k := range keys {
				r.statsKeys[k] = true
			}
		}
	}
	return r, nil
}

// readStats reads a -stats-json file: its numeric fields (those named
// *_seconds in microseconds), and the names of all fields. The server writes it before it exits; it is waited for a
// little in case the go command returned first.
func readStats(path string) (map[string]int64, map[string]bool, error) {
	var b []byte
	var err error
	for i := 0; i < 100; i++ { // up to 5 s
		if b, err = os.ReadFile(path); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("no -stats-json written: %v", err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, nil, fmt.Errorf("stats JSON %s: %v", path, err)
	}
	nums, keys := map[string]int64{}, map[string]bool{}
	for k, v := range raw {
		keys[k] = true
		switch v := v.(type) {
		case float64:
			if strings.HasSuffix(k, "_seconds") { // a fraction (cpu_seconds): kept in microseconds
				nums[k] = int64(v*1e6 + 0.5)
			} else {
				nums[k] = int64(v)
			}
		case bool:
			if v {
				nums[k] = 1
			}
		case map[string]any: // counts by kind: each, as k.kind, and their sum
			for kind, x := range v {
				if f, ok := x.(float64); ok {
					nums[k] += int64(f)
					nums[k+"."+kind] += int64(f)
				}
			}
		}
	}
	return nums, keys, nil
}

// quoteArg quotes s for GOCACHEPROG (which the go command splits like a
// shell would, honouring quotes) if it needs it.
func quoteArg(s string) string {
	if !strings.ContainsAny(s, " \t\n'\"") {
		return s
	}
	if !strings.Contains(s, "'") {
		return "'" + s + "'"
	}
	return `"` + s + `"`
}
