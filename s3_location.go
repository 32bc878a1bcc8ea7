package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// s3Location is one place in a bucket that the cache uses,
// s3://<bucket>/<prefix>, and its methods are the whole key layout of it.
// Under the prefix (empty, or ending in "/"):
//
//	<prefix>v1/a/<actionID hex>                     one object per action: the body itself
//	<prefix>v1/m/<scope>/<unix ns, 19 digits>-<job>  a prefetch manifest of a scope (manifest.go)
//	<prefix>v1/p/<scope>/<that manifest's id>.<i>      its i-th pack (pack.go), written before it
//
// <job> is the ID of the job whose go command wrote the manifest (12 hex
// digits, loadJobID).
//
// A scope is a -prefetch-scope name and, for a server that a go command
// started, "." and that go command's toolchain and target
// (build.go1.26.8-linux-amd64-v1; toolchainTag): legs of a matrix of Go
// versions or targets keep manifests of their own.
//
// An action's object carries the entry's metadata in its user metadata, so
// that a hit is a single GetObject and a miss a single 404:
//
//	x-amz-meta-gbc-output-id   hex SHA-256 of the body
//	x-amz-meta-gbc-size        body length in bytes
//	x-amz-meta-gbc-time        put time, Unix nanoseconds
//	x-amz-meta-gbc-encoding    how the object's bytes encode the body: "identity"
//	                           (the body itself) or "zstd" (a zstd frame of it)
//	x-amz-meta-gbc-stdout      "empty" if the entry of the action's output
//	                           (stdoutKey) is empty and has no object; optional
//
// The go command puts, beside nearly every compile's and vet's entry, the
// tool's output under stdoutKey of that action ID, nearly always empty; as
// objects of their own these were a third of a cold build's requests. So
// the uploader sends an entry and its empty output as the one object of
// the entry (asyncUploads), and a get of that entry answers the get of its
// output, which the go command makes next, without a request
// (S3Backend.Get). A reader that asks for such an output first, or knows
// nothing of this key, misses it, which costs the go command nothing: a
// missing output of an action it finds cached is an empty one to it.
//
// "v1" versions the layout: a reader never interprets objects of another
// version. The encoding is recorded in each object, never assumed from the
// reader's flags; an unknown encoding is a miss.
type s3Location struct {
	bucket string
	prefix string
}

// s3LayoutVersion is the layout version segment of every key.
const s3LayoutVersion = "v1"

// Object metadata keys (lowercase: S3 returns them lowercased).
const (
	metaOutputID = "gbc-output-id"
	metaSize     = "gbc-size"
	metaTime     = "gbc-time"
	metaEncoding = "gbc-encoding"
	metaStdout   = "gbc-stdout"

	stdoutEmpty = "empty" // the one value of metaStdout
)

func (l s3Location) String() string { return "s3://" + l.bucket + "/" + l.prefix }

// actionKey is the key of an action's object.
func (l s3Location) actionKey(id ActionID) string {
	return l.actionDir() + hex.EncodeToString(id[:])
}

// actionDir is the key prefix of every action's object.
func (l s3Location) actionDir() string { return l.prefix + s3LayoutVersion + "/a/" }

// manifestDir is the key prefix of a scope's manifests.
func (l s3Location) manifestDir(scope string) string {
	return l.prefix + s3LayoutVersion + "/m/" + scope + "/"
}

// manifestKey is the key of manifest id (newManifestID) of scope. Keys of
// one scope sort by time.
func (l s3Location) manifestKey(scope, id string) string {
	return l.manifestDir(scope) + id
}

// packDir is the key prefix of the packs of the manifest with key
// manifestKey, a key in l; false if that is not a manifest key of l.
func (l s3Location) packDir(manifestKey string) (string, bool) {
	rest, ok := strings.CutPrefix(manifestKey, l.prefix+s3LayoutVersion+"/m/")
	if !ok || strings.Count(rest, "/") != 1 || strings.HasSuffix(rest, "/") || strings.HasPrefix(rest, "/") {
		return "", false
	}
	return l.prefix + s3LayoutVersion + "/p/" + rest + ".", true
}

// packKey is the key of pack i of the manifest with key manifestKey.
func (l s3Location) packKey(manifestKey string, i int) (string, bool) {
	dir, ok := l.packDir(manifestKey)
	return dir + strconv.Itoa(i), ok
}

// manifestTime returns the time a manifest key was written, from its name.
func (l s3Location) manifestTime(scope, key string) (time.Time, bool) {
	name := strings.TrimPrefix(key, l.manifestDir(scope))
	if len(name) < 19 {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(name[:19], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// contains reports whether every key of o lies under l (l's prefix is a
// prefix of o's, in the same bucket), so that clearing l would clear o.
func (l s3Location) contains(o s3Location) bool {
	return l.bucket == o.bucket && strings.HasPrefix(o.prefix, l.prefix)
}

// isBucketName reports whether a location may name b as its bucket: 3 to
// 255 of the characters S3 and S3-compatible servers allow (legacy names
// included), starting and ending with a letter or digit, so that the URL
// cannot smuggle in a path, a host or a query. (A loop, not a regexp: the
// regexp's {1,253}, compiled in package init, made every start 3 ms
// slower.)
func isBucketName(b string) bool {
	if len(b) < 3 || len(b) > 255 {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0 && i < len(b)-1:
		default:
			return false
		}
	}
	return true
}

// parseS3Location parses s3://BUCKET/PREFIX. The prefix is checked as
// -s3-prefix is and gets a trailing "/" if it has none.
func parseS3Location(s string) (s3Location, error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return s3Location{}, fmt.Errorf("%.80q: want s3://BUCKET/PREFIX/", s)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if !isBucketName(bucket) {
		return s3Location{}, fmt.Errorf("%.80q: bucket %.80q is not a bucket name", s, bucket)
	}
	if err := checkS3Prefix(prefix); err != nil {
		return s3Location{}, fmt.Errorf("%.80q: prefix %v", s, err)
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return s3Location{bucket: bucket, prefix: prefix}, nil
}

// s3Locations is the value of -s3-read-from: a comma-separated list of
// locations, in the order they are read.
type s3Locations []s3Location

func (v *s3Locations) Set(s string) error {
	var locs s3Locations
	if strings.TrimSpace(s) != "" {
		for _, item := range strings.Split(s, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				return errors.New("an empty item in the list: want s3://BUCKET/PREFIX/,s3://...")
			}
			l, err := parseS3Location(item)
			if err != nil {
				return err
			}
			locs = append(locs, l)
		}
	}
	*v = locs
	return nil
}

func (v *s3Locations) String() string {
	s := make([]string, len(*v))
	for i, l := range *v {
		s[i] = l.String()
	}
	return strings.Join(s, ",")
}

// checkReadLocations returns an error if the read locations cannot be read
// beside write: one that is the write location or lies inside it (clear and
// the server's writes would reach it), or one named twice.
func checkReadLocations(write s3Location, reads []s3Location) error {
	for i, r := range reads {
		if write.contains(r) {
			return fmt.Errorf("%s lies inside the write location %s (-s3-bucket, -s3-prefix): a read location is never written, so it must be elsewhere", r, write)
		}
		for _, o := range reads[:i] {
			if o == r {
				return fmt.Errorf("%s is named twice", r)
			}
		}
	}
	return nil
}

// getFirst asks n locations for one entry at once, get(ctx, i) for location
// i, and returns the answer of the first location in order that has it:
// location i's hit is taken once every location before it has answered
// without one, and the requests to the locations after it are then
// canceled. So a key that the first location lacks costs one round trip,
// not one per location. Hits that arrive but are not taken are handed to
// discard (which may be called after getFirst returns).
//
// If no location has the entry, the error wraps ErrNotFound, unless a
// location failed (an error other than ErrNotFound): then it is the first
// such failure, for the caller to account for.
func getFirst[T any](ctx context.Context, n int, get func(ctx context.Context, i int) (T, error), discard func(T)) (T, error) {
	var zero T
	if n == 0 {
		return zero, ErrNotFound
	}
	type result struct {
		v   T
		err error
	}
	results := make([]chan result, n)
	cancels := make([]context.CancelFunc, n)
	for i := range n {
		results[i] = make(chan result, 1)
		var ictx context.Context
		ictx, cancels[i] = context.WithCancel(ctx)
		go func() {
			v, err := get(ictx, i)
			results[i] <- result{v, err}
		}()
	}
	var failed, missed error
	for i := range n {
		r := <-results[i]
		cancels[i]()
		if r.err == nil {
			for j := i + 1; j < n; j++ {
				cancels[j]()
				go func() {
					if r := <-results[j]; r.err == nil {
						discard(r.v)
					}
				}()
			}
			return r.v, nil
		}
		switch {
		case errors.Is(r.err, ErrNotFound):
			if missed == nil {
				missed = r.err
			}
		case failed == nil:
			failed = r.err
		}
	}
	if failed != nil {
		return zero, failed
	}
	return zero, missed
}
