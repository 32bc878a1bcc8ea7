package main

import (
	"os"
	"regexp"
	"time"
)

// A job is the go commands that run on one local cache directory, one
// after another, as in one CI job on one machine: each is a server of its
// own, and they name their manifests alike (newManifestID), so that a
// prefetch can read all the manifests of the job it reads any of (see
// chooseManifests).

// jobIDLifetime: a job ID older than this is replaced, so that a cache
// directory that outlives its CI job (a self-hosted runner's) starts a new
// job now and then.
const jobIDLifetime = 6 * time.Hour

// jobIDPattern matches a job ID (randomSuffix), which is also the end of
// the job's manifest IDs.
var jobIDPattern = regexp.MustCompile(`^[0-9a-f]{12}$`)

// loadJobID returns the ID of the job this server runs in: the one the
// first server on this local cache directory wrote to path, or a new one,
// written there if the file is missing or older than jobIDLifetime ("" path:
// a new one, kept nowhere). Best effort: a server that cannot read or
// write the file, or reads it half written, has an ID of its own.
func loadJobID(path string, now time.Time) string {
	if path == "" {
		return randomSuffix()
	}
	if fi, err := os.Stat(path); err == nil {
		if age := now.Sub(fi.ModTime()); age < jobIDLifetime && age > -time.Minute { // one from the future: a clock gone wrong
			if b, err := os.ReadFile(path); err == nil && jobIDPattern.Match(b) {
				return string(b)
			}
			return randomSuffix() // being written, or not ours to replace
		}
		os.Remove(path) // a past job's
	}
	id := randomSuffix()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if err != nil {
		// Another server of the job made it first, or the directory is
		// not writable: that server's, if it is complete, else our own.
		if b, err := os.ReadFile(path); err == nil && jobIDPattern.Match(b) {
			return string(b)
		}
		return id
	}
	_, err = f.WriteString(id)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return id
}
