package main

import (
	"image/png"
	"os"
	"path/filepath"
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := fakeBench(t, tc.feat, tc.quick)
			md := b.markdown()
			for _, want := range []string{"| plain Go cache, warm |", "| target | measured | result |", "within 1.30x of plain warm", "remote_errors 2 (timeout 2)", "s3 0.61s; MinIO and toxiproxy CPU 0.30s |"} {
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
			path := filepath.Join(b.set.outDir, "chart.png")
			if err := b.writeChart(path); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			img, err := png.Decode(f)
			if err != nil {
				t.Fatal(err)
			}
			if w := img.Bounds().Dx(); w < 800 {
				t.Errorf("chart is %d px wide", w)
			}
			if os.Getenv("BENCH_CHART_OUT") != "" {
				os.WriteFile(os.Getenv("BENCH_CHART_OUT")+"-"+strings.ReplaceAll(tc.name, " ", "-")+".png", mustRead(t, path), 0o644)
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
	// gobuildcache's.
	help := "Flags:\n  -prefetch\n      at start...\n      env PREFETCH, default \"true\"\n" +
		"  -compression value\n      how uploads are stored\n      env COMPRESSION, default \"zstd\"\n"
	dir := t.TempDir()
	bin := filepath.Join(dir, "fake")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\ncat <<'EOF'\n"+help+"EOF\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := detectFeatures(bin)
	if err != nil {
		t.Skip("cannot run a shell script here:", err)
	}
	if !f.prefetch || f.prefetchScope || !f.compression || f.compressionDefault != "zstd" {
		t.Errorf("detectFeatures = %+v", f)
	}
}
