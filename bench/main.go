// Command bench measures gobuildcache against the plain Go build cache on
// this machine and prints a markdown table. It is a program, not a test.
//
//	go run ./bench            the local scenario (make bench-local): warm
//	                          `go build std` on the disk backend vs the plain
//	                          cache, and the memory of a 512 MiB put
//	go run ./bench -s3        the S3 benchmark (make bench): cold, warm,
//	                          fresh-VM, tar-and-restore and many-VM scenarios
//	                          on a local MinIO behind toxiproxy; run it under
//	                          scripts/minio.sh run, after scripts/toxiproxy.sh
//	                          install
//	go run ./bench -s3 -quick the same, shorter (make bench-quick)
//	go run ./bench -mtimes    `gobuildcache mtimes` on a generated 50,000-file
//	                          work tree (make bench-mtimes; make bench runs it
//	                          too): bench-results/mtimes.md
//	go run ./bench -ci        the CI replay (make bench-ci): seven CI runs of
//	                          a real module, no cache against tar-and-restore
//	                          against gobuildcache on S3, under
//	                          scripts/minio.sh run (ci_replay.go)
//	go run ./bench -ci -quick runs (1), (2), (4) and (5), fewer ways
//	go run ./bench -ci -ci-into-latest
//	                          the CI replay, also as a section of
//	                          latest.md (make bench, after -s3)
//
// See TESTING.md.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	runs := flag.Int("runs", 7, "timed runs of each scenario (medians are reported); with -s3, of the warm scenarios (3 with -quick)")
	bin := flag.String("bin", "builds/gobuildcache", "gobuildcache binary to measure")
	putMiB := flag.Int("put-mib", 512, "size of the put whose peak memory is measured")
	s3Mode := flag.Bool("s3", false, "run the S3 benchmark (under scripts/minio.sh run) instead of the local one")
	quick := flag.Bool("quick", false, "with -s3: a smaller workload and fewer runs (under 5 minutes on 2 cores); with -ci: fewer runs and ways")
	coldRuns := flag.Int("cold-runs", 0, "with -s3: runs of the cold scenarios (default 3, 1 with -quick)")
	freshRuns := flag.Int("fresh-runs", 0, "with -s3: runs of the fresh-VM and tar-and-restore scenarios (default 7, 1 with -quick)")
	manyRuns := flag.Int("many-runs", 0, "with -s3: runs of the many-VM scenario (default 4, 1 with -quick)")
	manyVMs := flag.Int("vms", 8, "with -s3: VMs building at once in the many-VM scenario")
	manyRTT := flag.Duration("many-rtt", 2*time.Millisecond, "with -s3: round-trip time of the many-VM scenario")
	toxBin := flag.String("toxiproxy", "", "with -s3: toxiproxy-server binary (default: the one scripts/toxiproxy.sh installs)")
	outDir := flag.String("out", "bench-results", "with -s3: directory for latest.md and latest.svg; with -ci, for ci-replay.md and ci-replay.svg; with -mtimes, for mtimes.md")
	compareCompression := flag.Bool("compare-compression", true, "with -s3: also fill a bucket with the other -compression and time a fresh VM on it (one more cold build; off with -quick unless given)")
	prOnly := flag.Bool("pr-only", false, "with -s3: only what the fresh-PR-VM target needs (one cold S3 fill, then fresh VMs at 2 ms on their own warm location and PR VMs reading it), interleaved")
	mtimesOnly := flag.Bool("mtimes", false, "run only the mtimes scenario and write its report to -out/mtimes.md")
	mtimesFiles := flag.Int("mtimes-files", 50000, "files of the mtimes scenario's tree (10000 with -quick)")
	mtimesRuns := flag.Int("mtimes-runs", 5, "runs of the mtimes scenario (3 with -quick)")
	ciMode := flag.Bool("ci", false, "run the CI replay (under scripts/minio.sh run) instead of the local benchmark")
	ciModule := flag.String("ci-module", defaultCIModule, "with -ci: the module@version to replay (its files must have the history's edit points)")
	ciSeed := flag.Uint64("ci-seed", 1, "with -ci: seed of the history's edits")
	ciRuns := flag.String("ci-runs", "", "with -ci: the runs to replay, e.g. 1,4,5 (default all seven; -quick: 1,2,4,5)")
	ciGBCRTTs := flag.String("ci-rtts", "2ms,10ms", "with -ci: RTTs of the gobuildcache histories without mtimes (-quick: 10ms)")
	ciNoCacheEvery := flag.Bool("ci-no-cache-every-run", false, "with -ci: time the no-cache way at every run (by default only at (1): the other one-job runs are its cold build again, and a matrix shard a part of it)")
	ciIntoLatest := flag.Bool("ci-into-latest", false, "with -ci: also put the replay's wall-time table and targets as a section of -out/latest.md (make bench)")
	ciMtimesRTTs := flag.String("ci-mtimes-rtts", "10ms", "with -ci: RTTs of the gobuildcache histories with mtimes (empty: none; -quick: none)")
	ciRounds := flag.Int("ci-rounds", 2, "with -ci: rounds of each timed job, the ways interleaved, in the other order every other round, each round from the same state; the fastest is kept in the cells and a target judged on the median of its ratio round by round (-quick: 1)")
	ciTieBudget := flag.Duration("ci-tiebreak-budget", 2*time.Minute, "with -ci: the most the third rounds may take in all: one runs where two rounds leave a target undecided (one on either side of its line), for the ways it compares")
	ciKeep := flag.Bool("ci-keep", false, "with -ci: keep the work directory (each VM's checkout, caches and -stats-json files) and print where it is")
	floorDir := flag.String("floor-server", "", "act as the protocol-floor GOCACHEPROG over the plain GOCACHE at this directory (the S3 benchmark starts it; see floor.go)")
	floorPuts := flag.Bool("floor-puts", false, "with -floor-server: offer put too, storing entries in that GOCACHE as the go command would")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench: ")
	if *floorDir != "" {
		if err := serveFloor(*floorDir, *floorPuts, os.Stdin, os.Stdout); err != nil {
			log.Fatal(err)
		}
		return
	}
	absBin, err := filepath.Abs(*bin)
	if err != nil {
		log.Fatal(err)
	}
	if *quick {
		if !flagSet("mtimes-files") {
			*mtimesFiles = 10000
		}
		if !flagSet("mtimes-runs") {
			*mtimesRuns = 3
		}
	}
	if *mtimesOnly {
		if err := runMtimesBench(absBin, *outDir, *mtimesFiles, *mtimesRuns); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *ciMode {
		if *quick && !flagSet("ci-rtts") {
			*ciGBCRTTs = "10ms"
		}
		set, err := ciSettingsFromFlags(*quick, absBin, *toxBin, *outDir, *ciModule, *ciSeed, *ciRuns, *ciGBCRTTs, *ciMtimesRTTs)
		if err != nil {
			log.Fatal(err)
		}
		set.noCacheAlways, set.intoLatest, set.keep = *ciNoCacheEvery, *ciIntoLatest, *ciKeep
		set.rounds, set.tieBudget = max(*ciRounds, 1), *ciTieBudget
		if *quick && !flagSet("ci-rounds") {
			set.rounds = 1
		}
		runInterruptible(func(ctx context.Context) error { return runCIBench(ctx, set) })
		return
	}
	if *s3Mode {
		set := s3Settings{
			mtimesFiles: *mtimesFiles, mtimesRuns: *mtimesRuns,
			quick: *quick, prOnly: *prOnly, bin: absBin, toxiproxy: *toxBin, outDir: *outDir,
			runs: 7, coldRuns: 3, freshRuns: 7, manyRuns: 4, manyVMs: *manyVMs, manyRTT: *manyRTT,
			compareCompression: true,
		}
		if *quick {
			set.runs, set.coldRuns, set.freshRuns, set.manyRuns = 3, 1, 1, 1
			set.compareCompression = false
		}
		flag.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "runs":
				set.runs = *runs
			case "compare-compression":
				set.compareCompression = *compareCompression
			}
		})
		for _, p := range []struct {
			dst *int
			v   int
		}{{&set.coldRuns, *coldRuns}, {&set.freshRuns, *freshRuns}, {&set.manyRuns, *manyRuns}} {
			if p.v > 0 {
				*p.dst = p.v
			}
		}
		if set.runs < 1 || set.manyVMs < 1 || set.manyVMs > 64 || set.manyRTT < 0 || set.manyRTT > time.Second {
			log.Fatal("-runs and -vms (up to 64) must be positive, -many-rtt between 0 and 1s")
		}
		if set.toxiproxy == "" {
			set.toxiproxy = defaultToxiproxy()
		}
		runInterruptible(func(ctx context.Context) error { return runS3Bench(ctx, set) })
		return
	}
	if *quick {
		log.Fatal("-quick goes with -s3")
	}
	work, err := os.MkdirTemp("", "gobuildcache-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)

	fmt.Printf("# gobuildcache local benchmark\n\n%s, %d CPUs, %s; workload: `go build std`; %d runs each, interleaved; median (min-max)\n\n",
		goVersion(), runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH, *runs)
	if err := benchWarmStd(work, absBin, *runs); err != nil {
		log.Fatal(err)
	}
	if err := benchPutMemory(work, absBin, int64(*putMiB)<<20); err != nil {
		log.Fatal(err)
	}
}

// runInterruptible runs f, and exits if it fails. SIGINT or SIGTERM cancel
// its context, so that it stops cleanly: the go commands, then toxiproxy.
func runInterruptible(f func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := f(ctx)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		if interrupted {
			log.Print("interrupted")
		}
		log.Fatal(err)
	}
}

// flagSet reports whether the flag was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// defaultToxiproxy is the toxiproxy-server that scripts/toxiproxy.sh
// installs.
func defaultToxiproxy() string {
	tools := os.Getenv("GOBUILDCACHE_TOOLS")
	if tools == "" {
		tools = ".tools"
	}
	return filepath.Join(tools, "bin", "toxiproxy-server")
}

// ciSettingsFromFlags checks the -ci flags.
func ciSettingsFromFlags(quick bool, bin, tox, outDir, module string, seed uint64, runs, gbcRTTs, mtimesRTTs string) (ciSettings, error) {
	set := ciSettings{quick: quick, bin: bin, toxiproxy: tox, outDir: outDir, module: module, seed: seed}
	if set.toxiproxy == "" {
		set.toxiproxy = defaultToxiproxy()
	}
	if !strings.Contains(module, "@") {
		return set, fmt.Errorf("-ci-module %q: want module@version", module)
	}
	if quick && runs == "" {
		runs = "1,2,4,5"
	}
	if runs != "" {
		set.runs = map[int]bool{}
		for _, f := range strings.Split(runs, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > len(ciHistory()) {
				return set, fmt.Errorf("-ci-runs %q: want run numbers from 1 to %d, separated by commas", runs, len(ciHistory()))
			}
			set.runs[n] = true
		}
	}
	var err error
	if set.gbcRTTs, err = parseRTTs("-ci-rtts", gbcRTTs); err != nil {
		return set, err
	}
	if quick {
		mtimesRTTs = ""
	}
	if set.mtimesRTTs, err = parseRTTs("-ci-mtimes-rtts", mtimesRTTs); err != nil {
		return set, err
	}
	return set, nil
}

func parseRTTs(name, s string) ([]time.Duration, error) {
	var ds []time.Duration
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		d, err := time.ParseDuration(f)
		if err != nil || d < 0 || d > time.Second || d%time.Millisecond != 0 {
			return nil, fmt.Errorf("%s %q: want durations in whole milliseconds up to 1s, separated by commas", name, s)
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// benchWarmStd compares a warm `go build std` on the plain cache with one
// on gobuildcache's disk backend.
func benchWarmStd(work, bin string, runs int) error {
	plainCache := filepath.Join(work, "plain-gocache")
	progDir := filepath.Join(work, "gobuildcache-dir")
	progGocache := filepath.Join(work, "prog-gocache")
	statsFile := filepath.Join(work, "stats.json")
	prog := fmt.Sprintf("%s -cache-dir=%s -stats-json=%s", bin, progDir, statsFile)

	plain := func() (time.Duration, error) { return timeGo(plainCache, "", "build", "std") }
	cached := func() (time.Duration, error) { return timeGo(progGocache, prog, "build", "std") }
	// Warm both (the first gobuildcache run stores everything).
	for _, f := range []func() (time.Duration, error){plain, cached, plain, cached} {
		if _, err := f(); err != nil {
			return err
		}
	}
	var tPlain, tProg []time.Duration
	var minHitRate float64 = 1
	for i := 0; i < runs; i++ {
		d, err := plain()
		if err != nil {
			return err
		}
		tPlain = append(tPlain, d)
		if d, err = cached(); err != nil {
			return err
		}
		tProg = append(tProg, d)
		var st struct {
			Gets, Hits int64
		}
		b, err := os.ReadFile(statsFile)
		if err != nil {
			return err
		}
		json.Unmarshal(b, &st)
		if st.Gets == 0 {
			return fmt.Errorf("no gets recorded")
		}
		minHitRate = min(minHitRate, float64(st.Hits)/float64(st.Gets))
	}
	ratios := make([]float64, runs)
	for i := range ratios {
		ratios[i] = tProg[i].Seconds() / tPlain[i].Seconds()
	}
	fmt.Println("| scenario | wall time | ratio to plain warm | hit rate |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| plain Go cache, warm | %s | 1.00 | - |\n", spread(tPlain))
	fmt.Printf("| gobuildcache disk, warm | %s | %.2f (%.2f-%.2f) | %.1f%% (lowest run) |\n\n",
		spread(tProg), median(ratios), slices.Min(ratios), slices.Max(ratios), 100*minHitRate)
	return nil
}

// benchPutMemory sends one large put and reports the server's peak RSS.
func benchPutMemory(work, bin string, size int64) error {
	dir := filepath.Join(work, "putmem")
	cmd := exec.Command(bin, "-cache-dir="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	// A body of random bytes, generated twice from one seed: once to hash,
	// once to send, so the benchmark itself holds none of it.
	seed := make([]byte, 32)
	rand.Read(seed)
	h := sha256.New()
	io.Copy(h, bodyStream(seed, size))
	action := sha256.Sum256(seed)
	req, _ := json.Marshal(map[string]any{"ID": 1, "Command": "put", "ActionID": action[:], "OutputID": h.Sum(nil), "BodySize": size})
	fmt.Fprintf(stdin, "%s\n\n\"", req)
	enc := base64.NewEncoder(base64.StdEncoding, stdin)
	io.Copy(enc, bodyStream(seed, size))
	enc.Close()
	fmt.Fprint(stdin, "\"\n{\"ID\":2,\"Command\":\"close\"}\n")
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("put: %v", err)
	}
	if strings.Contains(stdout.String(), `"Err"`) {
		return fmt.Errorf("put failed: %s", stdout.String())
	}
	fmt.Printf("| put of %d MiB | peak RSS of gobuildcache: %s |\n|---|---|\n", size>>20, peakRSS(cmd.ProcessState))
	return nil
}

// bodyStream is size deterministic pseudo-random bytes derived from seed.
func bodyStream(seed []byte, size int64) io.Reader {
	return io.LimitReader(&hashStream{state: seed}, size)
}

type hashStream struct{ state, buf []byte }

func (s *hashStream) Read(p []byte) (int, error) {
	if len(s.buf) == 0 {
		sum := sha256.Sum256(s.state)
		s.state = sum[:]
		s.buf = bytes.Repeat(sum[:], 1024)
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

// timeGo runs one go command with the given cache settings and returns its
// wall time.
func timeGo(gocache, gocacheprog string, args ...string) (time.Duration, error) {
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "GOCACHE="+gocache, "GOCACHEPROG="+gocacheprog, "GOFLAGS=-buildvcs=false")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return d, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func spread(ds []time.Duration) string {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = d.Seconds()
	}
	return fmt.Sprintf("%.3fs (%.3f-%.3f)", median(xs), slices.Min(xs), slices.Max(xs))
}

func goVersion() string {
	out, err := exec.Command("go", "version").Output()
	if err != nil {
		return "go (unknown version)"
	}
	return strings.TrimSpace(string(out))
}
