package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"time"
)

// prefetchCommandMax bounds `gobuildcache prefetch`: a landing that takes
// longer is of no use to the job that started it (its go commands fetch
// what they need themselves once the claim stalls: claimEntryWait).
const prefetchCommandMax = 10 * time.Minute

// runPrefetch is `gobuildcache prefetch`: with the server's flags, it lands
// the entries the scope's newest manifests name in the local cache, as the
// first go command's server would, but from the job's start, beside the
// checkout and the toolchain's setup. It holds a claim on the local cache
// meanwhile (prefetchClaim), so that a server started before it is done
// waits for its entries instead of fetching them again. The caller starts
// it in the background (see README: the action does).
//
// A remote problem, or nothing to prefetch, is not a failure: it prints
// what happened and returns nil. Only a local cache it cannot open fails.
func runPrefetch(cfg *Config, stderr io.Writer, getenv func(string) string, log *slog.Logger) error {
	start := time.Now()
	if cfg.Backend != "s3" || !cfg.Prefetch {
		fmt.Fprintln(stderr, "gobuildcache prefetch: nothing to do: it lands a remote cache's entries (-backend=s3, -prefetch)")
		return nil
	}
	disk, removeScratch, err := openLocalCache(cfg, localCacheFallbacks(), stderr)
	if err != nil {
		return err
	}
	defer removeScratch()
	env, err := toolchainEnv(getenv)
	if err != nil {
		// Deliberately swallowed: without the toolchain's scope there is
		// nothing to land; the go commands' servers prefetch as ever.
		fmt.Fprintf(stderr, "gobuildcache prefetch: nothing landed: %v\n", err)
		return nil
	}
	stats := new(Stats)
	ctx, cancel := context.WithTimeout(context.Background(), prefetchCommandMax)
	defer cancel()
	st := openBackend(ctx, cfg, disk, stats, newWarnings(log), log)
	if st.tier == nil { // the remote's configuration did not load (logged)
		fmt.Fprintln(stderr, "gobuildcache prefetch: nothing landed: the remote's configuration did not load")
		return nil
	}
	opts := prefetchOptionsOf(cfg, disk, env)
	opts.upload = false
	claim, err := holdPrefetchClaim(opts.claimLock, opts.claimPlan)
	switch {
	case errors.Is(err, errClaimed):
		st.backend.Close(ctx)
		fmt.Fprintf(stderr, "gobuildcache prefetch: nothing to do: %v\n", err)
		return nil
	case err != nil && !errors.Is(err, errNoClaims):
		// Deliberately swallowed: without a claim the servers land the
		// same entries beside it, which is only slower.
		log.Warn("prefetch without a claim on the local cache", "err", err)
	case err == nil:
		defer claim.release()
		opts.claim = claim
	}
	p := newPrefetcher(st.tier, st.remote, opts, stats, log)
	if err := p.land(ctx); err != nil {
		// Deliberately swallowed: what landed stays; the rest is fetched
		// by the go commands' servers.
		log.Warn("prefetch", "err", err)
	}
	snap := stats.Snapshot()
	fmt.Fprintf(stderr, "gobuildcache prefetch: landed %d entries (%s) in %s\n",
		snap.PrefetchObjects, formatBytes(snap.PrefetchBytes), time.Since(start).Round(time.Millisecond))
	if cfg.StatsJSON != "" {
		if err := snap.WriteJSONFile(cfg.StatsJSON); err != nil {
			log.Warn("writing stats JSON", "err", err)
		}
	}
	return nil
}

// toolchainVars are the go command's variables that name the toolchain
// (toolchainTag): the go command sets them for the GOCACHEPROG it starts.
var toolchainVars = func() []string {
	vars := []string{"GOVERSION", "GOOS", "GOARCH", "GOEXPERIMENT"}
	for _, v := range archLevelVar {
		if !slices.Contains(vars, v) {
			vars = append(vars, v)
		}
	}
	return vars
}()

// toolchainEnv returns getenv as a server started by the go command sees
// it: with the toolchain's variables from `go env` (run in the current
// directory, as the go commands of the job will be), always: the go
// command sets them for the servers it starts whatever the environment
// says, and a GOVERSION already there may be the job's own ("1.22").
func toolchainEnv(getenv func(string) string) (func(string) string, error) {
	out, err := exec.Command("go", append([]string{"env", "-json"}, toolchainVars...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("go env (for the toolchain's scope): %w", err)
	}
	var vars map[string]string
	if err := json.Unmarshal(out, &vars); err != nil {
		return nil, fmt.Errorf("go env (for the toolchain's scope): %w", err)
	}
	return func(name string) string {
		if v, ok := vars[name]; ok {
			return v
		}
		return getenv(name)
	}, nil
}
