package main

import (
	"encoding/xml"
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCIHistoryPlan(t *testing.T) {
	runs := ciHistory()
	if got := runNumbers(runs); !slices.Equal(got, []int{1, 2, 3, 4, 5, 6, 7}) {
		t.Fatalf("runs %v, want 1..7 in order", got)
	}
	want := []struct {
		main   bool
		pr     string
		shards int
	}{{true, "", 0}, {true, "", 0}, {false, "leaf", 0}, {false, "core", 0}, {false, "core", 0}, {true, "", 4}, {false, "rel", 0}}
	for i, r := range runs {
		if r.onMain() != want[i].main || r.pr != want[i].pr || r.shards != want[i].shards {
			t.Errorf("run %d: main %v pr %q shards %d, want %+v", r.n, r.onMain(), r.pr, r.shards, want[i])
		}
	}
	if runs[6].base != "release" || runs[3].base != "main" {
		t.Errorf("bases: (4) %q, (7) %q", runs[3].base, runs[6].base)
	}
}

// TestPrepareHistory builds the history's commits on a small module with
// the same edit points and checks what each run's tag holds.
func TestPrepareHistory(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	mod := t.TempDir()
	files := map[string]string{
		"go.mod":                 "module example.com/m\n\ngo 1.22\n",
		"README.md":              "m\n",
		"docgen/docgen.go":       "package docgen\n\nfunc CreateDoc(i any) int {\n\treturn 1\n}\n\nfunc isProtobuf(s string) bool {\n\treturn false\n}\n",
		"ast/node.go":            "package ast\n\ntype base struct{ loc int }\n\nfunc (n *base) SetLocation(loc int) {\n\tn.loc = loc\n}\n",
		"patcher/value/value.go": "package value\n\nfunc getValue(params ...any) (any, error) {\n\treturn nil, nil\n}\n",
		"test/gen/gen.go":        "package main\n\nfunc nilNode(_ int) any {\n\treturn nil\n}\n",
	}
	for name, body := range files {
		p := filepath.Join(mod, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g, err := newGitRepo(filepath.Join(t.TempDir(), "origin"), mod, "example.com/m@v1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := prepareHistory(g, ciHistory(), 7); err != nil {
		t.Fatal(err)
	}
	show := func(tag, file string) string {
		out, err := g.git("show", tag+":"+file)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// The leaf edit is on (3) and, merged, on (6); not on (4) or (7).
	for tag, want := range map[string]bool{"run-2": false, "run-3": true, "run-4": false, "run-5": false, "run-6": true, "run-7": false} {
		if got := strings.Contains(show(tag, "docgen/docgen.go"), "ciEdit1 +="); got != want {
			t.Errorf("%s: leaf edit present %v, want %v", tag, got, want)
		}
	}
	if !strings.Contains(show("run-5", "ast/node.go"), "ciEdit2") || !strings.Contains(show("run-5", "patcher/value/value.go"), "ciEdit3") {
		t.Error("run-5 lacks the core edit or its follow-up")
	}
	if strings.Contains(show("run-4", "patcher/value/value.go"), "ciEdit") {
		t.Error("run-4 has the follow-up edit")
	}
	r7 := show("run-7", "test/gen/gen.go")
	if !strings.Contains(r7, "ciEdit4") || !strings.Contains(show("run-7", "docgen/docgen.go"), "ciEdit5") || strings.Contains(show("run-7", "ast/node.go"), "ciEdit") {
		t.Errorf("run-7 is not release's edit plus its pull request's on (1):\n%s", r7)
	}
	if show("run-1", "README.md") == show("run-2", "README.md") {
		t.Error("run-2 has no commit of its own")
	}
	if out, _ := g.git("diff", "--stat", "run-1", "run-2", "--", "*.go"); out != "" {
		t.Errorf("run-2 changes Go files: %s", out)
	}
}

func TestApplyEdit(t *testing.T) {
	src := []byte("package p\n\ntype T struct{}\n\n// F does it.\nfunc F() int {\n\treturn 1\n}\n\nfunc (t *T) M() {}\n\nfunc (t T) V() {}\n")
	a, err := applyEdit(src, "F", 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := applyEdit(src, "F", 1, 1)
	if string(a) != string(b) {
		t.Error("the same seed and edit gave different results")
	}
	c, _ := applyEdit(src, "F", 2, 1)
	if string(a) == string(c) {
		t.Error("another seed gave the same edit")
	}
	want := fmt.Sprintf("func F() int {\n\tciEdit1 += %d\n\treturn 1\n}", editValue(1, 1))
	if !strings.Contains(string(a), want) || !strings.Contains(string(a), "\nvar ciEdit1 int\n") {
		t.Errorf("edit:\n%s", a)
	}
	if _, err := parser.ParseFile(token.NewFileSet(), "", a, 0); err != nil {
		t.Errorf("edited file does not parse: %v", err)
	}
	for _, fn := range []string{"(*T).M", "(T).V"} {
		out, err := applyEdit(src, fn, 1, 3)
		if err != nil || !strings.Contains(string(out), "ciEdit3 +=") {
			t.Errorf("%s: %v\n%s", fn, err, out)
		}
	}
	if _, err := applyEdit(src, "G", 1, 1); err == nil {
		t.Error("no error for a missing function")
	}
}

func TestShards(t *testing.T) {
	// FNV-1a 32 of the path, mod 4: fixed values, so shards never move.
	if got := shardOf("github.com/expr-lang/expr/ast", 4); got != shardOf("github.com/expr-lang/expr/ast", 4) {
		t.Fatal("unstable")
	}
	for pkg, want := range map[string]int{"a": 0xe40c292c % 4, "github.com/expr-lang/expr": fnvMod("github.com/expr-lang/expr", 4)} {
		if got := shardOf(pkg, 4); got != want {
			t.Errorf("shardOf(%q) = %d, want %d", pkg, got, want)
		}
	}
	var pkgs []string
	for i := 0; i < 200; i++ {
		pkgs = append(pkgs, fmt.Sprintf("example.com/m/p%d", i))
	}
	var all []string
	for k := 0; k < 4; k++ {
		part := shardPackages(pkgs, k, 4)
		if len(part) < 25 {
			t.Errorf("shard %d has %d of 200 packages", k, len(part))
		}
		all = append(all, part...)
	}
	slices.Sort(all)
	want := slices.Clone(pkgs)
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Error("the shards do not partition the packages")
	}
}

// fnvMod is FNV-1a 32 written out, as a check on shardOf.
func fnvMod(s string, n uint32) int {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return int(h % n)
}

func TestTarRestoreRules(t *testing.T) {
	h := &ciHist{}
	runs := ciHistory()
	if h.restoreFor(runs[0], 0) != nil {
		t.Fatal("restored something from nothing")
	}
	h.saves = []tarSave{{key: "build", run: 1}, {key: "build", run: 2}}
	if s := h.restoreFor(runs[3], 0); s == nil || s.run != 2 {
		t.Errorf("pull request restores %+v, want main's newest (2)", s)
	}
	if s := h.restoreFor(runs[5], 3); s == nil || s.run != 2 || s.key != "build" {
		t.Errorf("first matrix shard restores %+v, want main's one-job save", s)
	}
	h.saves = append(h.saves, tarSave{key: "test-3", run: 6})
	if s := h.restoreFor(runs[5], 3); s == nil || s.key != "test-3" {
		t.Errorf("shard 3 restores %+v, want its own", s)
	}
	if s := h.restoreFor(runs[6], 0); s == nil || s.key != "build" {
		t.Errorf("one-job run restores %+v, want the one-job save", s)
	}
}

func TestGBCLocations(t *testing.T) {
	h := &ciHist{root: "r/"}
	runs := ciHistory()
	for _, tc := range []struct {
		run      ciRun
		readFrom bool
		write    string
		read     []string
	}{
		{runs[0], true, "r/main/", nil},
		{runs[3], true, "r/pr-core/", []string{"r/main/"}},
		{runs[6], true, "r/pr-rel/", []string{"r/release/", "r/main/"}},
		{runs[3], false, "r/main/", nil},
		{runs[6], false, "r/main/", nil},
	} {
		w, r := h.locations(tc.run, tc.readFrom)
		if w != tc.write || !slices.Equal(r, tc.read) {
			t.Errorf("run %d, read-from %v: %q %q, want %q %q", tc.run.n, tc.readFrom, w, r, tc.write, tc.read)
		}
	}
}

func TestHitCounts(t *testing.T) {
	dir := t.TempDir()
	start := time.Now().Add(-time.Minute)
	old := start.Add(-time.Hour)
	write := func(name string, atime, mtime time.Time) {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("x"), 0o644)
		os.Chtimes(p, atime, mtime)
	}
	write("01-a", start.Add(time.Second), old)                      // restored, read: hit
	write("02-a", old, old)                                         // restored, unused
	write("03-a", start.Add(2*time.Second), start.Add(time.Second)) // written then read: miss and hit
	write("04-a", start.Add(time.Second), start.Add(time.Second))   // written: miss
	write("05-d", start.Add(time.Second), old)                      // an output, not an entry
	if _, ok := accessTime(mustStat(t, filepath.Join(dir, "01-a"))); !ok {
		t.Skip("no access times here")
	}
	gets, hits := hitCounts(dir, start)
	if gets != 4 || hits != 2 {
		t.Errorf("gets %d hits %d, want 4 and 2", gets, hits)
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestDropParts(t *testing.T) {
	res := map[time.Duration]*ciResult{2 * time.Millisecond: {parts: []partResult{{"checkout", time.Second}, {"mtimes", time.Second}, {"build", 10 * time.Second}, {"pack", 2 * time.Second}, {"upload", time.Second}}}}
	none := dropParts(res, true, true, "n")[2*time.Millisecond]
	if none.wall != 11*time.Second || len(none.parts) != 2 {
		t.Errorf("no cache: %v %v", none.wall, none.parts)
	}
	tar := dropParts(res, true, false, "n")[2*time.Millisecond]
	if tar.wall != 14*time.Second {
		t.Errorf("tar without mtimes: %v", tar.wall)
	}
	if len(res[2*time.Millisecond].parts) != 5 {
		t.Error("dropParts changed its input")
	}
}

// ciFixture is a replay's rows with made-up times: (5) 4x faster on
// gobuildcache at 10 ms, (6) 1.5x slower at 2 ms.
func ciFixture() []*ciRow {
	mk := func(way ciWay, rtt time.Duration, secs ...float64) *ciRow {
		r := &ciRow{way: way, rtt: rtt, res: map[int]*ciResult{}}
		r.key, r.label = rowName(way, rtt, false)
		for i, s := range secs {
			r.res[i+1] = &ciResult{wall: time.Duration(s * float64(time.Second)), gets: 10, hits: 5, moved: 1 << 20, testsCached: 1, testsTotal: 2}
		}
		return r
	}
	ms2, ms10 := 2*time.Millisecond, 10*time.Millisecond
	return []*ciRow{
		mk(wayNone, 0, 60, 60, 60, 60, 60, 60, 60),
		mk(wayTar, ms2, 62, 20, 22, 40, 40, 20, 30),
		mk(wayTar, ms10, 63, 21, 23, 41, 40, 21, 31),
		mk(wayGBC, ms2, 65, 10, 12, 40, 9, 30, 20),
		mk(wayGBC, ms10, 70, 12, 14, 42, 10, 15, 22),
	}
}

func TestCITargets(t *testing.T) {
	rows := ciFixture()
	// Run (6) at 2 ms in two rounds: tar 20 s and 26 s, gobuildcache 30 s
	// and 26 s (the faster kept for each, 20 s and 26 s, in the cells: a
	// ratio of 1.30x; round by round 1.50x and 1.00x).
	rows[1].res[6].roundWalls = []time.Duration{20 * time.Second, 26 * time.Second}
	rows[3].res[6].wall = 26 * time.Second
	rows[3].res[6].roundWalls = []time.Duration{30 * time.Second, 26 * time.Second}
	// Run (5) at 10 ms: tar 40 s and 44 s, gobuildcache 10 s and 12 s.
	rows[2].res[5].roundWalls = []time.Duration{40 * time.Second, 44 * time.Second}
	rows[4].res[5].roundWalls = []time.Duration{10 * time.Second, 12 * time.Second}
	ts := ciTargets(rows, []int{1, 2, 3, 4, 5, 6, 7})
	got := map[string]target{}
	for _, tg := range ts {
		got[tg.name[:strings.Index(tg.name, ":")]+" "+tg.name[strings.Index(tg.name, "gobuildcache, "):strings.Index(tg.name, " against")]] = tg
	}
	check := func(key, measured, result string) {
		t.Helper()
		tg, ok := got[key]
		if !ok {
			t.Fatalf("no target %q in %v", key, ts)
		}
		if !strings.HasPrefix(tg.measured, measured) || tg.result != result {
			t.Errorf("%s: %q %q, want %q... %q", key, tg.measured, tg.result, measured, result)
		}
	}
	// Judged on the median of the rounds' ratios, not on the cells.
	check("run (5) at least 3x faster gobuildcache, 10 ms", "3.83x, the median of its rounds: 4.00x, 3.67x; the fastest rounds 40.0s against 10.0s (4.00x)", "PASS")
	check("no run more than 1.2x slower gobuildcache, 2 ms", "1.25x, run (6), the median of its rounds: 1.50x, 1.00x; the fastest rounds 26.0s against 20.0s (1.30x)", "FAIL")
	check("no run more than 1.2x slower gobuildcache, 10 ms", "1.11x, run (1) (70.0s against 63.0s)", "PASS")
	check("the sum over the history gobuildcache, 10 ms", "1.30x", "shown")
	check("the sum after the cold run (1) gobuildcache, 10 ms", "1.54x", "shown")
	if len(ts) != 7 {
		t.Errorf("%d targets, want 7 (run 5 only at 10 ms)", len(ts))
	}
}

func TestCIReportRendering(t *testing.T) {
	rows := ciFixture()
	runs := []int{1, 2, 3, 4, 5, 6, 7}
	tab := ciTable("way", rows, runs, func(_ *ciRow, r *ciResult) string { return fmt.Sprintf("%.1f", r.wall.Seconds()) },
		func(r *ciRow) string { s, _ := r.sumWall(runs); return fmt.Sprintf("%.1f", s.Seconds()) })
	lines := strings.Split(strings.TrimSpace(tab), "\n")
	if len(lines) != 2+len(rows) {
		t.Fatalf("%d lines:\n%s", len(lines), tab)
	}
	if lines[0] != "| way | (1) | (2) | (3) | (4) | (5) | (6) | (7) | sum |" {
		t.Errorf("header %q", lines[0])
	}
	if lines[5] != "| gobuildcache, 2 ms | 65.0 | 10.0 | 12.0 | 40.0 | 9.0 | 30.0 | 20.0 | 186.0 |" {
		t.Errorf("row %q", lines[5])
	}
	delete(rows[1].res, 3)
	if _, ok := rows[1].sumWall(runs); ok {
		t.Error("a sum over a missing run")
	}
	svg := ciChart("title <&>", rows, runs)
	d := xml.NewDecoder(strings.NewReader(svg))
	rects := 0
	for {
		tok, err := d.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("chart is not well-formed XML: %v", err)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	// background + a bar per row and run (one missing) + a legend key per row
	if want := 1 + len(rows)*len(runs) - 1 + len(rows); rects != want {
		t.Errorf("%d rects, want %d", rects, want)
	}
}

func TestCIFeatures(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "fake")
	script := "#!/bin/sh\nif [ \"$1\" = help ]; then printf 'usage:\\n  gobuildcache mtimes [DIR]   x\\nFlags:\\n  -s3-read-from value\\n      y\\n  -prefetch\\n'; exit 0; fi\nif [ \"$1\" = mtimes ]; then echo 'usage: gobuildcache mtimes [DIR]'; exit 2; fi\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := detectCIFeatures(bin)
	if err != nil {
		t.Skip(err)
	}
	if !f.mtimes || !f.readFrom || !f.prefetch {
		t.Errorf("features %+v, want all", f)
	}
	os.WriteFile(bin, []byte("#!/bin/sh\necho '  -s3-prefix value'\n"), 0o755)
	if f, _ = detectCIFeatures(bin); f.mtimes || f.readFrom || f.prefetch {
		t.Errorf("features %+v, want none", f)
	}
}

func TestCISettingsFromFlags(t *testing.T) {
	set, err := ciSettingsFromFlags(true, "/b", "/t", "out", defaultCIModule, 1, "", "10ms", "10ms")
	if err != nil {
		t.Fatal(err)
	}
	if !set.runs[5] || set.runs[6] || len(set.mtimesRTTs) != 0 || set.noCacheAlways {
		t.Errorf("quick settings %+v", set)
	}
	for _, bad := range [][3]string{{"m", "", "2ms"}, {defaultCIModule, "0,8", "2ms"}, {defaultCIModule, "", "2.5ms"}} {
		if _, err := ciSettingsFromFlags(false, "/b", "/t", "out", bad[0], 1, bad[1], bad[2], ""); err == nil {
			t.Errorf("no error for %q", bad)
		}
	}
}

func TestCIMarkdown(t *testing.T) {
	rows := ciFixture()
	for _, way := range []ciWay{wayTar, wayGBC} {
		r := &ciRow{way: way, rtt: 10 * time.Millisecond, mtimes: true, res: map[int]*ciResult{}}
		r.key, r.label = rowName(way, r.rtt, true)
		for n := 1; n <= 7; n++ {
			r.res[n] = &ciResult{wall: 5 * time.Second, jobs: 4, jobsWall: 20 * time.Second, note: "a note"}
		}
		rows = append(rows, r)
	}
	c := &ciBench{set: ciSettings{seed: 1, gbcRTTs: []time.Duration{2 * time.Millisecond, 10 * time.Millisecond}, mtimesRTTs: []time.Duration{10 * time.Millisecond}, noCacheAlways: true},
		runs: ciHistory(), done: []int{1, 2, 3, 4, 5, 6, 7}, rows: rows, feat: ciFeatures{mtimes: true, readFrom: true, prefetch: true},
		modPath: "example.com/m", modVer: "v1.0.0", pkgs: 47, testPkg: 39, start: time.Now(), partial: "partial: written after run (7)"}
	rows[0].res[2].repeats = 1
	rows[len(rows)-1].res[7].roundWalls = []time.Duration{6 * time.Second, 5 * time.Second}
	c.set.rounds, c.set.tieBudget = 2, 2*time.Minute
	c.tieRounds = []string{"(4) of tar, gbc-10ms (50s)"}
	c.tieSkipped = []string{"(5) of floor, tar, gbc-10ms (about 55s)"}
	md := c.markdown()
	sec := c.latestSection()
	for _, want := range []string{"## CI replay (full, make bench-ci)", "[ci-replay.md](ci-replay.md)", "| no cache | 60.0 | (60.0) | 60.0 |",
		"run (5) at least 3x faster: gobuildcache, 10 ms + mtimes", "no run more than 1.2x slower", "the sum over the history", "The CI replay took"} {
		if !strings.Contains(sec, want) {
			t.Errorf("latest.md's section lacks %q:\n%s", want, sec)
		}
	}
	for _, want := range []string{
		"| no cache | 60.0 | (60.0) | 60.0 |",
		"**incomplete: partial: written after run (7)**",
		"`example.com/m` v1.0.0 from the module proxy (47 packages, 39 with tests)",
		"with `-s3-read-from`",
		"| tar-and-restore, 10 ms / gobuildcache, 10 ms | 0.90x | 1.75x |",
		"| tar-and-restore, 10 ms + mtimes / gobuildcache, 10 ms + mtimes | 1.00x |",
		"| tar-and-restore, 10 ms | 240.0s | 35.0s | 205.0s (85%) |",
		"run (5) at least 3x faster: gobuildcache, 10 ms + mtimes against tar-and-restore, 10 ms + mtimes",
		"; 4 shards, 20.0s added up (a note)",
		"; 4 shards, 20.0s added up; rounds 6.0, 5.0 (a note)",
		"every timed job (or matrix) ran 2 times, the ways interleaved round by round",
		"- a target is judged on the median of its ratio round by round",
		"within -ci-tiebreak-budget (2m0s) in all: (4) of tar, gbc-10ms (50s); not run, beyond the budget: (5) of floor, tar, gbc-10ms (about 55s)\n",
		"| gobuildcache, 10 ms | 185.0 | 115.0 | 1.30x | 1.54x |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
}

func TestWithSection(t *testing.T) {
	s3 := "# gobuildcache S3 benchmark (full)\n\n| a | b |\n\n## mtimes on a 50000-file tree\n\nmtimes table\n\nThe whole benchmark took 12m0s.\n"
	sec1 := ciSectionTitle + " (full, make bench-ci)\n\ntable one\n\nThe CI replay took 20m0s.\n"
	sec2 := ciSectionTitle + " (full, make bench-ci)\n\ntable two\n\nThe CI replay took 21m0s.\n"
	once := withSection(s3, sec1)
	want := "# gobuildcache S3 benchmark (full)\n\n| a | b |\n\n## mtimes on a 50000-file tree\n\nmtimes table\n\n" + sec1 + "\nThe whole benchmark took 12m0s.\n"
	if once != want {
		t.Errorf("inserted:\n%s\nwant:\n%s", once, want)
	}
	if twice := withSection(once, sec2); twice != strings.Replace(want, sec1, sec2, 1) {
		t.Errorf("replaced:\n%s", twice)
	}
	if got := withSection("# report\n", sec1); got != "# report\n\n"+sec1 {
		t.Errorf("appended:\n%s", got)
	}
}

func TestNoCacheRepeats(t *testing.T) {
	c := &ciBench{}
	for _, r := range ciHistory() {
		if got, want := c.noCacheRepeats(r), r.n != 1; got != want {
			t.Errorf("full, run %d: repeats %v, want %v", r.n, got, want)
		}
	}
	c.set.noCacheAlways = true
	for _, r := range ciHistory() {
		if c.noCacheRepeats(r) {
			t.Errorf("-ci-no-cache-every-run, run %d: repeats", r.n)
		}
	}
}

func TestUndecided(t *testing.T) {
	for _, tc := range []struct {
		rs   []float64
		want bool
	}{
		{[]float64{1.38, 1.06}, true},
		{[]float64{1.06, 1.38}, true},
		{[]float64{1.2, 1.21}, true}, // 1.2 itself passes
		{[]float64{1.25, 1.30}, false},
		{[]float64{1.05, 1.15}, false},
		{[]float64{1.38}, false},
		{[]float64{1.38, 1.06, 1.10}, false}, // three: the median is one of them
		{[]float64{1.0, 1.1, 1.3, 1.4}, true},
		{[]float64{1.0, 1.1, 1.15, 1.4}, false},
	} {
		if got := undecided(tc.rs, atMostSlower); got != tc.want {
			t.Errorf("undecided(%v, at most 1.2) = %v, want %v", tc.rs, got, tc.want)
		}
	}
	if !undecided([]float64{3.37, 2.69}, atLeastFaster) || undecided([]float64{3.2, 3.0}, atLeastFaster) {
		t.Error("undecided at least 3x")
	}
}

// TestTieBreak: after two rounds, the ways a target leaves undecided are
// the ones a third round runs, and one that does not fit the budget is
// skipped, named for the report, without a job.
func TestTieBreak(t *testing.T) {
	ms2, ms10 := 2*time.Millisecond, 10*time.Millisecond
	tar := &ciHist{key: "tar", way: wayTar}
	tarM := &ciHist{key: "tar-mtimes", way: wayTar, mtimes: true}
	gbc2 := &ciHist{key: "gbc-2ms", way: wayGBC, rtt: ms2}
	gbc10 := &ciHist{key: "gbc-10ms", way: wayGBC, rtt: ms10}
	gbcM := &ciHist{key: "gbc-10ms-mtimes", way: wayGBC, rtt: ms10, mtimes: true}
	floor := &ciHist{key: "floor", way: wayFloor}
	hs := []*ciHist{floor, tar, tarM, gbc2, gbc10, gbcM}
	res := func(secs ...float64) *ciResult {
		r := &ciResult{}
		for _, s := range secs {
			r.roundWalls = append(r.roundWalls, time.Duration(s*float64(time.Second)))
		}
		r.wall = slices.Min(r.roundWalls)
		return r
	}
	best := map[*ciHist]map[time.Duration]*ciResult{
		tar:   {ms2: res(10, 10), ms10: res(30, 30)},
		tarM:  {ms2: res(10, 10), ms10: res(30, 30)},
		gbc2:  {ms2: res(13.8, 10.6)}, // 1.38x, 1.06x: undecided
		gbc10: {ms10: res(9, 11)},     // 3.33x, 2.73x against tar: undecided at 3x in run (5)
		gbcM:  {ms10: res(8, 8)},      // 3.75x: decided
		floor: {0: res(9.5, 10.5), ms10: res(9, 9)},
	}
	c := &ciBench{set: ciSettings{rounds: 2, tieBudget: 30 * time.Second}}
	names := func(hs []*ciHist) (out []string) {
		for _, h := range hs {
			out = append(out, h.key)
		}
		return out
	}
	if got := names(c.undecidedHists(ciRun{n: 4}, hs, best)); !slices.Equal(got, []string{"tar", "gbc-2ms"}) {
		t.Errorf("run (4): %v, want tar and gbc-2ms", got)
	}
	// In run (5) also gbc-10ms against 3x, and the floor (3.16x, 2.86x).
	if got := names(c.undecidedHists(ciRun{n: 5}, hs, best)); !slices.Equal(got, []string{"floor", "tar", "gbc-2ms", "gbc-10ms"}) {
		t.Errorf("run (5): %v", got)
	}
	c.set.rounds = 1
	if got := c.undecidedHists(ciRun{n: 5}, hs, best); len(got) != 0 {
		t.Errorf("one round: %v", names(got))
	}
	c.set.rounds = 2
	r := &rounds{best: best, cost: map[*ciHist]time.Duration{tar: 20 * time.Second, gbc2: 15 * time.Second}}
	if err := c.tieBreak(ciRun{n: 4}, hs, r); err != nil {
		t.Fatal(err)
	}
	if c.tieSpent != 0 || len(c.tieRounds) != 0 || len(c.tieSkipped) != 1 || !strings.HasPrefix(c.tieSkipped[0], "(4) of ") {
		t.Errorf("35 s over a 30 s budget: spent %v, rounds %v, skipped %v", c.tieSpent, c.tieRounds, c.tieSkipped)
	}
}

func TestKeepFaster(t *testing.T) {
	best := map[time.Duration]*ciResult{}
	for _, w := range []time.Duration{5, 3, 4} {
		keepFaster(best, map[time.Duration]*ciResult{time.Millisecond: {wall: w * time.Second, note: fmt.Sprint(int64(w))}})
	}
	r := best[time.Millisecond]
	if r.note != "3" || r.wall != 3*time.Second || !slices.Equal(r.roundWalls, []time.Duration{5 * time.Second, 3 * time.Second, 4 * time.Second}) {
		t.Errorf("kept %+v; want round 2's result with every round's wall time", r)
	}
}

// TestCITargetsFloor: run (5)'s target shows the ratios of the protocol
// floor and, if it was timed, the landing floor, and a miss is marked
// unreachable only if a floor misses too.
func TestCITargetsFloor(t *testing.T) {
	for _, tc := range []struct {
		gbc, floor, landing float64 // run (5), s (landing 0: not timed); tar-and-restore at 10 ms takes 40 s
		measured            string
		result              string
	}{
		{10, 8, 0, "4.00x (40.0s against 10.0s); the protocol floor 5.00x (8.0s)", "PASS"},
		{16, 12, 0, "2.50x (40.0s against 16.0s); the protocol floor 3.33x (12.0s)", "FAIL"},
		{16, 14, 0, "2.50x (40.0s against 16.0s); the protocol floor 2.86x (14.0s)", "FAIL: unreachable, below the floor"},
		{16, 12, 12.5, "2.50x (40.0s against 16.0s); the protocol floor 3.33x (12.0s); the landing floor 3.20x (12.5s)", "FAIL"},
		{16, 12, 14, "2.50x (40.0s against 16.0s); the protocol floor 3.33x (12.0s); the landing floor 2.86x (14.0s)", "FAIL: unreachable, below the floor"},
	} {
		rows := ciFixture()
		rows[4].res[5].wall = time.Duration(tc.gbc * float64(time.Second))
		floor := &ciRow{way: wayFloor, res: map[int]*ciResult{5: {wall: time.Duration(tc.floor * float64(time.Second))}}}
		floor.key, floor.label = rowName(wayFloor, 0, false)
		rows = append(rows, floor)
		if tc.landing > 0 {
			landing := &ciRow{way: wayFloor, rtt: landingFloorRTT, res: map[int]*ciResult{5: {wall: time.Duration(tc.landing * float64(time.Second))}}}
			landing.key, landing.label = rowName(wayFloor, landingFloorRTT, false)
			rows = append(rows, landing)
		}
		var got *target
		for _, tg := range ciTargets(rows, []int{1, 2, 3, 4, 5, 6, 7}) {
			if strings.HasPrefix(tg.name, "run (5)") {
				got = &tg
			}
		}
		if got == nil || got.measured != tc.measured || got.result != tc.result {
			t.Errorf("gbc %vs, floor %vs, landing %vs: %+v, want %q %q", tc.gbc, tc.floor, tc.landing, got, tc.measured, tc.result)
		}
		if f, tar := floorPair(rows); f != floor || tar != rows[2] {
			t.Errorf("floorPair: %v %v", f, tar)
		}
	}
}

// TestFloorCaches: a floor job starts from the GOCACHEs of the locations
// its gobuildcache would read, and what it (or a matrix's shards, merged)
// leaves becomes its location's.
func TestFloorCaches(t *testing.T) {
	tmp := t.TempDir()
	write := func(dir, name string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(tmp, dir, "ab"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, dir, "ab", name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	has := func(dir string, names ...string) {
		t.Helper()
		for _, n := range names {
			if b, err := os.ReadFile(filepath.Join(dir, "ab", n)); err != nil || string(b) != n {
				t.Errorf("%s: %s: %q, %v", dir, n, b, err)
			}
		}
	}
	c := &ciBench{feat: ciFeatures{readFrom: true}}
	runs := ciHistory()
	h := &ciHist{way: wayFloor, root: "r/"}
	write("cold", "main-a")
	h.floor = map[string]string{"r/main/": filepath.Join(tmp, "cold")}

	// (4), a pull request: main's entries, then its own, its location's.
	four := filepath.Join(tmp, "four")
	if err := c.fillFloor(h, runs[3], four); err != nil {
		t.Fatal(err)
	}
	has(four, "main-a")
	write("four", "pr-a")
	h.floorNew = []string{four}
	c.settleFloor(h, runs[3])
	if h.floor["r/pr-core/"] != four || h.floor["r/main/"] != filepath.Join(tmp, "cold") || h.floorNew != nil {
		t.Fatalf("after (4): %v, %v", h.floor, h.floorNew)
	}
	five := filepath.Join(tmp, "five")
	if err := c.fillFloor(h, runs[4], five); err != nil {
		t.Fatal(err)
	}
	has(five, "main-a", "pr-a")

	// (6), a matrix on main: each shard from main's, merged after.
	var shards []string
	for k := range 2 {
		d := filepath.Join(tmp, fmt.Sprintf("shard%d", k))
		if err := c.fillFloor(h, runs[5], d); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(d, "ab", "pr-a")); err == nil {
			t.Errorf("shard %d has the pull request's entry", k)
		}
		write(filepath.Base(d), fmt.Sprintf("shard-%d", k))
		shards = append(shards, d)
	}
	h.floorNew = shards
	c.settleFloor(h, runs[5])
	if h.floor["r/main/"] != shards[0] {
		t.Fatalf("after (6): %v", h.floor)
	}
	has(shards[0], "main-a", "shard-0", "shard-1")
}

// The replay refuses to start on a disk that its machines would fill, and
// says how much it needs and where.
func TestCheckReplayDisk(t *testing.T) {
	work := filepath.Join(t.TempDir(), "gobuildcache-bench-ci-x")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	free := freeBytes(work)
	if free < 0 {
		t.Skip("free space unknown here")
	}
	if err := checkReplayDisk(work, 0); err != nil {
		t.Fatalf("no jobs: %v", err)
	}
	// Twice what is free, and then some: other tests may free space
	// meanwhile.
	jobs := int(2*free/ciDiskPerJob) + 100
	err := checkReplayDisk(work, jobs)
	if err == nil {
		t.Fatalf("%d jobs on %s free: no error", jobs, fmtBytes(free))
	}
	for _, want := range []string{fmt.Sprintf("its %d jobs need about", jobs), filepath.Dir(work), "TMPDIR"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
