package main

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// s3Location is one place in a bucket that the cache uses,
// s3://<bucket>/<prefix>, and its methods are the whole key layout of it.
// Under the prefix (empty, or ending in "/"):
//
//	<prefix>v1/a/<actionID hex>                      one object per action: the body itself
//	<prefix>v1/m/<scope>/<unix ns, 19 digits>-<rand>  a prefetch manifest of a scope (manifest.go)
//
// An action's object carries the entry's metadata in its user metadata, so
// that a hit is a single GetObject and a miss a single 404:
//
//	x-amz-meta-gbc-output-id   hex SHA-256 of the body
//	x-amz-meta-gbc-size        body length in bytes
//	x-amz-meta-gbc-time        put time, Unix nanoseconds
//	x-amz-meta-gbc-encoding    how the object's bytes encode the body: "identity"
//	                           (the body itself) or "zstd" (a zstd frame of it)
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
)

func (l s3Location) String() string { return "s3://" + l.bucket + "/" + l.prefix }

// actionKey is the key of an action's object.
func (l s3Location) actionKey(id ActionID) string {
	return l.prefix + s3LayoutVersion + "/a/" + hex.EncodeToString(id[:])
}

// manifestDir is the key prefix of a scope's manifests.
func (l s3Location) manifestDir(scope string) string {
	return l.prefix + s3LayoutVersion + "/m/" + scope + "/"
}

// manifestKey is the key of a new manifest of scope written at t. Keys of
// one scope sort by time.
func (l s3Location) manifestKey(scope string, t time.Time) string {
	return fmt.Sprintf("%s%019d-%s", l.manifestDir(scope), t.UnixNano(), randomSuffix())
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
