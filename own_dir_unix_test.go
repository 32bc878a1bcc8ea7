//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCanRead: the permission bits that apply are the owner's, else the
// group's (the primary or a supplementary one), else everyone's; root reads
// all.
func TestCanRead(t *testing.T) {
	user := identity{uid: 1000, gid: 100, groups: []uint32{100, 27}}
	cases := []struct {
		id             identity
		uid, gid, mode uint32
		want           bool
	}{
		{user, 1000, 100, 0o600, true},
		{user, 1000, 100, 0o044, false}, // the owner's bits apply, not the group's
		{user, 1001, 100, 0o640, true},
		{user, 1001, 27, 0o640, true}, // a supplementary group
		{user, 1001, 100, 0o604, false},
		{user, 1001, 5, 0o640, false},
		{user, 1001, 5, 0o644, true},
		{user, 1001, 100, 0o600, false}, // an earlier gobuildcache's mode
		{identity{}, 1001, 5, 0o000, true},
	}
	for _, c := range cases {
		if got := c.id.canRead(c.uid, c.gid, c.mode); got != c.want {
			t.Errorf("%+v reading uid %d gid %d mode %#o: %v, want %v", c.id, c.uid, c.gid, c.mode, got, c.want)
		}
	}
}

// TestDiskModesFollowTheUmask: records, bodies and fan-out directories are
// made as the go command makes its cache's, 0666 and 0777 less the umask,
// so that users who share a directory can read each other's entries.
func TestDiskModesFollowTheUmask(t *testing.T) {
	mask, ok := umask(t)
	if !ok {
		t.Skip("no umask to read in /proc/self/status")
	}
	d := newTestDisk(t)
	e := putString(t, d, "a", "a body")
	for _, c := range []struct {
		path string
		want os.FileMode
	}{
		{e.DiskPath, 0o666 &^ mask},
		{d.actionPath(actionID("a")), 0o666 &^ mask},
		{filepath.Dir(e.DiskPath), os.ModeDir | 0o777&^mask},
		{d.tmpDir(), os.ModeDir | 0o777&^mask},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != c.want {
			t.Errorf("%s: mode %v, want %v (umask %#o)", c.path, fi.Mode(), c.want, mask)
		}
	}
}

// TestPrivateCacheDirs: the default directory is made 0700, new or not (an
// earlier gobuildcache made it 0755), since the files in it are as
// readable as the umask makes them; any other keeps the mode it has.
func TestPrivateCacheDirs(t *testing.T) {
	base := t.TempDir()
	for _, c := range []struct {
		name    string
		existed bool
		private bool
		want    os.FileMode
	}{
		{"the default, new", false, true, 0o700},
		{"the default, made 0755 earlier", true, true, 0o700},
		{"set by the user", true, false, 0o755},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(base, strings.ReplaceAll(c.name, " ", "-"))
			if c.existed {
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := openCacheDir(dir, c.private); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != c.want {
				t.Errorf("mode %v, want %v", fi.Mode().Perm(), c.want)
			}
		})
	}
}

// TestDefaultDirOfAnotherUserIsNotOpened: the default cache
// directory is in the shared temp dir, so claimOwnDir refuses one that
// another user made. But openCacheDir opens it (NewDiskBackend: MkdirAll
// of v1/tmp, a probe file, and removeStaleTemps, which deletes every file
// of v1/tmp older than an hour) before it asks claimOwnDir. Another user
// who made /tmp/gobuildcache with v1 a symbolic link to X has this user's
// server (clear, prefetch) delete the hour-old files of X/tmp, any
// directory named tmp that this user may write (as root: /tmp, /var/tmp).
func TestDefaultDirOfAnotherUserIsNotOpened(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a directory of another user")
	}
	for _, link := range []string{"v1", "v1/tmp"} {
		t.Run(strings.ReplaceAll(link, "/", "_"), func(t *testing.T) {
			base := t.TempDir()
			// The victim's files: any directory, with an old file.
			victim := filepath.Join(base, "home", "project")
			target := victim // v1/tmp -> the victim's directory
			if link == "v1" {
				target = filepath.Join(victim, "tmp") // v1 -> X: X/tmp
			}
			precious := filepath.Join(target, "precious.go")
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(precious, []byte("work of a day"), 0o644); err != nil {
				t.Fatal(err)
			}
			old := time.Now().Add(-2 * time.Hour)
			os.Chtimes(precious, old, old)
			// The attacker's "default" directory: theirs (uid 65534).
			def := filepath.Join(base, "gobuildcache")
			if err := os.MkdirAll(filepath.Join(def, filepath.Dir(link)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, filepath.Join(def, link)); err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{filepath.Join(def, link), filepath.Join(def, "v1"), def} {
				os.Lchown(p, 65534, 65534)
			}
			d, err := openCacheDir(def, true)
			t.Logf("openCacheDir of another user's default dir: %v, %v", d, err)
			if err == nil {
				t.Errorf("another user's default directory was accepted")
			}
			if !exists(precious) {
				t.Errorf("opening another user's default directory (%s a link) deleted %s, a file of the victim's", link, precious)
			}
		})
	}
}
