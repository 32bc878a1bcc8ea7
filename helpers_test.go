package main

// Test helpers and fakes shared by the tests: IDs, a disk backend in a temp
// dir, an in-memory remote (memBackend) and a remote whose every method is
// a function field (mockBackend), as restic's mem and mock backends.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func actionID(s string) ActionID { return ActionID(sha256.Sum256([]byte("action:" + s))) }

func outputID(body string) OutputID { return OutputID(sha256.Sum256([]byte(body))) }

// idBytes returns the bytes of an ID given as ActionID, OutputID or []byte
// (a malformed one, for protocol tests).
func idBytes(id any) []byte {
	switch id := id.(type) {
	case ActionID:
		return id[:]
	case OutputID:
		return id[:]
	case []byte:
		return id
	case nil:
		return nil
	}
	panic(fmt.Sprintf("idBytes(%T)", id))
}

func newTestDisk(t testing.TB) *DiskBackend {
	t.Helper()
	d, err := NewDiskBackend(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func putString(t testing.TB, b CacheBackend, key, body string) Entry {
	t.Helper()
	e, err := b.Put(context.Background(), actionID(key), outputID(body), int64(len(body)), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// memBackend is a Remote in memory: what S3Backend does, without a server.
// Like S3Backend, its Get downloads into a new file in dir that is the
// caller's, and an empty stdout entry that a put carried is answered after
// a get of its compile.
type memBackend struct {
	dir string

	mu        sync.Mutex
	entries   map[ActionID]memEntry
	carried   map[ActionID]time.Time // as S3Backend.carried
	puts      atomic.Int64           // Put and PutWithEmptyStdout calls: objects written
	manifests map[string][]byte      // by name: "<scope>/<manifest id>"
	packs     map[string][]byte      // by "<manifest name>.<i>"
	packGets  atomic.Int64           // GetPackRange calls
	manGets   atomic.Int64           // GetManifest calls
}

type memEntry struct {
	e           Entry // without DiskPath
	body        []byte
	emptyStdout bool // carries the empty entry of stdoutKey
}

var _ Remote = (*memBackend)(nil)

func newMemBackend(t testing.TB) *memBackend {
	return &memBackend{dir: t.TempDir(), entries: make(map[ActionID]memEntry), carried: make(map[ActionID]time.Time), manifests: make(map[string][]byte), packs: make(map[string][]byte)}
}

func (m *memBackend) Get(ctx context.Context, actionID ActionID) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	m.mu.Lock()
	me, ok := m.entries[actionID]
	if t, carried := m.carried[actionID]; carried && !ok {
		delete(m.carried, actionID)
		me, ok = memEntry{e: Entry{OutputID: emptyOutputID, Time: t}}, true
	}
	if ok && me.emptyStdout && len(m.carried) < maxCarried {
		m.carried[stdoutKey(actionID)] = me.e.Time
	}
	m.mu.Unlock()
	if !ok {
		return Entry{}, fmt.Errorf("get %x: %w", actionID[:], ErrNotFound)
	}
	f, err := os.CreateTemp(m.dir, "memget-*")
	if err != nil {
		return Entry{}, err
	}
	_, err = f.Write(me.body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return Entry{}, err
	}
	e := me.e
	e.DiskPath = f.Name()
	return e, nil
}

func (m *memBackend) Put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	return m.put(ctx, actionID, outputID, size, body, false)
}

func (m *memBackend) PutWithEmptyStdout(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	return m.put(ctx, actionID, outputID, size, body, true)
}

func (m *memBackend) put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader, emptyStdout bool) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	b, err := io.ReadAll(newVerifyingReader(body, size, outputID))
	if err != nil {
		return Entry{}, fmt.Errorf("put %x: %w", actionID[:], err)
	}
	e := Entry{OutputID: outputID, Size: size, Time: time.Now()}
	m.puts.Add(1)
	m.mu.Lock()
	m.entries[actionID] = memEntry{e: e, body: b, emptyStdout: emptyStdout}
	m.mu.Unlock()
	return e, nil
}

func (m *memBackend) Close(ctx context.Context) error { return nil }

func (m *memBackend) ListManifests(ctx context.Context, scope string, n int) ([]manifestInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []string
	for name := range m.manifests {
		if strings.HasPrefix(name, scope+"/") {
			names = append(names, name)
		}
	}
	names = newestFirst(names, n)
	infos := make([]manifestInfo, len(names))
	for i, name := range names {
		var ns int64
		fmt.Sscanf(strings.TrimPrefix(name, scope+"/"), "%19d", &ns)
		infos[i] = manifestInfo{name: name, time: time.Unix(0, ns)}
	}
	return infos, nil
}

func (m *memBackend) GetManifest(ctx context.Context, name string) ([]byte, error) {
	m.manGets.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.manifests[name]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", name, ErrNotFound)
	}
	return bytes.Clone(b), nil
}

func (m *memBackend) PutManifest(ctx context.Context, scope, id string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.manifests[scope+"/"+id] = bytes.Clone(data)
	return nil
}

func (m *memBackend) DeleteManifests(ctx context.Context, names []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range names {
		delete(m.manifests, name)
		for k := range m.packs {
			if strings.HasPrefix(k, name+".") {
				delete(m.packs, k)
			}
		}
	}
	return nil
}

// DeleteManifestsOnly deletes the manifest name and keeps its packs, as if
// it were beyond what a prefetch reads.
func (m *memBackend) DeleteManifestsOnly(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.manifests, name)
	return nil
}

func (m *memBackend) PutPack(ctx context.Context, scope, id string, i int, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.packs[fmt.Sprintf("%s/%s.%d", scope, id, i)] = bytes.Clone(data)
	return nil
}

func (m *memBackend) GetPackRange(ctx context.Context, name string, i int, off, n int64) (io.ReadCloser, error) {
	m.packGets.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.packs[fmt.Sprintf("%s.%d", name, i)]
	if !ok {
		return nil, fmt.Errorf("get pack %d of %s: %w", i, name, ErrNotFound)
	}
	if off < 0 || n <= 0 || off+n > int64(len(b)) {
		return nil, fmt.Errorf("get pack %d of %s: range %d+%d of %d bytes", i, name, off, n, len(b))
	}
	return io.NopCloser(bytes.NewReader(bytes.Clone(b[off : off+n]))), nil
}

// mockBackend is a Remote whose methods call its function fields; a nil
// field answers ErrNotFound (reads) or succeeds (writes). It counts calls.
type mockBackend struct {
	GetFn   func(ctx context.Context, actionID ActionID) (Entry, error)
	PutFn   func(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error)
	CloseFn func(ctx context.Context) error

	ListManifestsFn   func(ctx context.Context, scope string, n int) ([]manifestInfo, error)
	GetManifestFn     func(ctx context.Context, name string) ([]byte, error)
	PutManifestFn     func(ctx context.Context, scope, id string, data []byte) error
	DeleteManifestsFn func(ctx context.Context, names []string) error
	PutPackFn         func(ctx context.Context, scope, id string, i int, data []byte) error
	GetPackRangeFn    func(ctx context.Context, name string, i int, off, n int64) (io.ReadCloser, error)

	calls atomic.Int64
}

var _ Remote = (*mockBackend)(nil)

// failingMock returns a mockBackend whose every request fails with err.
func failingMock(err error) *mockBackend {
	return &mockBackend{
		GetFn: func(context.Context, ActionID) (Entry, error) { return Entry{}, err },
		PutFn: func(context.Context, ActionID, OutputID, int64, io.Reader) (Entry, error) {
			return Entry{}, err
		},
		ListManifestsFn:   func(context.Context, string, int) ([]manifestInfo, error) { return nil, err },
		GetManifestFn:     func(context.Context, string) ([]byte, error) { return nil, err },
		PutManifestFn:     func(context.Context, string, string, []byte) error { return err },
		DeleteManifestsFn: func(context.Context, []string) error { return err },
		PutPackFn:         func(context.Context, string, string, int, []byte) error { return err },
		GetPackRangeFn:    func(context.Context, string, int, int64, int64) (io.ReadCloser, error) { return nil, err },
	}
}

func (m *mockBackend) Get(ctx context.Context, actionID ActionID) (Entry, error) {
	m.calls.Add(1)
	if m.GetFn == nil {
		return Entry{}, ErrNotFound
	}
	return m.GetFn(ctx, actionID)
}

func (m *mockBackend) Put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	m.calls.Add(1)
	if m.PutFn == nil {
		return Entry{OutputID: outputID, Size: size, Time: time.Now()}, nil
	}
	return m.PutFn(ctx, actionID, outputID, size, body)
}

// PutWithEmptyStdout is Put: PutFn sees both.
func (m *mockBackend) PutWithEmptyStdout(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	return m.Put(ctx, actionID, outputID, size, body)
}

func (m *mockBackend) Close(ctx context.Context) error {
	if m.CloseFn == nil {
		return nil
	}
	return m.CloseFn(ctx)
}

func (m *mockBackend) ListManifests(ctx context.Context, scope string, n int) ([]manifestInfo, error) {
	m.calls.Add(1)
	if m.ListManifestsFn == nil {
		return nil, nil
	}
	return m.ListManifestsFn(ctx, scope, n)
}

func (m *mockBackend) GetManifest(ctx context.Context, name string) ([]byte, error) {
	m.calls.Add(1)
	if m.GetManifestFn == nil {
		return nil, ErrNotFound
	}
	return m.GetManifestFn(ctx, name)
}

func (m *mockBackend) PutManifest(ctx context.Context, scope, id string, data []byte) error {
	m.calls.Add(1)
	if m.PutManifestFn == nil {
		return nil
	}
	return m.PutManifestFn(ctx, scope, id, data)
}

func (m *mockBackend) PutPack(ctx context.Context, scope, id string, i int, data []byte) error {
	m.calls.Add(1)
	if m.PutPackFn == nil {
		return nil
	}
	return m.PutPackFn(ctx, scope, id, i, data)
}

func (m *mockBackend) GetPackRange(ctx context.Context, name string, i int, off, n int64) (io.ReadCloser, error) {
	m.calls.Add(1)
	if m.GetPackRangeFn == nil {
		return nil, ErrNotFound
	}
	return m.GetPackRangeFn(ctx, name, i, off, n)
}

func (m *mockBackend) DeleteManifests(ctx context.Context, names []string) error {
	m.calls.Add(1)
	if m.DeleteManifestsFn == nil {
		return nil
	}
	return m.DeleteManifestsFn(ctx, names)
}

// countingBackend counts the gets that reach the backend it wraps.
type countingBackend struct {
	CacheBackend
	gets atomic.Int64
}

func (c *countingBackend) Get(ctx context.Context, id ActionID) (Entry, error) {
	c.gets.Add(1)
	return c.CacheBackend.Get(ctx, id)
}

// drainedUploads is asyncUploads whose Put returns once the upload is
// over, so that the conformance suite's gets after puts see them: uploads are
// queued at once, none waits.
type drainedUploads struct {
	*asyncUploads
	queued *atomic.Int64 // uploads queued by Put
}

func newDrainedUploads(a *asyncUploads) drainedUploads {
	return drainedUploads{a, new(atomic.Int64)}
}

func (d drainedUploads) Put(ctx context.Context, actionID ActionID, outputID OutputID, size int64, body io.Reader) (Entry, error) {
	e, err := d.asyncUploads.Put(ctx, actionID, outputID, size, body)
	if err != nil {
		return e, err
	}
	d.queueWaiting(true)
	n := d.queued.Add(1)
	s := d.stats
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		if s.UploadsDone.Load()+s.UploadsFailed.Load()+s.UploadsAbandoned.Load() >= n {
			break
		}
	}
	return e, nil
}

// hexID is the hex of an ID, as stored in object metadata.
func hexID(id OutputID) string { return hex.EncodeToString(id[:]) }

// umask reads this process's umask from /proc (Linux) without changing it,
// which would race with tests running in parallel; ok is false elsewhere.
func umask(t *testing.T) (mask os.FileMode, ok bool) {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, found := strings.CutPrefix(line, "Umask:"); found {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			if err != nil {
				t.Fatal(err)
			}
			return os.FileMode(m), true
		}
	}
	return 0, false
}
