package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Config is every option of every command. Each option is a flag and an
// environment variable, and those of the original interface a bare
// variable too (see option): a flag given on the command line wins over the
// prefixed variable, which wins over the bare one, which wins over the
// default.
type Config struct {
	Backend   string
	CacheDir  string
	Debug     bool
	Stats     bool
	StatsJSON string

	S3Bucket      string
	S3Prefix      string
	S3ReadFrom    s3Locations
	S3Region      string
	S3Endpoint    string
	S3PathStyle   bool
	S3Timeout     time.Duration
	S3SSE         string
	S3SSEKMSKeyID string
	S3BucketOwner string
	ReadOnly      bool
	UploadTimeout time.Duration
	UploadWorkers int
	UploadQueue   byteSize

	Prefetch            bool
	PrefetchScope       string
	PrefetchConcurrency int
	PrefetchPacks       bool
	PredictMisses       bool
	Compression         string
	CompressionMinSize  byteSize

	MaxLocalSize byteSize
	LocalMaxAge  time.Duration

	// clear only.
	LocalOnly   bool
	RemoteOnly  bool
	AllPrefixes bool

	// Warnings are one-line messages about settings that were ignored:
	// unusable values of bare variables.
	Warnings []string
	// ignoredBare names the bare variables whose values were unusable.
	ignoredBare []string
	// from names what set each option, by flag name: "-flag", or a
	// variable's name; an option at its default is absent.
	from map[string]string

	// mtimes only: the work tree to stamp (its one argument).
	Dir string

	// Read from the environment alone, with no flag of their own:
	//   - awsCreds: GOBUILDCACHE_AWS_ACCESS_KEY_ID, _SECRET_ACCESS_KEY and
	//     _SESSION_TOKEN, which CI gives the cache without exporting them
	//     to every test binary the build runs (the SDK's own chain
	//     otherwise);
	//   - sdkEndpoint: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, which
	//     the SDK sends requests to when -s3-endpoint is not set (it tells
	//     a directory bucket's region);
	//   - StepSummary: GITHUB_STEP_SUMMARY, the file the job summary is
	//     appended to.
	awsCreds    aws.Credentials
	sdkEndpoint string
	StepSummary string
}

// defaultConfig returns the built-in defaults.
func defaultConfig() Config {
	return Config{
		Backend:       "disk",
		CacheDir:      filepath.Join(os.TempDir(), "gobuildcache"),
		S3Prefix:      "gobuildcache/",
		S3Timeout:     10 * time.Second,
		UploadTimeout: 30 * time.Second,
		UploadWorkers: 16,
		UploadQueue:   1 << 30,

		Prefetch:            true,
		PrefetchConcurrency: 16,
		PrefetchPacks:       true,
		PredictMisses:       true,
		Compression:         "zstd",
		CompressionMinSize:  4 << 10,

		LocalMaxAge: 5 * 24 * time.Hour,
	}
}

// option describes one setting: its flag, its environment variables and how
// to parse it into a Config.
//
// Its variable is GOBUILDCACHE_ and the flag's name in capitals with "_"
// for "-" (see envName). The bare name is the variable of the original
// interface (BACKEND_TYPE, DEBUG, ...), read when the prefixed one is
// unset; options added since have none (""). Bare names are generic words
// that other tools set too (DEBUG='express:*' for Node,
// BACKEND_TYPE=docker), so an unusable value in one is a warning and is
// ignored, never an error: no setting meant for another program may break
// a build. A flag or a prefixed variable is meant for gobuildcache, and an
// unusable value there is an error.
type option struct {
	flag, bare, usage string
	// commands that take it: "serve", "clear".
	commands []string
	// value returns the flag.Value of the option's field in c. Its Set
	// rejects every unusable value (one that does not parse, or is out
	// of range), leaving the field as it was.
	value func(c *Config) flag.Value
}

// envPrefix starts the name of every variable meant for gobuildcache alone.
const envPrefix = "GOBUILDCACHE_"

// envName returns the option's own variable, e.g. GOBUILDCACHE_S3_BUCKET for
// -s3-bucket.
func (o option) envName() string { return envNameOf(o.flag) }

func envNameOf(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

const (
	cmdServe = "serve"
	cmdClear = "clear"
	cmdCheck = "check"
	// prefetch takes the server's flags, to land what its servers would.
	cmdPrefetch = "prefetch"
	// mtimes takes no flags, only a directory.
	cmdMtimes = "mtimes"
	// cmdVersion prints the version; it takes no flags.
	cmdVersion = "version"
)

// Which commands take an option. check and prefetch take the server's
// flags, so that the same GOCACHEPROG flags can be checked, or prefetched
// for.
var (
	allCmds   = []string{cmdServe, cmdClear, cmdCheck, cmdPrefetch}
	serveOnly = []string{cmdServe, cmdCheck, cmdPrefetch}
	clearOnly = []string{cmdClear}
)

var options = []option{
	{"backend", "BACKEND_TYPE", "storage backend: disk or s3", allCmds,
		func(c *Config) flag.Value { return &enumValue{&c.Backend, []string{"disk", "s3"}} }},
	{"cache-dir", "CACHE_DIR", "local cache directory (the disk backend, and the local tier in front of s3)", allCmds,
		func(c *Config) flag.Value { return (*dirValue)(&c.CacheDir) }},
	{"debug", "DEBUG", "log every request, and the S3 client's activity, to stderr", allCmds,
		func(c *Config) flag.Value { return (*boolValue)(&c.Debug) }},
	{"stats", "PRINT_STATS", "print cache statistics to stderr on exit (and to $GITHUB_STEP_SUMMARY when set)", serveOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.Stats) }},
	{"stats-json", "STATS_JSON", "write cache statistics as JSON to this file on exit", serveOnly,
		func(c *Config) flag.Value { return (*stringValue)(&c.StatsJSON) }},
	{"s3-bucket", "S3_BUCKET", "S3 bucket (required with -backend=s3); directory buckets (name--azid--x-s3) use S3 Express One Zone", allCmds,
		func(c *Config) flag.Value { return (*bucketValue)(&c.S3Bucket) }},
	{"s3-prefix", "S3_PREFIX", "key prefix for every object in the bucket", allCmds,
		func(c *Config) flag.Value { return (*prefixValue)(&c.S3Prefix) }},
	{"s3-read-from", "S3_READ_FROM", "further locations to read, in order, after -s3-bucket and -s3-prefix, and never write: s3://BUCKET/PREFIX/ separated by commas (a pull request's job reads the trusted cache)", allCmds,
		func(c *Config) flag.Value { return &c.S3ReadFrom }},
	{"s3-region", "AWS_REGION", "AWS region of the bucket", allCmds,
		func(c *Config) flag.Value { return (*regionValue)(&c.S3Region) }},
	{"s3-endpoint", "S3_ENDPOINT", "S3 endpoint URL for S3-compatible servers (MinIO, R2, Ceph); AWS_ENDPOINT_URL_S3 is honoured too", allCmds,
		func(c *Config) flag.Value { return (*urlValue)(&c.S3Endpoint) }},
	{"s3-path-style", "S3_PATH_STYLE", "address the bucket in the URL path rather than the host name (MinIO, Ceph)", allCmds,
		func(c *Config) flag.Value { return (*boolValue)(&c.S3PathStyle) }},
	{"s3-timeout", "S3_TIMEOUT", "deadline of one remote request, retries included; a remote that does not answer in time is a miss", allCmds,
		func(c *Config) flag.Value { return &durationValue{&c.S3Timeout, time.Millisecond} }},
	{"s3-sse", "", "server-side encryption that every object written asks for, for a bucket policy that requires it: AES256, aws:kms or aws:kms:dsse (none: the bucket's default encryption)", serveOnly,
		func(c *Config) flag.Value { return &enumValue{&c.S3SSE, s3EncryptionModes} }},
	{"s3-sse-kms-key-id", "", "KMS key ID or ARN for -s3-sse=aws:kms or aws:kms:dsse (default: the account's aws/s3 key)", serveOnly,
		func(c *Config) flag.Value { return (*stringValue)(&c.S3SSEKMSKeyID) }},
	{"s3-expected-bucket-owner", "", "AWS account ID that must own every bucket (-s3-bucket, -s3-read-from): S3 refuses any request to a bucket of another account, so that a bucket name someone else took is never read or written", allCmds,
		func(c *Config) flag.Value { return (*accountIDValue)(&c.S3BucketOwner) }},
	{"read-only", "READ_ONLY", "read from the remote cache but never write to it, nor clear it (untrusted pull requests)", allCmds,
		func(c *Config) flag.Value { return (*boolValue)(&c.ReadOnly) }},
	{"upload-timeout", "UPLOAD_TIMEOUT", "how long close waits for pending uploads before abandoning them", serveOnly,
		func(c *Config) flag.Value { return &durationValue{&c.UploadTimeout, 0} }},
	{"upload-concurrency", "UPLOAD_CONCURRENCY", "uploads to the remote in flight at once", serveOnly,
		func(c *Config) flag.Value { return &intValue{&c.UploadWorkers, 1, 1024} }},
	{"upload-queue-size", "UPLOAD_QUEUE_SIZE", "bytes of uploads that may wait; a put beyond that stays local (counted as dropped)", serveOnly,
		func(c *Config) flag.Value { return &c.UploadQueue }},
	{"prefetch", "PREFETCH", "at start, fetch what recent runs of the same scope used, in parallel, while the build runs (leaving 1 GiB of the disk free)", serveOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.Prefetch) }},
	{"prefetch-scope", "PREFETCH_SCOPE", "name shared by the runs whose manifests prefetch reads, e.g. the CI job name; names after commas are further scopes, read and never written, e.g. test-linux,build; each is kept per Go version and target (default: the CI job's name on GitHub Actions, GitLab CI, Buildkite and CircleCI, else derived from the working directory)", serveOnly,
		func(c *Config) flag.Value { return (*stringValue)(&c.PrefetchScope) }},
	{"prefetch-concurrency", "PREFETCH_CONCURRENCY", "prefetch requests in flight at once, at most (fewer while the remote is slow to answer)", serveOnly,
		func(c *Config) flag.Value { return &intValue{&c.PrefetchConcurrency, 1, 1024} }},
	{"prefetch-packs", "PREFETCH_PACKS", "store what a run used as a few large packs beside its manifest, and prefetch from packs with a few ranged GETs instead of one GET per entry", serveOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.PrefetchPacks) }},
	{"predict-misses", "PREDICT_MISSES", "with -prefetch: once the remote has missed 4 keys in a row that no manifest names, answer such keys from the local cache alone, but probes (one in 4, growing to one in 32 while they miss; a wrong guess costs one rebuilt action); the streak carries over to the job's next go command for 10 minutes", serveOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.PredictMisses) }},
	{"compression", "COMPRESSION", "how entries' own objects are stored: none or zstd (manifests and packs are always zstd; readers decode either, whatever their own setting)", serveOnly,
		func(c *Config) flag.Value { return &enumValue{&c.Compression, []string{"none", "zstd"}} }},
	{"compression-min-size", "COMPRESSION_MIN_SIZE", "smallest body that -compression=zstd compresses", serveOnly,
		func(c *Config) flag.Value { return &c.CompressionMinSize }},
	{"max-local-size", "MAX_LOCAL_SIZE", "bound on the local cache's bodies, e.g. 10GiB (0: none); least recently used entries are trimmed to 90%, at most every 10 minutes, never one used in the last hour", serveOnly,
		func(c *Config) flag.Value { return &c.MaxLocalSize }},
	{"local-max-age", "LOCAL_MAX_AGE", "local entries unused for this long are trimmed (checked at most daily)", serveOnly,
		func(c *Config) flag.Value { return &durationValue{&c.LocalMaxAge, time.Hour} }},
	{"local-only", "CLEAR_LOCAL_ONLY", "clear only the local cache directory", clearOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.LocalOnly) }},
	{"remote-only", "CLEAR_REMOTE_ONLY", "clear only the remote cache", clearOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.RemoteOnly) }},
	{"all-prefixes", "CLEAR_ALL_PREFIXES", "allow clearing with an empty -s3-prefix, i.e. the whole bucket", clearOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.AllPrefixes) }},
}

// getBare returns the value of the option's bare variable, "" if it has
// none.
func (o option) getBare(getenv func(string) string) string {
	if o.bare == "" {
		return ""
	}
	return getenv(o.bare)
}

func (o option) for_(cmd string) bool {
	for _, c := range o.commands {
		if c == cmd {
			return true
		}
	}
	return false
}

// errHelp is returned by parseConfig when -h or -help was asked for: the
// usage has been printed and the program should exit 0.
var errHelp = flag.ErrHelp

// usageError is a bad flag, variable or argument; the program exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// parseConfig builds the Config of cmd from args and then, for each option
// no flag set, its prefixed variable or else its bare one (read through
// getenv). Usage goes to usageOut on -h. Bare variables' unusable values
// are in the Config's Warnings.
func parseConfig(cmd string, args []string, getenv func(string) string, usageOut io.Writer) (*Config, error) {
	c := defaultConfig()
	c.from = make(map[string]string)
	fs := flag.NewFlagSet("gobuildcache "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, o := range options {
		if o.for_(cmd) {
			fs.Var(o.value(&c), o.flag, o.usage)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usageOut, cmd)
			return nil, errHelp
		}
		return nil, &usageError{flagErrorWithEnv(err.Error())}
	}
	rest := fs.Args()
	if cmd == cmdMtimes && len(rest) > 0 {
		c.Dir, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return nil, &usageError{fmt.Sprintf("unexpected argument %q (run 'gobuildcache help')", rest[0])}
	}
	fs.Visit(func(f *flag.Flag) { c.from[f.Name] = "-" + f.Name })
	for _, o := range options {
		if !o.for_(cmd) || c.from[o.flag] != "" {
			continue
		}
		if s := getenv(o.envName()); s != "" {
			if err := o.value(&c).Set(s); err != nil {
				return nil, &usageError{fmt.Sprintf("invalid %s=%.80q (flag -%s): %v", o.envName(), s, o.flag, err)}
			}
			c.from[o.flag] = o.envName()
		} else if s := o.getBare(getenv); s != "" {
			if err := o.value(&c).Set(s); err != nil {
				if cmd == cmdClear {
					// clear deletes: a setting it cannot read is not one to guess at.
					return nil, &usageError{fmt.Sprintf("invalid %s=%.80q (flag -%s, variable %s): %v", o.bare, s, o.flag, o.envName(), err)}
				}
				c.ignoredBare = append(c.ignoredBare, o.bare)
				c.Warnings = append(c.Warnings, fmt.Sprintf("ignoring %s=%.80q: %v (gobuildcache's own setting is %s or -%s)", o.bare, s, err, o.envName(), o.flag))
				continue
			}
			c.from[o.flag] = o.bare
		}
	}
	c.awsCreds = aws.Credentials{
		AccessKeyID:     getenv("GOBUILDCACHE_AWS_ACCESS_KEY_ID"),
		SecretAccessKey: getenv("GOBUILDCACHE_AWS_SECRET_ACCESS_KEY"),
		SessionToken:    getenv("GOBUILDCACHE_AWS_SESSION_TOKEN"),
	}
	c.sdkEndpoint = cmp.Or(getenv("AWS_ENDPOINT_URL_S3"), getenv("AWS_ENDPOINT_URL"))
	c.StepSummary = getenv("GITHUB_STEP_SUMMARY")
	if err := c.validate(cmd); err != nil {
		return &c, &usageError{err.Error()} // its warnings may explain the error
	}
	return &c, nil
}

// flagErrorWithEnv adds the environment variable to a flag package error
// such as `invalid value "x" for flag -debug: ...`.
func flagErrorWithEnv(msg string) string {
	for _, o := range options {
		if strings.Contains(msg, " -"+o.flag+":") || strings.HasSuffix(msg, " -"+o.flag) {
			return msg + " (env " + o.envName() + ")"
		}
	}
	return msg + " (run 'gobuildcache help')"
}

// sharesThroughPacks reports whether a server's puts wait for its exit,
// to be shared through its prefetch packs and manifest instead of an
// object each: a pull request's (a server that reads other locations,
// -s3-read-from) that writes and prefetches with packs. Only its own later
// runs read its location, and they prefetch.
func (c *Config) sharesThroughPacks() bool {
	return c.Backend == "s3" && !c.ReadOnly && c.Prefetch && c.PrefetchPacks && len(c.S3ReadFrom) > 0
}

// validate checks the settings that make sense alone but not together
// (each value was checked as it was set), and normalizes the prefix.
// Messages name the flag and the variable. A conflict that a bare variable
// alone causes is resolved by ignoring that variable, with a warning.
func (c *Config) validate(cmd string) error {
	if c.Backend == "s3" && c.S3Bucket == "" {
		if from := c.from["backend"]; c.fromBare("backend") {
			// BACKEND_TYPE=s3 and no bucket: perhaps meant for
			// another program; perhaps ours, half configured. Either
			// way the build goes on, on the disk backend.
			c.Warnings = append(c.Warnings, fmt.Sprintf("ignoring %s=s3: no bucket is set (-s3-bucket, %sS3_BUCKET or S3_BUCKET); using the disk backend", from, envPrefix))
			c.Backend = "disk"
		} else {
			return fmt.Errorf("-s3-bucket (%sS3_BUCKET) is required with -backend=s3", envPrefix)
		}
	}
	for _, v := range []string{"S3_ENDPOINT", "S3_PREFIX"} {
		if c.Backend == "s3" && slices.Contains(c.ignoredBare, v) {
			// Without it the cache would go elsewhere (AWS, another prefix).
			c.Warnings = append(c.Warnings, fmt.Sprintf("remote cache off: %s is unusable (see above); using the disk backend", v))
			c.Backend = "disk"
		}
	}
	if k := c.awsCreds; c.Backend == "s3" && (k.AccessKeyID == "") != (k.SecretAccessKey == "") {
		// Half a key, say a secret a fork's pull request is not given:
		// the SDK's own chain signs instead (credentialsOf), as if
		// neither were set; say so, rather than leave it to a puzzle.
		set, unset := envPrefix+"AWS_ACCESS_KEY_ID", envPrefix+"AWS_SECRET_ACCESS_KEY"
		if k.AccessKeyID == "" {
			set, unset = unset, set
		}
		c.Warnings = append(c.Warnings, fmt.Sprintf("ignoring %s: %s is not set; the AWS SDK's own credentials are used", set, unset))
	}
	if err := c.validateEncryption(); err != nil {
		return err
	}
	if c.S3Prefix != "" && !strings.HasSuffix(c.S3Prefix, "/") {
		c.S3Prefix += "/" // keys live in a "directory"; S3 Express requires it
	}
	if err := checkReadLocations(s3Location{bucket: c.S3Bucket, prefix: c.S3Prefix}, c.S3ReadFrom); err != nil {
		if !c.fromBare("s3-read-from") {
			return fmt.Errorf("invalid -s3-read-from (%s): %v", envNameOf("s3-read-from"), err)
		}
		c.Warnings = append(c.Warnings, fmt.Sprintf("ignoring %s: %v", c.from["s3-read-from"], err))
		c.S3ReadFrom = nil
	}
	switch cmd {
	case cmdClear:
		// Whatever their source: ignoring any of these would widen what
		// clear deletes, and clear is run by hand, not by a build.
		if c.LocalOnly && c.RemoteOnly {
			return fmt.Errorf("-local-only (%s) and -remote-only (%s) exclude each other", c.varOf("local-only"), c.varOf("remote-only"))
		}
		if c.RemoteOnly && c.Backend != "s3" {
			return fmt.Errorf("-remote-only (%s) needs -backend=s3 (%s)", c.varOf("remote-only"), c.varOf("backend"))
		}
		if c.ReadOnly && c.Backend == "s3" && !c.LocalOnly {
			// Deleting the remote's objects is writing to it.
			return fmt.Errorf("refusing to clear the remote cache with -read-only (%s); add -local-only (%s) to clear the local cache directory alone", c.varOf("read-only"), c.varOf("local-only"))
		}
		if c.Backend == "s3" && !c.LocalOnly && c.S3Prefix == "" && !c.AllPrefixes {
			return fmt.Errorf("refusing to clear with an empty -s3-prefix (%s): that is the whole bucket; add -all-prefixes (%s) if you mean it", c.varOf("s3-prefix"), c.varOf("all-prefixes"))
		}
	case cmdCheck:
		if c.Backend != "s3" {
			return fmt.Errorf("check tests a remote cache: give -backend=s3 (%s) and -s3-bucket (%s)", c.varOf("backend"), c.varOf("s3-bucket"))
		}
	}
	return nil
}

// validateEncryption checks -s3-sse against -s3-sse-kms-key-id and the
// bucket's kind.
func (c *Config) validateEncryption() error {
	if c.S3SSEKMSKeyID != "" && !strings.HasPrefix(c.S3SSE, "aws:kms") {
		return fmt.Errorf("-s3-sse-kms-key-id (%s) needs -s3-sse=aws:kms or aws:kms:dsse (%s)", c.varOf("s3-sse-kms-key-id"), c.varOf("s3-sse"))
	}
	if c.S3SSE != "" && c.Backend == "s3" && isDirectoryBucket(c.S3Bucket) {
		return fmt.Errorf("-s3-sse (%s) is for general purpose buckets: directory bucket %s encrypts every object as its default encryption says, which requests may not override", c.varOf("s3-sse"), c.S3Bucket)
	}
	return nil
}

// fromBare reports whether a bare variable set the option named by its flag.
func (c *Config) fromBare(name string) bool {
	from := c.from[name]
	return from != "" && from[0] != '-' && !strings.HasPrefix(from, envPrefix)
}

// varOf names the variable of the option named by its flag, for a message
// that names both: the one that set it, else its GOBUILDCACHE_ variable.
func (c *Config) varOf(name string) string {
	if from := c.from[name]; from != "" && from[0] != '-' {
		return from
	}
	return envNameOf(name)
}

// printUsage writes the help of cmd ("serve" for the server and the
// general help).
func printUsage(w io.Writer, cmd string) {
	var b strings.Builder
	switch cmd {
	case cmdClear:
		b.WriteString(`usage: gobuildcache clear [flags]

Removes every cache entry: the local cache directory and, with -backend=s3,
every object under -s3-prefix in the bucket. It prints what it removed.

`)
	case cmdCheck:
		b.WriteString(`usage: gobuildcache check [flags]

Checks the remote cache the flags describe (the server's flags): credentials,
bucket access, and a put/get/delete round trip of a probe object under
-s3-prefix. It prints each step's latency and the IAM policy the credentials
need, and exits 1 with a one-line reason at the first step that fails.

`)
	case cmdPrefetch:
		b.WriteString(`usage: gobuildcache prefetch [flags]

Lands the remote cache's entries that the go commands of this job will ask
for (those the scope's newest manifests name) in the local cache, from the
job's start: run it in the background, with the server's flags, before the
checkout. A go command's server started while it runs waits for what it
lands instead of fetching it again. It needs -backend=s3 and -prefetch; it
takes the toolchain's scope from 'go env' in its directory. It prints one
line; a remote problem is not a failure (exit status 0).

`)
	case cmdMtimes:
		b.WriteString(`usage: gobuildcache mtimes [DIR]

Gives every git-tracked file under DIR (default: the current directory) an
mtime derived from its content, and every directory holding tracked files
one derived from their names: fixed, in the past, the same on every fresh
checkout of the same commit, so that the go command's cached test results
(keyed on the mtimes of the files a test opened) hit on a new CI machine.
Untracked and ignored files are left alone. The trade-off: mtimes no longer
say when a file was checked out or edited (make and other mtime-driven tools
see content times). It prints one summary line; it exits 1 if a tracked
path's mtime could not be set, or outside a git work tree.
`)
		io.WriteString(w, b.String())
		return
	default:
		b.WriteString(`gobuildcache is a GOCACHEPROG program: the go command starts it and asks it
for build and test results, so that a fresh machine starts with a warm cache.

usage:
  GOCACHEPROG="gobuildcache [flags]" go build ./...   (the go command runs it)
  gobuildcache clear [flags]                          remove every cache entry
  gobuildcache check [flags]                          test access to the remote cache
  gobuildcache prefetch [flags]                       land the remote's entries early (in the background)
  gobuildcache mtimes [DIR]                           content mtimes for cached tests on fresh checkouts
  gobuildcache version                                print the version
  gobuildcache help                                   show this help

`)
	}
	b.WriteString(`Flags and their variables. A flag wins over its GOBUILDCACHE_ variable,
which wins over the original interface's bare variable (in parentheses).
An unusable value in a bare variable, which other programs may set too, is
ignored with a warning; in a flag or a GOBUILDCACHE_ variable it stops the
program (exit status 2).

`)
	def := defaultConfig()
	for _, o := range options {
		if !o.for_(cmd) {
			continue
		}
		dv := o.value(&def).String()
		fmt.Fprintf(&b, "  -%s", o.flag)
		if bf, ok := o.value(&def).(interface{ IsBoolFlag() bool }); !ok || !bf.IsBoolFlag() {
			b.WriteString(" value")
		}
		fmt.Fprintf(&b, "\n      %s\n      env %s", o.usage, o.envName())
		if o.bare != "" {
			fmt.Fprintf(&b, " (or %s)", o.bare)
		}
		if dv == "" {
			dv = "none"
		}
		fmt.Fprintf(&b, ", default %q", dv)
		b.WriteString("\n")
	}
	if cmd == cmdServe {
		b.WriteString("\nRun 'gobuildcache clear -h' for the clear command's flags.\n")
		b.WriteString("Credentials come from the AWS SDK's default chain (AWS_ACCESS_KEY_ID, AWS_PROFILE,\n" +
			"instance roles, ...); GOBUILDCACHE_AWS_ACCESS_KEY_ID, GOBUILDCACHE_AWS_SECRET_ACCESS_KEY\n" +
			"and GOBUILDCACHE_AWS_SESSION_TOKEN, when set, are used first.\n")
	}
	io.WriteString(w, b.String())
}

// intValue is a whole number from min to max.
type intValue struct {
	p        *int
	min, max int
}

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < v.min || n > v.max {
		return fmt.Errorf("want a whole number from %d to %d", v.min, v.max)
	}
	*v.p = n
	return nil
}

func (v *intValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.Itoa(*v.p)
}

// enumValue is one of a few words.
type enumValue struct {
	p       *string
	allowed []string
}

func (v *enumValue) Set(s string) error {
	for _, a := range v.allowed {
		if s == a {
			*v.p = s
			return nil
		}
	}
	return fmt.Errorf("want %s", strings.Join(v.allowed, " or "))
}

func (v *enumValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

// dirValue is a directory's path: not empty.
type dirValue string

func (v *dirValue) Set(s string) error {
	if s == "" {
		return errors.New("want a directory")
	}
	*v = dirValue(s)
	return nil
}
func (v *dirValue) String() string { return string(*v) }

// urlValue is an http or https URL with a host, or empty for none.
type urlValue string

func (v *urlValue) Set(s string) error {
	if s != "" {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errors.New("want a URL such as https://s3.example.com or http://127.0.0.1:9000")
		}
	}
	*v = urlValue(s)
	return nil
}
func (v *urlValue) String() string { return string(*v) }

// prefixValue is an S3 key prefix (see checkS3Prefix).
type prefixValue string

func (v *prefixValue) Set(s string) error {
	if err := checkS3Prefix(s); err != nil {
		return err
	}
	*v = prefixValue(s)
	return nil
}
func (v *prefixValue) String() string { return string(*v) }

// bucketValue is an S3 bucket's name (see isBucketName), or empty. An
// access point is named by its alias, which S3 takes wherever it takes a
// bucket's name; its ARN is refused, as -s3-read-from refuses it.
type bucketValue string

func (v *bucketValue) Set(s string) error {
	if s != "" && !isBucketName(s) {
		if strings.HasPrefix(s, "arn:") {
			return errors.New("an ARN, not a bucket name: for an access point, give its alias (NAME-...-s3alias), which S3 takes wherever it takes a bucket name")
		}
		return errors.New("not a bucket name: want 3 to 255 letters, digits, '.', '_' or '-', starting and ending with a letter or digit")
	}
	*v = bucketValue(s)
	return nil
}
func (v *bucketValue) String() string { return string(*v) }

// byteSize is a size in bytes, written as 1073741824, 512MiB, 10GiB, 2GB...
type byteSize int64

func (v *byteSize) Set(s string) error {
	n, err := parseByteSize(s)
	if err != nil {
		return err
	}
	*v = byteSize(n)
	return nil
}

func (v *byteSize) String() string { return formatBytes(int64(*v)) }

// parseByteSize parses a non-negative size with an optional unit: B, KB,
// MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).
func parseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("want a size such as 512MiB or 10GiB")
	}
	mult := map[string]float64{"": 1, "b": 1,
		"k": 1 << 10, "kb": 1e3, "kib": 1 << 10,
		"m": 1 << 20, "mb": 1e6, "mib": 1 << 20,
		"g": 1 << 30, "gb": 1e9, "gib": 1 << 30,
		"t": 1 << 40, "tb": 1e12, "tib": 1 << 40}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q: want B, KB, MB, GB, TB, KiB, MiB, GiB or TiB", t[i:])
	}
	if f*mult > 1<<62 {
		return 0, fmt.Errorf("size too large")
	}
	return int64(f * mult), nil
}

// accountIDValue is an AWS account ID: 12 digits.
type accountIDValue string

func (v *accountIDValue) Set(s string) error {
	if len(s) != 12 || strings.Trim(s, "0123456789") != "" {
		return errors.New("want an AWS account ID, 12 digits")
	}
	*v = accountIDValue(s)
	return nil
}

func (v *accountIDValue) String() string { return string(*v) }

type stringValue string

func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }
func (v *stringValue) String() string     { return string(*v) }

type boolValue bool

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false")
	}
	*v = boolValue(b)
	return nil
}
func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) IsBoolFlag() bool { return true }

// durationValue is a duration of at least min.
type durationValue struct {
	p   *time.Duration
	min time.Duration
}

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return fmt.Errorf("want a duration such as 30s or 2m")
	case d < v.min && v.min > 0:
		return fmt.Errorf("want at least %v", v.min)
	case d < 0:
		return fmt.Errorf("must not be negative")
	}
	*v.p = d
	return nil
}

func (v *durationValue) String() string {
	if v.p == nil {
		return ""
	}
	return v.p.String()
}

// regionValue is a region's name: letters, digits and '-' (a host label).
type regionValue string

func (v *regionValue) Set(s string) error {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") != "" {
		return errors.New("not a region name: want letters, digits and '-', such as us-east-1")
	}
	*v = regionValue(s)
	return nil
}
func (v *regionValue) String() string { return string(*v) }
