//go:build linux

// Command chaos is gobuildcache's chaos suite: evidence that the cache can
// never make a build wrong and never make a build fail.
//
// It starts its own MinIO and toxiproxy on 127.0.0.1, generates a module
// of a few dozen packages, and has eight "VMs" (separate local cache
// directories sharing one bucket) run go build and go test on it round
// after round, editing the source between phases, while it injects faults:
// latency spikes, connection resets, a bandwidth cap, a black-holed
// endpoint, MinIO killed and restarted mid-build, and kill -9 of a
// gobuildcache process mid-put. It checks that every build is green, every
// binary is byte-identical to one built with the plain Go cache, every
// local cache entry matches its output ID, and every -stats-json adds up,
// and prints one summary line per fault kind. See TESTING.md.
//
//	go run ./chaos -bin builds/gobuildcache          # the full suite
//	go run ./chaos -quick -bin builds/gobuildcache   # the CI variant
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/richardartoul/gobuildcache/internal/toxiproxy"
)

type options struct {
	bin      string
	rounds   int
	vms      int
	parallel int
	timeout  time.Duration
	quick    bool
	verbose  bool
	seed     uint64
	keep     bool
}

func main() {
	os.Exit(mainErr())
}

func mainErr() int {
	var o options
	flag.StringVar(&o.bin, "bin", "builds/gobuildcache", "the gobuildcache binary (built with go build -o if missing)")
	flag.IntVar(&o.rounds, "rounds", 15, "rounds: a warm-up, then the fault kinds in turn (one per round when rounds-1 >= 7, else several per round); 15 covers each twice")
	flag.IntVar(&o.vms, "vms", 8, "simulated CI machines, each with its own local cache directory")
	flag.IntVar(&o.parallel, "parallel", 3, "VMs building at once")
	flag.DurationVar(&o.timeout, "timeout", 25*time.Minute, "bound on the whole run")
	flag.BoolVar(&o.quick, "quick", false, "the CI variant: 4 rounds (every fault kind once) and an 8-minute bound, unless -rounds or -timeout say otherwise")
	flag.BoolVar(&o.verbose, "v", false, "log every go command, kill and fault toggle")
	flag.Uint64Var(&o.seed, "seed", 0, "random seed for edits, wipes, groups and fault timing (0: from the clock)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp directory (logs, stats, caches) instead of removing it")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "chaos: unexpected argument %q\n", flag.Arg(0))
		return 2
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick {
		if !set["rounds"] {
			o.rounds = 4
		}
		if !set["timeout"] {
			o.timeout = 12 * time.Minute // at a slow hour (load 6 on 2 cores) round 4 ended past 8 min
		}
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	if o.vms < 1 || o.parallel < 1 {
		fmt.Fprintln(os.Stderr, "chaos: -vms and -parallel must be at least 1")
		return 2
	}
	plan, err := schedule(o.rounds)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		return 2
	}

	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	s := &suite{opts: o, ctx: ctx, start: time.Now(), rng: rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15)),
		tallies: map[string]*tally{}, events: map[string]map[string]int{}}
	for _, k := range faultKinds {
		s.tallies[k] = &tally{}
		s.events[k] = map[string]int{}
	}
	defer s.cleanup()
	setupErr := s.setup(plan)
	var runErr error
	if setupErr == nil {
		runErr = s.run(plan)
	}
	return s.report(setupErr, runErr)
}

// suite is one run of the chaos suite.
type suite struct {
	opts  options
	ctx   context.Context // the whole run: timeout and signals
	start time.Time
	rng   *rand.Rand // used by the main goroutine only

	repo, bin, goBin string
	root             string // temp dir holding everything below
	modDir, refDir   string
	statsDir, logDir string
	gotmp            string
	refGocache       string
	baseEnv          []string

	wl    *workload
	minio *minio
	toxi  *toxiproxy.Server
	proxy *toxiproxy.Proxy // the proxy in front of MinIO, on which faults are injected
	vms   []*vm

	curKind string // the phase's fault kind, for counting events

	mu       sync.Mutex
	tallies  map[string]*tally
	events   map[string]map[string]int // by kind: toxic_on, minio_kill, kill, kill_mid_put
	problems []string                  // details of every failed check, printed at the end
}

// tally is what the summary line of one fault kind reports.
type tally struct {
	builds, green, reruns, wrong, bad, counterErrs int
	secs                                           [2][]float64 // per build past the warm-up: [warm VM, fresh VM]
	gets, hits, remoteHits, remoteErrs, skipped    int64
	verifyFailures, prefetched, serverErrs         int64
	remoteErrKinds                                 map[string]int64
}

type vm struct {
	n                int
	dir              string
	cacheDir, outDir string
	gocache          string
	memo             bodyMemo
	seenBad          map[string]bool
	fresh            bool   // wiped at the start of this round and not built since
	killSeed         uint64 // for the kill timing of its next build
}

func (s *suite) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "chaos: %6.1fs "+format+"\n", append([]any{time.Since(s.start).Seconds()}, args...)...)
}

func (s *suite) vlogf(format string, args ...any) {
	if s.opts.verbose {
		s.logf(format, args...)
	}
}

func (s *suite) count(event string) {
	s.mu.Lock()
	s.events[s.curKind][event]++
	s.mu.Unlock()
}

func (s *suite) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.problems = append(s.problems, msg)
	s.mu.Unlock()
	s.logf("PROBLEM: %s", msg)
}

// setup finds or installs the tools, builds the binary if missing,
// generates the module and starts MinIO and toxiproxy.
func (s *suite) setup(plan [][]string) error {
	var err error
	if s.repo, err = repoRoot(); err != nil {
		return err
	}
	if s.goBin, err = exec.LookPath("go"); err != nil {
		return fmt.Errorf("go not found: %v", err)
	}
	tools := os.Getenv("GOBUILDCACHE_TOOLS")
	if tools == "" {
		tools = filepath.Join(s.repo, ".tools")
	}
	minioBin := filepath.Join(tools, "bin", "minio")
	toxiBin := filepath.Join(tools, "bin", "toxiproxy-server")
	for _, t := range []struct{ bin, script string }{{minioBin, "minio.sh"}, {toxiBin, "toxiproxy.sh"}} {
		if _, err := os.Stat(t.bin); err == nil {
			continue
		}
		s.logf("%s missing: running scripts/%s install (one-time)", t.bin, t.script)
		cmd := exec.CommandContext(s.ctx, filepath.Join(s.repo, "scripts", t.script), "install")
		cmd.Dir, cmd.Stdout, cmd.Stderr = s.repo, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("scripts/%s install: %v", t.script, err)
		}
		if _, err := os.Stat(t.bin); err != nil {
			return fmt.Errorf("scripts/%s install did not produce %s", t.script, t.bin)
		}
	}

	bin := s.opts.bin
	if !filepath.IsAbs(bin) {
		if _, err := os.Stat(bin); err != nil {
			bin = filepath.Join(s.repo, bin) // relative to the repository
		}
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		s.logf("%s missing: CGO_ENABLED=0 go build -o %s .", bin, bin)
		cmd := exec.CommandContext(s.ctx, s.goBin, "build", "-o", bin, ".")
		cmd.Dir, cmd.Stdout, cmd.Stderr = s.repo, os.Stderr, os.Stderr
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as make build
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building %s: %v", bin, err)
		}
	}
	// /proc/<pid>/exe names the file with symlinks resolved.
	if s.bin, err = filepath.EvalSymlinks(bin); err != nil {
		return err
	}

	if s.root, err = os.MkdirTemp("", "gobuildcache-chaos-"); err != nil {
		return err
	}
	s.modDir = filepath.Join(s.root, "mod")
	s.refDir = filepath.Join(s.root, "ref")
	s.statsDir = filepath.Join(s.root, "stats")
	s.logDir = filepath.Join(s.root, "logs")
	s.gotmp = filepath.Join(s.root, "gotmp")
	for _, d := range []string{s.modDir, s.refDir, s.statsDir, s.logDir, s.gotmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	s.baseEnv = baseEnv(s.gotmp)
	s.refGocache = s.plainGocache()
	if s.wl, err = newWorkload(s.modDir, rand.New(rand.NewPCG(s.opts.seed, 1))); err != nil {
		return err
	}
	for i := 0; i < s.opts.vms; i++ {
		dir := filepath.Join(s.root, fmt.Sprintf("vm%d", i+1))
		v := &vm{n: i + 1, dir: dir, cacheDir: filepath.Join(dir, "cache"), outDir: filepath.Join(dir, "out"),
			gocache: filepath.Join(dir, "gocache"), memo: bodyMemo{}, seenBad: map[string]bool{}}
		if err := os.MkdirAll(v.cacheDir, 0o755); err != nil {
			return err
		}
		s.vms = append(s.vms, v)
	}

	s.minio = &minio{bin: minioBin, dataDir: filepath.Join(s.root, "minio-data"), logPath: filepath.Join(s.logDir, "minio.log")}
	if err := os.MkdirAll(s.minio.dataDir, 0o755); err != nil {
		return err
	}
	if err := s.minio.start(s.ctx); err != nil {
		return err
	}
	if err := createBucket(s.ctx, s.minio.endpoint()); err != nil {
		return err
	}
	if s.toxi, err = toxiproxy.Start(s.ctx, toxiBin, filepath.Join(s.logDir, "toxiproxy.log")); err != nil {
		return err
	}
	if s.proxy, err = s.toxi.CreateProxy("s3", s.minio.hostPort()); err != nil {
		return err
	}
	var kinds []string
	for _, r := range plan {
		kinds = append(kinds, strings.Join(r, "+"))
	}
	s.logf("seed %d; %d rounds [%s]; %d VMs, %d at once; MinIO %s behind toxiproxy %s; work dir %s",
		s.opts.seed, len(plan), strings.Join(kinds, " "), s.opts.vms, s.opts.parallel, s.minio.endpoint(), s.proxy.Listen, s.root)
	return nil
}

// cleanup stops everything this run started and removes its temp dir.
func (s *suite) cleanup() {
	s.toxi.Stop()
	if s.minio != nil {
		s.minio.kill(syscall.SIGKILL)
	}
	if s.root == "" {
		return
	}
	if s.opts.keep {
		fmt.Fprintf(os.Stderr, "chaos: kept %s\n", s.root)
		return
	}
	if err := os.RemoveAll(s.root); err != nil {
		// The go command makes its cache files read-only: make them writable.
		filepath.WalkDir(s.root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o755)
			}
			return nil
		})
		if err := os.RemoveAll(s.root); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: removing %s: %v\n", s.root, err)
		}
	}
}

// repoRoot is the directory of the gobuildcache module, found from the
// working directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/richardartoul/gobuildcache\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from within the gobuildcache repository")
		}
		dir = parent
	}
}

// run plays the plan: round after round, phase after phase.
func (s *suite) run(plan [][]string) error {
	for r, kinds := range plan {
		round := r + 1
		for _, v := range s.vms {
			v.fresh = false
		}
		order := s.rng.Perm(len(s.vms))
		for i, kind := range kinds {
			group := order[i*len(order)/len(kinds) : (i+1)*len(order)/len(kinds)]
			if len(group) == 0 {
				group = order[:1]
			}
			if round > 1 {
				if err := s.wipe(round, group); err != nil {
					return err
				}
			}
			if err := s.phase(round, i+1, len(kinds), kind, group); err != nil {
				return err
			}
		}
	}
	// A last look at every local cache, hashing every body again.
	for _, v := range s.vms {
		c, err := checkCacheDir(v.cacheDir, nil)
		if err != nil {
			return fmt.Errorf("final check of VM %d: %v", v.n, err)
		}
		s.noteBad(v, "final", c)
	}
	return nil
}

// wipe empties the local cache of one VM of the group (one or two of a
// group of four or more; none half the time for a group of one), as a fresh
// machine would start: every phase then has fresh and warm VMs.
func (s *suite) wipe(round int, group []int) error {
	n := 1
	switch {
	case len(group) >= 4:
		n += s.rng.IntN(2)
	case len(group) == 1:
		n = s.rng.IntN(2)
	}
	var wiped []string
	for _, i := range group[:n] {
		v := s.vms[i]
		if err := os.RemoveAll(v.cacheDir); err != nil {
			return err
		}
		if err := os.MkdirAll(v.cacheDir, 0o755); err != nil {
			return err
		}
		v.memo, v.seenBad, v.fresh = bodyMemo{}, map[string]bool{}, true
		wiped = append(wiped, fmt.Sprint(v.n))
	}
	if len(wiped) > 0 {
		s.vlogf("round %d: wiped the local cache of VM %s (fresh machines)", round, strings.Join(wiped, ", "))
	}
	return nil
}

// phase edits the source (except at the very start), builds the reference,
// and runs a group of VMs under one fault kind.
func (s *suite) phase(round, idx, of int, kind string, group []int) error {
	if err := s.ctx.Err(); err != nil {
		return err
	}
	phaseStart := time.Now()
	edit := "initial source"
	if round > 1 || idx > 1 {
		var err error
		if edit, err = s.wl.edit(); err != nil {
			return err
		}
	}
	ref, err := s.reference(fmt.Sprintf("r%02d-%d", round, idx))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.curKind = kind
	evBefore := maps.Clone(s.events[kind])
	s.mu.Unlock()

	// The fault, while the group builds.
	faultRng := rand.New(rand.NewPCG(s.rng.Uint64(), uint64(round*100+idx)))
	for _, i := range group {
		s.vms[i].killSeed = s.rng.Uint64()
	}
	faultCtx, stopFault := context.WithCancel(s.ctx)
	faultDone := make(chan struct{})
	go func() {
		defer close(faultDone)
		if inj := injectors[kind]; inj != nil {
			inj(faultCtx, s, faultRng)
		}
	}()
	results := make([]buildResult, len(group))
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(s.opts.parallel, len(group)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				results[i] = s.runVM(s.vms[group[i]], round, idx, kind, ref)
			}
		}()
	}
	for i := range group {
		work <- i
	}
	close(work)
	wg.Wait()
	stopFault()
	<-faultDone
	if err := s.toxi.Reset(); err != nil {
		s.logf("toxiproxy reset: %v", err)
	}
	if !s.minio.running() {
		if err := s.minio.restart(s.ctx); err != nil {
			return fmt.Errorf("MinIO did not come back: %v", err)
		}
	}
	if err := s.ctx.Err(); err != nil {
		return err
	}

	// Local caches of the group, after everything has stopped.
	bad := 0
	for _, i := range group {
		v := s.vms[i]
		c, err := checkCacheDir(v.cacheDir, v.memo)
		if err != nil {
			return fmt.Errorf("checking VM %d's cache: %v", v.n, err)
		}
		bad += s.noteBad(v, kind, c)
		s.vlogf("VM %d local cache: %d records, %d bodies, %d records without body, %d temp files, %d bad", v.n, c.records, c.bodies, c.dangling, c.temps, len(c.bad))
	}

	// Tally.
	s.mu.Lock()
	t := s.tallies[kind]
	var vms []string
	green, st := 0, cacheStats{RemoteErrorsByKind: map[string]int64{}}
	for _, r := range results {
		if r.fresh {
			vms = append(vms, fmt.Sprintf("%d(fresh)", r.vm))
		} else {
			vms = append(vms, fmt.Sprint(r.vm))
		}
		t.builds++
		if r.green {
			t.green++
			green++
		}
		t.reruns += r.reruns
		t.wrong += r.wrong
		t.counterErrs += r.counterErrs
		if round > 1 {
			class := 0
			if r.fresh {
				class = 1
			}
			t.secs[class] = append(t.secs[class], r.dur.Seconds())
		}
		addStats(&st, r.stats)
	}
	t.gets += st.Gets
	t.hits += st.Hits
	t.remoteHits += st.RemoteHits
	t.remoteErrs += st.RemoteErrors
	t.skipped += st.RemoteSkipped
	t.verifyFailures += st.VerifyFailures
	t.prefetched += st.PrefetchObjects
	for _, n := range st.Errors {
		t.serverErrs += n
	}
	if t.remoteErrKinds == nil {
		t.remoteErrKinds = map[string]int64{}
	}
	for k, n := range st.RemoteErrorsByKind {
		t.remoteErrKinds[k] += n
	}
	var ev []string
	for k, n := range s.events[kind] {
		if d := n - evBefore[k]; d > 0 {
			ev = append(ev, fmt.Sprintf("%s=%d", k, d))
		}
	}
	s.mu.Unlock()
	sort.Strings(ev)
	s.logf("round %d phase %d/%d fault=%s VMs %s, edit %s: %d/%d green in %.1fs; gets %d, remote hits %d, remote errors %d %v, skipped %d, verify failures %d, bad local entries %d, injected [%s]",
		round, idx, of, kind, strings.Join(vms, " "), edit, green, len(results), time.Since(phaseStart).Seconds(), st.Gets, st.RemoteHits,
		st.RemoteErrors, st.RemoteErrorsByKind, st.RemoteSkipped, st.VerifyFailures, bad, strings.Join(ev, " "))
	return nil
}

// noteBad records the bad entries of c not seen before in v's cache and
// returns how many there were.
func (s *suite) noteBad(v *vm, kind string, c entryCheck) int {
	n := 0
	for _, b := range c.bad {
		if v.seenBad[b] {
			continue
		}
		v.seenBad[b] = true
		n++
		s.problem("VM %d: bad local entry (%s): %s", v.n, kind, b)
	}
	if n > 0 && kind != "final" {
		s.mu.Lock()
		s.tallies[kind].bad += n
		s.mu.Unlock()
	} else if n > 0 {
		s.mu.Lock()
		s.tallies[s.curKind].bad += n // found only by the final check: the last phase's
		s.mu.Unlock()
	}
	return n
}

func addStats(dst *cacheStats, src cacheStats) {
	dst.Gets += src.Gets
	dst.Hits += src.Hits
	dst.RemoteHits += src.RemoteHits
	dst.RemoteErrors += src.RemoteErrors
	dst.RemoteSkipped += src.RemoteSkipped
	dst.VerifyFailures += src.VerifyFailures
	dst.PrefetchObjects += src.PrefetchObjects
	if dst.Errors == nil {
		dst.Errors = map[string]int64{}
	}
	for k, n := range src.Errors {
		dst.Errors[k] += n
	}
	if dst.RemoteErrorsByKind == nil {
		dst.RemoteErrorsByKind = map[string]int64{}
	}
	for k, n := range src.RemoteErrorsByKind {
		dst.RemoteErrorsByKind[k] += n
	}
}

// report prints the summary lines and the verdict, and returns the exit
// status.
func (s *suite) report(setupErr, runErr error) int {
	var reasons []string
	switch {
	case setupErr != nil:
		reasons = append(reasons, "setup: "+setupErr.Error())
	case runErr != nil && errors.Is(runErr, context.DeadlineExceeded):
		reasons = append(reasons, fmt.Sprintf("did not finish within -timeout %v", s.opts.timeout))
	case runErr != nil && errors.Is(runErr, context.Canceled):
		reasons = append(reasons, "interrupted")
	case runErr != nil:
		reasons = append(reasons, runErr.Error())
	}
	if len(s.problems) > 0 {
		fmt.Fprintf(os.Stderr, "chaos: %d problems:\n", len(s.problems))
		for _, p := range s.problems {
			fmt.Fprintf(os.Stderr, "  %s\n", p)
		}
	}
	base := s.tallies["none"].means()
	var red, wrong, bad, counters int
	for _, k := range faultKinds {
		t := s.tallies[k]
		extra := "n/a"
		if k == "none" {
			extra = "+0.0" // the baseline itself
		} else if x, ok := t.extra(base); ok {
			extra = fmt.Sprintf("%+.1f", x)
		}
		fmt.Printf("chaos: fault=%s builds=%d green=%d rerun_after_kill=%d wrong_outputs=%d bad_local_entries=%d counter_errors=%d extra_seconds=%s\n",
			k, t.builds, t.green, t.reruns, t.wrong, t.bad, t.counterErrs, extra)
		if s.opts.verbose {
			s.logf("fault=%s detail: gets %d, hits %d, remote hits %d, prefetched %d, remote errors %d %v, skipped %d, verify failures %d, server errors %d, events %v",
				k, t.gets, t.hits, t.remoteHits, t.prefetched, t.remoteErrs, t.remoteErrKinds, t.skipped, t.verifyFailures, t.serverErrs, s.events[k])
		}
		red += t.builds - t.green
		wrong += t.wrong
		bad += t.bad
		counters += t.counterErrs
		if setupErr == nil && runErr == nil {
			if t.builds == 0 {
				reasons = append(reasons, "fault "+k+" never ran")
			} else if missing := s.notInjected(k); missing != "" {
				reasons = append(reasons, "fault "+k+" "+missing)
			}
		}
	}
	for _, c := range []struct {
		n    int
		what string
	}{{red, "builds red"}, {wrong, "wrong outputs"}, {bad, "bad local entries"}, {counters, "counter errors"}} {
		if c.n > 0 {
			reasons = append(reasons, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	s.logf("finished (seed %d)", s.opts.seed)
	if len(reasons) > 0 {
		fmt.Printf("chaos: FAIL (%s)\n", strings.Join(reasons, "; "))
		return 1
	}
	fmt.Println("chaos: PASS")
	return 0
}

// notInjected says what is missing if the fault kind k ran but was never
// actually injected.
func (s *suite) notInjected(k string) string {
	ev := s.events[k]
	switch k {
	case "latency", "reset", "bandwidth", "blackhole":
		if ev["toxic_on"] == 0 {
			return "was never switched on"
		}
	case "minio_restart":
		if ev["minio_kill"] == 0 {
			return "never killed MinIO (builds too short)"
		}
	case "kill9":
		if ev["kill"] == 0 {
			return "never killed a gobuildcache process"
		}
	}
	return ""
}

// means is the mean time of this kind's builds past the warm-up, on warm
// and on fresh VMs; NaN for none.
func (t *tally) means() [2]float64 {
	var m [2]float64
	for c, xs := range t.secs {
		m[c] = math.NaN()
		if len(xs) > 0 {
			var sum float64
			for _, x := range xs {
				sum += x
			}
			m[c] = sum / float64(len(xs))
		}
	}
	return m
}

// extra is the mean, over this kind's builds past the warm-up, of how much
// longer each took than the mean build without faults on the same kind of
// VM (warm or fresh).
func (t *tally) extra(base [2]float64) (float64, bool) {
	var sum float64
	n := 0
	for c, xs := range t.secs {
		if math.IsNaN(base[c]) {
			continue
		}
		for _, x := range xs {
			sum += x - base[c]
			n++
		}
	}
	if n == 0 {
		return 0, false
	}
	return sum / float64(n), true
}
