package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The CI replay's report: ci-replay.md (tables and targets) and
// ci-replay.svg (a chart of every run's wall time), in the -out directory.

// sumWall is the row's wall time added up over runs (those it has).
func (r *ciRow) sumWall(runs []int) (time.Duration, bool) {
	var s time.Duration
	for _, n := range runs {
		res := r.res[n]
		if res == nil {
			return 0, false
		}
		s += res.wall
	}
	return s, true
}

// tarPair is the tar-and-restore row that gobuildcache row g is compared
// with: the same RTT, with mtimes if g has it.
func tarPair(rows []*ciRow, g *ciRow) *ciRow {
	for _, r := range rows {
		if r.way == wayTar && r.rtt == g.rtt && r.mtimes == g.mtimes {
			return r
		}
	}
	return nil
}

// floorPair returns the protocol floor's row and the tar-and-restore row
// it is compared with, at 10 ms without mtimes (nil if either is absent).
func floorPair(rows []*ciRow) (floor, tar *ciRow) {
	for _, r := range rows {
		switch {
		case r.way == wayFloor && r.rtt == 0:
			floor = r
		case r.way == wayTar && r.rtt == 10*time.Millisecond && !r.mtimes:
			tar = r
		}
	}
	if floor == nil || tar == nil {
		return nil, nil
	}
	return floor, tar
}

// The targets' lines: no run of gobuildcache more than slowerLine times
// the tarball's time, and run fasterRun at fasterRTT at least fasterLine
// times faster.
const (
	slowerLine = 1.2
	fasterLine = 3.0
	fasterRun  = 5
	fasterRTT  = 10 * time.Millisecond
)

func atMostSlower(v float64) bool  { return v <= slowerLine }
func atLeastFaster(v float64) bool { return v >= fasterLine }

// ciTargets are the goals, computed from the rows: run (5) at
// 10 ms at least 3x faster on gobuildcache than on tar-and-restore; no run
// more than 1.2x slower; and the sum over the history, shown. A ratio
// target is judged on the median of its ratios round by round
// (roundRatios). Without mtimes, run (5)'s target also shows the ratios of
// the protocol floor (the best any cache program can do with every entry
// local) and of the landing floor (the best a fresh VM's can do: it also
// lands them), and a miss that a floor misses too is marked unreachable.
func ciTargets(rows []*ciRow, runs []int) []target {
	var ts []target
	floor, _ := floorPair(rows)
	var landing *ciRow
	for _, r := range rows {
		if r.way == wayFloor && r.rtt == landingFloorRTT {
			landing = r
		}
	}
	for _, g := range rows {
		if g.way != wayGBC {
			continue
		}
		t := tarPair(rows, g)
		if t == nil {
			continue
		}
		name := g.label
		if g.rtt == fasterRTT {
			tt := target{name: fmt.Sprintf("run (%d) at least %gx faster: %s against %s (tar time / gobuildcache time)", fasterRun, fasterLine, name, t.label), measured: "n/a", result: "n/a"}
			if a, b := t.res[fasterRun], g.res[fasterRun]; a != nil && b != nil {
				rs := roundRatios(a, b)
				v := median(rs)
				tt.measured, tt.result = fmt.Sprintf("%.2fx%s", v, roundsNote(rs, a, b)), passFail(atLeastFaster(v))
				for _, f := range []struct {
					row  *ciRow
					name string
				}{{floor, "the protocol floor"}, {landing, "the landing floor"}} {
					if f.row == nil || f.row.res[fasterRun] == nil || g.mtimes {
						continue
					}
					fr := roundRatios(a, f.row.res[fasterRun])
					fv := median(fr)
					tt.measured += fmt.Sprintf("; %s %.2fx (%.1fs%s)", f.name, fv, f.row.res[fasterRun].wall.Seconds(), roundList(fr))
					if !atLeastFaster(v) && !atLeastFaster(fv) {
						tt.result = "FAIL: unreachable, below the floor"
					}
				}
			}
			ts = append(ts, tt)
		}
		worst, worstRun, any := 0.0, 0, false
		var worstRatios []float64
		for _, n := range runs {
			a, b := t.res[n], g.res[n]
			if a == nil || b == nil {
				continue
			}
			any = true
			rs := roundRatios(b, a)
			if v := median(rs); v > worst {
				worst, worstRun, worstRatios = v, n, rs
			}
		}
		tt := target{name: fmt.Sprintf("no run more than %gx slower: %s against %s (gobuildcache time / tar time, the worst run)", slowerLine, name, t.label), measured: "n/a", result: "n/a"}
		if any {
			tt.measured = fmt.Sprintf("%.2fx, run (%d)%s", worst, worstRun, roundsNote(worstRatios, g.res[worstRun], t.res[worstRun]))
			tt.result = passFail(atMostSlower(worst))
		}
		ts = append(ts, tt)
		for _, sum := range []struct {
			what string
			runs []int
		}{{"the sum over the history", runs}, {"the sum after the cold run (1)", runs[min(1, len(runs)):]}} {
			tt = target{name: fmt.Sprintf("%s: %s against %s (tar / gobuildcache)", sum.what, name, t.label), measured: "n/a", result: "shown"}
			sa, okA := t.sumWall(sum.runs)
			sb, okB := g.sumWall(sum.runs)
			if okA && okB && len(sum.runs) > 0 {
				tt.measured = fmt.Sprintf("%.2fx (%.1fs against %.1fs)", sa.Seconds()/sb.Seconds(), sa.Seconds(), sb.Seconds())
			}
			ts = append(ts, tt)
		}
	}
	return ts
}

// orNone joins xs, or returns none if there are none.
func orNone(xs []string, none string) string {
	if len(xs) == 0 {
		return none
	}
	return strings.Join(xs, "; ")
}

// roundRatios returns num's wall time over den's in each round both ran:
// the two jobs minutes apart at most, so that a drift of the machine's
// speed between rounds cancels out. A way that ran a third round
// (tieBreak) is paired in the rounds the other ran. Results without
// rounds (a test's) give the ratio of their cells.
func roundRatios(num, den *ciResult) []float64 {
	n := min(len(num.roundWalls), len(den.roundWalls))
	if n == 0 {
		return []float64{num.wall.Seconds() / den.wall.Seconds()}
	}
	rs := make([]float64, n)
	for i := range rs {
		rs[i] = num.roundWalls[i].Seconds() / den.roundWalls[i].Seconds()
	}
	return rs
}

// undecided reports whether the ratios' middle rounds fall on either side
// of a line (pass tells which side passes): their median then depends on
// how far each is from it, and one more round decides (tieBreak). With an
// odd number of rounds the median is one of them and never undecided.
func undecided(rs []float64, pass func(float64) bool) bool {
	if len(rs) < 2 || len(rs)%2 == 1 {
		return false
	}
	s := slices.Sorted(slices.Values(rs))
	return pass(s[len(s)/2-1]) != pass(s[len(s)/2])
}

// roundsNote is what a target adds to its median with more than one
// round: each round's ratio, and the ratio of the cells, each way's
// fastest round (num over den, seconds).
func roundsNote(rs []float64, num, den *ciResult) string {
	if len(rs) < 2 {
		return fmt.Sprintf(" (%.1fs against %.1fs)", num.wall.Seconds(), den.wall.Seconds())
	}
	return fmt.Sprintf(", the median of its rounds%s; the fastest rounds %.1fs against %.1fs (%.2fx)",
		roundList(rs), num.wall.Seconds(), den.wall.Seconds(), num.wall.Seconds()/den.wall.Seconds())
}

// roundList is ": 1.38x, 1.06x" for more than one round, else "".
func roundList(rs []float64) string {
	if len(rs) < 2 {
		return ""
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%.2fx", r)
	}
	return ": " + strings.Join(parts, ", ")
}

// ciTable renders one table: a line per row, a column per run and the sum
// (if sum is not nil), cells from cell ("" for none).
func ciTable(title string, rows []*ciRow, runs []int, cell func(*ciRow, *ciResult) string, sum func(*ciRow) string) string {
	var s strings.Builder
	s.WriteString("| " + title + " |")
	for _, n := range runs {
		fmt.Fprintf(&s, " (%d) |", n)
	}
	if sum != nil {
		s.WriteString(" sum |")
	}
	s.WriteString("\n|---|")
	for range runs {
		s.WriteString("---:|")
	}
	if sum != nil {
		s.WriteString("---:|")
	}
	s.WriteString("\n")
	for _, r := range rows {
		fmt.Fprintf(&s, "| %s |", r.label)
		for _, n := range runs {
			c := "-"
			if res := r.res[n]; res != nil {
				c = cell(r, res)
			}
			fmt.Fprintf(&s, " %s |", c)
		}
		if sum != nil {
			fmt.Fprintf(&s, " %s |", sum(r))
		}
		s.WriteString("\n")
	}
	return s.String()
}

// ciMarkdown renders the report.
func (c *ciBench) markdown() string {
	runs := c.done
	var s strings.Builder
	writeHeader(&s, "gobuildcache CI replay", c.set.quick, c.machine)
	if c.partial != "" {
		fmt.Fprintf(&s, "- **incomplete: %s**\n", c.partial)
	}
	fmt.Fprintf(&s, "- gobuildcache binary: %s\n", c.set.bin)
	fmt.Fprintf(&s, "- module: `%s` %s from the module proxy (%d packages, %d with tests), committed to a local git repository with the history's seeded edits (seed %d); "+
		"every job is a fresh `git clone --depth 1` at the same path on a fresh \"VM\" (empty GOCACHE, empty gobuildcache dir), then "+
		"`go build ./... && go vet ./... && go test -short ./...` (with `-skip '"+ciTestSkip+"'`: expr's timing tests of testify's Eventually and Never fail on a loaded machine) (a matrix shard: `go list ./...`, then `go vet` and `go test -short` of its quarter of the packages, by FNV-1a of the import path); "+
		"GOFLAGS=-buildvcs=false -mod=mod, GOPROXY=off, GOTOOLCHAIN=local\n",
		c.modPath, c.modVer, c.pkgs, c.testPkg, c.set.seed)
	s.WriteString("- the history:\n")
	for _, r := range c.runs {
		fmt.Fprintf(&s, "  - (%d) %s", r.n, r.title)
		var edits []string
		for _, p := range r.prep {
			if p.edit != nil {
				edits = append(edits, fmt.Sprintf("on %s: `%s` in %s, %s", p.branch, p.edit.fn, p.edit.file, p.edit.what))
			}
		}
		if len(edits) > 0 {
			s.WriteString(": " + strings.Join(edits, "; "))
		}
		s.WriteString("\n")
	}
	readFrom := "the binary has no `-s3-read-from`, so every run, pull requests too, reads and writes one shared prefix per history"
	if c.feat.readFrom {
		readFrom = "with `-s3-read-from`: a push to main writes main's prefix; a pull request writes its own prefix and reads its base branch's (for (7), release's, empty here) and main's"
	}
	mt := "the binary has no `mtimes` command: the mtimes rows are not measured"
	if c.feat.mtimes {
		mt = "`gobuildcache mtimes` right after the checkout in the rows marked + mtimes (gobuildcache at " + durList(c.set.mtimesRTTs) + ", tar-and-restore at both RTTs)"
	}
	s.WriteString("- ways, all through one toxiproxy v2.12.0 in front of MinIO on 127.0.0.1 (" + c.env.storage() + "), which adds the RTT:\n")
	s.WriteString("  - no cache: an empty GOCACHE every job (it uses no network: one row, whatever the RTT)")
	if !c.set.noCacheAlways {
		s.WriteString("; timed in run (1) only, which the other runs repeat, in parentheses: each one-job run is a cold build of (1)'s code with at most two function bodies edited, the same work; " +
			"a matrix shard does a part of it (go vet and go test of a quarter of the packages), so for the matrix run (6) (1)'s time is an upper bound of its slowest shard, and it has no hit rate (-ci-no-cache-every-run times them all)")
	}
	s.WriteString("\n")
	s.WriteString("  - tar-and-restore as actions/cache does it, in its most favourable form (a save after every push to main, key per commit): " +
		"download the newest tar.zst that main saved (a matrix shard: its own shard's newest, else main's one-job save), unpack it into the empty GOCACHE, build; " +
		"on main, pack GOCACHE as tar+zstd and upload it (each matrix shard its own). Nothing but the download and upload uses the network, " +
		"so each tar job is built once and its download and upload are timed at 2 ms and at 10 ms, alternating which goes first\n")
	scopes := "every job in one `-prefetch-scope` (the binary takes no further scopes)"
	if c.feat.scopes {
		scopes = "`-prefetch-scope=build` for a one-job run, `-prefetch-scope=test-K,build` for matrix shard K (its own scope, and the one-job runs' read too, as the tarball's keys)"
	}
	fmt.Fprintf(&s, "  - gobuildcache on S3 with prefetch (`-prefetch=%v`), at %s; %s; %s\n", c.feat.prefetch, durList(c.set.gbcRTTs), readFrom, scopes)
	fmt.Fprintf(&s, "  - %s\n", mt)
	s.WriteString("  - protocol floor: a fresh VM whose GOCACHE already holds, copied untimed, everything the earlier runs stored where the run's gobuildcache would read it, " +
		"served by a minimal GOCACHEPROG (`bench -floor-server -floor-puts`, bench/floor.go): no network, nothing to land or upload. No cache program on a fresh VM can be faster; run (1) is the no-cache job\n")
	fmt.Fprintf(&s, "  - landing floor, run (%d) only: the protocol floor's job on another fresh VM, and from its first instant, beside it, the entries that job starts with "+
		"(as %d tar.zst objects of about equal size, packed and uploaded untimed) downloaded at once through the proxy at %s, each unpacked as it arrives and every body checked against its name (bench/landing_floor.go): "+
		"what a fresh VM's cache program cannot skip, with a build that never waits for it (no hit rate: the floor's lookups)\n", landingFloorRun, landingParts, rttName(landingFloorRTT))
	s.WriteString("- run (1) is two cold jobs: one shared by no cache and tar-and-restore (its tarball is every tar history's first save; the no-cache row leaves out its mtimes, pack and upload steps), " +
		"one shared by the gobuildcache histories, at the highest of their RTTs and with mtimes if one has it, into an empty prefix that is then copied (untimed, straight to MinIO) to each other history's; " +
		"a row without mtimes leaves out the mtimes step\n")
	s.WriteString("- a matrix run (6) takes as long as its slowest shard; the shards ran one after another here, each on its own fresh VM; hit rates, bytes and tests are summed over the shards\n")
	if c.set.rounds > 1 {
		fmt.Fprintf(&s, "- every timed job (or matrix) ran %d times, the ways interleaved round by round, in the other order every other round, every round from the same state "+
			"(what a gobuildcache round wrote to the bucket deleted before the next, a tar round's save replaced by the next's; run (1)'s two cold jobs from empty caches); "+
			"every cell is the fastest round's, and the steps below list each round's time", c.set.rounds)
		if c.set.noCacheAlways {
			s.WriteString("; no cache's jobs after run (1) ran once: no target compares against them")
		}
		s.WriteString("\n")
		fmt.Fprintf(&s, "- a target is judged on the median of its ratio round by round (the two ways' jobs of a round minutes apart at most, so that the machine's drift between rounds cancels out; of two rounds, their mean), and lists the rounds; "+
			"where the middle rounds fell on either side of its line, the ways it compares ran one more round, from the same state, so that its median is that of three (where two agree a third cannot move it across), "+
			"within -ci-tiebreak-budget (%s) in all: %s", c.set.tieBudget, orNone(c.tieRounds, "none was needed"))
		if len(c.tieSkipped) > 0 {
			fmt.Fprintf(&s, "; not run, beyond the budget: %s", strings.Join(c.tieSkipped, "; "))
		}
		s.WriteString("\n")
	}
	s.WriteString("- hit rate: gobuildcache's from -stats-json (hits / gets, summed over the job's go commands); for the plain GOCACHE of no cache, the floor and tar-and-restore, " +
		"from the cache's action entries after the job: each entry written is a miss, each read (its access time moved, relatime) a hit, once per entry\n")
	s.WriteString("- bytes moved: everything through the proxy during the job (both directions, S3 headers included), from the proxy's written-bytes counter\n\n")

	s.WriteString("## Wall time of each run, s\n\n")
	s.WriteString(ciWallTable(c.rows, runs))

	if len(runs) > 1 {
		s.WriteString("\n" + ciSums(c.rows, runs))
	}

	var gbcRows []*ciRow
	for _, r := range c.rows {
		if r.way == wayGBC && tarPair(c.rows, r) != nil {
			gbcRows = append(gbcRows, r)
		}
	}
	pairs := [][2]*ciRow{}
	for _, g := range gbcRows {
		pairs = append(pairs, [2]*ciRow{tarPair(c.rows, g), g})
	}
	if len(pairs) > 0 {
		if f, t := floorPair(c.rows); f != nil {
			pairs = append(pairs, [2]*ciRow{t, f})
		}
		s.WriteString("\n## tar-and-restore time / gobuildcache time (above 1: gobuildcache is faster)\n\n")
		var ratioRows []*ciRow
		sums := map[*ciRow]string{}
		for _, p := range pairs {
			t, g := p[0], p[1]
			rr := &ciRow{label: fmt.Sprintf("%s / %s", t.label, g.label), res: map[int]*ciResult{}}
			for _, n := range runs {
				if a, b := t.res[n], g.res[n]; a != nil && b != nil {
					rr.res[n] = &ciResult{wall: time.Duration(float64(time.Second) * a.wall.Seconds() / b.wall.Seconds())}
				}
			}
			sums[rr] = "-"
			sa, okA := t.sumWall(runs)
			sb, okB := g.sumWall(runs)
			if okA && okB {
				sums[rr] = fmt.Sprintf("**%.2fx**", sa.Seconds()/sb.Seconds())
			}
			ratioRows = append(ratioRows, rr)
		}
		s.WriteString(ciTable("ratio", ratioRows, runs, func(_ *ciRow, r *ciResult) string { return fmt.Sprintf("%.2fx", r.wall.Seconds()) },
			func(r *ciRow) string { return sums[r] }))
	}

	s.WriteString("\n## Hit rate\n\n")
	s.WriteString(ciTable("way", c.rows, runs, func(_ *ciRow, r *ciResult) string {
		if r.gets == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100*float64(r.hits)/float64(r.gets))
	}, nil))
	s.WriteString("\n## Bytes moved\n\n")
	s.WriteString(ciTable("way", c.rows, runs, func(_ *ciRow, r *ciResult) string {
		if r.moved < 0 {
			return "?"
		}
		return fmtBytes(r.moved)
	}, func(r *ciRow) string {
		var n int64
		for _, run := range runs {
			if res := r.res[run]; res != nil && res.moved > 0 {
				n += res.moved
			}
		}
		return fmtBytes(n)
	}))
	s.WriteString("\n## CPU time during gobuildcache's go commands, s: the remote's (MinIO and toxiproxy, on this machine's two cores here, not on a CI VM) / gobuildcache's own (a matrix: its shards added up)\n\n")
	s.WriteString(ciTable("way", gbcRows, runs, func(_ *ciRow, r *ciResult) string {
		return fmt.Sprintf("%.1f / %.1f", r.serverCPU.Seconds(), r.gbcCPU.Seconds())
	}, func(r *ciRow) string {
		var server, own time.Duration
		for _, run := range runs {
			if res := r.res[run]; res != nil {
				server, own = server+res.serverCPU, own+res.gbcCPU
			}
		}
		return fmt.Sprintf("%.1f / %.1f", server.Seconds(), own.Seconds())
	}))
	s.WriteString("\n## Test packages cached (of those with tests run)\n\n")
	s.WriteString(ciTable("way", c.rows, runs, func(_ *ciRow, r *ciResult) string {
		return fmt.Sprintf("%d/%d", r.testsCached, r.testsTotal)
	}, nil))

	if c.feat.mtimes {
		s.WriteString("\n## What mtimes saves over the history\n\n| way | without mtimes | with mtimes | saved |\n|---|---:|---:|---:|\n")
		for _, r := range c.rows {
			if !r.mtimes {
				continue
			}
			for _, o := range c.rows {
				if o.way == r.way && o.rtt == r.rtt && !o.mtimes {
					a, okA := o.sumWall(runs)
					b, okB := r.sumWall(runs)
					if okA && okB {
						fmt.Fprintf(&s, "| %s | %.1fs | %.1fs | %.1fs (%.0f%%) |\n", o.label, a.Seconds(), b.Seconds(), (a - b).Seconds(), 100*(a-b).Seconds()/a.Seconds())
					}
				}
			}
		}
	}

	s.WriteString("\n## Targets\n\n" + ciTargetTable(c.rows, runs))

	s.WriteString("\n## Steps of each job (s; a matrix: its slowest shard)\n\n")
	for _, n := range runs {
		fmt.Fprintf(&s, "- (%d)\n", n)
		for _, r := range c.rows {
			res := r.res[n]
			if res == nil {
				continue
			}
			var steps []string
			for _, p := range res.parts {
				steps = append(steps, fmt.Sprintf("%s %.1f", p.name, p.d.Seconds()))
			}
			line := strings.Join(steps, ", ")
			if res.jobs > 0 {
				line += fmt.Sprintf("; %d shards, %.1fs added up", res.jobs, res.jobsWall.Seconds())
			}
			if len(res.roundWalls) > 1 {
				var walls []string
				for _, w := range res.roundWalls {
					walls = append(walls, fmt.Sprintf("%.1f", w.Seconds()))
				}
				line += "; rounds " + strings.Join(walls, ", ")
			}
			if res.note != "" {
				line += " (" + res.note + ")"
			}
			fmt.Fprintf(&s, "  - %s: %s\n", r.label, line)
		}
	}
	total := time.Since(c.start)
	fmt.Fprintf(&s, "\nThe whole replay took %s", total.Round(time.Second))
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Fprintf(&s, " (load average at the end: %s)", strings.Join(strings.Fields(string(b))[:3], " "))
	}
	s.WriteString(".\n")
	if c.jobsDone > 0 {
		var by []string
		for _, n := range runs {
			by = append(by, fmt.Sprintf("(%d) %.0fs", n, c.jobsTimeOfRun[n].Seconds()))
		}
		fmt.Fprintf(&s, "Where it went: setup (module, repository, history, toxiproxy) %.0fs; %d jobs %.0fs, from a fresh VM to its save, by run: %s; the rest (copies of run (1)'s prefix, reports) %.0fs.\n",
			c.setup.Seconds(), c.jobsDone, c.jobsTime.Seconds(), strings.Join(by, ", "), (total - c.setup - c.jobsTime).Seconds())
	}
	return s.String()
}

// ciSums is a table of each row's sum over the runs and over those after
// the cold run (1), which is the same work in every way and, on a busy
// machine, the noisiest; and for each gobuildcache row, the ratio of its
// tar-and-restore pair's sums to its own.
func ciSums(rows []*ciRow, runs []int) string {
	after := runs[1:]
	var s strings.Builder
	fmt.Fprintf(&s, "| way | sum of (%d)-(%d), s | sum after the cold run, (%d)-(%d), s | tar-and-restore / this, all | tar-and-restore / this, after the cold run |\n|---|---:|---:|---:|---:|\n",
		runs[0], runs[len(runs)-1], after[0], after[len(after)-1])
	cell := func(r *ciRow, rs []int) string {
		if v, ok := r.sumWall(rs); ok {
			return fmt.Sprintf("%.1f", v.Seconds())
		}
		return "-"
	}
	ratio := func(t, g *ciRow, rs []int) string {
		a, okA := t.sumWall(rs)
		b, okB := g.sumWall(rs)
		if !okA || !okB {
			return "-"
		}
		return fmt.Sprintf("%.2fx", a.Seconds()/b.Seconds())
	}
	for _, r := range rows {
		all, rest := "", ""
		if t := tarPair(rows, r); r.way == wayGBC && t != nil {
			all, rest = ratio(t, r, runs), ratio(t, r, after)
		}
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s |\n", r.label, cell(r, runs), cell(r, after), all, rest)
	}
	return s.String()
}

func durList(ds []time.Duration) string {
	var ss []string
	for _, d := range ds {
		ss = append(ss, rttName(d))
	}
	if len(ss) == 0 {
		return "no RTT"
	}
	return strings.Join(ss, " and ")
}

// ciWallTable is the table of every run's wall time, s, and the sums; a
// result repeated from another run, not timed, is in parentheses.
func ciWallTable(rows []*ciRow, runs []int) string {
	return ciTable("way", rows, runs, func(_ *ciRow, r *ciResult) string {
		if r.repeats > 0 {
			return fmt.Sprintf("(%.1f)", r.wall.Seconds())
		}
		return fmt.Sprintf("%.1f", r.wall.Seconds())
	}, func(r *ciRow) string {
		if v, ok := r.sumWall(runs); ok {
			return fmt.Sprintf("**%.1f**", v.Seconds())
		}
		return "-"
	})
}

// ciTargetTable is the table of ciTargets.
func ciTargetTable(rows []*ciRow, runs []int) string {
	var s strings.Builder
	s.WriteString("| target | measured | result |\n|---|---|---|\n")
	for _, t := range ciTargets(rows, runs) {
		fmt.Fprintf(&s, "| %s | %s | %s |\n", t.name, t.measured, t.result)
	}
	return s.String()
}

// latestSection is the replay's section of the S3 benchmark's latest.md
// (make bench): its wall-time table and targets, a link to the rest.
func (c *ciBench) latestSection() string {
	runs := c.done
	var s strings.Builder
	mode := "full"
	if c.set.quick {
		mode = "quick"
	}
	fmt.Fprintf(&s, "%s (%s, make bench-ci)\n\n", ciSectionTitle, mode)
	fmt.Fprintf(&s, "Seven CI runs of `%s` %s, three ways, each run a fresh clone on a fresh VM; the setup, the history, hit rates, bytes and every job's steps: [ci-replay.md](ci-replay.md) ([chart](ci-replay.svg)).\n\n",
		c.modPath, c.modVer)
	s.WriteString("Wall time of each run, s:\n\n")
	s.WriteString(ciWallTable(c.rows, runs))
	s.WriteString("\n" + ciTargetTable(c.rows, runs))
	fmt.Fprintf(&s, "\nThe CI replay took %s.\n", time.Since(c.start).Round(time.Second))
	return s.String()
}

const ciSectionTitle = "## CI replay"

// withSection returns the report md with section in place of its CI
// replay section, if it has one, else before its closing "The whole
// benchmark took" line, else at its end.
func withSection(md, section string) string {
	const closing = "\nThe whole benchmark took"
	if i := strings.Index(md, "\n"+ciSectionTitle); i >= 0 {
		rest := md[i+1:]
		end := len(rest)
		if j := strings.Index(rest, closing); j >= 0 {
			end = j + 1
		}
		if j := strings.Index(rest[len(ciSectionTitle):], "\n## "); j >= 0 && len(ciSectionTitle)+j+1 < end {
			end = len(ciSectionTitle) + j + 1
		}
		return md[:i+1] + section + "\n" + strings.TrimLeft(rest[end:], "\n")
	}
	if i := strings.Index(md, closing); i >= 0 {
		return md[:i+1] + section + md[i:]
	}
	return strings.TrimRight(md, "\n") + "\n\n" + section
}

// report writes the tables to stdout and to ci-replay.md, the chart to
// ci-replay.svg, and with -ci-into-latest the section of latest.md.
func (c *ciBench) report() error {
	fmt.Print(c.markdown())
	if err := c.writeReport(); err != nil {
		return err
	}
	if !c.set.intoLatest {
		return nil
	}
	path := filepath.Join(c.set.outDir, "latest.md")
	md, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("-ci-into-latest: %v (make bench writes it first)", err)
	}
	if err := os.WriteFile(path, []byte(withSection(string(md), c.latestSection())), 0o644); err != nil {
		return err
	}
	logf("added the CI replay's section to %s", path)
	return nil
}

// writeReport writes ci-replay.md and ci-replay.svg.
func (c *ciBench) writeReport() error {
	md := c.markdown()
	if err := os.MkdirAll(c.set.outDir, 0o755); err != nil {
		return err
	}
	mdPath := filepath.Join(c.set.outDir, "ci-replay.md")
	svgPath := filepath.Join(c.set.outDir, "ci-replay.svg")
	title := fmt.Sprintf("CI replay of %s %s: wall time of each run (s), lower is better", c.modPath, c.modVer)
	if err := os.WriteFile(svgPath, []byte(ciChart(title, c.rows, c.done)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(mdPath, []byte(md+"\n![wall time of each run](ci-replay.svg)\n"), 0o644); err != nil {
		return err
	}
	logf("wrote %s and %s; total %s", mdPath, svgPath, time.Since(c.start).Round(time.Second))
	return nil
}

// ciColours are the chart's colours, one per row in order.
var ciColours = []string{"#757575", "#c62828", "#ef9a9a", "#6a1b9a", "#ce93d8", "#00897b", "#e65100", "#1976d2", "#90caf9", "#ffa726"}

// ciChart draws a grouped bar chart as SVG: a group per run, a bar per row.
func ciChart(title string, rows []*ciRow, runs []int) string {
	const (
		left, right, top, bottom = 60, 20, 50, 40
		barW, gap                = 12, 18
		plotH                    = 320
	)
	maxS := 1.0
	for _, r := range rows {
		for _, n := range runs {
			if res := r.res[n]; res != nil {
				maxS = max(maxS, res.wall.Seconds())
			}
		}
	}
	step := niceStep(maxS / 5)
	top2 := math.Ceil(maxS/step) * step
	groupW := len(rows)*barW + gap
	plotW := len(runs) * groupW
	legendH := 18 * len(rows)
	width := left + plotW + right
	width = max(width, 640)
	height := top + plotH + bottom + legendH + 10
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&s, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&s, `<text x="%d" y="24" font-size="14">%s</text>`+"\n", left, html.EscapeString(title))
	y := func(v float64) float64 { return float64(top+plotH) - v/top2*plotH }
	for v := 0.0; v <= top2+1e-9; v += step {
		fmt.Fprintf(&s, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e0e0e0"/>`+"\n", left, left+plotW, y(v), y(v))
		fmt.Fprintf(&s, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left-6, y(v)+4, v)
	}
	for gi, n := range runs {
		x0 := left + gi*groupW + gap/2
		for ri, r := range rows {
			res := r.res[n]
			if res == nil {
				continue
			}
			x := x0 + ri*barW
			h := res.wall.Seconds() / top2 * plotH
			fmt.Fprintf(&s, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"><title>(%d) %s: %.1fs</title></rect>`+"\n",
				x, y(res.wall.Seconds()), barW-1, h, ciColours[ri%len(ciColours)], n, html.EscapeString(r.label), res.wall.Seconds())
		}
		fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="middle">(%d)</text>`+"\n", x0+len(rows)*barW/2, top+plotH+16, n)
	}
	fmt.Fprintf(&s, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#424242"/>`+"\n", left, left+plotW, top+plotH, top+plotH)
	for ri, r := range rows {
		ly := top + plotH + bottom + ri*18
		fmt.Fprintf(&s, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			left, ly, ciColours[ri%len(ciColours)], left+18, ly+10, html.EscapeString(r.label))
	}
	s.WriteString("</svg>\n")
	return s.String()
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}
