package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseS3Locations(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []s3Location
		err  string // substring of the error; "" for none
	}{
		{"", nil, ""},
		{"s3://bk1/root/main/", []s3Location{{bucket: "bk1", prefix: "root/main/"}}, ""},
		{"s3://bk1/root/main", []s3Location{{bucket: "bk1", prefix: "root/main/"}}, ""},
		{"s3://bk1", []s3Location{{bucket: "bk1", prefix: ""}}, ""},
		{"s3://bk1/", []s3Location{{bucket: "bk1", prefix: ""}}, ""},
		{" s3://bk1/x/ , s3://main--usw2-az1--x-s3/gobuildcache/ ", []s3Location{{bucket: "bk1", prefix: "x/"}, {bucket: "main--usw2-az1--x-s3", prefix: "gobuildcache/"}}, ""},
		{"b1/root/", nil, "want s3://BUCKET/PREFIX/"},
		{"https://b1/root/", nil, "want s3://BUCKET/PREFIX/"},
		{"s3:///root/", nil, "not a bucket name"},
		{"s3://ab/root/", nil, "not a bucket name"},
		{"s3://bk1:9000/root/", nil, "not a bucket name"},
		{"s3://user@b1/root/", nil, "not a bucket name"},
		{"s3://bk1?x=1/root/", nil, "not a bucket name"},
		{"s3://-bk1/root/", nil, "not a bucket name"},
		{"s3://bk1./root/", nil, "not a bucket name"},
		{"s3://" + strings.Repeat("b", 256) + "/root/", nil, "not a bucket name"},
		{"s3://" + strings.Repeat("b", 255) + "/x", []s3Location{{bucket: strings.Repeat("b", 255), prefix: "x/"}}, ""},
		{"s3://b_k.1-2/x", []s3Location{{bucket: "b_k.1-2", prefix: "x/"}}, ""},
		{"s3://bk1/root/../other/", nil, "segment"},
		{"s3://bk1//root/", nil, "starts with /"},
		{"s3://bk1/a\x00b/", nil, "NUL"},
		{"s3://bk1/a/,", nil, "empty item"},
		{"s3://bk1/a/,,s3://bk2/", nil, "empty item"},
	} {
		var got s3Locations
		err := got.Set(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one saying %q", tc.in, err, tc.err)
		case tc.err == "" && fmt.Sprint([]s3Location(got)) != fmt.Sprint(tc.want):
			t.Errorf("%q: got %v, want %v", tc.in, got, tc.want)
		}
	}
	l := s3Locations{{bucket: "bk1", prefix: "root/main/"}, {bucket: "bk2", prefix: ""}}
	if s := l.String(); s != "s3://bk1/root/main/,s3://bk2/" {
		t.Errorf("String: %q", s)
	}
	var back s3Locations
	if err := back.Set(l.String()); err != nil || fmt.Sprint(back) != fmt.Sprint(l) {
		t.Errorf("String does not parse back: %v %v", back, err)
	}
}

func TestCheckReadLocations(t *testing.T) {
	write := s3Location{bucket: "bk1", prefix: "root/pr-7/"}
	for _, tc := range []struct {
		reads []s3Location
		err   string
	}{
		{[]s3Location{{bucket: "bk1", prefix: "root/main/"}}, ""},
		{[]s3Location{{bucket: "bk2", prefix: "root/pr-7/"}}, ""},                          // same prefix, another bucket
		{[]s3Location{{bucket: "bk1", prefix: "root/"}}, ""},                               // contains the write location: its keys are not under it
		{[]s3Location{{bucket: "bk1", prefix: "root/pr-7/"}}, "inside the write location"}, // the write location itself
		{[]s3Location{{bucket: "bk1", prefix: "root/pr-7/old/"}}, "inside the write location"},
		{[]s3Location{{bucket: "bk1", prefix: "root/main/"}, {bucket: "bk1", prefix: "root/main/"}}, "named twice"},
	} {
		err := checkReadLocations(write, tc.reads)
		if (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: error %v, want %q", tc.reads, err, tc.err)
		}
	}
	if err := checkReadLocations(s3Location{bucket: "bk1", prefix: ""}, []s3Location{{bucket: "bk1", prefix: "x/"}}); err == nil {
		t.Error("a write location of the whole bucket contains every read location in it")
	}
}

// TestGetFirst: every location is asked at once; the first in order that
// has the entry wins, whatever order the answers come in; the later ones
// are canceled and their hits discarded; a failure is reported only when
// nothing hit.
func TestGetFirst(t *testing.T) {
	type answer struct {
		delay time.Duration
		v     string
		err   error
	}
	miss := fmt.Errorf("get: %w", ErrNotFound)
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		answers []answer
		want    string
		err     error
	}{
		{"first hits", []answer{{0, "w", nil}, {0, "r", nil}}, "w", nil},
		{"first misses", []answer{{0, "", miss}, {0, "r", nil}}, "r", nil},
		{"slow first hit beats a fast second", []answer{{30 * time.Millisecond, "w", nil}, {0, "r", nil}}, "w", nil},
		{"slow first miss, fast second hit", []answer{{30 * time.Millisecond, "", miss}, {0, "r", nil}}, "r", nil},
		{"all miss", []answer{{0, "", miss}, {0, "", miss}, {0, "", miss}}, "", ErrNotFound},
		{"a failure is the answer when nothing hits", []answer{{0, "", miss}, {0, "", boom}}, "", boom},
		{"a failure before a hit", []answer{{0, "", boom}, {10 * time.Millisecond, "r", nil}}, "r", nil},
		{"third of three", []answer{{0, "", miss}, {5 * time.Millisecond, "", miss}, {0, "t", nil}}, "t", nil},
		{"none", nil, "", ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked, canceled atomic.Int32
			var mu sync.Mutex
			var discarded []string
			var wg sync.WaitGroup
			wg.Add(len(tc.answers))
			got, err := getFirst(context.Background(), len(tc.answers), func(ctx context.Context, i int) (string, error) {
				defer wg.Done()
				asked.Add(1)
				a := tc.answers[i]
				select {
				case <-time.After(a.delay):
					return a.v, a.err
				case <-ctx.Done():
					canceled.Add(1)
					return "", ctx.Err()
				}
			}, func(v string) {
				mu.Lock()
				discarded = append(discarded, v)
				mu.Unlock()
			})
			if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
			wg.Wait() // a location asked last may start after the answer is taken
			if int(asked.Load()) != len(tc.answers) {
				t.Errorf("asked %d of %d locations", asked.Load(), len(tc.answers))
			}
			time.Sleep(time.Millisecond) // discards run after the answers
			mu.Lock()
			defer mu.Unlock()
			for _, d := range discarded {
				if d == got {
					t.Errorf("discarded the answer taken")
				}
			}
		})
	}
}

// TestGetFirstAtOnce: every location is asked before any answers, so n
// locations cost one round trip, not n: each get here answers only once
// all n have been asked (asked in series, the first would never answer).
func TestGetFirstAtOnce(t *testing.T) {
	const n = 4
	var asked sync.WaitGroup
	asked.Add(n)
	all := make(chan struct{})
	go func() { asked.Wait(); close(all) }()
	v, err := getFirst(context.Background(), n, func(ctx context.Context, i int) (int, error) {
		asked.Done()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			return 0, errors.New("the other locations were not asked")
		}
		if i < n-1 {
			return 0, ErrNotFound
		}
		return i, nil
	}, func(int) {})
	if err != nil || v != n-1 {
		t.Fatalf("got %d, %v; want %d", v, err, n-1)
	}
}

// TestGetFirstCancelsTheRest: once the first location hits, the requests
// to the others are canceled and their hits, should they come, discarded.
func TestGetFirstCancelsTheRest(t *testing.T) {
	released := make(chan struct{})
	var discarded atomic.Int32
	v, err := getFirst(context.Background(), 3, func(ctx context.Context, i int) (int, error) {
		if i == 0 {
			return 0, nil
		}
		if i == 2 {
			<-released // finishes as a hit after the answer
			return 2, nil
		}
		<-ctx.Done()
		return 0, ctx.Err()
	}, func(int) { discarded.Add(1) })
	if err != nil || v != 0 {
		t.Fatalf("got %d, %v", v, err)
	}
	close(released)
	for deadline := time.Now().Add(5 * time.Second); discarded.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if discarded.Load() != 1 {
		t.Fatalf("discarded %d late hits, want 1", discarded.Load())
	}
}

// TestReadOnlyBuckets: ReadOnly sessions for the directory buckets a server
// never writes, and never for the one it writes.
func TestReadOnlyBuckets(t *testing.T) {
	const pr, main, std = "pr--use1-az4--x-s3", "main--use1-az4--x-s3", "standard-bucket"
	reads := s3Locations{{bucket: main, prefix: "a/"}, {bucket: pr, prefix: "old/"}, {bucket: std, prefix: "x/"}, {bucket: main, prefix: "b/"}}
	for _, c := range []struct {
		readOnly bool
		want     string
	}{{false, "[" + main + "]"}, {true, "[" + main + " " + pr + "]"}} {
		cfg := &Config{S3Bucket: pr, S3ReadFrom: reads, ReadOnly: c.readOnly}
		if got := fmt.Sprint(readOnlyBuckets(cfg)); got != c.want {
			t.Errorf("-read-only=%v: %s, want %s", c.readOnly, got, c.want)
		}
	}
}

// BenchmarkBucketNameCheck: isBucketName against the regexp it replaced,
// which every server compiled at start (package init) to check one name.
func BenchmarkBucketNameCheck(b *testing.B) {
	const name = "main--usw2-az1--x-s3"
	b.Run("loop", func(b *testing.B) {
		for b.Loop() {
			if !isBucketName(name) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("regexp compiled and matched", func(b *testing.B) {
		for b.Loop() {
			if !regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$`).MatchString(name) {
				b.Fatal("refused")
			}
		}
	})
}
