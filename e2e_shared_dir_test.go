//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSharedCacheDirAmongUsers: two users of one machine (self-hosted
// runners, say) share a cache directory, group-writable and setgid, with
// umask 002, as they would share a GOCACHE. Each reads what the other
// stored; a body the other could not let it read (an earlier gobuildcache
// wrote every file 0600) is a miss, not a hit the go command cannot open,
// and the put that follows replaces it. Needs root, to run the second
// server as another user.
func TestSharedCacheDirAmongUsers(t *testing.T) {
	const other = sharedDirUser
	bin, shared := sharedDirAmongUsers(t)
	base := filepath.Dir(shared)
	// serve runs the binary on the shared directory as uid, with umask
	// 002, and returns its answers by ID.
	serve := func(uid uint32, stdin string) map[int64]Response {
		t.Helper()
		cmd := exec.Command("/bin/sh", "-c", `umask 002; exec "$0" -cache-dir="$1"`, bin, shared)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + base, "TMPDIR=" + base}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: other}}
		cmd.Stdin = strings.NewReader(stdin + `{"ID":99,"Command":"close"}` + "\n")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("server as uid %d: %v\n%s", uid, err, stderr.String())
		}
		if stderr.Len() > 0 {
			t.Errorf("server as uid %d logged: %s", uid, stderr.String())
		}
		answers := map[int64]Response{}
		for sc := bufio.NewScanner(bytes.NewReader(out)); sc.Scan(); {
			var r Response
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("answer %q: %v", sc.Text(), err)
			}
			answers[r.ID] = r
		}
		return answers
	}
	// readableBy opens path as the other user, as its go command would.
	readableBy := func(path string) error {
		cmd := exec.Command("cat", path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: other, Gid: other}}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("cat %s as uid %d: %v: %s", path, other, err, out)
		}
		return nil
	}

	serve(0, putLine(1, actionID("shared"), outputID("shared body"), "shared body")+
		putLine(2, actionID("old"), outputID("old body"), "old body"))
	d, err := NewDiskBackend(shared)
	if err != nil {
		t.Fatal(err)
	}
	oldBody := d.outputPath(outputID("old body"))
	if err := os.Chmod(oldBody, 0o600); err != nil { // as an earlier gobuildcache wrote it
		t.Fatal(err)
	}

	got := serve(other, getLine(1, actionID("shared"))+getLine(2, actionID("old"))+
		putLine(3, actionID("old"), outputID("old body"), "old body")+getLine(4, actionID("old")))
	if r := got[1]; r.DiskPath == "" {
		t.Errorf("the other user's get of what root stored: %+v, want a hit", r)
	} else if err := readableBy(r.DiskPath); err != nil {
		t.Errorf("the hit's body: %v", err)
	}
	if r := got[2]; !r.Miss {
		t.Errorf("get of a body the other user cannot read: %+v, want a miss", r)
	}
	if r := got[3]; r.Err != "" || r.DiskPath == "" {
		t.Errorf("the put that follows: %+v", r)
	}
	if r := got[4]; r.DiskPath == "" {
		t.Errorf("the get after it: %+v, want a hit", r)
	} else if err := readableBy(r.DiskPath); err != nil {
		t.Errorf("the replaced body: %v", err)
	}
	if fi, err := os.Stat(filepath.Dir(oldBody)); err != nil || fi.Mode().Perm()&0o020 == 0 {
		t.Errorf("fan-out directory made under umask 002: %v %v, want it writable by the group", fi.Mode(), err)
	}
}

// TestBreakerMarkerInASharedCacheDir: in a directory two users share (see
// TestSharedCacheDirAmongUsers), the marker of a remote found failing is
// a state file like the others, 0666 less the umask and replaced whole:
// one user's servers could not replace the marker the other's had written
// (0644), which no one removes while the remote stays down, so none of
// their go commands told the next of a failing remote, and each paid its
// failures again. Needs root, to run a server as another user.
func TestBreakerMarkerInASharedCacheDir(t *testing.T) {
	const other = sharedDirUser
	bin, shared := sharedDirAmongUsers(t)
	base := filepath.Dir(shared)
	const endpoint, bucket = "http://127.0.0.1:1", "shared-bucket" // nothing listens there
	// serve runs a server of the failing remote as uid, with umask 002,
	// and sends it gets enough to open its breaker.
	serve := func(uid uint32) {
		t.Helper()
		cmd := exec.Command("/bin/sh", "-c", `umask 002; exec "$0" -cache-dir="$1" -backend=s3 -s3-endpoint="$2" -s3-bucket="$3" -prefetch=false -s3-timeout=1s`, bin, shared, endpoint, bucket)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + base, "TMPDIR=" + base,
			"AWS_ACCESS_KEY_ID=test-key", "AWS_SECRET_ACCESS_KEY=test-secret", "AWS_REGION=us-east-1", "AWS_EC2_METADATA_DISABLED=true"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: other}}
		var in strings.Builder
		for i := range 4 {
			in.WriteString(getLine(int64(i+1), actionID(fmt.Sprint("k", i))))
		}
		in.WriteString(`{"ID":99,"Command":"close"}` + "\n")
		cmd.Stdin = strings.NewReader(in.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("server as uid %d: %v\n%s", uid, err, out)
		}
	}
	serve(0)
	d, err := NewDiskBackend(shared) // after the server, which made v1 under umask 002
	if err != nil {
		t.Fatal(err)
	}
	marker := d.remoteFile("remote-down", endpoint, bucket, "gobuildcache/")
	first, _, ok := readBreakerMarker(marker)
	if !ok {
		t.Fatal("the first user's server wrote no marker")
	}
	// The marker is over; the remote is still down.
	past := first.Add(-time.Hour)
	if err := writeBreakerMarker(marker, past, "network"); err != nil {
		t.Fatal(err)
	}
	os.Chown(marker, 0, other) // as the first user's server left it, whatever this test's writing did
	serve(other)
	if till, _, ok := readBreakerMarker(marker); !ok || !till.After(past) {
		t.Errorf("marker after the other user's server found the remote failing: %v (ok %v), still the first user's %v", till, ok, past)
	}
}

// sharedDirUser is the other user of sharedDirAmongUsers: nobody, and
// nogroup.
const sharedDirUser = 65534

// sharedDirAmongUsers makes a cache directory that root and sharedDirUser
// share, group-writable and setgid, and a copy of the binary both may run,
// side by side in a directory both may use (as HOME and TMPDIR). It skips
// the test under -short, or when not run as root.
func sharedDirAmongUsers(t *testing.T) (bin, shared string) {
	t.Helper()
	skipIfShortE2E(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run a server as another user")
	}
	base, err := os.MkdirTemp("", "gobuildcache-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	bin = filepath.Join(base, "gobuildcache")
	if data, err := os.ReadFile(gobuildcacheBinary(t)); err != nil || os.WriteFile(bin, data, 0o755) != nil {
		t.Fatalf("copying the binary: %v", err)
	}
	shared = filepath.Join(base, "shared")
	for _, step := range []error{
		os.Chmod(base, 0o755), os.Mkdir(shared, 0o775), os.Chown(shared, 0, sharedDirUser), os.Chmod(shared, 0o775|os.ModeSetgid),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	return bin, shared
}
