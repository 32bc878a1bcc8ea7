package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The landing floor: the least a cache program does on a fresh VM here.
//
// The protocol floor (bench/floor.go) answers the go command's lookups
// from a GOCACHE that holds every entry already; a fresh VM's program must
// also fetch those entries, decode them, write them and check each body
// against its output ID. The landing floor does both at once, from the
// same instant: the protocol floor's job, and beside it the tarball's
// bytes (the whole warm GOCACHE, as landingParts tar.zst objects of about
// equal size, one per core) downloaded through the proxy all at once, each
// decoded and unpacked as it arrives, every body hashed as it is written.
// The build never waits for the landing, so no cache program on a fresh VM
// is done sooner than both: a target it misses is out of reach here.

// landingParts is how many objects the landing floor's bytes are split
// into, fetched and unpacked at once: the cores of the machines the
// benchmark is made for.
const landingParts = 2

// landingFloorRTT is the RTT the landing floor is measured at: that of the
// targets against tar-and-restore it is the floor of (a fresh VM's in the
// S3 benchmark, run (5)'s in the CI replay).
const landingFloorRTT = 10 * time.Millisecond

// landingFloorKey is the landing floor's row.
const landingFloorKey = "floor-landing-10"

// packLandingParts uploads the files of dir (a GOCACHE) as landingParts
// tar.zst objects of about equal size (each file to the smallest part so
// far, the largest first), straight to MinIO through direct, outside any
// timing, as keyPrefix0.tar.zst, keyPrefix1.tar.zst, ...; it returns
// their keys. tmp holds each archive until it is uploaded.
func packLandingParts(ctx context.Context, direct *s3Client, bucket, dir, tmp, keyPrefix string) ([]string, error) {
	type file struct {
		rel  string
		size int64
	}
	var files []file
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		files = append(files, file{rel, info.Size()})
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(files, func(x, y file) int { return cmp.Compare(y.size, x.size) })
	part := make(map[string]int, len(files))
	var sizes [landingParts]int64
	for _, f := range files {
		i := slices.Index(sizes[:], slices.Min(sizes[:]))
		part[f.rel] = i
		sizes[i] += f.size
	}
	var keys []string
	for i := range landingParts {
		path := filepath.Join(tmp, fmt.Sprintf("landing-%d.tar.zst", i))
		if _, err := packFiles(dir, path, func(rel string) bool { return part[rel] == i }); err != nil {
			return nil, fmt.Errorf("packing part %d: %v", i, err)
		}
		key := fmt.Sprintf("%s%d.tar.zst", keyPrefix, i)
		err := direct.upload(ctx, bucket, key, path)
		os.Remove(path)
		if err != nil {
			return nil, fmt.Errorf("uploading part %d: %v", i, err)
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// packLandingFloor packs the warm plain GOCACHE for the landing floor (packLandingParts).
func (b *s3Bench) packLandingFloor() error {
	var err error
	b.landingKeys, err = packLandingParts(b.ctx, b.directS3, b.bucket, b.plainWarm, b.work,
		fmt.Sprintf("gobuildcache-bench/%s/landing/", b.runID))
	return err
}

// landingFloor is one run of the landing floor, at the proxy's RTT.
func (b *s3Bench) landingFloor() (runResult, error) {
	dir, err := b.newDir("landing-floor")
	if err != nil {
		return runResult{}, err
	}
	defer b.discard(dir)
	b.settle()
	cpu := b.serverCPU()
	start := time.Now()
	landed := make(chan error, 1)
	go func() { landed <- landParts(b.ctx, b.proxyS3, b.bucket, b.landingKeys, filepath.Join(dir, "landed")) }()
	r, err := runWorkload(b.ctx, b.wl, b.floorVM())
	if lerr := <-landed; err == nil && lerr != nil {
		err = fmt.Errorf("landing: %v", lerr)
	}
	r.parts = append(r.parts, partResult{"landing (beside the build)", time.Since(start)})
	r.total = time.Since(start)
	r.serverCPU = b.serverCPU() - cpu
	return r, err
}

// landParts fetches the objects keys at once through proxy (the proxy's
// RTT), over new connections, each unpacked into dir and verified as its
// bytes arrive.
func landParts(ctx context.Context, proxy *s3Client, bucket string, keys []string, dir string) error {
	proxy.transport.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := proxy.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
			if err != nil {
				errs[i] = err
				return
			}
			defer out.Body.Close()
			errs[i] = unpackTarZst(bufio.NewReaderSize(out.Body, 1<<20), dir, true)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
