package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The protocol is tested as the go command speaks it: a table of steps, each
// sending raw bytes over a pipe and expecting replies.

// getLine is a get request as the go command writes it.
func getLine(id int64, action any) string {
	b, _ := json.Marshal(Request{ID: id, Command: CmdGet, ActionID: idBytes(action)})
	return string(b) + "\n\n"
}

// putLine is a put request with its body as the go command writes it.
func putLine(id int64, action, output any, body string) string {
	return putLineSized(id, action, output, int64(len(body)), body)
}

func putLineSized(id int64, action, output any, size int64, body string) string {
	b, _ := json.Marshal(Request{ID: id, Command: CmdPut, ActionID: idBytes(action), OutputID: idBytes(output), BodySize: size})
	s := string(b) + "\n\n"
	if size > 0 {
		s += `"` + base64.StdEncoding.EncodeToString([]byte(body)) + "\"\n"
	}
	return s
}

// step sends raw bytes and then checks the replies it expects, in any
// order, keyed by ID.
type step struct {
	send   string
	expect map[int64]func(t *testing.T, r Response)
}

// play sends each step's line and checks the replies it expects.
func (ts *testServer) play(t *testing.T, steps []step) {
	t.Helper()
	for _, st := range steps {
		io.WriteString(ts.in, st.send)
		for range st.expect {
			r, _ := ts.read(t)
			check, ok := st.expect[r.ID]
			if !ok {
				t.Fatalf("unexpected reply %+v", r)
			}
			check(t, r)
		}
	}
}

func hit(body string) func(*testing.T, Response) {
	return func(t *testing.T, r Response) {
		t.Helper()
		if r.Miss || r.Err != "" {
			t.Fatalf("want hit, got %+v", r)
		}
		if !bytes.Equal(r.OutputID, idBytes(outputID(body))) || r.Size != int64(len(body)) || r.Time == nil {
			t.Fatalf("hit %+v: want OutputID %x size %d and a Time", r, outputID(body), len(body))
		}
		got, err := os.ReadFile(r.DiskPath)
		if err != nil || string(got) != body {
			t.Fatalf("DiskPath %s holds %q (%v), want %q", r.DiskPath, got, err, body)
		}
	}
}

func miss(t *testing.T, r Response) {
	t.Helper()
	if !r.Miss || r.Err != "" || r.DiskPath != "" {
		t.Fatalf("want miss, got %+v", r)
	}
}

func stored(body string) func(*testing.T, Response) {
	return func(t *testing.T, r Response) {
		t.Helper()
		if r.Err != "" || r.DiskPath == "" {
			t.Fatalf("want stored, got %+v", r)
		}
		if got, err := os.ReadFile(r.DiskPath); err != nil || string(got) != body {
			t.Fatalf("DiskPath holds %q (%v), want %q", got, err, body)
		}
	}
}

func errReply(substr string) func(*testing.T, Response) {
	return func(t *testing.T, r Response) {
		t.Helper()
		if r.Err == "" || !strings.Contains(r.Err, substr) {
			t.Fatalf("want Err containing %q, got %+v", substr, r)
		}
	}
}

func ok(t *testing.T, r Response) {
	t.Helper()
	if r.Err != "" {
		t.Fatalf("want success, got %+v", r)
	}
}

// testServer runs a server over pipes.
type testServer struct {
	in   *io.PipeWriter
	out  *bufio.Reader
	done chan error
	log  *bytes.Buffer
	srv  *Server
}

func startTestServer(t *testing.T, backend CacheBackend) *testServer {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	logBuf := new(bytes.Buffer)
	local, _ := backend.(*DiskBackend)
	srv := NewServer(backend, new(Stats), slog.New(slog.NewTextHandler(&lockedWriter{w: logBuf}, nil)), ServerOptions{Local: local, CloseTimeout: 30 * time.Second})
	ts := &testServer{in: inW, out: bufio.NewReader(outR), done: make(chan error, 1), log: logBuf, srv: srv}
	go func() {
		err := srv.Serve(inR, outW)
		outW.Close()
		inR.Close()
		ts.done <- err
	}()
	t.Cleanup(func() { inW.Close() })
	return ts
}

func (ts *testServer) read(t *testing.T) (Response, bool) {
	t.Helper()
	line, err := ts.out.ReadBytes('\n')
	if err == io.EOF && len(line) == 0 {
		return Response{}, false
	}
	if err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	var r Response
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("reply %q is not JSON: %v", line, err)
	}
	return r, true
}

func (ts *testServer) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-ts.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("server did not exit")
		return nil
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestProtocol(t *testing.T) {
	a1, a2 := actionID("1"), actionID("2")
	body := "hello, cache"
	big := strings.Repeat("0123456789abcdef", 4096)
	cases := []struct {
		name  string
		steps []step
		// exitErr, if set, means the stream must end in a protocol error
		// whose message contains it; otherwise the server exits cleanly.
		exitErr string
	}{
		{name: "handshake then EOF without close"},
		{name: "get miss", steps: []step{
			{getLine(1, a1), map[int64]func(*testing.T, Response){1: miss}},
		}},
		{name: "put then get hit", steps: []step{
			{putLine(1, a1, outputID(body), body), map[int64]func(*testing.T, Response){1: stored(body)}},
			{getLine(2, a1), map[int64]func(*testing.T, Response){2: hit(body)}},
		}},
		{name: "large body", steps: []step{
			{putLine(1, a1, outputID(big), big), map[int64]func(*testing.T, Response){1: stored(big)}},
			{getLine(2, a1), map[int64]func(*testing.T, Response){2: hit(big)}},
		}},
		{name: "zero-length put", steps: []step{
			{putLine(1, a1, outputID(""), ""), map[int64]func(*testing.T, Response){1: stored("")}},
			{getLine(2, a1), map[int64]func(*testing.T, Response){2: hit("")}},
		}},
		{name: "overwrite", steps: []step{
			{putLine(1, a1, outputID("one"), "one"), map[int64]func(*testing.T, Response){1: stored("one")}},
			{putLine(2, a1, outputID("two"), "two"), map[int64]func(*testing.T, Response){2: stored("two")}},
			{getLine(3, a1), map[int64]func(*testing.T, Response){3: hit("two")}},
		}},
		{name: "size mismatch", steps: []step{
			{putLineSized(1, a1, outputID(body), int64(len(body))+1, body), map[int64]func(*testing.T, Response){1: errReply("got 12 bytes, want 13")}},
			{putLineSized(2, a1, outputID(body), int64(len(body))-1, body), map[int64]func(*testing.T, Response){2: errReply("more than the declared 11 bytes")}},
			{getLine(3, a1), map[int64]func(*testing.T, Response){3: miss}},
		}},
		{name: "output ID mismatch", steps: []step{
			{putLine(1, a1, outputID("other"), body), map[int64]func(*testing.T, Response){1: errReply("sha256")}},
			{getLine(2, a1), map[int64]func(*testing.T, Response){2: miss}},
		}},
		{name: "bad base64", steps: []step{
			{strings.Replace(putLine(1, a1, outputID(body), body), "aGVs", "a!Vs", 1), map[int64]func(*testing.T, Response){1: errReply("base64")}},
			{getLine(2, a1), map[int64]func(*testing.T, Response){2: miss}},
		}},
		{name: "unknown command", steps: []step{
			{`{"ID":1,"Command":"get2","ActionID":"` + base64.StdEncoding.EncodeToString(a1[:]) + `"}` + "\n", map[int64]func(*testing.T, Response){1: errReply(`unknown command "get2"`)}},
			{getLine(2, a1), map[int64]func(*testing.T, Response){2: miss}},
		}},
		{name: "bad ActionID", steps: []step{
			{getLine(1, []byte("short")), map[int64]func(*testing.T, Response){1: errReply("invalid ActionID")}},
			{getLine(2, nil), map[int64]func(*testing.T, Response){2: errReply("invalid ActionID")}},
			{putLine(3, []byte("short"), outputID(body), body), map[int64]func(*testing.T, Response){3: errReply("invalid ActionID")}},
			{putLine(4, a2, []byte("short"), body), map[int64]func(*testing.T, Response){4: errReply("invalid OutputID")}},
			{putLine(5, a2, outputID(body), body), map[int64]func(*testing.T, Response){5: stored(body)}},
		}},
		{name: "oversized BodySize refused before writing", steps: []step{
			{putLineSized(1, a1, outputID(body), 1<<41, body), map[int64]func(*testing.T, Response){1: errReply("exceeds the")}},
			{getLine(2, a1), map[int64]func(*testing.T, Response){2: miss}},
		}},
		{name: "close", steps: []step{
			{putLine(1, a1, outputID(body), body), map[int64]func(*testing.T, Response){1: stored(body)}},
			{`{"ID":2,"Command":"close"}` + "\n", map[int64]func(*testing.T, Response){2: ok}},
		}},
		{name: "malformed JSON", steps: []step{
			{getLine(1, a1), map[int64]func(*testing.T, Response){1: miss}},
			{`{"ID":7,"Command":"get",` + "\n", nil},
		}, exitErr: "request 7: malformed JSON"},
		{name: "body not a string", steps: []step{
			{strings.SplitAfter(putLine(1, a1, outputID(body), body), "\n\n")[0] + "notastring\n", nil},
		}, exitErr: "request 1: body line starts with 'n'"},
		{name: "body cut off", steps: []step{
			{strings.TrimSuffix(putLine(1, a1, outputID(body), body), "\"\n"), nil},
		}, exitErr: "request 1: body string not terminated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NewDiskBackend(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			ts := startTestServer(t, d)
			r, _ := ts.read(t)
			if r.ID != 0 || fmt.Sprint(r.KnownCommands) != "[get put close]" {
				t.Fatalf("handshake: got %+v", r)
			}
			closed := false
			for _, st := range tc.steps {
				if _, err := io.WriteString(ts.in, st.send); err != nil && tc.exitErr == "" {
					t.Fatalf("send: %v", err)
				}
				for range st.expect {
					r, more := ts.read(t)
					if !more {
						t.Fatalf("stream ended; still expecting %d replies", len(st.expect))
					}
					check, ok := st.expect[r.ID]
					if !ok {
						t.Fatalf("unexpected reply %+v", r)
					}
					check(t, r)
				}
				closed = closed || strings.Contains(st.send, `"close"`)
			}
			if !closed {
				ts.in.Close()
			}
			if r, more := ts.read(t); more {
				t.Fatalf("unexpected reply after last step: %+v", r)
			}
			err = ts.wait(t)
			switch {
			case tc.exitErr == "" && err != nil:
				t.Fatalf("server exited with %v, want clean exit", err)
			case tc.exitErr != "" && (err == nil || !strings.Contains(err.Error(), tc.exitErr)):
				t.Fatalf("server exited with %v, want protocol error containing %q", err, tc.exitErr)
			case tc.exitErr != "" && !isProtocolError(err):
				t.Fatalf("exit error %T is not a *ProtocolError", err)
			}
		})
	}
}

// TestProtocolConcurrent sends 200 requests at once to a backend that
// answers in reverse order, and checks every ID gets exactly its answer.
func TestProtocolConcurrent(t *testing.T) {
	d, err := NewDiskBackend(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	// Store half the keys first, through the server.
	for i := 0; i < n; i += 2 {
		body := fmt.Sprint("body ", i)
		if _, err := d.Put(t.Context(), actionID(fmt.Sprint(i)), outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	slow := &reorderingBackend{CacheBackend: d, waiting: n / 2}
	slow.cond = sync.NewCond(&slow.mu)
	ts := startTestServer(t, slow) // no local fast path: every get goes through the backend
	ts.read(t)
	var sb strings.Builder
	for i := 0; i < n; i++ {
		if i%2 == 0 {
			sb.WriteString(getLine(int64(i+1), actionID(fmt.Sprint(i))))
		} else {
			body := fmt.Sprint("new ", i)
			sb.WriteString(putLine(int64(i+1), actionID(fmt.Sprint(i)), outputID(body), body))
		}
	}
	sb.WriteString(`{"ID":1000,"Command":"close"}` + "\n")
	go io.WriteString(ts.in, sb.String())

	seen := map[int64]bool{}
	var order []int64
	for {
		r, more := ts.read(t)
		if !more {
			break
		}
		if seen[r.ID] {
			t.Fatalf("reply for ID %d twice", r.ID)
		}
		seen[r.ID] = true
		order = append(order, r.ID)
		switch {
		case r.ID == 1000:
			ok(t, r)
		case (r.ID-1)%2 == 0:
			hit(fmt.Sprint("body ", r.ID-1))(t, r)
		default:
			stored(fmt.Sprint("new ", r.ID-1))(t, r)
		}
	}
	if len(seen) != n+1 {
		t.Fatalf("got %d replies, want %d", len(seen), n+1)
	}
	if err := ts.wait(t); err != nil {
		t.Fatal(err)
	}
	// The gets were held until all had arrived and released last first:
	// replies must not simply follow request order.
	inOrder := true
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			inOrder = false
		}
	}
	if inOrder {
		t.Fatal("replies came back in request order; want them answered concurrently")
	}
}

// reorderingBackend holds every get until `waiting` of them are in flight,
// then lets them finish in reverse order of arrival.
type reorderingBackend struct {
	CacheBackend
	mu      sync.Mutex
	cond    *sync.Cond
	waiting int
	arrived int
	turn    int // arrival index allowed to finish next, counting down
	started bool
}

func (b *reorderingBackend) Get(ctx context.Context, id ActionID) (Entry, error) {
	b.mu.Lock()
	me := b.arrived
	b.arrived++
	if b.arrived == b.waiting {
		b.started = true
		b.turn = b.waiting - 1
		b.cond.Broadcast()
	}
	for !b.started || b.turn != me {
		b.cond.Wait()
	}
	b.mu.Unlock()
	e, err := b.CacheBackend.Get(ctx, id)
	b.mu.Lock()
	b.turn--
	b.cond.Broadcast()
	b.mu.Unlock()
	return e, err
}

func TestProtocolErrorsAreCounted(t *testing.T) {
	d, _ := NewDiskBackend(t.TempDir())
	ts := startTestServer(t, d)
	ts.read(t)
	io.WriteString(ts.in, putLine(1, actionID("x"), outputID("y"), "z")+getLine(2, []byte("bad")))
	ts.read(t)
	ts.read(t)
	ts.in.Close()
	ts.wait(t)
	snap := ts.srv.stats.Snapshot()
	if snap.Errors["verify"] != 1 || snap.Errors["bad_request"] != 1 || snap.Puts != 1 || snap.Gets != 1 {
		t.Fatalf("stats %+v", snap)
	}
	if snap.Hits+snap.Misses != snap.Gets {
		t.Errorf("hits %d + misses %d != gets %d", snap.Hits, snap.Misses, snap.Gets)
	}
}

// TestPutTheCacheCannotKeep: a put that the local cache refuses before
// reading its body (here its bodies' directory is a file) still gives the
// go command a file holding the body, since the go command fails a build on
// a failed put. The entry is not cached, the failure is counted and logged
// once, a body that does not verify is still refused, and the scratch
// files are gone once the go command closes the server.
func TestPutTheCacheCannotKeep(t *testing.T) {
	d, err := NewDiskBackend(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.dir, "o"), []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startTestServer(t, d)
	ts.read(t)
	var scratchPaths []string
	keep := func(check func(*testing.T, Response)) func(*testing.T, Response) {
		return func(t *testing.T, r Response) {
			check(t, r)
			scratchPaths = append(scratchPaths, r.DiskPath)
		}
	}
	a1, a2, a3 := actionID("1"), actionID("2"), actionID("3")
	steps := []step{
		{putLine(1, a1, outputID("one"), "one"), map[int64]func(*testing.T, Response){1: keep(stored("one"))}},
		{putLine(2, a2, outputID(""), ""), map[int64]func(*testing.T, Response){2: keep(stored(""))}},
		{putLine(3, a3, outputID("other"), "three"), map[int64]func(*testing.T, Response){3: errReply("sha256")}},
		{getLine(4, a1), map[int64]func(*testing.T, Response){4: miss}},
		{`{"ID":5,"Command":"close"}` + "\n", map[int64]func(*testing.T, Response){5: ok}},
	}
	ts.play(t, steps)
	if err := ts.wait(t); err != nil {
		t.Fatal(err)
	}
	for _, p := range scratchPaths {
		if strings.HasPrefix(p, d.Dir()) {
			t.Errorf("DiskPath %s is in the cache, which could not keep it", p)
		}
		if _, err := os.Stat(filepath.Dir(p)); !os.IsNotExist(err) {
			t.Errorf("scratch directory of %s left after close: %v", p, err)
		}
	}
	snap := ts.srv.stats.Snapshot()
	if snap.Errors["put"] != 2 || snap.Errors["verify"] != 1 || snap.BytesStored != 0 {
		t.Errorf("errors %v, bytes stored %d: want 2 put errors, 1 verify failure, nothing stored", snap.Errors, snap.BytesStored)
	}
	if n := strings.Count(ts.log.String(), "scratch file"); n != 1 {
		t.Errorf("the failure was logged %d times, want once:\n%s", n, ts.log.String())
	}
}

// TestPutOfABodyInPlaceOnAFullDisk: with the disk within the reserve of
// full, a put whose body the cache holds already (another action with the
// same output, as a rebuild after a change that alters no output makes
// them) needs no room: only its record is written, and it is stored,
// neither refused nor copied to a scratch file (which, on a temp dir as
// full, or unusable here, fails the put and so the build).
func TestPutOfABodyInPlaceOnAFullDisk(t *testing.T) {
	d, err := NewDiskBackend(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("an output two actions share ", 100)
	putString(t, d, "first", body)
	d.freeBytes = func(string) (int64, error) { return fitsReserve / 2, nil }
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "no such dir")) // no scratch file can be made
	ts := startTestServer(t, d)
	ts.read(t)
	steps := []step{
		{putLine(1, actionID("second"), outputID(body), body), map[int64]func(*testing.T, Response){1: stored(body)}},
		{getLine(2, actionID("second")), map[int64]func(*testing.T, Response){2: hit(body)}},
		{`{"ID":3,"Command":"close"}` + "\n", map[int64]func(*testing.T, Response){3: ok}},
	}
	ts.play(t, steps)
	if err := ts.wait(t); err != nil {
		t.Fatal(err)
	}
	if snap := ts.srv.stats.Snapshot(); len(snap.Errors) != 0 || snap.BytesStored != int64(len(body)) {
		t.Errorf("errors %v, bytes stored %d: want none, %d", snap.Errors, snap.BytesStored, len(body))
	}
}

// TestRemoteHitWhoseRecordCannotBeWritten: an entry fetched from the
// remote whose body the local tier placed, verified, but whose record it
// could not write (in a shared directory, another user's fan-out
// directory; here no file can be made among the records) is a hit with
// that body, as such a put is, not a miss that throws the download away.
func TestRemoteHitWhoseRecordCannotBeWritten(t *testing.T) {
	d, err := NewDiskBackend(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	records := filepath.Join(d.dir, "a") + string(filepath.Separator)
	d.createTemp = func(dir, pattern string) (tempFile, error) {
		if strings.HasPrefix(dir, records) {
			return nil, &os.PathError{Op: "createtemp", Path: dir, Err: os.ErrPermission}
		}
		return createTempFile(dir, pattern)
	}
	remote := newMemBackend(t)
	a1, body := actionID("1"), "from the remote"
	if _, err := remote.Put(t.Context(), a1, outputID(body), int64(len(body)), strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	ts := startTestServer(t, newLocalTier(d, remote, true, new(Stats)))
	ts.read(t)
	inCache := func(t *testing.T, r Response) {
		hit(body)(t, r)
		if !strings.HasPrefix(r.DiskPath, d.Dir()) {
			t.Errorf("DiskPath %s: want the body where the cache placed it", r.DiskPath)
		}
	}
	ts.play(t, []step{
		{getLine(1, a1), map[int64]func(*testing.T, Response){1: inCache}},
		{getLine(2, a1), map[int64]func(*testing.T, Response){2: inCache}},
		{`{"ID":3,"Command":"close"}` + "\n", map[int64]func(*testing.T, Response){3: ok}},
	})
	if err := ts.wait(t); err != nil {
		t.Fatal(err)
	}
}

// TestPutWhoseRecordCannotBeWritten: a put whose body the cache placed,
// verified, but whose record it could not write (here the records'
// directory is a file; in a shared directory, another user's fan-out
// directory) gives the go command that body, uncached, instead of an error
// that would fail the build.
func TestPutWhoseRecordCannotBeWritten(t *testing.T) {
	d, err := NewDiskBackend(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.dir, "a"), []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startTestServer(t, d)
	ts.read(t)
	a1, a2 := actionID("1"), actionID("2")
	inCache := func(body string) func(*testing.T, Response) {
		return func(t *testing.T, r Response) {
			stored(body)(t, r)
			if !strings.HasPrefix(r.DiskPath, d.Dir()) {
				t.Errorf("DiskPath %s: want the body where the cache placed it", r.DiskPath)
			}
		}
	}
	steps := []step{
		{putLine(1, a1, outputID("one"), "one"), map[int64]func(*testing.T, Response){1: inCache("one")}},
		{putLine(2, a2, outputID("other"), "two"), map[int64]func(*testing.T, Response){2: errReply("sha256")}},
		{getLine(3, a1), map[int64]func(*testing.T, Response){3: miss}},
		{`{"ID":4,"Command":"close"}` + "\n", map[int64]func(*testing.T, Response){4: ok}},
	}
	ts.play(t, steps)
	if err := ts.wait(t); err != nil {
		t.Fatal(err)
	}
	snap := ts.srv.stats.Snapshot()
	if snap.Errors["put"] != 1 || snap.Errors["verify"] != 1 || snap.BytesStored != 0 {
		t.Errorf("errors %v, bytes stored %d: want 1 put error, 1 verify failure, nothing stored", snap.Errors, snap.BytesStored)
	}
	if n := strings.Count(ts.log.String(), "not recorded"); n != 1 {
		t.Errorf("the failure was logged %d times, want once:\n%s", n, ts.log.String())
	}
}
