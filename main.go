// Command gobuildcache is a GOCACHEPROG program: the go command starts it
// and keeps its build and test cache in it. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// run is the whole program; it returns the exit status: 0 on success, 1 on
// a failure, 2 on bad usage.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	cmd := cmdServe
	if len(args) > 0 {
		switch args[0] {
		case "help", "-h", "-help", "--help":
			printUsage(stdout, cmdServe)
			return 0
		case cmdVersion:
			if len(args) > 1 {
				fmt.Fprintf(stderr, "gobuildcache version: takes no arguments, got %q\n", args[1])
				return 2
			}
			fmt.Fprintln(stdout, versionLine(debug.ReadBuildInfo()))
			return 0
		case cmdClear, cmdServe, cmdCheck, cmdMtimes, cmdPrefetch:
			cmd, args = args[0], args[1:]
		default:
			if len(args[0]) > 0 && args[0][0] != '-' {
				fmt.Fprintf(stderr, "gobuildcache: unknown command %q (run 'gobuildcache help')\n", args[0])
				return 2
			}
		}
	}
	cfg, err := parseConfig(cmd, args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if cfg != nil {
		for _, w := range cfg.Warnings { // before an error they may explain
			fmt.Fprintf(stderr, "gobuildcache: warning: %s\n", w)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "gobuildcache: %v\n", err)
		return 2
	}
	log := newLogger(stderr, cfg.Debug)

	switch cmd {
	case cmdMtimes:
		if err := runMtimes(cfg.Dir, stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "gobuildcache %s: %v\n", cmd, err)
			return 1
		}
		return 0
	case cmdPrefetch:
		if err := runPrefetch(cfg, stderr, getenv, log); err != nil {
			fmt.Fprintf(stderr, "gobuildcache %s: %v\n", cmd, err)
			return 1
		}
		return 0
	case cmdClear, cmdCheck:
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		run := runClear
		if cmd == cmdCheck {
			run = runCheck
		}
		if err := run(ctx, cfg, stdout, log); err != nil {
			fmt.Fprintf(stderr, "gobuildcache %s: %v\n", cmd, err)
			return 1
		}
		return 0
	default:
		return serve(cfg, stdin, stdout, stderr, log)
	}
}

// serve runs the GOCACHEPROG server until the go command closes it.
func serve(cfg *Config, stdin io.Reader, stdout, stderr io.Writer, log *slog.Logger) int {
	start := time.Now()
	collectGarbage()
	// In the background: the go command waits for the capabilities line,
	// and the advice's ballast and forced collection took 4-5 ms before it.
	// Done by the time serve returns, as everything serve starts.
	advised := make(chan struct{})
	go func() {
		defer close(advised)
		adviseHugePages()
	}()
	defer func() { <-advised }()
	stats := new(Stats)
	warn := newWarnings(log)
	disk, removeScratch, err := openLocalCache(cfg, localCacheFallbacks(), stderr)
	if err != nil {
		fmt.Fprintf(stderr, "gobuildcache: %v\n", err)
		return 1
	}
	defer removeScratch()
	st := openBackend(context.Background(), cfg, disk, stats, warn, log)
	local := st.local
	backend := st.backend
	var observer Observer
	if st.tier != nil && cfg.Prefetch {
		p := newPrefetcher(st.tier, st.remote, prefetchOptionsOf(cfg, local, os.Getenv), stats, log)
		backend, observer = p, p
	}
	srv := NewServer(backend, stats, log, ServerOptions{
		Local:        local,
		Observer:     observer,
		Warn:         warn,
		CloseTimeout: cfg.UploadTimeout,
		Debug:        cfg.Debug,
	})
	// Trim the local cache in the background, at most once in a while
	// across all processes sharing it; stopped (safely, midway) at exit.
	trimCtx, stopTrim := context.WithCancel(context.Background())
	trimDone := make(chan struct{})
	go func() {
		defer close(trimDone)
		o := defaultTrimOptions(int64(cfg.MaxLocalSize))
		o.MaxAge = cfg.LocalMaxAge
		res, ran, err := local.MaybeTrim(trimCtx, o, o.every())
		switch {
		case err != nil && trimCtx.Err() == nil:
			log.Warn("trimming the local cache", "err", err) // deliberately swallowed: trimming is housekeeping
		case ran:
			stats.TrimmedEntries.Add(res.Entries)
			stats.TrimmedBytes.Add(res.Bytes)
			log.Debug("trimmed the local cache", "result", res.String())
		}
	}()

	// The go command owns our lifetime: it closes stdin, or says close.
	// An interrupt of the build reaches us too; stdin's end will follow.
	// So does it if the go command went away: an answer to it then fails
	// with EPIPE instead of SIGPIPE killing us before the uploads, the
	// statistics and the scratch directory are seen to.
	signal.Ignore(os.Interrupt, syscall.SIGPIPE)
	serveErr := srv.Serve(stdin, stdout)
	stopTrim()
	<-trimDone

	status := 0
	if serveErr != nil {
		fmt.Fprintf(stderr, "gobuildcache: %v\n", serveErr)
		status = 1
	}
	reportStats(cfg, stats.Snapshot(), time.Since(start), stderr, log)
	return status
}

// collectGarbage turns the garbage collector back on (as GOGC=100) if the
// environment turned it off: GOGC=off, set for a job's own programs, would
// let the server's heap grow with every byte it ever handled (a cold build
// of std through S3: 322 MB at its peak against 152 MB).
func collectGarbage() {
	if old := debug.SetGCPercent(100); old >= 0 {
		debug.SetGCPercent(old)
	}
}

// stack is the backend stack that openBackend builds.
type stack struct {
	backend CacheBackend // what the server uses: local or tier
	local   *DiskBackend // the local disk cache
	tier    *localTier   // with a remote: the tier over local and remote
	remote  Remote       // with a remote: the breaker over it, for manifests
}

// openLocalCache opens the server's local cache directory: cfg.CacheDir or,
// if that cannot be used, the first usable of fallbacks. A directory the
// server cannot write (not a directory; another user's; a read-only mount)
// would fail every put, and the go command fails a build on a failed put
// (its module index, say); one whose path is not UTF-8 would give the go
// command paths that name no file (see utf8Path). So whatever set it, the
// server says so in one warning line and goes on elsewhere: last in a new
// temporary directory that remove deletes at exit, where the build runs
// with an empty local cache (and the remote, if any). It fails only if it
// cannot make even that, when the go command could not build either.
func openLocalCache(cfg *Config, fallbacks []string, stderr io.Writer) (d *DiskBackend, remove func(), err error) {
	from := cfg.from["cache-dir"]
	if from == "" {
		from = "the default"
	}
	var why []string
	for i, dir := range append([]string{cfg.CacheDir}, fallbacks...) {
		if i > 0 && dir == cfg.CacheDir {
			continue
		}
		if err := utf8Path(dir); err != nil {
			why = append(why, err.Error())
			continue
		}
		d, err := openCacheDir(dir, dir == defaultConfig().CacheDir)
		if err == nil {
			if i > 0 {
				fmt.Fprintf(stderr, "gobuildcache: warning: cannot use the cache directory of %s: %s; using %s\n", from, strings.Join(why, "; "), d.Dir())
			}
			return d, func() {}, nil
		}
		why = append(why, err.Error())
	}
	tmp, err := os.MkdirTemp("", "gobuildcache-")
	if err == nil {
		if d, err = NewDiskBackend(tmp); err == nil {
			fmt.Fprintf(stderr, "gobuildcache: warning: cannot use the cache directory of %s: %s; using %s for this go command alone\n", from, strings.Join(why, "; "), tmp)
			return d, func() { os.RemoveAll(tmp) }, nil
		}
		os.RemoveAll(tmp)
	}
	return nil, nil, fmt.Errorf("no usable cache directory: %s; nor a temporary one: %w", strings.Join(why, "; "), err)
}

// utf8Path returns an error if the absolute path of dir, a cache
// directory, is not UTF-8: the go command is told where each body is in
// JSON, whose strings are UTF-8, so it would be given paths that name no
// file (every hit a miss; go list -export naming missing files).
func utf8Path(dir string) error {
	abs, err := filepath.Abs(dir)
	if err == nil && !utf8.ValidString(abs) {
		return fmt.Errorf("open disk cache %q: the path is not UTF-8, which the go command cannot be told", abs)
	}
	return nil
}

// openCacheDir opens dir as the local cache. The default directory, in the
// temp dir that every local user shares, must also be this user's alone,
// and is made private (claimOwnDir). Any other, set by flag or variable or
// the user's own, is as the user keeps it, shared or not.
func openCacheDir(dir string, isDefault bool) (*DiskBackend, error) {
	if isDefault {
		os.MkdirAll(dir, 0o700) // made private from the start; an error shows below
		// Before anything is done in it: another user's directory may
		// lead anywhere (v1 or v1/tmp a link) and NewDiskBackend removes
		// old files.
		abs, err := filepath.Abs(dir)
		if err == nil {
			err = claimOwnDir(abs)
		}
		if err != nil {
			return nil, fmt.Errorf("open disk cache %s: %w", dir, err)
		}
	}
	return NewDiskBackend(dir)
}

// localCacheFallbacks are the directories the server tries, in order, when
// its cache directory cannot be used: the default, then this user's own
// under os.UserCacheDir (where the go command keeps its cache), for a
// default that another user made.
func localCacheFallbacks() []string {
	dirs := []string{defaultConfig().CacheDir}
	if u, ok := userCacheDir(); ok {
		dirs = append(dirs, u)
	}
	return dirs
}

// userCacheDir is this user's own cache directory, under os.UserCacheDir;
// ok is false if the user has none (no home directory).
func userCacheDir() (dir string, ok bool) {
	ucd, err := os.UserCacheDir()
	if err != nil {
		return "", false
	}
	return filepath.Join(ucd, "gobuildcache"), true
}

// openBackend builds the backend stack that cfg describes over disk, the
// local cache. With -backend=s3 it is
//
//	localTier{disk, asyncUploads{breakerBackend{S3Backend}}}
//
// (without asyncUploads when -read-only); the prefetcher, which serve adds
// over the tier, gets the breaker for its manifests. It makes no network
// call, and it never fails: a remote it cannot set up is left out.
func openBackend(ctx context.Context, cfg *Config, disk *DiskBackend, stats *Stats, warn *warnings, log *slog.Logger) stack {
	if cfg.Backend == "disk" {
		return stack{backend: disk, local: disk}
	}
	s3b, err := newS3FromConfig(ctx, cfg, disk.tmpDir(), disk.bodyTempDir, log)
	if err != nil {
		// The SDK's own settings (AWS_PROFILE naming a profile this
		// machine lacks, a malformed ~/.aws/config, AWS_CA_BUNDLE naming
		// a missing file, ...) are the environment's, often meant for
		// another step: like any remote problem, no reason to fail the
		// build. It runs on the local cache alone.
		stats.AddRemoteError(KindConfig.String())
		log.Warn("remote cache off for this go command: its AWS configuration does not load; the build goes on with the local cache", "err", err)
		return stack{backend: disk, local: disk}
	}
	breaker := newBreakerBackend(s3b, stats, warn, disk.remoteFile("remote-down", cfg.S3Endpoint, cfg.S3Bucket, cfg.S3Prefix))
	var remote CacheBackend = breaker
	if !cfg.ReadOnly {
		remote = newAsyncUploads(breaker, disk.tmpDir(), cfg.UploadWorkers, int64(cfg.UploadQueue), cfg.sharesThroughPacks(), stats, log)
	}
	tier := newLocalTier(disk, remote, cfg.ReadOnly, stats)
	return stack{backend: tier, local: disk, tier: tier, remote: breaker}
}

// prefetchOptionsOf returns the prefetch's settings of a server (or of
// the prefetch command) of cfg with the local cache local, in the
// environment of getenv.
func prefetchOptionsOf(cfg *Config, local *DiskBackend, getenv func(string) string) prefetchOptions {
	scope, readScopes := prefetchScopes(cfg.PrefetchScope, toolchainTag(getenv), ciJobScope(getenv))
	remote := readLocations(cfg)
	// The claim is on what a prefetch lands, the entries of its scopes'
	// manifests: jobs of other scopes on one directory (matrix legs, a
	// self-hosted runner's workflows) neither refuse nor wait for it.
	landing := append(slices.Clone(remote), scope, strings.Join(readScopes, ","))
	return prefetchOptions{
		scope:         scope,
		readScopes:    readScopes,
		parallelism:   cfg.PrefetchConcurrency,
		upload:        !cfg.ReadOnly,
		packs:         cfg.PrefetchPacks,
		carry:         cfg.sharesThroughPacks(),
		predictMisses: cfg.PredictMisses,
		missState:     local.remoteFile("miss-streak", remote...),
		landed:        local.remoteFile("landed", remote...),
		job:           loadJobID(local.remoteFile("job"), time.Now()),
		claimLock:     local.remoteFile("prefetch", landing...),
		claimPlan:     local.remoteFile("prefetch-plan", landing...),
	}
}

// readLocations names the remote as a lookup or a prefetch reads it: every
// location it may read (the files of what servers learn of it are named
// for these: the miss predictor's, the landed manifests').
func readLocations(cfg *Config) []string {
	return []string{cfg.S3Endpoint, cfg.S3Bucket, cfg.S3Prefix, cfg.S3ReadFrom.String()}
}

// reportStats writes the stats of a server that ran for wall wherever cfg
// asks: with -stats a table on stderr and this go command's row in the job
// summary. Failing to write them is logged, never fatal: the build has
// succeeded by now.
func reportStats(cfg *Config, snap StatsSnapshot, wall time.Duration, stderr io.Writer, log *slog.Logger) {
	if cfg.Stats {
		snap.WriteText(stderr)
		if p := cfg.StepSummary; p != "" {
			if err := appendJobSummary(p, snap.jobSummaryRow(goCommandName(), wall)); err != nil {
				log.Warn("writing step summary", "err", err)
			}
		}
	}
	if cfg.StatsJSON != "" {
		if err := snap.WriteJSONFile(cfg.StatsJSON); err != nil {
			log.Warn("writing stats JSON", "err", err)
		}
	}
}

// newLogger returns the logger for stderr: warnings only, or everything
// with debug. Lines are in slog's text format and carry app=gobuildcache,
// so they stand out in a build log:
//
//	level=WARN msg="remote cache request failed (timeout); ..." app=gobuildcache err=...
//
// The time leads each line only with debug.
func newLogger(w io.Writer, debug bool) *slog.Logger {
	level := slog.LevelWarn
	if debug {
		level = slog.LevelDebug
	}
	h := slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey && !debug {
				return slog.Attr{}
			}
			return a
		},
	})
	return slog.New(h).With("app", "gobuildcache")
}
