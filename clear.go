package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
)

// runClear removes every entry of the cache that cfg names and reports what
// it removed on out: the local directory (not with -remote-only), and with
// -backend=s3 every object under the prefix (not with -local-only).
func runClear(ctx context.Context, cfg *Config, out io.Writer, log *slog.Logger) error {
	remote := cfg.Backend == "s3" && !cfg.LocalOnly
	if !cfg.RemoteOnly {
		d, err := openCacheDir(cfg.CacheDir, cfg.CacheDir == defaultConfig().CacheDir)
		if err != nil && cfg.from["cache-dir"] == "" {
			// The default is not this user's: the server uses the user's
			// own directory instead (see openLocalCache), so clear that.
			if u, ok := userCacheDir(); ok {
				if ud, uerr := openCacheDir(u, false); uerr == nil {
					d, err = ud, nil
				}
			}
		}
		if err != nil {
			return err
		}
		n, size, err := d.Clear(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "cleared local cache %s: %d entries, %s\n", d.Dir(), n, formatBytes(size))
	}
	if remote {
		// Clearing lists and deletes: it downloads nothing into the
		// directory given, and -remote-only opens no local one.
		b, err := newS3FromConfig(ctx, cfg, os.TempDir(), nil, log)
		if err != nil {
			return err
		}
		n, size, err := b.Clear(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "cleared s3://%s/%s: %d objects, %s\n", cfg.S3Bucket, cfg.S3Prefix, n, formatBytes(size))
	}
	return nil
}
