package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/richardartoul/gobuildcache/internal/cachefmt"
)

// TestStatsKeysInSchema: every -stats-json field the benchmark reads is a
// field of the schema the product writes (cachefmt.Stats). The benchmark
// reads the JSON generically, so that it can time binaries of any version,
// which may lack fields; this keeps its names from drifting.
func TestStatsKeysInSchema(t *testing.T) {
	fields := map[string]bool{}
	st := reflect.TypeFor[cachefmt.Stats]()
	for i := range st.NumField() {
		name, _, _ := strings.Cut(st.Field(i).Tag.Get("json"), ",")
		fields[name] = true
	}
	files, _ := filepath.Glob("*.go")
	use := regexp.MustCompile(`(?:medianStat|sumStat|hasKey|byKind)\("([a-z_]+)"\)|stats\["([a-z_]+)"\]`)
	list := regexp.MustCompile(`range \[\]string\{((?:"[a-z_]+",? ?)+)\} \{\s+if n := r\.sumStat\(k\)`)
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, m := range use.FindAllStringSubmatch(string(b), -1) {
			keys = append(keys, m[1]+m[2])
		}
		for _, m := range list.FindAllStringSubmatch(string(b), -1) {
			for _, k := range strings.Split(m[1], ",") {
				keys = append(keys, strings.Trim(k, ` "`))
			}
		}
		for _, k := range keys {
			n++
			if !fields[k] {
				t.Errorf("%s reads stats key %q, which cachefmt.Stats does not have", f, k)
			}
		}
	}
	if n < 10 {
		t.Fatalf("found only %d stats keys in the benchmark's source: the patterns are stale", n)
	}
}
