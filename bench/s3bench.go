package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/richardartoul/gobuildcache/internal/toxiproxy"
)

// The S3 benchmark (-s3): gobuildcache with its S3 backend on a local MinIO,
// reached through a toxiproxy that adds a chosen round-trip time, against the
// plain Go cache, its disk backend and the tar-and-restore pattern. It runs
// under scripts/minio.sh run (see the Makefile's bench targets).

// s3Settings are the knobs of one S3 benchmark run.
type s3Settings struct {
	quick     bool
	prOnly    bool   // only the rows of the fresh-PR-VM target
	bin       string // absolute path of gobuildcache
	toxiproxy string // toxiproxy-server binary
	outDir    string // where latest.md and latest.svg go
	runs      int    // warm scenarios (cheap)
	coldRuns  int    // cold scenarios (each a full compile)
	freshRuns int    // fresh-VM and tar-and-restore scenarios
	manyRuns  int    // the eight-VM scenario
	manyVMs   int
	manyRTT   time.Duration
	// compareCompression fills a second bucket with the other -compression
	// (one more cold build) for the fresh VM at 10 ms.
	compareCompression bool
	// The mtimes scenario (mtimes.go): files of its tree, runs.
	mtimesFiles, mtimesRuns int
}

// features are what the binary under test supports, from its help.
type features struct {
	prefetch, prefetchScope, compression bool
	readFrom                             bool // -s3-read-from: the PR-VM row
	prefetchPacks                        bool // -prefetch-packs: the packs-off rows (issue 15's before)
	compressionDefault                   string
}

func detectFeatures(bin string) (features, error) {
	out, err := exec.Command(bin, "help").CombinedOutput()
	if err != nil {
		return features{}, fmt.Errorf("%s help: %v\n%s", bin, err, out)
	}
	help := string(out)
	has := func(flag string) bool {
		return regexp.MustCompile(`(?m)^\s*-` + regexp.QuoteMeta(flag) + `(\s|$)`).MatchString(help)
	}
	f := features{prefetch: has("prefetch"), prefetchScope: has("prefetch-scope"), compression: has("compression"), readFrom: has("s3-read-from"),
		prefetchPacks: has("prefetch-packs")}
	if f.compression {
		// The help's variable line is "env COMPRESSION, default ..." up to
		// issue 12, "env GOBUILDCACHE_COMPRESSION (or COMPRESSION), default ..."
		// after it.
		f.compressionDefault = "none"
		if m := regexp.MustCompile(`(?m)^\s*-compression value\n.*\n\s*env [^\n]*COMPRESSION\)?, default "([^"]*)"`).FindStringSubmatch(help); m != nil {
			f.compressionDefault = m[1]
		}
	}
	return f, nil
}

// row is one line of the results table.
type row struct {
	key   string
	label string // in the table
	short string // on the chart
	group string // colour on the chart
	na    string // why it was not measured
	runs  []runResult
}

type s3Bench struct {
	ctx  context.Context
	set  s3Settings
	work string
	// mtimesMD is the mtimes scenario's report section.
	mtimesMD string
	// lastDelete is when files were last deleted in bulk (see settle).
	lastDelete time.Time
	wl         *workload
	feat       features
	runID      string
	scope      string // -prefetch-scope of every S3 run: one "CI job"
	seq        int

	tox                        *rttProxy
	serverPIDs                 []int // MinIO and toxiproxy
	proxyURL                   string
	bucket, region, akid, skey string
	storage                    string // where MinIO keeps its data (minioEnv.storage)
	proxyS3, directS3          *s3Client

	rows  []*row
	byKey map[string]*row

	plainWarm   string            // GOCACHE left warm by the last plain cold run
	diskWarm    vm                // disk backend left warm by the last cold run
	s3WarmLocal vm                // local dir of the last S3 cold run
	warmBucket  map[string]string // compression -> prefix of a warm bucket
	tarKey      string
	landingKeys []string // the landing floor's objects (packLandingFloor)
	tarSize     int64
	tarRaw      int64

	planned, done int
	start         time.Time
	machine       string
}

func runS3Bench(ctx context.Context, set s3Settings) error {
	env, err := minioFromEnv()
	if err != nil {
		return err
	}
	endpoint, u := env.endpoint, env.u
	b := &s3Bench{ctx: ctx, set: set, byKey: map[string]*row{}, warmBucket: map[string]string{}, start: time.Now()}
	b.bucket, b.region, b.akid, b.skey = env.bucket, env.region, env.akid, env.skey
	b.storage = env.storage()
	if b.feat, err = detectFeatures(set.bin); err != nil {
		return err
	}
	rnd := make([]byte, 4)
	rand.Read(rnd)
	b.runID = time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(rnd)

	if b.work, err = os.MkdirTemp("", "gobuildcache-bench-s3-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.work)
	repoRoot, err := os.Getwd()
	if err != nil {
		return err
	}
	if b.wl, err = newWorkload(b.work, repoRoot, set.quick); err != nil {
		return fmt.Errorf("workload module (run from the repository root): %v", err)
	}
	b.scope = "gobuildcache-bench-" + b.wl.name
	b.machine = machineDescription()

	tox, err := toxiproxy.Start(ctx, set.toxiproxy, filepath.Join(b.work, "toxiproxy.log"))
	if err != nil {
		return err
	}
	defer tox.Stop()
	proxy, err := tox.CreateProxy("minio", u.Host)
	if err != nil {
		return err
	}
	b.tox = &rttProxy{Proxy: proxy}
	b.serverPIDs = []int{tox.Pid()}
	if pid, err := strconv.Atoi(os.Getenv("MINIO_PID")); err == nil { // from scripts/minio.sh run
		b.serverPIDs = append(b.serverPIDs, pid)
	}
	b.proxyURL = "http://" + proxy.Listen
	b.proxyS3 = newS3Client(b.proxyURL, b.region, b.akid, b.skey)
	b.directS3 = newS3Client(endpoint, b.region, b.akid, b.skey)

	b.defineRows()
	logf("%s", b.machine)
	logf("workload (%s): %s", b.wl.name, b.wl.desc)
	logf("gobuildcache %s: prefetch %v, compression %v; MinIO %s behind toxiproxy %s; %d timed runs planned",
		set.bin, b.feat.prefetch, b.feat.compression, endpoint, b.proxyURL, b.planned)

	phases := []func() error{b.coldPhase, b.warmPhase, b.packTarball, b.packLandingFloor, b.freshPhase, b.manyPhase, b.mtimesPhase}
	if set.prOnly {
		phases = []func() error{b.coldPhase, b.freshPhase}
	}
	for _, phase := range phases {
		if err := phase(); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return b.report()
}

// mtimesPhase runs the mtimes scenario; its section ends the report.
func (b *s3Bench) mtimesPhase() (err error) {
	b.mtimesMD, err = benchMtimes(b.work, b.set.bin, b.set.mtimesFiles, b.set.mtimesRuns)
	return err
}

// minioEnv is the local MinIO that scripts/minio.sh run describes in the
// environment.
type minioEnv struct {
	endpoint                   string
	u                          *url.URL
	bucket, region, akid, skey string
	dataDir                    string // MINIO_DATA_DIR, "" if not set
}

// storage says where MinIO keeps its data, for a report's setup line (the
// Makefile's bench targets put it on tmpfs: see scripts/minio.sh).
func (e minioEnv) storage() string {
	if e.dataDir == "" {
		return "MinIO's data directory unknown"
	}
	switch tmpfs, known := onTmpfs(e.dataDir); {
	case !known:
		return "MinIO's data in " + e.dataDir
	case tmpfs:
		return "MinIO's data on tmpfs (" + e.dataDir + "), off the disk the jobs build on"
	default:
		return "MinIO's data on disk (" + e.dataDir + "), where its synchronous writes share the disk with the jobs'"
	}
}

// minioFromEnv reads the MinIO that scripts/minio.sh run started, and
// refuses one that is not on this machine.
func minioFromEnv() (minioEnv, error) {
	endpoint := os.Getenv("S3_ENDPOINT")
	if endpoint == "" {
		return minioEnv{}, errors.New("S3_ENDPOINT is not set: run the benchmark under `scripts/minio.sh run --` (see the Makefile's bench targets)")
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return minioEnv{}, fmt.Errorf("S3_ENDPOINT %q: want http://127.0.0.1:PORT (a local MinIO)", endpoint)
	}
	if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" && h != "::1" {
		return minioEnv{}, fmt.Errorf("S3_ENDPOINT %q is not on this machine; the benchmark only talks to 127.0.0.1", endpoint)
	}
	e := minioEnv{endpoint: endpoint, u: u, bucket: envOr("S3_BUCKET", "gobuildcache"), region: envOr("AWS_REGION", "us-east-1"),
		akid: os.Getenv("AWS_ACCESS_KEY_ID"), skey: os.Getenv("AWS_SECRET_ACCESS_KEY"), dataDir: os.Getenv("MINIO_DATA_DIR")}
	if e.akid == "" || e.skey == "" {
		return minioEnv{}, errors.New("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set (scripts/minio.sh run sets them)")
	}
	return e, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// ---------------------------------------------------------------- rows

var freshRTTs = []time.Duration{0, 2 * time.Millisecond, 10 * time.Millisecond}

func rttName(rtt time.Duration) string {
	if rtt == 0 {
		return "loopback"
	}
	return fmt.Sprintf("%d ms", rtt.Milliseconds())
}

// compressions returns the -compression values the cold S3 runs use (each
// fills its own bucket): the default first. "" means the binary has no such
// flag.
func (b *s3Bench) compressions() []string {
	all := b.allCompressions()
	if !b.set.compareCompression {
		return all[:1]
	}
	return all
}

// allCompressions is compressions() with -compare-compression.
func (b *s3Bench) allCompressions() []string {
	if !b.feat.compression {
		return []string{""}
	}
	other := "zstd"
	if b.feat.compressionDefault == "zstd" {
		other = "none"
	}
	return []string{b.feat.compressionDefault, other}
}

const noCompareCompression = "skipped: -compare-compression=false, the default of -quick"

func compSuffix(comp string) string {
	if comp == "" {
		return ""
	}
	return ", compression " + comp
}

// compShort is compSuffix for the chart.
func compShort(comp string) string {
	switch comp {
	case "":
		return ""
	case "none":
		return ", no zstd"
	}
	return ", " + comp
}

func (b *s3Bench) add(r *row, runs int) {
	b.rows = append(b.rows, r)
	b.byKey[r.key] = r
	if r.na == "" {
		b.planned += runs
	}
}

// The PR-VM row: a pull request's first run, which writes a location of its
// own (empty) and reads the warm one through -s3-read-from, against a fresh
// VM reading the warm location as its own, at the same RTT.
const (
	prKey = "fresh-pr"
	prRTT = 2 * time.Millisecond
)

func freshKey(rtt time.Duration, prefetch bool, comp string) string {
	return fmt.Sprintf("fresh-%d-%v-%s", rtt.Milliseconds(), prefetch, comp)
}

func (b *s3Bench) tarRTTs() []time.Duration {
	if b.set.quick {
		return []time.Duration{10 * time.Millisecond}
	}
	return freshRTTs
}

// freshConfig is one fresh-VM scenario.
type freshConfig struct {
	rtt      time.Duration
	prefetch bool
	comp     string
	noPacks  bool // -prefetch-packs=false: each entry fetched as its own object
}

// noPacksKey is the key of the fresh-VM row with prefetch on and packs off.
func noPacksKey(rtt time.Duration, comp string) string { return freshKey(rtt, true, comp) + "-nopacks" }

func (c freshConfig) key() string {
	if c.noPacks {
		return noPacksKey(c.rtt, c.comp)
	}
	return freshKey(c.rtt, c.prefetch, c.comp)
}

// noPacksRTTs are the RTTs of the packs-off rows: the same bucket, read
// the way a fresh VM read it before packs (issue 15's before and after).
var noPacksRTTs = []time.Duration{2 * time.Millisecond, 10 * time.Millisecond}

func (b *s3Bench) freshConfigs() []freshConfig {
	comps := b.allCompressions()
	var cs []freshConfig
	for _, rtt := range freshRTTs {
		cs = append(cs, freshConfig{rtt: rtt, prefetch: true, comp: comps[0]})
		if b.feat.prefetchPacks && slices.Contains(noPacksRTTs, rtt) {
			cs = append(cs, freshConfig{rtt: rtt, prefetch: true, comp: comps[0], noPacks: true})
		}
		cs = append(cs, freshConfig{rtt: rtt, prefetch: false, comp: comps[0]})
	}
	if len(comps) > 1 {
		cs = append(cs, freshConfig{rtt: 10 * time.Millisecond, prefetch: true, comp: comps[1]})
	}
	return cs
}

func (b *s3Bench) defineRows() {
	s := b.set
	b.add(&row{key: "plain-cold", label: "plain Go cache, cold (empty GOCACHE)", short: "plain Go cache, cold", group: "plain"}, s.coldRuns)
	b.add(&row{key: "plain-warm", label: "plain Go cache, warm", short: "plain Go cache, warm", group: "plain"}, s.runs)
	b.add(&row{key: plainWarmFreshKey, label: "plain Go cache, warm, run first in each round of the fresh-VM scenarios (their targets' baseline)",
		short: "plain Go cache, warm (fresh-VM rounds)", group: "plain"}, s.freshRuns)
	b.add(&row{key: "floor", label: "protocol floor: a minimal GOCACHEPROG answering from the plain warm GOCACHE (`bench -floor-server`, see bench/floor.go)",
		short: "protocol floor", group: "plain"}, s.runs)
	b.add(&row{key: floorFreshKey, label: "protocol floor, run second in each round of the fresh-VM scenarios (the least a GOCACHEPROG costs there, with nothing to fetch or land)",
		short: "protocol floor (fresh-VM rounds)", group: "plain"}, s.freshRuns)
	b.add(&row{key: landingFloorKey, label: fmt.Sprintf("landing floor, RTT %s: the protocol floor's job and, from the same instant, the warm GOCACHE's bytes in %d tar.zst objects downloaded at once, each decoded and unpacked as it arrives and every body checked against its name (the least a cache program on a fresh VM does: see bench/landing_floor.go)", rttName(landingFloorRTT), landingParts),
		short: "landing floor, " + rttName(landingFloorRTT), group: "plain"}, s.freshRuns)
	diskCold := &row{key: "disk-cold", label: "gobuildcache disk, cold (empty dir)", short: "disk, cold", group: "disk"}
	if s.quick {
		diskCold.na = "skipped by -quick"
	}
	b.add(diskCold, s.coldRuns)
	b.add(&row{key: "disk-warm", label: "gobuildcache disk, warm", short: "disk, warm", group: "disk"}, s.runs)
	for j, comp := range b.allCompressions() {
		runs := s.coldRuns
		if j > 0 {
			runs = 1
		}
		r := &row{key: "s3-cold-" + comp,
			label: "gobuildcache S3, cold: empty local dir, empty bucket (loopback" + compSuffix(comp) + ")",
			short: "S3 cold, empty bucket" + compShort(comp), group: "s3"}
		if j > 0 && !s.compareCompression {
			r.na = noCompareCompression
		}
		b.add(r, runs)
	}
	b.add(&row{key: "s3-warm-local", label: "gobuildcache S3, warm local dir (same VM again, loopback)", short: "S3, warm local dir", group: "s3"}, s.runs)
	for _, c := range b.freshConfigs() {
		pf := "off"
		if c.prefetch {
			pf = "on"
		}
		packs := ""
		if c.noPacks {
			packs = ", packs off"
		}
		r := &row{key: c.key(),
			label: fmt.Sprintf("fresh VM: empty local dir, warm bucket, RTT %s, prefetch %s%s%s", rttName(c.rtt), pf, packs, compSuffix(c.comp)),
			short: fmt.Sprintf("fresh VM, %s, prefetch %s%s%s", rttName(c.rtt), pf, packs, compShort(c.comp)),
			group: "fresh-" + pf}
		if c.prefetch && !b.feat.prefetch {
			r.na = "binary has no -prefetch"
		}
		if !slices.Contains(b.compressions(), c.comp) {
			r.na = noCompareCompression
		}
		b.add(r, s.freshRuns)
	}
	pr := &row{key: prKey,
		label: fmt.Sprintf("fresh PR VM: empty local dir, its own location empty, reading the warm bucket as -s3-read-from, RTT %s, prefetch on", rttName(prRTT)),
		short: "fresh PR VM, " + rttName(prRTT) + ", read location", group: "fresh-on"}
	if !b.feat.readFrom || !b.feat.prefetch {
		pr.na = "binary has no -s3-read-from"
	}
	b.add(pr, s.freshRuns)
	for _, rtt := range b.tarRTTs() {
		b.add(&row{key: fmt.Sprintf("tar-%d", rtt.Milliseconds()),
			label: fmt.Sprintf("tar-and-restore: download tar.zst of warm GOCACHE (RTT %s), unpack, build", rttName(rtt)),
			short: "tar-and-restore, " + rttName(rtt), group: "tar"}, s.freshRuns)
	}
	pf := ""
	if b.feat.prefetch {
		pf = ", prefetch on"
	}
	b.add(&row{key: "many",
		label: fmt.Sprintf("%d fresh VMs at once, one warm bucket, RTT %s%s (time until the last is done)", s.manyVMs, rttName(s.manyRTT), pf),
		short: fmt.Sprintf("%d fresh VMs at once, %s", s.manyVMs, rttName(s.manyRTT)), group: "many"}, s.manyRuns)
	b.add(&row{key: "many-tar",
		label: fmt.Sprintf("%d tar-and-restores at once (download, unpack, build), RTT %s (time until the last is done)", s.manyVMs, rttName(s.manyRTT)),
		short: fmt.Sprintf("%d tar-and-restores at once, %s", s.manyVMs, rttName(s.manyRTT)), group: "tar"}, s.manyRuns)
	b.add(&row{key: "many-local",
		label: fmt.Sprintf("%d VMs at once that each unpack the tarball, already on their disk, and build: no network (the work any cache leaves each machine: write the entries, build)", s.manyVMs),
		short: fmt.Sprintf("%d unpack-and-builds at once, no network", s.manyVMs), group: "tar"}, s.manyRuns)
	b.add(&row{key: "many-floor",
		label: fmt.Sprintf("%d VMs at once that each unpack the tarball, already on their disk, and build through the protocol floor over it: no network (the work any GOCACHEPROG leaves each machine)", s.manyVMs),
		short: fmt.Sprintf("%d unpack-and-builds at once through the protocol floor", s.manyVMs), group: "plain"}, s.manyRuns)
	if s.prOnly {
		keep := map[string]bool{"s3-cold-" + b.compressions()[0]: true, freshKey(prRTT, true, b.compressions()[0]): true, prKey: true}
		b.planned = 0
		for _, r := range b.rows {
			switch {
			case !keep[r.key] && r.na == "":
				r.na = "skipped by -pr-only"
			case r.key == "s3-cold-"+b.compressions()[0]:
				b.planned++
			case r.na == "":
				b.planned += s.freshRuns
			}
		}
	}
}

// ---------------------------------------------------------------- machines

// Run directories are not deleted between runs but moved to a trash
// directory, emptied at the end, and the fresh-VM phases start at least
// settleTime after anything was deleted in bulk. The reason is the file
// system of the machines this runs on: ext4 without a journal, where
// creating a file skips (and reads) every inode of its group deleted in the
// last minute (five while that inode's block is unwritten). Deleting the
// last run's 250 MiB of cache right before a fresh VM made each file it
// created cost up to a millisecond, charging the scenarios that create files
// (fresh VMs, tar-and-restore) for the harness's cleanup; a new CI machine
// has no such backlog.
const (
	settleTime    = 65 * time.Second
	minFreeForRun = 8 << 30 // below this, the trash is emptied (and settled)
)

// discard moves a finished run's directory to the trash.
func (b *s3Bench) discard(dir string) {
	trash := filepath.Join(b.work, "trash")
	os.MkdirAll(trash, 0o755)
	if err := os.Rename(dir, filepath.Join(trash, filepath.Base(dir))); err != nil {
		os.RemoveAll(dir)
		b.lastDelete = time.Now()
	}
}

// settle writes out dirty data and metadata, and waits until settleTime
// has passed since the last bulk deletion. It runs before every fresh-VM,
// tar and 8-VM run: ext4's window is a minute for a deleted inode whose
// block is written, five for one whose block is dirty, and the previous
// run's own files dirty the blocks they share with older deletions.
func (b *s3Bench) settle() {
	syncDisks()
	if b.lastDelete.IsZero() {
		return
	}
	if wait := time.Until(b.lastDelete.Add(settleTime)); wait > 0 {
		logf("waiting %s for the file system to settle after deletions (see settle in bench/s3bench.go)", wait.Round(time.Second))
		select {
		case <-time.After(wait):
		case <-b.ctx.Done():
		}
	}
	b.lastDelete = time.Time{}
}

// newDir makes a fresh directory for one run, emptying the trash first if
// the disk is getting full.
func (b *s3Bench) newDir(label string) (string, error) {
	if free := freeBytes(b.work); free >= 0 && free < minFreeForRun {
		logf("%s free: emptying the trash of earlier runs", fmtBytes(free))
		os.RemoveAll(filepath.Join(b.work, "trash"))
		b.lastDelete = time.Now()
	}
	b.seq++
	dir := filepath.Join(b.work, "runs", fmt.Sprintf("%03d-%s", b.seq, label))
	for _, sub := range []string{"gocache", "local", "stats"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return "", err
		}
	}
	return dir, nil
}

func (b *s3Bench) newPrefix(label string) string {
	b.seq++
	return fmt.Sprintf("gobuildcache-bench/%s/%03d-%s/", b.runID, b.seq, label)
}

func plainVM(dir string) vm { return vm{gocache: filepath.Join(dir, "gocache")} }

// floorVM runs the go command with this program as a minimal GOCACHEPROG
// over the plain warm GOCACHE (read only; the go command's own GOCACHE is
// elsewhere).
func (b *s3Bench) floorVM() vm {
	return floorVMOver(b.plainWarm, filepath.Join(b.work, "floor-gocache"))
}

// floorVMOver runs the go command with this program as a minimal
// GOCACHEPROG over the plain GOCACHE warm (read only unless -floor-puts is
// added), the go command's own GOCACHE at gocache.
func floorVMOver(warm, gocache string) vm {
	self, err := os.Executable()
	if err != nil {
		self = os.Args[0]
	}
	return vm{gocache: gocache, prog: quoteArg(self) + " -floor-server " + quoteArg(warm)}
}

func (b *s3Bench) diskVM(dir string) vm {
	return vm{
		gocache: filepath.Join(dir, "gocache"),
		prog:    quoteArg(b.set.bin) + " -backend=disk -cache-dir=" + quoteArg(filepath.Join(dir, "local")),
		stats:   filepath.Join(dir, "stats"),
	}
}

// s3VM is a machine with its local dir in dir, on the bucket prefix, through
// the proxy. prefetch is passed only if the binary knows the flag, and comp
// only if not "".
func (b *s3Bench) s3VM(dir, prefix string, prefetch bool, comp string) vm {
	args := []string{quoteArg(b.set.bin), "-backend=s3", "-s3-bucket=" + b.bucket, "-s3-endpoint=" + b.proxyURL,
		"-s3-path-style", "-s3-region=" + b.region, "-s3-prefix=" + prefix,
		"-cache-dir=" + quoteArg(filepath.Join(dir, "local"))}
	if b.feat.prefetchScope {
		args = append(args, "-prefetch-scope="+b.scope)
	}
	if b.feat.prefetch {
		args = append(args, fmt.Sprintf("-prefetch=%v", prefetch))
	}
	if comp != "" {
		args = append(args, "-compression="+comp)
	}
	return vm{gocache: filepath.Join(dir, "gocache"), prog: strings.Join(args, " "), stats: filepath.Join(dir, "stats")}
}

// record adds a run to its row and prints progress.
func (b *s3Bench) record(key string, r runResult) {
	row := b.byKey[key]
	row.runs = append(row.runs, r)
	b.done++
	extra := ""
	if r.stats != nil && r.stats["gets"] > 0 {
		extra = fmt.Sprintf(", hit rate %.1f%%, down %s, up %s", 100*float64(r.stats["hits"])/float64(r.stats["gets"]),
			fmtBytes(r.stats["remote_bytes_down"]), fmtBytes(r.stats["remote_bytes_up"]))
	}
	logf("[%d/%d, %s] %s: %.2fs%s", b.done, b.planned, time.Since(b.start).Round(time.Second), row.short, r.total.Seconds(), extra)
}

// ---------------------------------------------------------------- phases

// coldPhase: the plain cache, the disk backend and S3 (one empty bucket
// prefix per run and compression), each from nothing, interleaved. The last
// round's caches stay as the warm ones.
func (b *s3Bench) coldPhase() error {
	if err := b.tox.setRTT(0); err != nil {
		return err
	}
	coldRuns := b.set.coldRuns
	if b.set.prOnly {
		coldRuns = 1 // the fill of the warm location
	}
	for i := 0; i < coldRuns; i++ {
		last := i == coldRuns-1
		dir, err := b.newDir("plain-cold")
		if err != nil {
			return err
		}
		var r runResult
		if b.byKey["plain-cold"].na == "" {
			r, err = b.run(plainVM(dir))
			if err != nil {
				return fmt.Errorf("plain cold: %v", err)
			}
			b.record("plain-cold", r)
		}
		if last {
			b.plainWarm = filepath.Join(dir, "gocache")
		} else {
			b.discard(dir)
		}

		if !b.set.quick && b.byKey["disk-cold"].na == "" {
			if dir, err = b.newDir("disk-cold"); err != nil {
				return err
			}
			m := b.diskVM(dir)
			if r, err = b.run(m); err != nil {
				return fmt.Errorf("disk cold: %v", err)
			}
			b.record("disk-cold", r)
			if last {
				b.diskWarm = m
			} else {
				b.discard(dir)
			}
		}

		for j, comp := range b.compressions() {
			if j > 0 && !last {
				continue // the other compression's bucket: filled (and timed) once
			}
			if dir, err = b.newDir("s3-cold"); err != nil {
				return err
			}
			prefix := b.newPrefix("bucket-" + comp)
			m := b.s3VM(dir, prefix, true, comp)
			if r, err = b.run(m); err != nil {
				return fmt.Errorf("S3 cold: %v", err)
			}
			b.record("s3-cold-"+comp, r)
			if last {
				b.warmBucket[comp] = prefix
			}
			if last && j == 0 {
				b.s3WarmLocal = m
				if b.set.quick {
					// No disk cold run: the disk backend reads the local
					// dir this run filled (the same layout).
					b.diskWarm = b.diskVM(dir)
				}
			} else {
				b.discard(dir)
			}
		}
	}
	// Cold builds delete thousands of temp files (the go command's work
	// dirs, MinIO's part files): let that settle before the fresh VMs.
	b.lastDelete = time.Now()
	return nil
}

// warmPhase: a second build on the same machine, interleaved.
func (b *s3Bench) warmPhase() error {
	if err := b.tox.setRTT(0); err != nil {
		return err
	}
	for i := 0; i < b.set.runs; i++ {
		r, err := b.run(vm{gocache: b.plainWarm})
		if err != nil {
			return fmt.Errorf("plain warm: %v", err)
		}
		b.record("plain-warm", r)
		if r, err = b.run(b.floorVM()); err != nil {
			return fmt.Errorf("protocol floor: %v", err)
		}
		b.record("floor", r)
		if r, err = b.run(b.diskWarm); err != nil {
			return fmt.Errorf("disk warm: %v", err)
		}
		b.record("disk-warm", r)
		if r, err = b.run(b.s3WarmLocal); err != nil {
			return fmt.Errorf("S3 warm local dir: %v", err)
		}
		b.record("s3-warm-local", r)
	}
	return nil
}

// packTarball packs the warm plain GOCACHE and uploads it straight to MinIO,
// once, outside any timing.
func (b *s3Bench) packTarball() error {
	path := filepath.Join(b.work, "gocache.tar.zst")
	size, err := packGocache(b.plainWarm, path)
	if err != nil {
		return fmt.Errorf("packing GOCACHE: %v", err)
	}
	b.tarSize, b.tarRaw = size, dirSize(b.plainWarm)
	b.tarKey = fmt.Sprintf("gobuildcache-bench/%s/tarball/gocache.tar.zst", b.runID)
	if err := b.directS3.upload(b.ctx, b.bucket, b.tarKey, path); err != nil {
		return fmt.Errorf("uploading the GOCACHE tarball: %v", err)
	}
	os.Remove(path)
	logf("GOCACHE tarball: %s of %s, uploaded", fmtBytes(b.tarSize), fmtBytes(b.tarRaw))
	return nil
}

// plainWarmFreshKey is the plain warm cache measured again in each round of
// the fresh phase: the fresh-VM targets compare with it, so that a machine
// that is slower or faster for a few minutes (as shared VMs are) moves a
// target's two sides alike.
const plainWarmFreshKey = "plain-warm-fresh"

// floorFreshKey is the protocol floor measured in each round of the fresh
// phase, after the plain warm cache: a fresh VM has at least its work to
// do (it answers the same lookups through the same protocol), so the
// fresh-VM target against tar-and-restore is compared with it too.
const floorFreshKey = "floor-fresh"

// freshPhase: brand-new machines on a warm bucket at each RTT, with and
// without prefetch, and the tar-and-restore pattern, interleaved.
func (b *s3Bench) freshPhase() error {
	for i := 0; i < b.set.freshRuns; i++ {
		if b.byKey[plainWarmFreshKey].na == "" {
			b.settle()
			r, err := b.run(vm{gocache: b.plainWarm})
			if err != nil {
				return fmt.Errorf("plain warm: %v", err)
			}
			b.record(plainWarmFreshKey, r)
		}
		if b.byKey[floorFreshKey].na == "" {
			r, err := b.run(b.floorVM())
			if err != nil {
				return fmt.Errorf("protocol floor: %v", err)
			}
			b.record(floorFreshKey, r)
		}
		if b.byKey[landingFloorKey].na == "" {
			if err := b.tox.setRTT(landingFloorRTT); err != nil {
				return err
			}
			r, err := b.landingFloor()
			if err != nil {
				return fmt.Errorf("landing floor: %v", err)
			}
			b.record(landingFloorKey, r)
		}
		for _, c := range b.freshConfigs() {
			key := c.key()
			if b.byKey[key].na != "" {
				continue
			}
			if err := b.tox.setRTT(c.rtt); err != nil {
				return err
			}
			dir, err := b.newDir("fresh")
			if err != nil {
				return err
			}
			b.settle()
			m := b.s3VM(dir, b.warmBucket[c.comp], c.prefetch, c.comp)
			if c.noPacks {
				m.prog += " -prefetch-packs=false"
			}
			r, err := b.run(m)
			b.discard(dir)
			if err != nil {
				return fmt.Errorf("%s: %v", b.byKey[key].label, err)
			}
			b.record(key, r)
		}
		if b.byKey[prKey].na == "" {
			if err := b.prVM(); err != nil {
				return err
			}
		}
		for _, rtt := range b.tarRTTs() {
			if b.byKey[fmt.Sprintf("tar-%d", rtt.Milliseconds())].na != "" {
				continue
			}
			if err := b.tox.setRTT(rtt); err != nil {
				return err
			}
			r, err := b.tarRestore()
			if err != nil {
				return fmt.Errorf("tar-and-restore at %s: %v", rttName(rtt), err)
			}
			b.record(fmt.Sprintf("tar-%d", rtt.Milliseconds()), r)
		}
	}
	return nil
}

// prVM runs one fresh PR VM: an empty prefix of its own to write, the warm
// bucket to read.
func (b *s3Bench) prVM() error {
	if err := b.tox.setRTT(prRTT); err != nil {
		return err
	}
	dir, err := b.newDir("fresh-pr")
	if err != nil {
		return err
	}
	b.settle()
	comp := b.compressions()[0]
	m := b.s3VM(dir, b.newPrefix("pr"), true, comp)
	m.prog += " -s3-read-from=s3://" + b.bucket + "/" + b.warmBucket[comp]
	r, err := b.run(m)
	b.discard(dir)
	if err != nil {
		return fmt.Errorf("%s: %v", b.byKey[prKey].label, err)
	}
	b.record(prKey, r)
	return nil
}

// run runs the workload on m, and notes the CPU time MinIO and toxiproxy
// used meanwhile.
func (b *s3Bench) run(m vm) (runResult, error) {
	cpu := b.serverCPU()
	r, err := runWorkload(b.ctx, b.wl, m)
	r.serverCPU = b.serverCPU() - cpu
	return r, err
}

// serverCPU returns the CPU time MinIO and toxiproxy have used so far: the
// stand-ins for a remote service share this machine's cores with the build.
func (b *s3Bench) serverCPU() time.Duration { return cpuTime(b.serverPIDs) }

// tarRestore is one run of the tar-and-restore pattern: download, unpack
// into an empty GOCACHE, build.
func (b *s3Bench) tarRestore() (runResult, error) {
	dir, err := b.newDir("tar")
	if err != nil {
		return runResult{}, err
	}
	defer b.discard(dir)
	b.settle()
	cpu := b.serverCPU()
	r, err := b.tarJob(dir)
	r.serverCPU = b.serverCPU() - cpu
	return r, err
}

// tarJob is the tar-and-restore pattern on the machine dir: download,
// unpack into an empty GOCACHE, build.
func (b *s3Bench) tarJob(dir string) (runResult, error) {
	archive := filepath.Join(dir, "gocache.tar.zst")
	start := time.Now()
	if _, err := b.proxyS3.download(b.ctx, b.bucket, b.tarKey, archive); err != nil {
		return runResult{}, fmt.Errorf("download: %v", err)
	}
	dl := time.Since(start)
	start = time.Now()
	if err := unpackGocache(archive, filepath.Join(dir, "gocache")); err != nil {
		return runResult{}, fmt.Errorf("unpack: %v", err)
	}
	unpack := time.Since(start)
	r, err := runWorkload(b.ctx, b.wl, plainVM(dir))
	if err != nil {
		return r, err
	}
	r.parts = append([]partResult{{"download", dl}, {"unpack", unpack}}, r.parts...)
	r.total += dl + unpack
	return r, nil
}

// copyTarball puts the tarball on the machine dir, straight from MinIO.
func (b *s3Bench) copyTarball(dir string) error {
	_, err := b.directS3.download(b.ctx, b.bucket, b.tarKey, filepath.Join(dir, "gocache.tar.zst"))
	return err
}

// localTarJob is the work that is left of a fresh machine's when its
// cache arrives at no cost: the tarball, copied to its disk before the
// clock starts, unpacked into an empty GOCACHE, then the build. Any cache
// writes every output the go command reads to disk (it opens them by
// path) and the build runs: this is that work, with nothing to download.
func (b *s3Bench) localTarJob(dir string) (runResult, error) {
	return b.unpackAndBuild(dir, plainVM(dir))
}

// localFloorJob is localTarJob's work for any GOCACHEPROG: the go command
// reads the unpacked entries through the protocol floor, the least a
// cache program costs it.
func (b *s3Bench) localFloorJob(dir string) (runResult, error) {
	return b.unpackAndBuild(dir, floorVMOver(filepath.Join(dir, "gocache"), filepath.Join(dir, "own-gocache")))
}

// unpackAndBuild unpacks the tarball on the machine dir into dir/gocache
// and builds on m.
func (b *s3Bench) unpackAndBuild(dir string, m vm) (runResult, error) {
	start := time.Now()
	if err := unpackGocache(filepath.Join(dir, "gocache.tar.zst"), filepath.Join(dir, "gocache")); err != nil {
		return runResult{}, fmt.Errorf("unpack: %v", err)
	}
	unpack := time.Since(start)
	r, err := runWorkload(b.ctx, b.wl, m)
	if err != nil {
		return r, err
	}
	r.parts = append([]partResult{{"unpack", unpack}}, r.parts...)
	r.total += unpack
	return r, nil
}

// manyPhase: several fresh machines build at once against one warm bucket,
// and, interleaved, as many tar-and-restores at once (what the same
// machines would do with the tarball), and as many that find the tarball
// on their disk (the floor of both: no network, no remote's CPU).
func (b *s3Bench) manyPhase() error {
	if err := b.tox.setRTT(b.set.manyRTT); err != nil {
		return err
	}
	comp := b.compressions()[0]
	for i := 0; i < b.set.manyRuns; i++ {
		if err := b.manyAtOnce("many", nil, func(dir string) (runResult, error) {
			return runWorkload(b.ctx, b.wl, b.s3VM(dir, b.warmBucket[comp], true, comp))
		}); err != nil {
			return err
		}
		if err := b.manyAtOnce("many-tar", nil, b.tarJob); err != nil {
			return err
		}
		if err := b.manyAtOnce("many-local", b.copyTarball, b.localTarJob); err != nil {
			return err
		}
		if err := b.manyAtOnce("many-floor", b.copyTarball, b.localFloorJob); err != nil {
			return err
		}
	}
	return nil
}

// manyAtOnce runs job on b.set.manyVMs fresh machines at once and records
// the time until the last is done as a run of row key. prepare, if not
// nil, readies each machine first, untimed.
func (b *s3Bench) manyAtOnce(key string, prepare func(dir string) error, job func(dir string) (runResult, error)) error {
	var dirs []string
	for v := 0; v < b.set.manyVMs; v++ {
		dir, err := b.newDir(fmt.Sprintf("%s-%d", key, v))
		if err != nil {
			return err
		}
		if prepare != nil {
			if err := prepare(dir); err != nil {
				return fmt.Errorf("%s: %v", key, err)
			}
		}
		dirs = append(dirs, dir)
	}
	results := make([]runResult, len(dirs))
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	b.settle()
	cpu := b.serverCPU()
	start := time.Now()
	for v, dir := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[v], errs[v] = job(dir)
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	for _, dir := range dirs {
		b.discard(dir)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%d VMs at once (%s): %v", b.set.manyVMs, key, err)
	}
	agg := runResult{total: wall, serverCPU: b.serverCPU() - cpu, stats: map[string]int64{}, statsKeys: map[string]bool{}}
	var slowest, sum time.Duration
	for _, r := range results {
		slowest = max(slowest, r.total)
		sum += r.total
		for k, v := range r.stats {
			agg.stats[k] += v
		}
		for k := range r.statsKeys {
			agg.statsKeys[k] = true
		}
		agg.testsCached += r.testsCached
		agg.testsTotal += r.testsTotal
	}
	agg.parts = []partResult{{"slowest VM", slowest}, {"mean VM", sum / time.Duration(len(results))}}
	b.record(key, agg)
	return nil
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
		return nil
	})
	return n
}
