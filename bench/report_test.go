package main

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeBench is an S3 benchmark whose rows hold made-up runs, so that the
// report and the chart can be checked without MinIO or go commands.
func fakeBench(t *testing.T, feat features, quick bool) *s3Bench {
	b := &s3Bench{
		set:   s3Settings{quick: quick, runs: 3, coldRuns: 2, freshRuns: 2, manyRuns: 1, manyVMs: 8, manyRTT: 2 * time.Millisecond, outDir: t.TempDir()},
		feat:  feat,
		wl:    &workload{name: "quick", desc: "`go test -short strings`"},
		byKey: map[string]*row{}, start: time.Now(), machine: "machine: test", scope: "s",
	}
	b.defineRows()
	for i, r := range b.rows {
		if r.na != "" {
			continue
		}
		for j := 0; j < 2; j++ {
			d := time.Duration(i+1)*200*time.Millisecond + time.Duration(j)*50*time.Millisecond
			run := runResult{total: d, parts: []partResult{{"test", d / 2}, {"build s3", d / 2}}, testsCached: 7, testsTotal: 7}
			if r.group != "plain" && r.group != "tar" {
				run.stats = map[string]int64{"gets": 100, "hits": 99, "remote_bytes_down": 1 << 20, "remote_errors": 1, "remote_errors_by_kind.timeout": 1}
				run.statsKeys = map[string]bool{"gets": true, "prefetch_objects": feat.prefetch}
				if feat.prefetchPacks { // a binary with packs writes these
					run.stats["remote_requests"], run.stats["cpu_seconds"] = 450, 1_250_000 // 1.25 s, in microseconds
					run.stats["pack_ranges"], run.stats["pack_entries"] = 4, 300
					run.statsKeys["remote_requests"], run.statsKeys["cpu_seconds"] = true, true
				}
				run.serverCPU = 300 * time.Millisecond
			}
			r.runs = append(r.runs, run)
		}
	}
	return b
}

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		name  string
		feat  features
		quick bool
	}{
		{"old binary", features{}, false},
		{"prefetch and compression", features{prefetch: true, prefetchScope: true, compression: true, compressionDefault: "none"}, true},
		{"packs", features{prefetch: true, prefetchScope: true, compression: true, compressionDefault: "zstd", readFrom: true, prefetchPacks: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := fakeBench(t, tc.feat, tc.quick)
			md := b.markdown()
			for _, want := range []string{"| plain Go cache, warm |", "| target | measured | result |", "within 1.30x of plain warm", "remote_errors 2 (timeout 2)", "s3 0.81s; MinIO and toxiproxy CPU 0.30s"} {
				if !strings.Contains(md, want) {
					t.Errorf("report lacks %q:\n%s", want, md)
				}
			}
			if !tc.feat.prefetch && !strings.Contains(md, "n/a (binary has no -prefetch)") {
				t.Errorf("report of a binary without -prefetch lacks the n/a rows:\n%s", md)
			}
			if tc.feat.compression && !strings.Contains(md, "compression zstd") {
				t.Errorf("report lacks the zstd rows:\n%s", md)
			}
			// The fleet's counters, shown even when zero.
			if !strings.Contains(md, "8 fresh VMs at once, 2 ms, over 2 runs: first-byte timeouts 2, misses 2") {
				t.Errorf("report lacks the 8-VM timeouts and misses:\n%s", md)
			}
			for _, want := range []string{"at most 0.9x the time of tar-and-restore at 10 ms", "within 3x of plain warm", "0 first-byte timeouts and 0 misses over every run | 2 timeouts, 2 misses over 2 runs | FAIL |", "at most 9.0s"} {
				if !strings.Contains(md, want) {
					t.Errorf("report lacks the target %q:\n%s", want, md)
				}
			}
			packs := []string{"| fresh VM: empty local dir, warm bucket, RTT 10 ms, prefetch on, packs off", "| fresh VM: empty local dir, warm bucket, RTT 2 ms, prefetch on, packs off",
				" requests / gbc CPU |", " 450 / 1.25s |", " 450 / 1.25s (8 VMs; 56 / 0.16s each) |", "packs off -> on", "packs: 4 ranges, 300 entries"}
			for _, want := range packs {
				if got := strings.Contains(md, want); got != tc.feat.prefetchPacks {
					t.Errorf("report with packs %v: has %q = %v:\n%s", tc.feat.prefetchPacks, want, got, md)
				}
			}
			path := filepath.Join(b.set.outDir, "chart.svg")
			if err := b.writeChart(path); err != nil {
				t.Fatal(err)
			}
			var doc struct {
				XMLName xml.Name
				Width   float64  `xml:"width,attr"`
				Texts   []string `xml:"text"`
			}
			if err := xml.Unmarshal(mustRead(t, path), &doc); err != nil {
				t.Fatalf("chart is not XML: %v", err)
			}
			if doc.XMLName.Local != "svg" || doc.Width < 800 || len(doc.Texts) < len(b.rows) {
				t.Errorf("chart: <%s> %v wide with %d texts for %d rows", doc.XMLName.Local, doc.Width, len(doc.Texts), len(b.rows))
			}
			if os.Getenv("BENCH_CHART_OUT") != "" {
				os.WriteFile(os.Getenv("BENCH_CHART_OUT")+"-"+strings.ReplaceAll(tc.name, " ", "-")+".svg", mustRead(t, path), 0o644)
				os.WriteFile(os.Getenv("BENCH_CHART_OUT")+"-"+strings.ReplaceAll(tc.name, " ", "-")+".md", []byte(md), 0o644)
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDetectFeaturesRegexps(t *testing.T) {
	// detectFeatures runs the binary; here, the parsing of a help text like
	// gobuildcache's, with the variable line before and after the
	// GOBUILDCACHE_ names.
	for i, envLine := range []string{
		`env COMPRESSION, default "zstd"`,
		`env GOBUILDCACHE_COMPRESSION (or COMPRESSION), default "zstd"`,
	} {
		packs := i == 1 // the second help also has -prefetch-packs
		help := "Flags:\n  -prefetch\n      at start...\n      env PREFETCH, default \"true\"\n" +
			"  -compression value\n      how uploads are stored\n      " + envLine + "\n"
		if packs {
			help += "  -prefetch-packs\n      store what a run used as a few large packs\n      env GOBUILDCACHE_PREFETCH_PACKS (or PREFETCH_PACKS), default \"true\"\n"
		}
		dir := t.TempDir()
		bin := filepath.Join(dir, "fake")
		if err := os.WriteFile(bin, []byte("#!/bin/sh\ncat <<'EOF'\n"+help+"EOF\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := detectFeatures(bin)
		if err != nil {
			t.Skip("cannot run a shell script here:", err)
		}
		if !f.prefetch || f.prefetchScope || !f.compression || f.compressionDefault != "zstd" || f.prefetchPacks != packs {
			t.Errorf("%s: detectFeatures = %+v", envLine, f)
		}
	}
}

// TestChartFromReport redraws the chart of a committed report: with
// BENCH_CHART_FROM=bench-results/latest.md it writes latest.svg beside it
// from the table's wall times (median, min, max). It is how a report made
// before the chart was an SVG got its SVG.
func TestChartFromReport(t *testing.T) {
	from := os.Getenv("BENCH_CHART_FROM")
	if from == "" {
		t.Skip("BENCH_CHART_FROM not set")
	}
	md := string(mustRead(t, from))
	times := map[string][3]time.Duration{}
	line := regexp.MustCompile(`(?m)^\| (.+?) \| ([0-9.]+)s \(([0-9.]+)-([0-9.]+)\) \|`)
	for _, m := range line.FindAllStringSubmatch(md, -1) {
		var d [3]time.Duration
		for i, s := range m[2:] {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatal(err)
			}
			d[i] = time.Duration(f * float64(time.Second))
		}
		times[m[1]] = d
	}
	b := fakeBench(t, features{prefetch: true, prefetchScope: true, compression: true, compressionDefault: "zstd"}, false)
	b.wl.name = "full"
	matched := 0
	for _, r := range b.rows {
		r.runs = nil
		d, ok := times[r.label]
		if !ok {
			r.na = "not in " + filepath.Base(from)
			continue
		}
		matched++
		r.na = ""
		for _, x := range []time.Duration{d[1], d[0], d[2]} { // min, median, max
			r.runs = append(r.runs, runResult{total: x})
		}
	}
	if matched < len(b.rows)/2 {
		t.Fatalf("%d of %d rows found in %s", matched, len(b.rows), from)
	}
	if err := b.writeChart(filepath.Join(filepath.Dir(from), "latest.svg")); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d rows drawn", matched, len(b.rows))
}

// TestFreshTargetsUseTheirRoundsBaseline: the fresh-VM targets compare with
// the plain warm builds of their own rounds when there are any, else with
// the warm phase's.
func TestFreshTargetsUseTheirRoundsBaseline(t *testing.T) {
	b := fakeBench(t, features{prefetch: true, prefetchScope: true, compression: true, compressionDefault: "zstd", prefetchPacks: true}, false)
	set := func(key string, d time.Duration) {
		for i := range b.byKey[key].runs {
			b.byKey[key].runs[i].total = d
		}
	}
	set("plain-warm", time.Second)
	set(plainWarmFreshKey, 2*time.Second)
	set(freshKey(2*time.Millisecond, true, b.compressions()[0]), 5*time.Second)
	find := func(prefix string) target {
		for _, tg := range b.targets() {
			if strings.HasPrefix(tg.name, prefix) && strings.Contains(tg.name, "within 3x") {
				return tg
			}
		}
		t.Fatalf("no target %q", prefix)
		return target{}
	}
	got := find("fresh VM at 2 ms")
	if got.name != "fresh VM at 2 ms (prefetch on) within 3x of plain warm (measured in the same rounds)" || got.measured != "2.50x" || got.result != "PASS" {
		t.Errorf("with the rounds' baseline: %+v", got)
	}
	b.byKey[plainWarmFreshKey].runs = nil
	got = find("fresh VM at 2 ms")
	if got.name != "fresh VM at 2 ms (prefetch on) within 3x of plain warm" || got.measured != "5.00x" || got.result != "FAIL" {
		t.Errorf("without it: %+v", got)
	}
}

// TestFreshTarTargetFloor: the 0.9x target against tar-and-restore is
// followed by the protocol floor and the landing floor of the same rounds
// against it, each of which calls the target below the floor when it is
// itself over 0.9x.
func TestFreshTarTargetFloor(t *testing.T) {
	b := fakeBench(t, features{prefetch: true, prefetchScope: true, compression: true, compressionDefault: "zstd", prefetchPacks: true}, false)
	set := func(key string, d time.Duration) {
		for i := range b.byKey[key].runs {
			b.byKey[key].runs[i].total = d
		}
	}
	set("tar-10", 1000*time.Millisecond)
	for _, floor := range []struct{ key, line, below string }{
		{floorFreshKey, "(the floor for the line above)", "the target is below this machine's floor for a GOCACHEPROG"},
		{landingFloorKey, "(the landing floor for the line above)", "the target is below this machine's floor for a fresh VM's cache program"},
	} {
		find := func() target {
			for _, tg := range b.targets() {
				if strings.HasPrefix(tg.name, floor.line) {
					return tg
				}
			}
			t.Fatalf("no line %q", floor.line)
			return target{}
		}
		set(floor.key, 950*time.Millisecond)
		if got := find(); got.measured != "0.95x" || got.result != floor.below {
			t.Errorf("%s over 0.9x: %+v", floor.key, got)
		}
		set(floor.key, 600*time.Millisecond)
		if got := find(); got.measured != "0.60x" || got.result != "-" {
			t.Errorf("%s under 0.9x: %+v", floor.key, got)
		}
	}
}
