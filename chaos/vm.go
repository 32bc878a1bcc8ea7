//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// goCmdTimeout bounds one go command; the run's -timeout bounds them all.
const goCmdTimeout = 5 * time.Minute

// buildResult is one VM's go build and go test in one phase.
type buildResult struct {
	vm          int
	fresh       bool // the VM's cache was wiped at the start of the round
	green       bool // both commands green, after at most one re-run each following a kill
	reruns      int  // go commands re-run because their gobuildcache was killed
	wrong       int  // binaries missing or not byte-identical to the reference
	counterErrs int  // -stats-json files that do not add up (or are missing)
	dur         time.Duration
	stats       cacheStats // both commands' final attempts, added up
}

// baseEnv is the environment of every go command: the caller's, without
// anything that changes what the go command or gobuildcache does, and
// offline.
func baseEnv(gotmp string) []string {
	drop := []string{"GOCACHE", "GOCACHEPROG", "GOFLAGS", "GOPROXY", "GOWORK", "GOTOOLCHAIN", "GO111MODULE",
		"GOTMPDIR", "GOENV", "GITHUB_STEP_SUMMARY", "BACKEND_TYPE", "CACHE_DIR", "DEBUG", "PRINT_STATS", "STATS_JSON",
		"READ_ONLY", "MAX_LOCAL_SIZE", "LOCAL_MAX_AGE"}
	dropPrefix := []string{"AWS_", "S3_", "GOBUILDCACHE_", "UPLOAD_", "PREFETCH", "COMPRESSION", "CLEAR_", "MINIO_"}
	var env []string
next:
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		for _, d := range drop {
			if k == d {
				continue next
			}
		}
		for _, p := range dropPrefix {
			if strings.HasPrefix(k, p) {
				continue next
			}
		}
		env = append(env, kv)
	}
	return append(env, "GOFLAGS=-buildvcs=false", "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local", "GOTMPDIR="+gotmp,
		"GOBUILDCACHE_AWS_ACCESS_KEY_ID="+minioUser, "GOBUILDCACHE_AWS_SECRET_ACCESS_KEY="+minioPassword,
		"AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true")
}

// plainGocache is the plain Go cache the reference builds use: the user's
// (warm, usually), or a directory of this run's if there is none.
func (s *suite) plainGocache() string {
	cmd := exec.Command(s.goBin, "env", "GOCACHE")
	cmd.Env = s.baseEnv
	out, err := cmd.Output()
	if dir := strings.TrimSpace(string(out)); err == nil && filepath.IsAbs(dir) {
		return dir
	}
	return filepath.Join(s.root, "refcache")
}

// reference builds the commands with the plain Go cache into a new
// directory and returns them by name.
func (s *suite) reference(tag string) (map[string][]byte, error) {
	out := filepath.Join(s.refDir, tag)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	env := append(append([]string(nil), s.baseEnv...), "GOCACHE="+s.refGocache)
	log := filepath.Join(s.logDir, "ref-"+tag+".log")
	if _, err := s.goCmd(s.ctx, env, log, "build", "-o", out+"/", "./..."); err != nil {
		return nil, fmt.Errorf("reference build (plain Go cache): %v\n%s", err, tailFile(log, 30))
	}
	ref, err := readOutputs(out)
	if err == nil && len(ref) != len(commands) {
		err = fmt.Errorf("reference build made %d binaries, want %d", len(ref), len(commands))
	}
	os.RemoveAll(out)
	return ref, err
}

// goCmd runs one go command in the module, its output to logPath, and
// returns how long it took.
func (s *suite) goCmd(ctx context.Context, env []string, logPath string, args ...string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, goCmdTimeout)
	defer cancel()
	logf, err := os.Create(logPath)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, s.goBin, args...)
	cmd.Dir, cmd.Env = s.modDir, env
	cmd.Stdout, cmd.Stderr = logf, logf
	setOwnGroup(cmd)
	// gobuildcache and test binaries inherit the log: do not wait for
	// them forever once the go command is gone.
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	err = cmd.Run()
	if err != nil && ctx.Err() != nil {
		if s.ctx.Err() != nil {
			return time.Since(start), s.ctx.Err()
		}
		err = fmt.Errorf("killed after %v: %v", goCmdTimeout, err)
	}
	return time.Since(start), err
}

// gocacheprog is the GOCACHEPROG of a VM's go command.
func (s *suite) gocacheprog(v *vm, statsFile string) string {
	args := []string{s.bin, "-backend=s3", "-s3-bucket=" + bucketName, "-s3-endpoint=http://" + s.proxy.Listen,
		"-s3-path-style", "-s3-region=us-east-1", "-cache-dir=" + v.cacheDir, "-stats-json=" + statsFile}
	for i, a := range args {
		if strings.ContainsAny(a, " \t'\"") {
			args[i] = "'" + a + "'" // the go command splits GOCACHEPROG with quoting
		}
	}
	return strings.Join(args, " ")
}

// runVM runs go build and go test on one VM. In a kill9 phase a killer
// watches its gobuildcache processes and SIGKILLs one mid-put; the go
// command it served is then run again, and must be green.
func (s *suite) runVM(v *vm, round, phase int, kind string, ref map[string][]byte) buildResult {
	res := buildResult{vm: v.n, fresh: v.fresh, green: true}
	defer func() { v.fresh = false }()
	// An empty GOCACHE for every build: the go command keeps only its
	// own bookkeeping there; outputs come from gobuildcache.
	os.RemoveAll(v.gocache)
	if err := os.MkdirAll(v.gocache, 0o755); err != nil {
		s.problem("VM %d: %v", v.n, err)
		res.green = false
		return res
	}
	killRng := rand.New(rand.NewPCG(v.killSeed, uint64(v.n)))
	// In a kill9 phase the killer watches go build or go test, at random;
	// if go build is over before it strikes, go test.
	armed := kind == "kill9"
	skipBuild := armed && killRng.IntN(2) == 1
	start := time.Now()
	for _, which := range []string{"build", "test"} {
		for attempt := 1; ; attempt++ {
			tag := fmt.Sprintf("r%02d-p%d-%s-vm%d-%s-%d", round, phase, kind, v.n, which, attempt)
			statsFile := filepath.Join(s.statsDir, tag+".json")
			logPath := filepath.Join(s.logDir, tag+".log")
			args := []string{"test", "./..."}
			if which == "build" {
				os.RemoveAll(v.outDir)
				os.MkdirAll(v.outDir, 0o755)
				args = []string{"build", "-o", v.outDir + "/", "./..."}
			}
			env := append(append([]string(nil), s.baseEnv...), "GOCACHE="+v.gocache, "GOCACHEPROG="+s.gocacheprog(v, statsFile))

			var killDone chan killOutcome
			stopKiller := func() {}
			if armed && !(which == "build" && skipBuild) {
				kctx, cancel := context.WithCancel(s.ctx)
				stopKiller = cancel
				killDone = make(chan killOutcome, 1)
				// go test is often short (cached results): strike sooner.
				delay := between(killRng, 0, 1500*time.Millisecond)
				if which == "test" {
					delay = between(killRng, 0, 300*time.Millisecond)
				}
				go func() { killDone <- s.killer(kctx, statsFile, filepath.Join(v.cacheDir, "v1"), delay) }()
			}
			dur, err := s.goCmd(s.ctx, env, logPath, args...)
			stopKiller()
			var killed killOutcome
			if killDone != nil {
				killed = <-killDone
			}
			s.waitCacheExit(v)
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				res.green = false
				return res
			}
			if killed.pid != 0 {
				armed = false
				s.count("kill")
				if killed.midPut {
					s.count("kill_mid_put")
				}
				s.vlogf("VM %d: SIGKILLed gobuildcache %d during go %s after %.1fs (mid-put: %v); go %s %s",
					v.n, killed.pid, which, killed.after.Seconds(), killed.midPut, which, map[bool]string{true: "failed", false: "still succeeded"}[err != nil])
			}
			s.vlogf("VM %d: go %s attempt %d: %.1fs, err %v", v.n, which, attempt, dur.Seconds(), err)
			if err == nil {
				st, serr := readStats(statsFile)
				if serr != nil && killed.pid != 0 && errors.Is(serr, os.ErrNotExist) {
					// Killed after it answered close, before it wrote
					// its stats: the go command had all it needed.
					s.vlogf("VM %d: go %s green although its gobuildcache was killed (after close): no stats", v.n, which)
				} else if serr != nil {
					res.counterErrs++
					s.problem("VM %d round %d %s: go %s is green but its -stats-json cannot be read: %v", v.n, round, kind, which, serr)
				} else {
					if p := counterProblems(st); len(p) > 0 {
						res.counterErrs++
						s.problem("VM %d round %d %s: go %s: counters do not add up in %s: %s", v.n, round, kind, which, statsFile, strings.Join(p, "; "))
					}
					if len(st.Errors) > 0 {
						s.logf("note: VM %d round %d %s: go %s: gobuildcache counted server errors %v (%s)", v.n, round, kind, which, st.Errors, statsFile)
					}
					addStats(&res.stats, st)
				}
				if which == "test" {
					if missing := missingTestResults(logPath); len(missing) > 0 {
						res.wrong += len(missing)
						s.problem("VM %d round %d %s: go test is green but reports no ok for %s", v.n, round, kind, strings.Join(missing, ", "))
					}
				}
				break
			}
			if killed.pid != 0 && attempt == 1 {
				res.reruns++
				continue
			}
			res.green = false
			why := "not caused by a kill"
			if attempt > 1 {
				why = "the re-run after a kill"
			}
			s.problem("VM %d round %d fault %s: go %s failed (%s): %v\n%s", v.n, round, kind, which, why, err, tailFile(logPath, 40))
			break
		}
		if !res.green {
			break
		}
	}
	res.dur = time.Since(start)
	if res.green {
		got, err := readOutputs(v.outDir)
		if err != nil {
			got = nil
		}
		if diffs := compareOutputs(got, ref); len(diffs) > 0 {
			res.wrong += len(diffs)
			for _, d := range diffs {
				s.problem("VM %d round %d fault %s: wrong output: %s", v.n, round, kind, d)
			}
		}
	}
	return res
}

type killOutcome struct {
	pid    int // 0: nothing killed
	midPut bool
	after  time.Duration
}

// killer waits for the gobuildcache process of the go command whose
// -stats-json is statsFile and, once it has run for delay, SIGKILLs it as
// soon as it is seen with a temp file of the cache open (a put, a download
// or an upload in progress), or 2 s later whatever it does.
func (s *suite) killer(ctx context.Context, statsFile, v1Dir string, delay time.Duration) killOutcome {
	arg := "-stats-json=" + statsFile
	var pid int
	var seen time.Time
	for {
		if pid == 0 {
			if pids := cacheProcs(s.bin, arg); len(pids) > 0 {
				pid, seen = pids[0], time.Now()
			}
		} else if el := time.Since(seen); el >= delay {
			mid := writingTemp(pid, v1Dir)
			if mid || el >= delay+2*time.Second {
				// Still that process? (A pid is not reused this fast, but
				// check: this program kills only what it started.)
				if len(cacheProcs(s.bin, arg)) == 0 {
					return killOutcome{}
				}
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					return killOutcome{}
				}
				return killOutcome{pid: pid, midPut: mid, after: el}
			}
		}
		wait := 20 * time.Millisecond
		if pid != 0 {
			wait = 2 * time.Millisecond
		}
		if !sleepCtx(ctx, wait) {
			return killOutcome{}
		}
	}
}

// waitCacheExit waits (at most 30 s) until no gobuildcache process of v is
// left, so that its cache can be checked; stragglers are killed.
func (s *suite) waitCacheExit(v *vm) {
	arg := "-cache-dir=" + v.cacheDir
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if len(cacheProcs(s.bin, arg)) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range cacheProcs(s.bin, arg) {
		s.logf("VM %d: gobuildcache %d still running 30 s after its go command: killing it", v.n, pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// missingTestResults lists the packages with tests for which go test's
// output (in logPath) has no "ok" line: a test result the cache got wrong
// would show there.
func missingTestResults(logPath string) []string {
	b, _ := os.ReadFile(logPath)
	ok := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "ok" {
			ok[f[1]] = true
		}
	}
	var missing []string
	for i := 0; i < numPkgs; i++ {
		if p := modPath + "/" + pkgName(i); hasTest(i) && !ok[p] {
			missing = append(missing, p)
		}
	}
	return missing
}

// tailFile returns the last n lines of a file, indented.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "  (no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return "    " + strings.Join(lines, "\n    ")
}
