package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
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
	ReadOnly      bool
	UploadTimeout time.Duration

	// clear only.
	LocalOnly   bool
	RemoteOnly  bool
	AllPrefixes bool
}

// defaultConfig returns the built-in defaults.
func defaultConfig() Config {
	return Config{
		Backend:       "disk",
		CacheDir:      filepath.Join(os.TempDir(), "gobuildcache"),
		S3Prefix:      "gobuildcache/",
		UploadTimeout: 30 * time.Second,
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
)

var (
	allCmds   = []string{cmdServe, cmdClear}
	serveOnly = []string{cmdServe}
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
	{"read-only", "READ_ONLY", "read from the remote cache but never write to it (untrusted pull requests)", serveOnly,
		func(c *Config) flag.Value { return (*boolValue)(&c.ReadOnly) }},
	{"upload-timeout", "UPLOAD_TIMEOUT", "how long close waits for pending uploads before abandoning them", serveOnly,
		func(c *Config) flag.Value { return (*durationValue)(&c.UploadTimeout) }},
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
	if fs.NArg() > 0 {
		return nil, &usageError{fmt.Sprintf("unexpected argument %q (run 'gobuildcache help')", fs.Arg(0))}
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
	default:
		b.WriteString(`gobuildcache is a GOCACHEPROG program: the go command starts it and asks it
for build and test results, so that a fresh machine starts with a warm cache.

usage:
  GOCACHEPROG="gobuildcache [flags]" go build ./...   (the go command runs it)
  gobuildcache clear [flags]                          remove every cache entry
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
	}
	io.WriteString(w, b.String())
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
