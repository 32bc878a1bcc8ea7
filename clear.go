package main

import (
	"context"
	"fmt"
	"io"
)

// runClear removes every entry of the cache that cfg names and reports what
// it removed on out.
func runClear(ctx context.Context, cfg *Config, out io.Writer) error {
	if cfg.RemoteOnly && cfg.Backend != "s3" {
		return fmt.Errorf("-remote-only (CLEAR_REMOTE_ONLY) needs -backend=s3")
	}
	if !cfg.RemoteOnly {
		d, err := NewDiskBackend(cfg.CacheDir)
		if err != nil {
			return err
		}
		n, size, err := d.Clear(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "cleared local cache %s: %d entries, %s\n", d.Dir(), n, formatBytes(size))
	}
	if cfg.Backend == "s3" && !cfg.LocalOnly {
		return fmt.Errorf("clear: the s3 backend is not available in this build")
	}
	return nil
}
