package main

import (
	"log/slog"
	"sync"
)

// warnings logs the first occurrence of each kind of swallowed error at
// warning level, and later ones only at debug level, so a failing remote
// cannot flood the build log.
type warnings struct {
	log  *slog.Logger
	mu   sync.Mutex
	seen map[string]bool
}

func newWarnings(log *slog.Logger) *warnings {
	return &warnings{log: log, seen: make(map[string]bool)}
}

// once logs err with msg: at warning level the first time kind is seen,
// at debug level after.
func (w *warnings) once(kind, msg string, err error) {
	w.mu.Lock()
	first := !w.seen[kind]
	w.seen[kind] = true
	w.mu.Unlock()
	var attrs []any
	if err != nil {
		attrs = []any{"err", err}
	}
	if first {
		w.log.Warn(msg+" (further errors of this kind are counted, not logged)", attrs...)
	} else {
		w.log.Debug(msg, attrs...)
	}
}
