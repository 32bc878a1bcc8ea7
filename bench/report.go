package main

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// machineDescription names the machine: CPUs, CPU model, memory, OS and Go.
func machineDescription() string {
	cpu := "unknown CPU"
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		cpu = v
	}
	mem := "unknown memory"
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
			mem = fmtBytes(kb<<10) + " memory"
		}
	}
	osName := runtime.GOOS
	if v := procField("/etc/os-release", "PRETTY_NAME"); v != "" {
		osName = strings.Trim(v, `"`)
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", kernel " + strings.TrimSpace(string(b))
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = "; load average at start " + strings.Join(f[:3], " ")
		}
	}
	return fmt.Sprintf("machine: nproc %d, %s, %s, %s (%s/%s%s), %s%s",
		runtime.NumCPU(), cpu, mem, osName, runtime.GOOS, runtime.GOARCH, kernel, goVersion(), load)
}

// procField returns the value of the first "key: value" or "key=value"
// line of path.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		for _, sep := range []string{":", "="} {
			if k, v, ok := strings.Cut(line, sep); ok && strings.TrimSpace(k) == key {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

func fmtBytes(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	}
}

func (r *row) times() []float64 {
	xs := make([]float64, len(r.runs))
	for i, run := range r.runs {
		xs[i] = run.total.Seconds()
	}
	return xs
}

func (r *row) median() float64 {
	if len(r.runs) == 0 {
		return 0
	}
	return median(r.times())
}

// medianStat is the median over runs of one stats field.
func (r *row) medianStat(k string) int64 {
	xs := make([]float64, len(r.runs))
	for i, run := range r.runs {
		xs[i] = float64(run.stats[k])
	}
	return int64(median(xs))
}

func (r *row) hasStats() bool {
	return len(r.runs) > 0 && r.runs[0].stats != nil
}

func (r *row) hasKey(k string) bool {
	return r.hasStats() && r.runs[0].statsKeys[k]
}

func (r *row) sumStat(k string) int64 {
	var n int64
	for _, run := range r.runs {
		n += run.stats[k]
	}
	return n
}

// byKind renders the per-kind counts of the map field k, summed over runs,
// as " (kind n, ...)", or "" if there are none.
func (r *row) byKind(k string) string {
	sums := map[string]int64{}
	for _, run := range r.runs {
		for key, v := range run.stats {
			if kind, ok := strings.CutPrefix(key, k+"."); ok {
				sums[kind] += v
			}
		}
	}
	if len(sums) == 0 {
		return ""
	}
	var parts []string
	for _, kind := range slices.Sorted(maps.Keys(sums)) {
		parts = append(parts, fmt.Sprintf("%s %d", kind, sums[kind]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// cost is the "requests / gbc CPU" cell: the median run's remote_requests
// and cpu_seconds (kept in microseconds), "-" for what the binary does not
// write.
func (r *row) cost() string {
	if !r.hasStats() {
		return "-"
	}
	req, cpu := "-", "-"
	if r.remote() && r.hasKey("remote_requests") {
		req = strconv.FormatInt(r.medianStat("remote_requests"), 10)
	}
	if r.hasKey("cpu_seconds") {
		cpu = fmt.Sprintf("%.2fs", float64(r.medianStat("cpu_seconds"))/1e6)
	}
	return req + " / " + cpu
}

func (r *row) remote() bool {
	return r.group == "s3" || strings.HasPrefix(r.group, "fresh") || r.group == "many"
}

func ratioString(xs []float64, base float64) string {
	f := func(x float64) string {
		if x >= 10 {
			return fmt.Sprintf("%.1f", x)
		}
		return fmt.Sprintf("%.2f", x)
	}
	return fmt.Sprintf("%s (%s-%s)", f(median(xs)/base), f(slices.Min(xs)/base), f(slices.Max(xs)/base))
}

// target is one of the goals, computed from this run.
type target struct {
	name, measured, result string
}

func (b *s3Bench) ratio(num, den string) (float64, bool) {
	n, d := b.byKey[num], b.byKey[den]
	if n == nil || d == nil || len(n.runs) == 0 || len(d.runs) == 0 {
		return 0, false
	}
	return n.median() / d.median(), true
}

func (b *s3Bench) targets() []target {
	comp := b.compressions()[0]
	var ts []target
	// check compares median(num)/median(den) with limit. altNum/altDen,
	// if not "", are reported instead (as information) when num or den was
	// not measured.
	check := func(name, num, den string, limit float64, atMost bool, altNum, altDen string) {
		ok := func(v float64) bool {
			if atMost {
				return v <= limit
			}
			return v >= limit
		}
		t := target{name: name, measured: "n/a", result: "n/a"}
		if v, measured := b.ratio(num, den); measured {
			t.measured, t.result = fmt.Sprintf("%.2fx", v), passFail(ok(v))
		} else {
			for _, k := range []string{num, den} {
				if r := b.byKey[k]; r != nil && r.na != "" {
					t.measured = "n/a (" + r.na + ")"
				}
			}
			if v, measured := b.ratio(altNum, altDen); measured {
				t.measured += fmt.Sprintf("; with prefetch off %.2fx (would %s)", v, strings.ToLower(passFail(ok(v))))
			}
		}
		ts = append(ts, t)
	}
	// The fresh-VM targets' plain warm baseline: the one of their own
	// rounds, if it was measured.
	warm, sameRounds := "plain-warm", ""
	if r := b.byKey[plainWarmFreshKey]; r != nil && len(r.runs) > 0 {
		warm, sameRounds = plainWarmFreshKey, " (measured in the same rounds)"
	}
	on := func(d time.Duration) string { return freshKey(d, true, comp) }
	off := func(d time.Duration) string { return freshKey(d, false, comp) }
	ms2, ms10 := 2*time.Millisecond, 10*time.Millisecond
	check("warm local tier: gobuildcache disk warm within 1.30x of plain warm", "disk-warm", "plain-warm", 1.30, true, "", "")
	if v, ok := b.ratio("floor", "plain-warm"); ok {
		ts = append(ts, target{name: "(context for the line above) the protocol floor, a minimal GOCACHEPROG, against plain warm", measured: fmt.Sprintf("%.2fx", v), result: "-"})
	}
	if v, ok := b.ratio("disk-warm", "floor"); ok {
		ts = append(ts, target{name: "(context) gobuildcache disk warm against the protocol floor", measured: fmt.Sprintf("%.2fx", v), result: "-"})
	}
	check("S3 cold (empty bucket, loopback) within 1.15x of plain cold", "s3-cold-"+comp, "plain-cold", 1.15, true, "", "")
	check("fresh VM at 2 ms (prefetch on) within 5x of plain warm"+sameRounds, on(ms2), warm, 5, true, off(ms2), warm)
	check("fresh VM at 10 ms (prefetch on) within 6x of plain warm"+sameRounds, on(ms10), warm, 6, true, off(ms10), warm)
	check("fresh PR VM at 2 ms reading through one read location within 1.15x of a fresh VM reading its own warm location", prKey, on(ms2), 1.15, true, "", "")
	check("fresh VM at 10 ms (prefetch on) at least 3x faster than tar-and-restore at 10 ms (measured: tar-and-restore time / fresh VM time)", "tar-10", on(ms10), 3, false, "tar-10", off(ms10))
	// Issue 15: packs.
	check("fresh VM at 10 ms (prefetch on) at most 0.9x the time of tar-and-restore at 10 ms", on(ms10), "tar-10", 0.9, true, "", "")
	// Each floor of the same rounds against tar-and-restore: the line
	// above is out of reach if a floor is over 0.9x.
	for _, f := range []struct{ key, name, below string }{
		{floorFreshKey, "(the floor for the line above) the protocol floor over the warm GOCACHE, in the same rounds, against tar-and-restore at 10 ms: a fresh VM answers the same lookups through the same protocol and also fetches and lands every entry, so no cache program reaches the target if this is above 0.9x",
			"the target is below this machine's floor for a GOCACHEPROG"},
		{landingFloorKey, "(the landing floor for the line above) the protocol floor's job and, beside it, the download, decoding, unpacking and checking of the same entries (bench/landing_floor.go), in the same rounds, against tar-and-restore at 10 ms: no cache program on a fresh VM does less, so none reaches the target if this is above 0.9x",
			"the target is below this machine's floor for a fresh VM's cache program"},
	} {
		if v, ok := b.ratio(f.key, "tar-10"); ok {
			t := target{name: f.name, measured: fmt.Sprintf("%.2fx", v), result: "-"}
			if v > 0.9 {
				t.result = f.below
			}
			ts = append(ts, t)
		}
	}
	check("fresh VM at 2 ms (prefetch on) within 3x of plain warm"+sameRounds, on(ms2), warm, 3, true, off(ms2), warm)
	for _, rtt := range noPacksRTTs {
		before, after := b.byKey[noPacksKey(rtt, comp)], b.byKey[on(rtt)]
		if before == nil || after == nil || len(before.runs) == 0 || len(after.runs) == 0 {
			continue
		}
		ts = append(ts, target{name: fmt.Sprintf("(context) a fresh VM at %s, prefetch on, packs off -> on: wall time, requests / gbc CPU", rttName(rtt)),
			measured: fmt.Sprintf("%.2fs, %s -> %.2fs, %s", before.median(), before.cost(), after.median(), after.cost()), result: "-"})
	}
	ts = append(ts, b.manyTargets()...)
	return ts
}

// manyTargetSeconds is issue 15's bound on the 8-VM row: 0.6x of the
// 14.7 s of the last full run before packs (bench-results/HISTORY.md), about 9 s.
const manyTargetSeconds = 9.0

// manyTargets are issue 15's targets for the fleet: no first-byte timeout
// and no miss in any run, and the time until the last VM is done.
func (b *s3Bench) manyTargets() []target {
	r := b.byKey["many"]
	what := fmt.Sprintf("%d VMs at once at %s", b.set.manyVMs, rttName(b.set.manyRTT))
	t1 := target{name: what + ": 0 first-byte timeouts and 0 misses over every run", measured: "n/a", result: "n/a"}
	t2 := target{name: fmt.Sprintf("%s: time until the last is done at most %.1fs (about 0.6x of 14.7s, the last full run before packs)", what, manyTargetSeconds),
		measured: "n/a", result: "n/a"}
	if r == nil || len(r.runs) == 0 {
		if r != nil && r.na != "" {
			t1.measured, t2.measured = "n/a ("+r.na+")", "n/a ("+r.na+")"
		}
		return []target{t1, t2}
	}
	if r.hasStats() {
		timeouts, misses := r.sumStat("remote_errors_by_kind.timeout"), r.sumStat("gets")-r.sumStat("hits")
		t1.measured = fmt.Sprintf("%d timeouts, %d misses over %d runs", timeouts, misses, len(r.runs))
		t1.result = passFail(timeouts == 0 && misses == 0)
	}
	t2.measured = fmt.Sprintf("%.2fs (%.2f-%.2f)", r.median(), slices.Min(r.times()), slices.Max(r.times()))
	switch {
	case b.set.quick:
		t2.result = "- (the 14.7s is the full workload's)"
	case b.set.manyVMs != 8 || b.set.manyRTT != 2*time.Millisecond:
		t2.result = "- (the 14.7s is 8 VMs at 2 ms)"
	default:
		t2.result = passFail(r.median() <= manyTargetSeconds)
	}
	ts := []target{t1, t2}
	if tr := b.byKey["many-tar"]; tr != nil && len(tr.runs) > 0 {
		ts = append(ts, target{
			name: fmt.Sprintf("(context for the line above) %d tar-and-restores at once at %s, the same machines with the tarball: time until the last is done; gobuildcache's time against it",
				b.set.manyVMs, rttName(b.set.manyRTT)),
			measured: fmt.Sprintf("%.2fs (%.2f-%.2f); %.2fx", tr.median(), slices.Min(tr.times()), slices.Max(tr.times()), r.median()/tr.median()),
			result:   "-"})
	}
	if fl := b.byKey["many-local"]; fl != nil && len(fl.runs) > 0 {
		floor := target{
			name: fmt.Sprintf("(tar-and-restore's floor) %d machines at once that find the tarball on their disk: unpack and build, no network",
				b.set.manyVMs),
			measured: fmt.Sprintf("%.2fs (%.2f-%.2f); gobuildcache's time against it %.2fx", fl.median(), slices.Min(fl.times()), slices.Max(fl.times()), r.median()/fl.median()),
			result:   "-"}
		ts = append(ts, floor)
	}
	if fl := b.byKey["many-floor"]; fl != nil && len(fl.runs) > 0 {
		floor := target{
			name: fmt.Sprintf("(gobuildcache's floor) %d machines at once that find the tarball on their disk: unpack, then build through the protocol floor (a minimal GOCACHEPROG) over it, no network; no cache program reaches the target here if every run of it took longer than %.1fs",
				b.set.manyVMs, manyTargetSeconds),
			measured: fmt.Sprintf("%.2fs (%.2f-%.2f); gobuildcache's time against it %.2fx", fl.median(), slices.Min(fl.times()), slices.Max(fl.times()), r.median()/fl.median()),
			result:   "-"}
		if t2.result == "FAIL" && slices.Min(fl.times()) > manyTargetSeconds {
			floor.result = "the target is below this machine's floor for a GOCACHEPROG"
		}
		ts = append(ts, floor)
	}
	return ts
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// writeHeader starts a report: its title, whether it was a -quick run, the
// date and the machine.
func writeHeader(s *strings.Builder, title string, quick bool, machine string) {
	mode := "full"
	if quick {
		mode = "quick"
	}
	fmt.Fprintf(s, "# %s (%s)\n\n", title, mode)
	fmt.Fprintf(s, "- %s; %s\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), machine)
}

// markdown renders the whole report.
func (b *s3Bench) markdown() string {
	var s strings.Builder
	writeHeader(&s, "gobuildcache S3 benchmark", b.set.quick, b.machine)
	fmt.Fprintf(&s, "- workload (%s): one \"VM\" runs %s\n", b.wl.name, b.wl.desc)
	fmt.Fprintf(&s, "- setup: MinIO on 127.0.0.1 (%s) behind toxiproxy v2.12.0, which adds the RTT (a latency toxic of RTT/2 each way); "+
		"every bucket scenario has its own fresh S3 prefix; the fresh VMs read the bucket that the last cold S3 run filled; "+
		"the tarball (%s, of %s) is uploaded once, untimed; run dirs are kept until the end, and the fresh-VM, tar and 8-VM runs start at least 65 s after "+
		"the last bulk deletion (on ext4 without a journal, as here, creating a file scans the inodes deleted in the last minute: "+
		"a new machine has none); MinIO and toxiproxy share the machine's cores with the build (their CPU time per run is in the second table), "+
		"where a real remote would use none of them. GOFLAGS=-buildvcs=false -mod=mod, GOTOOLCHAIN=local, GOPROXY=off\n",
		b.storage, fmtBytes(b.tarSize), fmtBytes(b.tarRaw))
	pf := "no -prefetch (prefetch rows n/a)"
	if b.feat.prefetch {
		pf = "-prefetch=true|false"
		if b.feat.prefetchScope {
			pf += ", -prefetch-scope=" + b.scope
		}
		if b.feat.prefetchPacks {
			pf += ", -prefetch-packs=false on the rows marked packs off (each entry its own object, as before packs)"
		}
	}
	comp := "no -compression"
	if b.feat.compression {
		comp = "-compression=" + strings.Join(b.compressions(), "|") + " (default " + b.feat.compressionDefault + ")"
		if len(b.compressions()) < len(b.allCompressions()) {
			comp += " (the other compression is not measured: -compare-compression=false)"
		}
	}
	fmt.Fprintf(&s, "- gobuildcache: %s, %s, -stats-json per go command\n", pf, comp)
	runs := fmt.Sprintf("- runs: %d of each cold scenario", b.set.coldRuns)
	if len(b.compressions()) > 1 {
		runs += " (1 of the one with the second compression, which fills its bucket)"
	}
	runs += fmt.Sprintf(", %d of each warm one, %d of each fresh-VM and tar one, %d of the %d-VM one; interleaved",
		b.set.runs, b.set.freshRuns, b.set.manyRuns, b.set.manyVMs)
	if b.set.quick {
		runs += "; -quick has no disk cold run: the disk warm runs use the local dir of the cold S3 run (the same layout)"
	}
	s.WriteString(runs + "\n")
	s.WriteString("- columns: wall time median (min-max); ratio of the median (min, max) to the median of the plain warm Go cache of this run; " +
		"hit rate over all runs; remote down/up, prefetched, requests and gbc CPU per run (median) from -stats-json, summed over the run's go commands " +
		"(remote_bytes_down/up count entry bytes before compression; prefetched: prefetch_objects, prefetch_bytes, (prefetch_wasted); " +
		"requests: remote_requests, what gobuildcache sent to the remote; gbc CPU: cpu_seconds, gobuildcache's own user+system CPU, " +
		"the figure that carries over to a real CI VM; the 8-VM row adds up its VMs)\n\n")

	base := b.byKey["plain-warm"].median()
	showPrefetch, showCost := false, false
	for _, r := range b.rows {
		if r.hasKey("prefetch_objects") && r.sumStat("prefetch_objects") > 0 {
			showPrefetch = true
		}
		showCost = showCost || r.hasKey("remote_requests") || r.hasKey("cpu_seconds")
	}
	s.WriteString("| scenario | wall time, s | ratio to plain warm | hit rate | remote down | remote up |")
	if showPrefetch {
		s.WriteString(" prefetched (unused) |")
	}
	if showCost {
		s.WriteString(" requests / gbc CPU |")
	}
	s.WriteString(" `go test` (cached) |\n|---|---|---|---|---|---|")
	if showPrefetch {
		s.WriteString("---|")
	}
	if showCost {
		s.WriteString("---|")
	}
	s.WriteString("---|\n")
	for _, r := range b.rows {
		if r.na != "" || len(r.runs) == 0 {
			why := r.na
			if why == "" {
				why = "not run"
			}
			fmt.Fprintf(&s, "| %s | n/a (%s) | n/a | | | |", r.label, why)
			if showPrefetch {
				s.WriteString(" |")
			}
			if showCost {
				s.WriteString(" |")
			}
			s.WriteString(" |\n")
			continue
		}
		hit, down, up := "-", "-", "-"
		if r.hasStats() {
			if g := r.sumStat("gets"); g > 0 {
				h := r.sumStat("hits")
				hit = fmt.Sprintf("%.1f%%", 100*float64(h)/float64(g))
				if h < g && !strings.Contains(r.key, "cold") {
					hit += fmt.Sprintf(" (%d misses)", g-h)
				}
			}
			if r.remote() {
				down, up = fmtBytes(r.medianStat("remote_bytes_down")), fmtBytes(r.medianStat("remote_bytes_up"))
			}
		}
		if r.group == "tar" {
			down = fmtBytes(b.tarSize) + " (tarball)"
		}
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s | %s |", r.label, spread(durations(r)), ratioString(r.times(), base), hit, down, up)
		if showPrefetch {
			p := "-"
			if r.hasKey("prefetch_objects") && r.remote() {
				p = fmt.Sprintf("%d, %s (%d)", r.medianStat("prefetch_objects"), fmtBytes(r.medianStat("prefetch_bytes")), r.medianStat("prefetch_wasted"))
			}
			fmt.Fprintf(&s, " %s |", p)
		}
		if showCost {
			cost := r.cost()
			if r.group == "many" && r.hasKey("remote_requests") && r.hasKey("cpu_seconds") {
				n := int64(b.set.manyVMs)
				cost += fmt.Sprintf(" (%d VMs; %d / %.2fs each)", n, r.medianStat("remote_requests")/n, float64(r.medianStat("cpu_seconds"))/1e6/float64(n))
			}
			fmt.Fprintf(&s, " %s |", cost)
		}
		fmt.Fprintf(&s, " %s |\n", testsCached(r))
	}

	s.WriteString("\n| scenario | time of each step, median; CPU time MinIO and toxiproxy used meanwhile, median |\n|---|---|\n")
	for _, r := range b.rows {
		if r.na != "" || len(r.runs) == 0 {
			continue
		}
		var steps []string
		for i, p := range r.runs[0].parts {
			xs := make([]float64, 0, len(r.runs))
			for _, run := range r.runs {
				if i < len(run.parts) {
					xs = append(xs, run.parts[i].d.Seconds())
				}
			}
			steps = append(steps, fmt.Sprintf("%s %.2fs", p.name, median(xs)))
		}
		line := strings.Join(steps, ", ")
		var cpu []float64
		for _, run := range r.runs {
			cpu = append(cpu, run.serverCPU.Seconds())
		}
		if m := median(cpu); m >= 0.05 {
			line += fmt.Sprintf("; MinIO and toxiproxy CPU %.2fs", m)
		}
		if r.hasStats() && r.sumStat("pack_ranges")+r.sumStat("packs_written") > 0 {
			cmds := len(b.wl.parts)
			if r.group == "many" {
				cmds *= b.set.manyVMs
			}
			line += fmt.Sprintf("; packs: %d ranges, %d entries, %d fallbacks read, %d written (%s), prefetch in flight at the end %.1f per go command",
				r.medianStat("pack_ranges"), r.medianStat("pack_entries"), r.medianStat("pack_fallbacks"),
				r.medianStat("packs_written"), fmtBytes(r.medianStat("pack_bytes_up")), float64(r.medianStat("prefetch_in_flight"))/float64(max(cmds, 1)))
		}
		fmt.Fprintf(&s, "| %s | %s |\n", r.short, line)
	}

	s.WriteString("\n| target | measured | result |\n|---|---|---|\n")
	for _, t := range b.targets() {
		fmt.Fprintf(&s, "| %s | %s | %s |\n", t.name, t.measured, t.result)
	}

	var notes []string
	for _, r := range b.rows {
		if !r.hasStats() {
			continue
		}
		var bad []string
		for _, k := range []string{"remote_errors", "remote_skipped", "verify_failures", "uploads_failed", "uploads_dropped", "uploads_abandoned", "prefetch_misses", "pack_fallbacks", "errors"} {
			if n := r.sumStat(k); n > 0 {
				kinds := r.byKind(k)
				if k == "remote_errors" {
					kinds = r.byKind("remote_errors_by_kind")
				}
				bad = append(bad, fmt.Sprintf("%s %d%s", k, n, kinds))
			}
		}
		misses := r.sumStat("gets") - r.sumStat("hits")
		if r.group == "many" {
			// The fleet's target: shown even when zero.
			bad = append([]string{fmt.Sprintf("first-byte timeouts %d, misses %d", r.sumStat("remote_errors_by_kind.timeout"), misses)}, bad...)
		} else if (strings.HasPrefix(r.group, "fresh") || r.group == "tar") && misses > 0 {
			bad = append(bad, fmt.Sprintf("misses %d", misses))
		}
		if len(bad) > 0 {
			notes = append(notes, fmt.Sprintf("- %s, over %d runs: %s", r.short, len(r.runs), strings.Join(bad, ", ")))
		}
	}
	if len(notes) > 0 {
		s.WriteString("\nCounters that should be zero (from -stats-json):\n\n" + strings.Join(notes, "\n") + "\n")
	}
	if b.mtimesMD != "" {
		fmt.Fprintf(&s, "\n## mtimes on a %d-file tree\n\n%s", b.set.mtimesFiles, b.mtimesMD)
	}
	fmt.Fprintf(&s, "\nThe whole benchmark took %s.\n", time.Since(b.start).Round(time.Second))
	return s.String()
}

func durations(r *row) []time.Duration {
	ds := make([]time.Duration, len(r.runs))
	for i, run := range r.runs {
		ds[i] = run.total
	}
	return ds
}

func testsCached(r *row) string {
	lo, hi, total := -1, 0, 0
	for _, run := range r.runs {
		if lo < 0 || run.testsCached < lo {
			lo = run.testsCached
		}
		hi = max(hi, run.testsCached)
		total = max(total, run.testsTotal)
	}
	if total == 0 {
		return "-"
	}
	if lo == hi {
		return fmt.Sprintf("%d/%d", lo, total)
	}
	return fmt.Sprintf("%d-%d/%d", lo, hi, total)
}

// report writes the table to stdout and outDir/latest.md, and the chart to
// outDir/latest.svg.
func (b *s3Bench) report() error {
	md := b.markdown()
	fmt.Print(md)
	if err := os.MkdirAll(b.set.outDir, 0o755); err != nil {
		return err
	}
	mdPath := filepath.Join(b.set.outDir, "latest.md")
	if err := os.WriteFile(mdPath, []byte(md), 0o644); err != nil {
		return err
	}
	chartPath := filepath.Join(b.set.outDir, "latest.svg")
	if err := b.writeChart(chartPath); err != nil {
		return err
	}
	logf("wrote %s and %s", mdPath, chartPath)
	return nil
}

// goVersionShort is the go command's version, e.g. go1.26.8.
func goVersionShort() string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "go"
	}
	return strings.TrimSpace(string(out))
}
