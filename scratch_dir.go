package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
)

// scratchDir is where the server keeps, until the go command is done, the
// bodies of puts that the cache could not keep. The go command needs a file
// for every put it makes (it fails the build on a failed put), so a put the
// local cache refuses before reading any of its body (the disk nearly full,
// a directory made unwritable meanwhile) is written here instead: the build
// goes on, and that entry is not cached.
//
// Layout: a directory made with os.MkdirTemp("", "gobuildcache-scratch-")
// on the first such put, holding one file per put, named for the first 16
// hex digits of its output ID and a random number. remove deletes it when
// the go command closes the server.
type scratchDir struct {
	mu  sync.Mutex
	dir string // "" until the first put
}

// put writes body, size bytes verified by the caller's reader, to a file of
// its own and returns the entry naming it.
func (s *scratchDir) put(outputID OutputID, size int64, body io.Reader) (Entry, error) {
	dir, err := s.make()
	if err != nil {
		return Entry{}, fmt.Errorf("scratch %x: %w", outputID, err)
	}
	f, err := os.CreateTemp(dir, hex.EncodeToString(outputID[:8])+"-*")
	if err != nil {
		return Entry{}, fmt.Errorf("scratch %x: %w", outputID, err)
	}
	_, err = copyBuffered(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return Entry{}, fmt.Errorf("scratch %x: %w", outputID, err)
	}
	return Entry{OutputID: outputID, Size: size, DiskPath: f.Name()}, nil
}

func (s *scratchDir) make() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dir == "" {
		dir, err := os.MkdirTemp("", "gobuildcache-scratch-")
		if err != nil {
			return "", err
		}
		s.dir = dir
	}
	return s.dir, nil
}

// remove deletes the directory and every body in it.
func (s *scratchDir) remove() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dir != "" {
		os.RemoveAll(s.dir)
		s.dir = ""
	}
}
