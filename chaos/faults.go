//go:build linux

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"
)

// The fault kinds, in the order of the summary. none is the baseline;
// kill9 is injected by the VM runner (it kills a gobuildcache process
// mid-put), every other one by an injector while a phase's builds run.
var faultKinds = []string{"none", "latency", "reset", "bandwidth", "blackhole", "minio_restart", "kill9"}

// injector applies a fault until ctx is done. It must leave cleaning up
// the proxy to the caller (toxiproxy's reset) and must bring MinIO back.
type injector func(ctx context.Context, s *suite, rng *rand.Rand)

var injectors = map[string]injector{
	"none":          nil,
	"kill9":         nil,
	"latency":       injectLatency,
	"reset":         injectReset,
	"bandwidth":     injectBandwidth,
	"blackhole":     injectBlackhole,
	"minio_restart": injectMinioRestart,
}

// sleepCtx sleeps for d or until ctx is done, and reports whether it slept
// the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

// toggle adds the toxics that on returns, holds them for a while, removes
// them, waits, and again, until ctx is done (bounded by maxCycles).
func toggle(ctx context.Context, s *suite, rng *rand.Rand, label string, maxCycles int,
	onFor, offFor [2]time.Duration, on func() ([]string, error)) {
	for cycle := 0; cycle < maxCycles && ctx.Err() == nil; cycle++ {
		names, err := on()
		if err != nil {
			s.logf("%s: adding toxic: %v", label, err)
			return
		}
		s.count("toxic_on")
		held := sleepCtx(ctx, between(rng, onFor[0], onFor[1]))
		for _, n := range names {
			if err := s.proxy.RemoveToxic(n); err != nil {
				s.logf("%s: removing toxic %s: %v", label, n, err)
			}
		}
		if !held {
			return
		}
		if !sleepCtx(ctx, between(rng, offFor[0], offFor[1])) {
			return
		}
	}
}

// injectLatency adds 50-200 ms (with jitter) in each direction for 1-3 s at
// a time, with pauses of 0.5-1.5 s.
func injectLatency(ctx context.Context, s *suite, rng *rand.Rand) {
	toggle(ctx, s, rng, "latency", 200, [2]time.Duration{time.Second, 3 * time.Second},
		[2]time.Duration{500 * time.Millisecond, 1500 * time.Millisecond}, func() ([]string, error) {
			lat := 50 + rng.IntN(151)
			s.vlogf("fault latency: on, %d ms ± %d ms each way", lat, lat/4)
			var names []string
			for _, stream := range []string{"upstream", "downstream"} {
				name := "latency_" + stream
				if err := s.proxy.AddToxic(name, "latency", stream, 1, map[string]any{"latency": lat, "jitter": lat / 4}); err != nil {
					return names, err
				}
				names = append(names, name)
			}
			return names, nil
		})
}

// injectReset breaks connections for 1.5-3 s at a time, with pauses of
// 0.3-1 s, each time in one of three ways, each applied to about half the
// connections: reset_peer (an RST as soon as the server answers),
// limit_data (the connection closed after 2-64 KiB from the server,
// mid-body for larger objects) and a timeout toxic with a timeout (the
// request swallowed, then the connection closed after 100-500 ms).
func injectReset(ctx context.Context, s *suite, rng *rand.Rand) {
	toggle(ctx, s, rng, "reset", 200, [2]time.Duration{1500 * time.Millisecond, 3 * time.Second},
		[2]time.Duration{300 * time.Millisecond, time.Second}, func() ([]string, error) {
			switch rng.IntN(3) {
			case 0:
				s.vlogf("fault reset: on, reset_peer at the first byte, toxicity 0.5")
				return []string{"reset_peer"}, s.proxy.AddToxic("reset_peer", "reset_peer", "downstream", 0.5, map[string]any{"timeout": 0})
			case 1:
				n := 2048 + rng.IntN(62*1024)
				s.vlogf("fault reset: on, limit_data %d bytes, toxicity 0.5", n)
				return []string{"limit_data"}, s.proxy.AddToxic("limit_data", "limit_data", "downstream", 0.5, map[string]any{"bytes": n})
			default:
				ms := 100 + rng.IntN(401)
				s.vlogf("fault reset: on, timeout toxic closing after %d ms, toxicity 0.5", ms)
				return []string{"close_timeout"}, s.proxy.AddToxic("close_timeout", "timeout", "upstream", 0.5, map[string]any{"timeout": ms})
			}
		})
}

// injectBandwidth caps each connection at 256 KB/s in each direction for
// the whole phase.
func injectBandwidth(ctx context.Context, s *suite, rng *rand.Rand) {
	s.vlogf("fault bandwidth: on, 256 KB/s per connection each way")
	for _, stream := range []string{"upstream", "downstream"} {
		if err := s.proxy.AddToxic("bandwidth_"+stream, "bandwidth", stream, 1, map[string]any{"rate": 256}); err != nil {
			s.logf("bandwidth: adding toxic: %v", err)
		}
	}
	s.count("toxic_on")
	<-ctx.Done()
}

// injectBlackhole makes the endpoint a black hole for the whole phase:
// connections are accepted and nothing is ever delivered either way.
func injectBlackhole(ctx context.Context, s *suite, rng *rand.Rand) {
	s.vlogf("fault blackhole: on, timeout toxic with timeout 0 each way")
	for _, stream := range []string{"upstream", "downstream"} {
		if err := s.proxy.AddToxic("blackhole_"+stream, "timeout", stream, 1, map[string]any{"timeout": 0}); err != nil {
			s.logf("blackhole: adding toxic: %v", err)
		}
	}
	s.count("toxic_on")
	<-ctx.Done()
}

// injectMinioRestart kills MinIO (SIGKILL and SIGTERM in turn) 0.5-2.5 s
// into the phase and then again while builds run, keeps it down for 2-4 s
// and restarts it on the same port and data directory, at most 4 times.
// MinIO is running again when it returns.
func injectMinioRestart(ctx context.Context, s *suite, rng *rand.Rand) {
	defer func() {
		if !s.minio.running() {
			if err := s.minio.restart(s.ctx); err != nil {
				s.logf("minio_restart: restarting MinIO after the phase: %v", err)
			}
		}
	}()
	for cycle := 0; cycle < 4; cycle++ {
		if !sleepCtx(ctx, between(rng, 500*time.Millisecond, 2500*time.Millisecond)) {
			return
		}
		sig, name := syscall.SIGKILL, "SIGKILL"
		if cycle%2 == 1 {
			sig, name = syscall.SIGTERM, "SIGTERM"
		}
		s.vlogf("fault minio_restart: %s to MinIO", name)
		s.minio.kill(sig)
		s.count("minio_kill")
		sleepCtx(ctx, between(rng, 2*time.Second, 4*time.Second))
		start := time.Now()
		if err := s.minio.restart(s.ctx); err != nil {
			s.logf("minio_restart: restarting MinIO: %v", err)
			return
		}
		s.vlogf("fault minio_restart: MinIO back after %.1fs", time.Since(start).Seconds())
	}
}

// schedule is the list of rounds, each a list of fault kinds applied one
// after the other to groups of the VMs. Round 1 is the warm-up (none, every
// VM, the bucket starts empty); the later rounds cover every kind at least
// once: one kind per round when there are at least as many rounds as kinds,
// else several per round.
func schedule(rounds int) ([][]string, error) {
	if rounds < 2 {
		return nil, fmt.Errorf("-rounds must be at least 2 (a warm-up and one with every fault kind)")
	}
	plan := [][]string{{"none"}}
	rest := rounds - 1
	k := len(faultKinds)
	if rest >= k {
		for r := 0; r < rest; r++ {
			plan = append(plan, []string{faultKinds[r%k]})
		}
		return plan, nil
	}
	for r := 0; r < rest; r++ {
		plan = append(plan, faultKinds[r*k/rest:(r+1)*k/rest])
	}
	return plan, nil
}
