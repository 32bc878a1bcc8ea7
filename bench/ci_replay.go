package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/richardartoul/gobuildcache/internal/toxiproxy"
)

// The CI replay (-ci, make bench-ci): a short CI history of a real module
// (ci_module.go), each run a fresh `git clone` at one path on a fresh "VM",
// replayed three ways through one toxiproxy in front of MinIO: no cache,
// the tar-and-restore pattern, and gobuildcache on S3; and a fourth, the
// floor under any cache program (wayFloor), with, in run (5), the landing
// floor under a fresh VM's. It writes ci-replay.md and
// ci-replay.svg (ci_report.go).

// ciRun is one CI run of the history.
type ciRun struct {
	n      int
	title  string
	prep   []gitStep // what happens in the repository before the run
	branch string    // the branch whose tip the run builds
	pr     string    // the pull request's name; "" for a push
	base   string    // a pull request's target branch
	shards int       // 0: one job; else a matrix of that many test jobs
}

// onMain reports whether the run is a push to main: the only runs whose
// GOCACHE the tar-and-restore pattern saves.
func (r ciRun) onMain() bool { return r.pr == "" && r.branch == "main" }

// gitStep is one change to the repository.
type gitStep struct {
	branch string  // the branch it lands on
	from   string  // if set, the branch is created here first
	edit   *ciEdit // a seeded code edit,
	readme bool    // or a commit that changes no code,
	merge  string  // or a merge of this branch (no fast-forward)
}

// The history's edits in expr (defaultCIModule); another module needs its
// own (-ci-module takes only versions of expr whose files still have these
// functions).
var (
	editLeaf    = ciEdit{"docgen/docgen.go", "CreateDoc", "a function body in a leaf package (docgen: nothing imports it)"}
	editCore    = ciEdit{"ast/node.go", "(*base).SetLocation", "an exported function of the widely imported package (ast: nearly every package depends on it)"}
	editFollow  = ciEdit{"patcher/value/value.go", "getValue", "a function body in another leaf package (patcher/value)"}
	editRelease = ciEdit{"test/gen/gen.go", "nilNode", "a function body in test/gen, the expression generator (nothing imports it)"}
	editRelPR   = ciEdit{"docgen/docgen.go", "isProtobuf", "a function body in the leaf package docgen"}
)

// ciTestSkip is the -skip of every `go test`: expr's copy of testify has
// tests of Eventually and Never that time a goroutine against a ticker and
// fail on a loaded machine (TestEventuallyWithTTrue did, in a replay on a
// busy two-core VM). The same tests are skipped in every way.
const ciTestSkip = "^Test(Eventually|Never)"

// ciHistory is the seven runs, in order.
func ciHistory() []ciRun {
	return []ciRun{
		{n: 1, title: "main, cold (fills the caches)", branch: "main"},
		{n: 2, title: "push to main, no code change", branch: "main",
			prep: []gitStep{{branch: "main", readme: true}}},
		{n: 3, title: "pull request: leaf package edited", branch: "pr-leaf", pr: "leaf", base: "main",
			prep: []gitStep{{branch: "pr-leaf", from: "main", edit: &editLeaf}}},
		{n: 4, title: "pull request: widely imported package edited, first push", branch: "pr-core", pr: "core", base: "main",
			prep: []gitStep{{branch: "pr-core", from: "main", edit: &editCore}}},
		{n: 5, title: "the same pull request, second push (a small further edit)", branch: "pr-core", pr: "core", base: "main",
			prep: []gitStep{{branch: "pr-core", edit: &editFollow}}},
		{n: 6, title: "main after (3) merges: 4 matrix shards, a quarter of the test packages each", branch: "main", shards: 4,
			prep: []gitStep{{branch: "main", merge: "pr-leaf"}}},
		{n: 7, title: "pull request on the long-lived branch release (forked at (1), one commit of its own)", branch: "pr-rel", pr: "rel", base: "release",
			prep: []gitStep{{branch: "release", from: "run-1", edit: &editRelease}, {branch: "pr-rel", from: "release", edit: &editRelPR}}},
	}
}

// prepareHistory makes every run's commit in g, in order, tagging each run's
// commit run-N, and returns the edits' descriptions by run.
func prepareHistory(g *gitRepo, runs []ciRun, seed uint64) error {
	nEdit := 0
	for _, r := range runs {
		for _, s := range r.prep {
			var err error
			if s.from != "" {
				_, err = g.git("checkout", "-q", "-b", s.branch, s.from)
			} else {
				_, err = g.git("checkout", "-q", s.branch)
			}
			if err != nil {
				return err
			}
			switch {
			case s.edit != nil:
				nEdit++
				err = g.edit(*s.edit, seed, nEdit)
			case s.readme:
				err = appendFile(filepath.Join(g.dir, "README.md"), fmt.Sprintf("\n<!-- CI replay: run %d changes no code -->\n", r.n))
				if err == nil {
					err = g.commitAll(fmt.Sprintf("run %d: README only", r.n))
				}
			case s.merge != "":
				g.tick++
				_, err = g.git("merge", "-q", "--no-ff", "-m", "merge "+s.merge, s.merge)
			}
			if err != nil {
				return err
			}
		}
		if _, err := g.git("tag", fmt.Sprintf("run-%d", r.n), r.branch); err != nil {
			return err
		}
	}
	return nil
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// shardOf is the matrix shard (0..n-1) that runs the tests of pkg: a
// stable hash of its import path.
func shardOf(pkg string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(pkg))
	return int(h.Sum32() % uint32(n))
}

// shardPackages returns the packages of shard k of n, in their order.
func shardPackages(pkgs []string, k, n int) []string {
	var out []string
	for _, p := range pkgs {
		if shardOf(p, n) == k {
			out = append(out, p)
		}
	}
	return out
}

// ---------------------------------------------------------------- ways

// ciWay is how a history's runs get their cache.
type ciWay string

const (
	wayNone ciWay = "none" // an empty GOCACHE every run
	wayTar  ciWay = "tar"  // tar-and-restore: restore main's saved tar.zst, save on main
	wayGBC  ciWay = "gbc"  // gobuildcache on S3, prefetch on
	// wayFloor is the protocol floor (floor.go, with puts) on a fresh VM
	// whose GOCACHE already holds everything the earlier runs stored where
	// this run's gobuildcache would read it: no network, no landing, no
	// upload. No cache program can do better; the targets compare with it.
	// In run (landingFloorRun) it has a second row, the landing floor: the
	// same job on another fresh VM, beside which the entries it starts
	// with are downloaded at landingFloorRTT, unpacked and checked, as a
	// fresh VM's cache program must (landing_floor.go).
	wayFloor ciWay = "floor"
)

// landingFloorRun is the run whose floor job is also timed with the
// landing beside it: the one with issue 14's 3x target.
const landingFloorRun = 5

// tarRTTs are the round-trip times at which every tar-and-restore download
// and upload is timed. Nothing else a tar run does touches the network, so
// one build serves both rows.
var tarRTTs = []time.Duration{2 * time.Millisecond, 10 * time.Millisecond}

// ciHist is one history: a way, with or without mtimes, replayed run after
// run on its own caches.
type ciHist struct {
	key    string
	way    ciWay
	rtt    time.Duration // gobuildcache's RTT
	mtimes bool          // `gobuildcache mtimes` after each checkout
	root   string        // its bucket prefix: gobuildcache's locations, the tarballs
	saves  []tarSave     // tar: the saves so far, oldest first
	rows   map[time.Duration]*ciRow
	// floor: each gobuildcache location's plain GOCACHE (a directory of a
	// VM that ran on it), holding what the runs that wrote there stored
	// and what they read; and the GOCACHEs of the current matrix's jobs,
	// which settleFloor makes their location's.
	floor    map[string]string
	floorNew []string
}

// tarSave is one saved GOCACHE tarball (an actions/cache entry).
type tarSave struct {
	key    string // "build" (the one-job runs) or "test-K" (matrix shard K)
	object string
	size   int64
	run    int
}

// restoreFor returns the tarball the pattern restores for shard of run (or
// nil): a shard's own newest save, else the newest save of the one-job
// runs, as actions/cache's key and restore-keys do.
func (h *ciHist) restoreFor(run ciRun, shard int) *tarSave {
	keys := []string{"build"}
	if run.shards > 0 {
		keys = []string{fmt.Sprintf("test-%d", shard), "build"}
	}
	for _, k := range keys {
		for i := len(h.saves) - 1; i >= 0; i-- {
			if h.saves[i].key == k {
				return &h.saves[i]
			}
		}
	}
	return nil
}

// locations returns the prefix a gobuildcache run writes (and reads first)
// and the further ones it reads. With -s3-read-from a pull request writes
// its own prefix and reads its base branch's and main's; a push to another
// branch reads main's. Without it, every run shares main's prefix.
func (h *ciHist) locations(run ciRun, readFrom bool) (string, []string) {
	main := h.root + "main/"
	if !readFrom {
		return main, nil
	}
	if run.pr == "" {
		if run.branch == "main" {
			return main, nil
		}
		return h.root + run.branch + "/", []string{main}
	}
	var read []string
	if run.base != "main" {
		read = append(read, h.root+run.base+"/")
	}
	return h.root + "pr-" + run.pr + "/", append(read, main)
}

// ciRow is one line of the report: a history at one RTT.
type ciRow struct {
	key, label string
	way        ciWay
	rtt        time.Duration
	mtimes     bool
	res        map[int]*ciResult // by run
}

// ciResult is one run of a row: one job, or a matrix of jobs.
type ciResult struct {
	wall        time.Duration // the job's, or the slowest shard's
	parts       []partResult  // the job's (the slowest shard's) steps
	gets, hits  int64         // cache lookups and hits (see hitCounts)
	moved       int64         // bytes through the proxy; -1 unknown
	testsCached int
	testsTotal  int
	serverCPU   time.Duration // gobuildcache: CPU time of MinIO and toxiproxy during the go commands
	gbcCPU      time.Duration // gobuildcache: its own CPU time (cpu_seconds, summed)
	jobs        int           // matrix shards (0: one job)
	jobsWall    time.Duration // the shards' wall times added up
	note        string
	repeats     int             // not timed: the result of this run, repeated (see noCacheRepeats)
	roundWalls  []time.Duration // every round's wall time, in order (this result is the fastest's)
	gocache     string          // the plain GOCACHE the job left (the floor's, for a floor job)
}

// ---------------------------------------------------------------- settings

type ciSettings struct {
	quick         bool
	bin           string // absolute path of gobuildcache
	toxiproxy     string
	outDir        string
	module        string // path@version
	seed          uint64
	gbcRTTs       []time.Duration // gobuildcache histories without mtimes
	mtimesRTTs    []time.Duration // ... with mtimes (if the binary has it)
	runs          map[int]bool    // runs to replay (nil: all); run 1 always
	intoLatest    bool            // also a section of outDir/latest.md (make bench)
	noCacheAlways bool            // the no-cache way timed at every run, not just (1) and a matrix (see noCacheRepeats)
	keep          bool            // keep the work directory
	rounds        int             // times each timed job runs, from the same state; the fastest round is kept in the cells
	tieBudget     time.Duration   // the most a replay's third rounds may take (tieBreak)
}

// ciFeatures are what the binary under test offers the replay.
type ciFeatures struct {
	mtimes, readFrom, prefetch bool
	// scopes: -prefetch-scope takes further scopes after commas, so a
	// matrix shard reads the one-job runs' manifests without writing them.
	scopes bool
}

func detectCIFeatures(bin string) (ciFeatures, error) {
	out, err := exec.Command(bin, "help").CombinedOutput()
	if err != nil {
		return ciFeatures{}, fmt.Errorf("%s help: %v\n%s", bin, err, out)
	}
	help := string(out)
	f := ciFeatures{
		mtimes:   regexp.MustCompile(`(?m)^\s*gobuildcache mtimes\b`).MatchString(help),
		readFrom: regexp.MustCompile(`(?m)^\s*-s3-read-from(\s|$)`).MatchString(help),
		prefetch: regexp.MustCompile(`(?m)^\s*-prefetch(\s|$)`).MatchString(help),
		scopes:   strings.Contains(help, "further scopes"),
	}
	if f.mtimes {
		// The help may name it before it works: ask the command itself.
		if out, err := exec.Command(bin, "mtimes", "-h").CombinedOutput(); err != nil && !strings.Contains(string(out), "mtimes") {
			f.mtimes = false
		}
	}
	return f, nil
}

// ---------------------------------------------------------------- the run

type ciBench struct {
	ctx   context.Context
	set   ciSettings
	feat  ciFeatures
	env   minioEnv
	work  string
	src   string // the checkout path of every run
	runID string
	start time.Time

	origin  string // file:// URL of the repository
	modPath string
	modVer  string
	pkgs    int // packages of the module at (1)
	testPkg int

	tox      *rttProxy
	toxPid   int
	servers  []int // pids of toxiproxy and MinIO, whose CPU time is measured
	proxyURL string
	proxyS3  *s3Client
	directS3 *s3Client // MinIO itself, for what is not timed
	runs     []ciRun
	hists    []*ciHist
	rows     []*ciRow
	seq      int
	machine  string
	jobsPlan int
	// Where the replay's time went (the report's last line): the setup
	// before run (1), and the jobs, each from its fresh VM to its save.
	setup         time.Duration
	jobsDone      int
	jobsTime      time.Duration
	jobsTimeOfRun map[int]time.Duration
	partial       string // why the report is incomplete ("" when it is not)
	// Third rounds (tieBreak): their time, and the run and ways of each
	// run or skipped, for the report.
	tieSpent              time.Duration
	tieRounds, tieSkipped []string
	done                  []int // the runs replayed so far
}

func runCIBench(ctx context.Context, set ciSettings) error {
	set.rounds = max(set.rounds, 1)
	c := &ciBench{ctx: ctx, set: set, start: time.Now()}
	var err error
	if c.env, err = minioFromEnv(); err != nil {
		return err
	}
	if c.feat, err = detectCIFeatures(set.bin); err != nil {
		return err
	}
	rnd := make([]byte, 4)
	rand.Read(rnd)
	c.runID = time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(rnd)
	c.machine = machineDescription()
	if c.work, err = os.MkdirTemp("", "gobuildcache-bench-ci-"); err != nil {
		return err
	}
	if set.keep {
		logf("work directory (kept): %s", c.work)
	} else {
		defer removeLater(c.work)
	}
	c.src = filepath.Join(c.work, "ci", "src")

	c.modPath, c.modVer, _ = strings.Cut(set.module, "@")
	modDir, err := fetchModule(ctx, set.module)
	if err != nil {
		return err
	}
	originDir := filepath.Join(c.work, "origin")
	g, err := newGitRepo(originDir, modDir, set.module)
	if err != nil {
		return err
	}
	if err := c.countPackages(originDir); err != nil {
		return err
	}
	for _, r := range ciHistory() {
		if r.n == 1 || set.runs == nil || set.runs[r.n] {
			c.runs = append(c.runs, r)
		}
	}
	if err := prepareHistory(g, ciHistory(), set.seed); err != nil {
		return fmt.Errorf("preparing the history in %s: %v", originDir, err)
	}
	c.origin = "file://" + originDir

	tox, err := toxiproxy.Start(ctx, set.toxiproxy, filepath.Join(c.work, "toxiproxy.log"))
	if err != nil {
		return err
	}
	defer tox.Stop()
	proxy, err := tox.CreateProxy("minio", c.env.u.Host)
	if err != nil {
		return err
	}
	c.tox, c.toxPid = &rttProxy{Proxy: proxy}, tox.Pid()
	c.servers = []int{tox.Pid()}
	if pid, err := strconv.Atoi(os.Getenv("MINIO_PID")); err == nil { // from scripts/minio.sh run
		c.servers = append(c.servers, pid)
	}
	c.proxyURL = "http://" + proxy.Listen
	c.proxyS3 = newS3Client(c.proxyURL, c.env.region, c.env.akid, c.env.skey)
	c.directS3 = newS3Client(c.env.endpoint, c.env.region, c.env.akid, c.env.skey)

	c.defineHistories()
	if err := checkReplayDisk(c.work, c.jobsPlan); err != nil {
		return err
	}
	c.setup, c.jobsTimeOfRun = time.Since(c.start), map[int]time.Duration{}
	logf("%s", c.machine)
	logf("CI replay of %s: runs %v; gobuildcache %s: mtimes %v, -s3-read-from %v; %d jobs planned",
		set.module, runNumbers(c.runs), set.bin, c.feat.mtimes, c.feat.readFrom, c.jobsPlan)
	for i, run := range c.runs {
		err := c.replay(run)
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			c.done = append(c.done, run.n)
		}
		if err != nil {
			c.partial = fmt.Sprintf("stopped in run (%d): %v", run.n, firstLine(err.Error()))
			if i > 0 {
				c.writeReport()
			}
			return fmt.Errorf("run %d (%s): %v", run.n, run.title, err)
		}
		if i < len(c.runs)-1 {
			// What there is so far, in case the rest does not finish.
			c.partial = fmt.Sprintf("partial: written after run (%d)", run.n)
			if err := c.writeReport(); err != nil {
				return err
			}
		}
	}
	c.partial = ""
	return c.report()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// countPackages counts the module's packages, and those with tests, at (1).
func (c *ciBench) countPackages(dir string) error {
	env := goEnv(filepath.Join(c.work, "list-gocache"), "")
	_, out, err := runGo(c.ctx, dir, env, "list", "-f", "{{if or .TestGoFiles .XTestGoFiles}}test{{else}}-{{end}}", "./...")
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(out) {
		c.pkgs++
		if f == "test" {
			c.testPkg++
		}
	}
	return nil
}

func runNumbers(runs []ciRun) []int {
	var ns []int
	for _, r := range runs {
		ns = append(ns, r.n)
	}
	return ns
}

// defineHistories makes the histories and their report rows.
func (c *ciBench) defineHistories() {
	add := func(way ciWay, rtt time.Duration, mtimes bool) {
		key := string(way)
		if way == wayGBC {
			key += fmt.Sprintf("-%dms", rtt.Milliseconds())
		}
		if mtimes {
			key += "-mtimes"
		}
		h := &ciHist{key: key, way: way, rtt: rtt, mtimes: mtimes, rows: map[time.Duration]*ciRow{},
			root: fmt.Sprintf("gobuildcache-bench-ci/%s/%s/", c.runID, key)}
		rtts := []time.Duration{rtt}
		switch way {
		case wayTar:
			rtts = tarRTTs
		case wayFloor:
			rtts = []time.Duration{0, landingFloorRTT}
		}
		for _, r := range rtts {
			row := &ciRow{way: way, rtt: r, mtimes: mtimes, res: map[int]*ciResult{}}
			row.key, row.label = rowName(way, r, mtimes)
			h.rows[r] = row
			c.rows = append(c.rows, row)
		}
		c.hists = append(c.hists, h)
	}
	add(wayNone, 0, false)
	add(wayFloor, 0, false)
	add(wayTar, 0, false)
	if c.feat.mtimes {
		add(wayTar, 0, true)
	}
	for _, rtt := range c.set.gbcRTTs {
		add(wayGBC, rtt, false)
	}
	if c.feat.mtimes {
		for _, rtt := range c.set.mtimesRTTs {
			add(wayGBC, rtt, true)
		}
	}
	for _, run := range c.runs {
		jobs := 1
		if run.shards > 0 {
			jobs = run.shards
		}
		if run.n == 1 {
			c.jobsPlan += 2 * c.set.rounds // one cold job shared by no cache and tar, one by the gobuildcache histories
			continue
		}
		for _, h := range c.hists {
			if h.way == wayNone && c.noCacheRepeats(run) {
				continue
			}
			c.jobsPlan += jobs * c.roundsOf(h)
		}
	}
}

// noCacheRepeats reports whether the no-cache way repeats run (1)'s job for
// run instead of timing one. Without a cache every one-job run is a cold
// build of (1)'s code with at most a function body or two edited: the same
// work, timed once (it was the replay's costliest row: nearly half of its
// time). A matrix shard does a part of that work (go vet and go test of a
// quarter of the packages, cold), so (1)'s time bounds the matrix's slowest
// shard from above; timing the four cold shards took about four minutes of
// a replay that must fit in 25 (-ci-no-cache-every-run times them).
func (c *ciBench) noCacheRepeats(run ciRun) bool {
	return run.n != 1 && !c.set.noCacheAlways
}

// roundsOf returns how many rounds h's jobs run after run (1). The no-cache
// way's run once: no target compares against them, and its matrix (four
// cold shards, about 104 s a round on the faster VM kind) was a quarter of
// the replay's job time over two rounds. Run (1)'s no-cache job is
// tar-and-restore's cold job, in every round.
func (c *ciBench) roundsOf(h *ciHist) int {
	if h.way == wayNone {
		return 1
	}
	return c.set.rounds
}

func rowName(way ciWay, rtt time.Duration, mtimes bool) (key, label string) {
	m := ""
	if mtimes {
		m = " + mtimes"
	}
	switch way {
	case wayNone:
		return "none", "no cache"
	case wayTar:
		return fmt.Sprintf("tar-%dms%s", rtt.Milliseconds(), strings.ReplaceAll(m, " + ", "-")),
			fmt.Sprintf("tar-and-restore, %s%s", rttName(rtt), m)
	case wayFloor:
		if rtt > 0 {
			return "landing-floor", fmt.Sprintf("landing floor, %s, run (%d) only: the protocol floor's job beside the download, unpacking and checking of its entries", rttName(rtt), landingFloorRun)
		}
		return "floor", "protocol floor, every earlier entry local"
	}
	return fmt.Sprintf("gbc-%dms%s", rtt.Milliseconds(), strings.ReplaceAll(m, " + ", "-")),
		fmt.Sprintf("gobuildcache, %s%s", rttName(rtt), m)
}

// replay runs one CI run of every history, interleaved.
func (c *ciBench) replay(run ciRun) error {
	logf("run %d: %s", run.n, run.title)
	if run.n == 1 {
		return c.coldJobs(run)
	}
	var timed []*ciHist
	for _, h := range c.hists {
		if h.way == wayNone && c.noCacheRepeats(run) {
			if first := h.rows[0].res[1]; first != nil {
				cp := *first
				cp.repeats, cp.note = 1, "not timed: (1)'s cold job, the same work"
				if run.shards > 0 {
					// A bound, not the matrix's own figures: no hit rate.
					cp.gets, cp.hits = 0, 0
					cp.note = "not timed: at most (1)'s cold job, of which each shard does a part"
				}
				c.record(h, run, map[time.Duration]*ciResult{0: &cp})
			}
			continue
		}
		timed = append(timed, h)
	}
	best, err := c.inRounds(run, timed)
	if err != nil {
		return err
	}
	for _, h := range timed {
		c.record(h, run, best[h])
	}
	return nil
}

// inRounds runs run's job (or matrix) of each of hs c.set.rounds times and
// returns each one's fastest result, with every round's wall time. The
// histories are interleaved round by round, in the other order every
// other round (so that no way always runs first, after the set-up, or
// last, when the machine has been busiest longest), and every round starts
// from the same state: before a later round, what a gobuildcache
// history's last round wrote to the bucket is deleted and a tar history's
// save list put back (the next save overwrites the same object). The last
// round's state carries on (every round leaves the same). Where the
// rounds leave a target undecided, the ways it compares run one more
// (tieBreak).
func (c *ciBench) inRounds(run ciRun, hs []*ciHist) (map[*ciHist]map[time.Duration]*ciResult, error) {
	r := &rounds{best: map[*ciHist]map[time.Duration]*ciResult{}, snaps: map[*ciHist]historyState{}, cost: map[*ciHist]time.Duration{}}
	for round := 1; round <= c.set.rounds; round++ {
		var order []*ciHist
		for _, h := range hs {
			if round <= c.roundsOf(h) {
				order = append(order, h)
			}
		}
		if err := c.round(run, round, order, r); err != nil {
			return nil, err
		}
	}
	if err := c.tieBreak(run, hs, r); err != nil {
		return nil, err
	}
	return r.best, nil
}

// rounds is what inRounds keeps between rounds: each history's fastest
// result so far, its state before the first round, and the longest a
// round of it took (its restore and job, or matrix).
type rounds struct {
	best  map[*ciHist]map[time.Duration]*ciResult
	snaps map[*ciHist]historyState
	cost  map[*ciHist]time.Duration
}

// round runs round number round of run's job for hs, in hs's order in an
// odd round and in the other order in an even one.
func (c *ciBench) round(run ciRun, round int, hs []*ciHist, r *rounds) error {
	if round%2 == 0 {
		hs = slices.Clone(hs)
		slices.Reverse(hs)
	}
	for _, h := range hs {
		start := time.Now()
		if round == 1 {
			st, err := c.snapshot(h)
			if err != nil {
				return fmt.Errorf("%s: %v", h.key, err)
			}
			r.snaps[h] = st
		} else if err := c.restore(h, r.snaps[h]); err != nil {
			return fmt.Errorf("%s, round %d: %v", h.key, round, err)
		}
		res, err := c.matrix(h, run)
		if err != nil {
			return fmt.Errorf("%s: %v", h.key, err)
		}
		if r.best[h] == nil {
			r.best[h] = make(map[time.Duration]*ciResult)
		}
		keepFaster(r.best[h], res)
		r.cost[h] = max(r.cost[h], time.Since(start))
	}
	return nil
}

// tieBreak runs one more round of the histories whose ratio round by round
// leaves a target undecided (undecided: of two rounds, one on either side
// of its line), so that the target's median is that of three, as if every
// way had run three rounds: where the two agree, a third could not move
// their median across the line. The extra rounds of a replay take at most
// -ci-tiebreak-budget, estimated from each history's slowest round so far;
// a round that would not fit is skipped and the target judged on two.
func (c *ciBench) tieBreak(run ciRun, hs []*ciHist, r *rounds) error {
	need := c.undecidedHists(run, hs, r.best)
	if len(need) == 0 {
		return nil
	}
	var est time.Duration
	names := make([]string, len(need))
	for i, h := range need {
		est += r.cost[h]
		names[i] = h.key
	}
	what := fmt.Sprintf("(%d) of %s", run.n, strings.Join(names, ", "))
	if c.tieSpent+est > c.set.tieBudget {
		logf("  no third round of %s (about %s): the rounds' budget has %s left", what, est.Round(time.Second), (c.set.tieBudget - c.tieSpent).Round(time.Second))
		c.tieSkipped = append(c.tieSkipped, fmt.Sprintf("%s (about %.0fs)", what, est.Seconds()))
		return nil
	}
	logf("  a third round of %s: its two leave a target undecided", what)
	start := time.Now()
	err := c.round(run, c.set.rounds+1, need, r)
	took := time.Since(start)
	c.tieSpent += took
	c.tieRounds = append(c.tieRounds, fmt.Sprintf("%s (%.0fs)", what, took.Seconds()))
	return err
}

// tarOf returns the tar-and-restore history of hs that g's rows are
// compared with: the one with g's mtimes, else any.
func tarOf(hs []*ciHist, g *ciHist) *ciHist {
	var t *ciHist
	for _, h := range hs {
		if h.way == wayTar && (t == nil || h.mtimes == g.mtimes) {
			t = h
		}
	}
	return t
}

// undecidedHists returns, in hs's order, the histories of hs that a target
// undecided after the rounds so far compares (see ciTargets): a
// gobuildcache history and the tar-and-restore history with its mtimes,
// at its RTT, against slowerLine; in run fasterRun at fasterRTT, the two
// against fasterLine, and without mtimes the floors against that tar.
// In run (1), hs holds the two cold jobs that every row shares.
func (c *ciBench) undecidedHists(run ciRun, hs []*ciHist, best map[*ciHist]map[time.Duration]*ciResult) []*ciHist {
	if c.set.rounds%2 == 1 {
		return nil
	}
	need := map[*ciHist]bool{}
	for _, g := range hs {
		if g.way != wayGBC {
			continue
		}
		t := tarOf(hs, g)
		if t == nil || best[g][g.rtt] == nil || best[t][g.rtt] == nil {
			continue
		}
		gr, tr := best[g][g.rtt], best[t][g.rtt]
		if undecided(roundRatios(gr, tr), atMostSlower) {
			need[g], need[t] = true, true
		}
		if run.n != fasterRun || g.rtt != fasterRTT {
			continue
		}
		if undecided(roundRatios(tr, gr), atLeastFaster) {
			need[g], need[t] = true, true
		}
		for _, f := range hs {
			if f.way != wayFloor || g.mtimes {
				continue
			}
			for _, fr := range best[f] {
				if undecided(roundRatios(tr, fr), atLeastFaster) {
					need[f], need[t] = true, true
				}
			}
		}
	}
	var out []*ciHist
	for _, h := range hs {
		if need[h] {
			out = append(out, h)
		}
	}
	return out
}

// keepFaster keeps in best, for each RTT, the faster of its result and
// res's, with the wall time of every round so far.
func keepFaster(best, res map[time.Duration]*ciResult) {
	for rtt, r := range res {
		b := best[rtt]
		if b == nil {
			r.roundWalls = []time.Duration{r.wall}
			best[rtt] = r
			continue
		}
		walls := append(b.roundWalls, r.wall)
		if r.wall < b.wall {
			best[rtt] = r
		}
		best[rtt].roundWalls = walls
	}
}

// historyState is what a round of a history may change: a gobuildcache
// history's objects in the bucket, a tar history's saves, a floor
// history's GOCACHEs.
type historyState struct {
	keys  map[string]bool   // gobuildcache: every object under the history's root
	saves int               // tar: len(h.saves)
	floor map[string]string // floor: h.floor
}

// snapshot records h's state before the first round of a run.
func (c *ciBench) snapshot(h *ciHist) (historyState, error) {
	st := historyState{saves: len(h.saves), floor: maps.Clone(h.floor)}
	if h.way != wayGBC || c.set.rounds < 2 {
		return st, nil
	}
	keys, err := c.directS3.listKeys(c.ctx, c.env.bucket, h.root)
	if err != nil {
		return st, err
	}
	st.keys = make(map[string]bool, len(keys))
	for _, k := range keys {
		st.keys[k] = true
	}
	return st, nil
}

// restore puts h back in state st, untimed: the objects written since are
// deleted (straight from MinIO), the saves since forgotten. An object
// deleted since (a manifest trimmed) cannot be put back: the next round is
// then logged as starting without it.
func (c *ciBench) restore(h *ciHist, st historyState) error {
	h.saves = h.saves[:st.saves]
	h.floor = maps.Clone(st.floor)
	if st.keys == nil {
		return nil
	}
	keys, err := c.directS3.listKeys(c.ctx, c.env.bucket, h.root)
	if err != nil {
		return err
	}
	var added []string
	for _, k := range keys {
		if !st.keys[k] {
			added = append(added, k)
		}
	}
	if gone := len(st.keys) - (len(keys) - len(added)); gone > 0 {
		logf("  %s: the last round deleted %d objects; the next starts without them", h.key, gone)
	}
	return c.directS3.deleteKeys(c.ctx, c.env.bucket, added)
}

// coldJobs is run (1): one cold job that the gobuildcache histories share
// (shareColdGBC) and one that the no-cache and tar-and-restore histories
// share (shareCold). Like every other job, each runs in rounds (inRounds)
// from the same state, empty caches; the two take turns, in the other
// order each round, since the first job after the set-up meets whatever
// the machine is still doing then (in make bench, the S3 part has just
// deleted its runs: a file system busy with the deletions, memory the VM's
// host must hand back).
func (c *ciBench) coldJobs(run ciRun) error {
	gbcLead, tarLead := c.coldLead(wayGBC), c.coldLead(wayTar)
	leads := []*ciHist{tarLead}
	if gbcLead != nil {
		leads = []*ciHist{gbcLead, tarLead}
	}
	best, err := c.inRounds(run, leads)
	if err != nil {
		return err
	}
	if gbcLead != nil {
		if err := c.shareColdGBC(run, gbcLead, best[gbcLead]); err != nil {
			return err
		}
	}
	c.shareCold(run, tarLead, best[tarLead])
	return nil
}

// coldLead returns the history whose job is run (1) for every history of
// way: of the gobuildcache ones, the one at the highest RTT (with mtimes
// if one uses it), of the tar-and-restore ones, the one with mtimes if
// any. Nil if way has no history.
func (c *ciBench) coldLead(way ciWay) *ciHist {
	var lead *ciHist
	for _, h := range c.hists {
		switch {
		case h.way != way:
		case lead == nil:
			lead = h
		case way == wayGBC && (h.rtt > lead.rtt || (h.rtt == lead.rtt && h.mtimes)):
			lead = h
		case way == wayTar && h.mtimes:
			lead = h
		}
	}
	return lead
}

// shareColdGBC records res, the cold job of lead (a gobuildcache history,
// into an empty prefix), as run (1) of every gobuildcache history, whose
// prefix it copies from lead's, untimed and straight to MinIO. Their row
// for (1) is that job, less its mtimes step where they have none: a cold
// run's time hardly depends on the RTT, and the replay saves a cold build
// per history.
func (c *ciBench) shareColdGBC(run ciRun, lead *ciHist, res map[time.Duration]*ciResult) error {
	c.record(lead, run, res)
	src, _ := lead.locations(run, c.feat.readFrom)
	for _, h := range c.hists {
		if h.way != wayGBC || h == lead {
			continue
		}
		dst, _ := h.locations(run, c.feat.readFrom)
		n, err := c.directS3.copyPrefix(c.ctx, c.env.bucket, src, dst)
		if err != nil {
			return fmt.Errorf("copying %s to %s: %v", src, dst, err)
		}
		logf("  copied %d objects of %s's run (1) to %s", n, lead.key, h.key)
		note := fmt.Sprintf("the %s job, its prefix copied", rowLabel(lead))
		if lead.mtimes && !h.mtimes {
			note += ", without its mtimes step"
		}
		out := dropParts(res, lead.mtimes && !h.mtimes, false, note)
		c.record(h, run, map[time.Duration]*ciResult{h.rtt: out[lead.rtt]})
	}
	return nil
}

// rowLabel is the label of h's (first) row.
func rowLabel(h *ciHist) string {
	_, label := rowName(h.way, h.rtt, h.mtimes)
	return label
}

// shareCold records res, the cold job of lead (the tar-and-restore
// history with mtimes if one has it), as run (1) of the no-cache and
// tar-and-restore histories; its save is the tarball of every tar history.
// The no-cache row leaves out the mtimes, pack and upload steps, a tar row
// without mtimes the mtimes step; the caches are the same (a test result
// keyed on other mtimes is one no later run can hit).
func (c *ciBench) shareCold(run ciRun, lead *ciHist, res map[time.Duration]*ciResult) {
	for _, h := range c.hists {
		switch {
		case h == lead:
			c.record(h, run, res)
		case h.way == wayTar:
			h.saves = append(h.saves, lead.saves...)
			c.record(h, run, dropParts(res, !h.mtimes, false, "shared with the tar + mtimes job, without its mtimes step"))
		case h.way == wayNone, h.way == wayFloor:
			none := dropParts(res, lead.mtimes, true, "the shared cold job, without the tar steps")[tarRTTs[0]]
			none.moved = 0
			if h.way == wayFloor {
				// Its GOCACHE is what gobuildcache's cold job stores.
				main, _ := h.locations(run, c.feat.readFrom)
				h.floor = map[string]string{main: none.gocache}
			}
			c.record(h, run, map[time.Duration]*ciResult{0: none})
		}
	}
}

// dropParts returns copies of res without the mtimes step (if mtimes) and
// the tar steps (if tar), their wall times recomputed.
func dropParts(res map[time.Duration]*ciResult, mtimes, tar bool, note string) map[time.Duration]*ciResult {
	out := map[time.Duration]*ciResult{}
	for k, r := range res {
		cp := *r
		cp.parts, cp.wall, cp.note = nil, 0, note
		for _, p := range r.parts {
			if (mtimes && p.name == "mtimes") || (tar && (p.name == "download" || p.name == "unpack" || p.name == "pack" || p.name == "upload")) {
				continue
			}
			cp.parts = append(cp.parts, p)
			cp.wall += p.d
		}
		out[k] = &cp
	}
	return out
}

func (c *ciBench) record(h *ciHist, run ciRun, res map[time.Duration]*ciResult) {
	for rtt, r := range res {
		row := h.rows[rtt]
		if row == nil {
			continue
		}
		row.res[run.n] = r
		hit := "-"
		if r.gets > 0 {
			hit = fmt.Sprintf("%.1f%%", 100*float64(r.hits)/float64(r.gets))
		}
		logf("  [%s] run %d, %s: %.1fs, hit rate %s, moved %s, tests cached %d/%d", time.Since(c.start).Round(time.Second),
			run.n, row.label, r.wall.Seconds(), hit, fmtBytes(max(r.moved, 0)), r.testsCached, r.testsTotal)
	}
}

// matrix runs run's job (or its shards, one after another) for h and
// returns the result: a matrix takes as long as its slowest shard.
func (c *ciBench) matrix(h *ciHist, run ciRun) (map[time.Duration]*ciResult, error) {
	if h.way == wayFloor {
		defer c.settleFloor(h, run)
	}
	if run.shards == 0 {
		res, err := c.job(h, run, 0, false)
		if err != nil || h.way != wayFloor || run.n != landingFloorRun {
			return res, err
		}
		landed, err := c.job(h, run, 0, true)
		maps.Copy(res, landed)
		return res, err
	}
	agg := map[time.Duration]*ciResult{}
	for k := 0; k < run.shards; k++ {
		res, err := c.job(h, run, k, false)
		if err != nil {
			return nil, fmt.Errorf("shard %d: %v", k, err)
		}
		for rtt, r := range res {
			a := agg[rtt]
			if a == nil {
				a = &ciResult{jobs: run.shards}
				agg[rtt] = a
			}
			if r.wall > a.wall {
				a.wall, a.parts = r.wall, r.parts
			}
			a.jobsWall += r.wall
			a.serverCPU += r.serverCPU
			a.gbcCPU += r.gbcCPU
			a.gets += r.gets
			a.hits += r.hits
			if r.moved >= 0 && a.moved >= 0 {
				a.moved += r.moved
			} else {
				a.moved = -1
			}
			a.testsCached += r.testsCached
			a.testsTotal += r.testsTotal
		}
	}
	return agg, nil
}

// ciDiskPerJob is about what a job's machine leaves on disk until the
// replay ends: 18.8 GB for the first 75 of a full replay's 114 jobs, four
// of them cold (2026-12-06).
const ciDiskPerJob = 256 << 20

// checkReplayDisk fails if the file system of work has too little room
// for the machines of jobs jobs. Every job's machine stays until the
// replay ends (newVM), so a disk that fills halfway would waste the runs
// before it.
func checkReplayDisk(work string, jobs int) error {
	need, free := int64(jobs)*ciDiskPerJob, freeBytes(work)
	if free < 0 || free >= need {
		return nil
	}
	return fmt.Errorf("the replay keeps every job's machine until it ends: its %d jobs need about %s free under %s, which has %s (free some, or set TMPDIR to a larger file system)",
		jobs, fmtBytes(need), filepath.Dir(work), fmtBytes(free))
}

// newVM makes the directories of a fresh machine: its GOCACHE, its
// gobuildcache dir, its statistics. Nothing is deleted until the end: the
// last run's checkout is moved into the new machine's directory, so that
// no deletion charges a timed run (see settle in s3bench.go).
func (c *ciBench) newVM(label string) (string, error) {
	c.seq++
	dir := filepath.Join(c.work, "vms", fmt.Sprintf("%03d-%s", c.seq, label))
	for _, sub := range []string{"gocache", "local", "stats"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return "", err
		}
	}
	if _, err := os.Stat(c.src); err == nil {
		if err := os.Rename(c.src, filepath.Join(dir, "previous-checkout")); err != nil {
			return "", err
		}
	}
	return dir, os.MkdirAll(filepath.Dir(c.src), 0o755)
}

// job is one CI job of run on a fresh machine for h (shard k of a matrix):
// checkout, the way's restore, mtimes, the go commands, the way's save. A
// tar job returns a result for each of tarRTTs, the others one for h.rtt.
// land makes a floor job the landing floor's, with a result for
// landingFloorRTT: the floor's GOCACHE is also packed and uploaded
// (untimed), and from the job's first instant downloaded, unpacked and
// checked beside it; the job ends when both are done.
func (c *ciBench) job(h *ciHist, run ciRun, shard int, land bool) (map[time.Duration]*ciResult, error) {
	label := fmt.Sprintf("run%d-%s", run.n, h.key)
	if run.shards > 0 {
		label += fmt.Sprintf("-shard%d", shard)
	}
	defer func(t time.Time) {
		c.jobsDone++
		c.jobsTime += time.Since(t)
		c.jobsTimeOfRun[run.n] += time.Since(t)
	}(time.Now())
	dir, err := c.newVM(label)
	if err != nil {
		return nil, err
	}
	gocache := filepath.Join(dir, "gocache")
	floorCache := filepath.Join(dir, "floor")
	var landingKeys []string
	if h.way == wayFloor {
		if err := c.fillFloor(h, run, floorCache); err != nil {
			return nil, err
		}
		if land {
			keys, err := packLandingParts(c.ctx, c.directS3, c.env.bucket, floorCache, dir, fmt.Sprintf("%slanding/run-%d/", h.root, run.n))
			if err != nil {
				return nil, fmt.Errorf("landing floor: %v", err)
			}
			landingKeys = keys
		}
	}
	var parts []partResult
	timed := func(name string, f func() error) error {
		t := time.Now()
		err := f()
		parts = append(parts, partResult{name, time.Since(t)})
		return err
	}
	// Transfers of the tarball, timed at each RTT.
	type xfer struct {
		d     time.Duration
		bytes int64
	}
	down, up := map[time.Duration]xfer{}, map[time.Duration]xfer{}
	transfer := func(into map[time.Duration]xfer, f func() error) error {
		order := tarRTTs
		if (run.n+shard)%2 == 1 { // alternate which RTT goes first
			order = []time.Duration{tarRTTs[1], tarRTTs[0]}
		}
		for _, rtt := range order {
			if err := c.tox.setRTT(rtt); err != nil {
				return err
			}
			io0 := ioBytes(c.toxPid)
			t := time.Now()
			if err := f(); err != nil {
				return err
			}
			into[rtt] = xfer{time.Since(t), ioDelta(io0, ioBytes(c.toxPid))}
		}
		return nil
	}

	rtt := h.rtt
	if land {
		rtt = landingFloorRTT
	}
	if err := c.tox.setRTT(rtt); err != nil {
		return nil, err
	}
	syncDisks()
	io0 := ioBytes(c.toxPid)
	landed := make(chan error, 1)
	var landing time.Duration
	if land {
		start := time.Now()
		go func() {
			err := landParts(c.ctx, c.proxyS3, c.env.bucket, landingKeys, filepath.Join(dir, "landed"))
			landing = time.Since(start)
			landed <- err
		}()
	}
	if err := timed("checkout", func() error {
		_, err := runCmd(c.ctx, filepath.Dir(c.src), nil, "git", "clone", "-q", "--depth", "1", "--branch", fmt.Sprintf("run-%d", run.n), c.origin, c.src)
		return err
	}); err != nil {
		return nil, err
	}
	var restored *tarSave
	if h.way == wayTar {
		restored = h.restoreFor(run, shard)
	}
	if restored != nil {
		archive := filepath.Join(dir, "gocache.tar.zst")
		if err := transfer(down, func() error {
			_, err := c.proxyS3.download(c.ctx, c.env.bucket, restored.object, archive)
			return err
		}); err != nil {
			return nil, fmt.Errorf("download %s: %v", restored.object, err)
		}
		parts = append(parts, partResult{"download", 0})
		if err := timed("unpack", func() error { return unpackGocache(archive, gocache) }); err != nil {
			return nil, fmt.Errorf("unpack: %v", err)
		}
		if err := c.tox.setRTT(h.rtt); err != nil {
			return nil, err
		}
	}
	if h.mtimes {
		if err := timed("mtimes", func() error {
			_, err := runCmd(c.ctx, c.src, nil, c.set.bin, "mtimes")
			return err
		}); err != nil {
			return nil, err
		}
	}

	// The go commands.
	w := &workload{dir: c.src}
	if run.shards == 0 {
		w.parts = []workloadPart{{"build", []string{"build", "./..."}}, {"vet", []string{"vet", "./..."}}, {"test", []string{"test", "-short", "-skip", ciTestSkip, "./..."}}}
	} else {
		var out string
		if err := timed("list", func() error {
			var err error
			_, out, err = runGo(c.ctx, c.src, goEnv(gocache, ""), "list", "./...")
			return err
		}); err != nil {
			return nil, err
		}
		mine := shardPackages(strings.Fields(out), shard, run.shards)
		w.parts = []workloadPart{{"vet", append([]string{"vet"}, mine...)}, {"test", append([]string{"test", "-short", "-skip", ciTestSkip}, mine...)}}
	}
	m := vm{gocache: gocache}
	switch h.way {
	case wayGBC:
		m.prog, m.stats = c.gbcProg(h, run, shard, dir), filepath.Join(dir, "stats")
	case wayFloor:
		m = floorVMOver(floorCache, gocache)
		m.prog += " -floor-puts"
	}
	goStart, cpu0 := time.Now(), cpuTime(c.servers)
	wr, err := runWorkload(c.ctx, w, m)
	if err != nil {
		return nil, err
	}
	parts = append(parts, wr.parts...)
	if land {
		if err := <-landed; err != nil {
			return nil, fmt.Errorf("landing floor: %v", err)
		}
	}
	res := &ciResult{testsCached: wr.testsCached, testsTotal: wr.testsTotal, gocache: gocache}
	switch h.way {
	case wayGBC:
		res.gets, res.hits = wr.stats["gets"], wr.stats["hits"]
		res.moved = ioDelta(io0, ioBytes(c.toxPid))
		res.serverCPU = cpuTime(c.servers) - cpu0
		res.gbcCPU = time.Duration(wr.stats["cpu_seconds"]) * time.Microsecond
	case wayFloor:
		// The landing floor's packing read every entry before the go
		// commands: its hit rate would be wrong, and is the floor's.
		if !land {
			res.gets, res.hits = hitCounts(floorCache, goStart)
		}
		res.gocache = floorCache
		if land {
			res.moved = ioDelta(io0, ioBytes(c.toxPid))
		} else {
			h.floorNew = append(h.floorNew, floorCache)
		}
	default:
		res.gets, res.hits = hitCounts(gocache, goStart)
	}

	if h.way == wayTar && run.onMain() {
		archive := filepath.Join(dir, "save.tar.zst")
		var size int64
		if err := timed("pack", func() error {
			var err error
			size, err = packGocache(gocache, archive)
			return err
		}); err != nil {
			return nil, fmt.Errorf("pack: %v", err)
		}
		save := tarSave{key: "build", run: run.n, size: size}
		if run.shards > 0 {
			save.key = fmt.Sprintf("test-%d", shard)
		}
		save.object = fmt.Sprintf("%star/%s/run-%d.tar.zst", h.root, save.key, run.n)
		if err := transfer(up, func() error { return c.proxyS3.upload(c.ctx, c.env.bucket, save.object, archive) }); err != nil {
			return nil, fmt.Errorf("upload: %v", err)
		}
		parts = append(parts, partResult{"upload", 0})
		h.saves = append(h.saves, save)
	}

	out := map[time.Duration]*ciResult{}
	if h.way != wayTar {
		res.parts = parts
		for _, p := range parts {
			res.wall += p.d
		}
		if land {
			res.parts = append(res.parts, partResult{"landing (beside the job)", landing})
			res.wall = max(res.wall, landing)
		}
		if h.way == wayNone || h.way == wayFloor && !land {
			res.moved = 0
		}
		out[rtt] = res
		return out, nil
	}
	for _, rtt := range tarRTTs {
		r := *res
		r.parts = nil
		r.moved = down[rtt].bytes + up[rtt].bytes
		for _, p := range parts {
			switch p.name {
			case "download":
				p.d = down[rtt].d
			case "upload":
				p.d = up[rtt].d
			}
			r.parts = append(r.parts, p)
			r.wall += p.d
		}
		out[rtt] = &r
	}
	return out, nil
}

// fillFloor makes dst the GOCACHE of a floor job of run, untimed: a copy
// of the GOCACHEs of the locations the run's gobuildcache would read, its
// own last, so that a fresh VM starts with every entry that gobuildcache
// could find in the bucket already local.
func (c *ciBench) fillFloor(h *ciHist, run ciRun, dst string) error {
	write, read := h.locations(run, c.feat.readFrom)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, loc := range append(slices.Clone(read), write) {
		if src := h.floor[loc]; src != "" {
			if err := copyTree(src, dst); err != nil {
				return fmt.Errorf("floor: copying %s: %v", src, err)
			}
		}
	}
	return nil
}

// settleFloor makes the GOCACHE the floor jobs of run left (a matrix's
// merged into its first shard's, untimed) the GOCACHE of the location
// their gobuildcache would have written.
func (c *ciBench) settleFloor(h *ciHist, run ciRun) {
	dirs := h.floorNew
	h.floorNew = nil
	if len(dirs) == 0 {
		return
	}
	for _, d := range dirs[1:] {
		if err := copyTree(d, dirs[0]); err != nil {
			logf("  floor: merging %s: %v (the next runs' floor lacks its entries)", d, err)
		}
	}
	write, _ := h.locations(run, c.feat.readFrom)
	if h.floor == nil {
		h.floor = map[string]string{}
	}
	h.floor[write] = dirs[0]
}

func ioDelta(before, after int64) int64 {
	if before < 0 || after < 0 {
		return -1
	}
	return after - before
}

// gbcProg is the GOCACHEPROG of a gobuildcache job of h for run (shard k
// of a matrix). As the tarball's keys do, a job's -prefetch-scope is
// "build" and a matrix shard's its own, "test-K", then "build" read too
// (if the binary takes further scopes; else the default, one scope for
// every job).
func (c *ciBench) gbcProg(h *ciHist, run ciRun, shard int, dir string) string {
	write, read := h.locations(run, c.feat.readFrom)
	args := []string{quoteArg(c.set.bin), "-backend=s3", "-s3-bucket=" + c.env.bucket, "-s3-endpoint=" + c.proxyURL,
		"-s3-path-style", "-s3-region=" + c.env.region, "-s3-prefix=" + write,
		"-cache-dir=" + quoteArg(filepath.Join(dir, "local"))}
	if len(read) > 0 {
		var urls []string
		for _, p := range read {
			urls = append(urls, "s3://"+c.env.bucket+"/"+p)
		}
		args = append(args, "-s3-read-from="+strings.Join(urls, ","))
	}
	if c.feat.prefetch {
		args = append(args, "-prefetch=true")
	}
	if c.feat.scopes {
		scope := "build"
		if run.shards > 0 {
			scope = fmt.Sprintf("test-%d,build", shard)
		}
		args = append(args, "-prefetch-scope="+scope)
	}
	return strings.Join(args, " ")
}

// hitCounts estimates a plain GOCACHE's lookups from its action entries
// (the files ending in -a, which the go command reads on every lookup that
// finds them) after a run that started at start: an entry written during
// the run is a miss, and a hit too if it was read after it was written; an
// entry from before (restored) that was read is a hit. File systems mounted
// relatime (the default) update a file's access time on the first read
// after a write, which is what this reads; each entry counts once however
// often it was read.
func hitCounts(gocache string, start time.Time) (gets, hits int64) {
	filepath.WalkDir(gocache, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, "-a") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		atime, ok := accessTime(info)
		if !ok {
			return nil
		}
		mtime := info.ModTime()
		if !mtime.Before(start) { // written by this run
			gets++
			if atime.After(mtime) {
				gets++
				hits++
			}
		} else if !atime.Before(start) {
			gets++
			hits++
		}
		return nil
	})
	return gets, hits
}

// runCmd runs a command in dir and returns its combined output.
func runCmd(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(string(out), 2000))
	}
	return string(out), nil
}
