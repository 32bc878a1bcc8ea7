package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config is every option of every command. Each option is a flag and an
// environment variable; a flag given on the command line wins over the
// variable, which wins over the default.
type Config struct {
	Backend   string
	CacheDir  string
	Debug     bool
	Stats     bool
	StatsJSON string

	S3Bucket      string
	S3Prefix      string
	S3Region      string
	S3Endpoint    string
	S3PathStyle   bool
	S3Timeout     time.Duration
	ReadOnly      bool
	UploadTimeout time.Duration
	UploadWorkers int
	UploadQueue   byteSize

	Prefetch            bool
	PrefetchScope       string
	PrefetchConcurrency int
	Compression         string
	CompressionMinSize  byteSize

	MaxLocalSize byteSize
	LocalMaxAge  time.Duration

	// clear only.
	LocalOnly   bool
	RemoteOnly  bool
	AllPrefixes bool

	// mtimes only: the work tree to stamp (its one argument).
	Dir string
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
		Compression:         "zstd",
		CompressionMinSize:  4 << 10,

		LocalMaxAge: 5 * 24 * time.Hour,
	}
}

// option describes one setting: its flag, its environment variable and how
// to parse it into a Config.
type option struct {
	flag, env, usage string
	// commands that take it: "serve", "clear".
	commands []string
	value    func(*Config) flag.Value
}

const (
	cmdServe = "serve"
	cmdClear = "clear"
	cmdCheck = "check"
	// mtimes takes no flags, only a directory.
	cmdMtimes = "mtimes"
)

// Which commands take an option. check takes the server's flags, so that
// the same GOCACHEPROG flags can be checked.
var (
	allCmds   = []string{cmdServe, cmdClear, cmdCheck}
	serveOnly = []string{cmdServe, cmdCheck}
	clearOnly = []string{cmdClear}
)

var options = []option{
	{"backend", "BACKEND_TYPE", "storage backend: disk or s3", allCmds,
		func(c *Config) flag.Value { return (*stringValue)(&c.Backend) }},
	{"cache-dir", "CACHE_DIR", "local cache directory (the disk backend, and the local tier in front of s3)", allCmds,
		func(c *Config) flag.Value { return (*stringValue)(&c.CacheDir) }},
	{"debug", "DEBUG", "log every request, and the S3 client's activity, to stderr", allCmds,
		func(c *Config) flag.Value { return (*boolValue)(&c.Debug) }},
	{"stats", "PRINT_STATS", "print cache statistics to stderr on exit (and to $GITHUB_STEP_SUMMARY when set)", serveOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.Stats) }},
	{"stats-json", "STATS_JSON", "write cache statistics as JSON to this file on exit", serveOnly,
		func(c *Config) flag.Value { return (*stringValue)(&c.StatsJSON) }},
	{"s3-bucket", "S3_BUCKET", "S3 bucket (required with -backend=s3); directory buckets (name--azid--x-s3) use S3 Express One Zone", allCmds,
		func(c *Config) flag.Value { return (*stringValue)(&c.S3Bucket) }},
	{"s3-prefix", "S3_PREFIX", "key prefix for every object in the bucket", allCmds,
		func(c *Config) flag.Value { return (*stringValue)(&c.S3Prefix) }},
	{"s3-region", "AWS_REGION", "AWS region of the bucket", allCmds,
		func(c *Config) flag.Value { return (*stringValue)(&c.S3Region) }},
	{"s3-endpoint", "S3_ENDPOINT", "S3 endpoint URL for S3-compatible servers (MinIO, R2, Ceph); AWS_ENDPOINT_URL_S3 is honoured too", allCmds,
		func(c *Config) flag.Value { return (*stringValue)(&c.S3Endpoint) }},
	{"s3-path-style", "S3_PATH_STYLE", "address the bucket in the URL path rather than the host name (MinIO, Ceph)", allCmds,
		func(c *Config) flag.Value { return (*boolValue)(&c.S3PathStyle) }},
	{"s3-timeout", "S3_TIMEOUT", "deadline of one remote request, retries included; a remote that does not answer in time is a miss", allCmds,
		func(c *Config) flag.Value { return (*durationValue)(&c.S3Timeout) }},
	{"read-only", "READ_ONLY", "read from the remote cache but never write to it (untrusted pull requests)", serveOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.ReadOnly) }},
	{"upload-timeout", "UPLOAD_TIMEOUT", "how long close waits for pending uploads before abandoning them", serveOnly,
		func(c *Config) flag.Value { return (*durationValue)(&c.UploadTimeout) }},
	{"upload-concurrency", "UPLOAD_CONCURRENCY", "uploads to the remote in flight at once", serveOnly,
		func(c *Config) flag.Value { return (*intValue)(&c.UploadWorkers) }},
	{"upload-queue-size", "UPLOAD_QUEUE_SIZE", "bytes of uploads that may wait; a put beyond that stays local (counted as dropped)", serveOnly,
		func(c *Config) flag.Value { return &c.UploadQueue }},
	{"prefetch", "PREFETCH", "at start, fetch what recent runs of the same scope used, in parallel, while the build runs", serveOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.Prefetch) }},
	{"prefetch-scope", "PREFETCH_SCOPE", "name shared by the runs whose manifests prefetch reads, e.g. the CI job name (default: derived from the working directory)", serveOnly,
		func(c *Config) flag.Value { return (*stringValue)(&c.PrefetchScope) }},
	{"prefetch-concurrency", "PREFETCH_CONCURRENCY", "prefetch requests in flight at once", serveOnly,
		func(c *Config) flag.Value { return (*intValue)(&c.PrefetchConcurrency) }},
	{"compression", "COMPRESSION", "how uploads are stored: none or zstd (readers decode either, whatever their own setting)", serveOnly,
		func(c *Config) flag.Value { return (*stringValue)(&c.Compression) }},
	{"compression-min-size", "COMPRESSION_MIN_SIZE", "smallest body that -compression=zstd compresses", serveOnly,
		func(c *Config) flag.Value { return &c.CompressionMinSize }},
	{"max-local-size", "MAX_LOCAL_SIZE", "bound on the local cache's bodies, e.g. 10GiB (0: none); least recently used entries are trimmed to 90%, at most every 10 minutes, never one used in the last hour", serveOnly,
		func(c *Config) flag.Value { return &c.MaxLocalSize }},
	{"local-max-age", "LOCAL_MAX_AGE", "local entries unused for this long are trimmed (checked at most daily)", serveOnly,
		func(c *Config) flag.Value { return (*durationValue)(&c.LocalMaxAge) }},
	{"local-only", "CLEAR_LOCAL_ONLY", "clear only the local cache directory", clearOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.LocalOnly) }},
	{"remote-only", "CLEAR_REMOTE_ONLY", "clear only the remote cache", clearOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.RemoteOnly) }},
	{"all-prefixes", "CLEAR_ALL_PREFIXES", "allow clearing with an empty -s3-prefix, i.e. the whole bucket", clearOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.AllPrefixes) }},
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

// parseConfig builds the Config of cmd from the environment (read through
// getenv) and then args. Usage goes to usageOut on -h.
func parseConfig(cmd string, args []string, getenv func(string) string, usageOut io.Writer) (*Config, error) {
	c := defaultConfig()
	fs := flag.NewFlagSet("gobuildcache "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, o := range options {
		if !o.for_(cmd) {
			continue
		}
		v := o.value(&c)
		if s := getenv(o.env); s != "" {
			if err := v.Set(s); err != nil {
				return nil, &usageError{fmt.Sprintf("invalid %s=%q (flag -%s): %v", o.env, s, o.flag, err)}
			}
		}
		fs.Var(v, o.flag, o.usage)
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
	if err := c.validate(cmd); err != nil {
		return nil, &usageError{err.Error()}
	}
	return &c, nil
}

// flagErrorWithEnv adds the environment variable to a flag package error
// such as `invalid value "x" for flag -debug: ...`.
func flagErrorWithEnv(msg string) string {
	for _, o := range options {
		if strings.Contains(msg, " -"+o.flag+":") || strings.HasSuffix(msg, " -"+o.flag) {
			return msg + " (env " + o.env + ")"
		}
	}
	return msg + " (run 'gobuildcache help')"
}

// validate checks values that parse but make no sense together. Messages
// name the flag and the variable.
func (c *Config) validate(cmd string) error {
	switch c.Backend {
	case "disk", "s3":
	default:
		return fmt.Errorf("invalid -backend (BACKEND_TYPE) %q: want disk or s3", c.Backend)
	}
	if c.CacheDir == "" {
		return errors.New("empty -cache-dir (CACHE_DIR)")
	}
	if c.Backend == "s3" && c.S3Bucket == "" {
		return errors.New("-s3-bucket (S3_BUCKET) is required with -backend=s3")
	}
	if c.UploadTimeout < 0 {
		return fmt.Errorf("invalid -upload-timeout (UPLOAD_TIMEOUT) %v: must not be negative", c.UploadTimeout)
	}
	if c.S3Timeout <= 0 {
		return fmt.Errorf("invalid -s3-timeout (S3_TIMEOUT) %v: must be positive", c.S3Timeout)
	}
	if c.UploadWorkers < 1 || c.UploadWorkers > 1024 {
		return fmt.Errorf("invalid -upload-concurrency (UPLOAD_CONCURRENCY) %d: want 1 to 1024", c.UploadWorkers)
	}
	if c.LocalMaxAge < time.Hour {
		return fmt.Errorf("invalid -local-max-age (LOCAL_MAX_AGE) %v: want at least 1h", c.LocalMaxAge)
	}
	if c.PrefetchConcurrency < 1 || c.PrefetchConcurrency > 1024 {
		return fmt.Errorf("invalid -prefetch-concurrency (PREFETCH_CONCURRENCY) %d: want 1 to 1024", c.PrefetchConcurrency)
	}
	if c.Compression != "none" && c.Compression != "zstd" {
		return fmt.Errorf("invalid -compression (COMPRESSION) %q: want none or zstd", c.Compression)
	}
	if err := checkS3Prefix(c.S3Prefix); err != nil {
		return fmt.Errorf("invalid -s3-prefix (S3_PREFIX) %.80q: %v", c.S3Prefix, err)
	}
	if c.S3Prefix != "" && !strings.HasSuffix(c.S3Prefix, "/") {
		c.S3Prefix += "/" // keys live in a "directory"; S3 Express requires it
	}
	if c.S3Endpoint != "" {
		u, err := url.Parse(c.S3Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("invalid -s3-endpoint (S3_ENDPOINT) %q: want a URL such as https://s3.example.com or http://127.0.0.1:9000", c.S3Endpoint)
		}
	}
	if c.LocalOnly && c.RemoteOnly {
		return errors.New("-local-only (CLEAR_LOCAL_ONLY) and -remote-only (CLEAR_REMOTE_ONLY) exclude each other")
	}
	return nil
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
  gobuildcache mtimes [DIR]                           content mtimes for cached tests on fresh checkouts
  gobuildcache help                                   show this help

`)
	}
	b.WriteString("Flags (a flag wins over its environment variable):\n")
	def := defaultConfig()
	for _, o := range options {
		if !o.for_(cmd) {
			continue
		}
		dv := o.value(&def).String()
		fmt.Fprintf(&b, "  -%s", o.flag)
		if _, isBool := o.value(&def).(*boolValue); !isBool {
			b.WriteString(" value")
		}
		fmt.Fprintf(&b, "\n      %s\n      env %s", o.usage, o.env)
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

type intValue int

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("want a whole number")
	}
	*v = intValue(n)
	return nil
}
func (v *intValue) String() string { return strconv.Itoa(int(*v)) }

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

type durationValue time.Duration

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as 30s or 2m")
	}
	*v = durationValue(d)
	return nil
}
func (v *durationValue) String() string { return time.Duration(*v).String() }
