package main

import (
	"bufio"
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

// landingFloorRTT is the RTT the landing floor is measured at: that of
// issue 15's target against tar-and-restore.
const landingFloorRTT = 10 * time.Millisecond

// landingFloorKey is the landing floor's row.
const landingFloorKey = "floor-landing-10"

// packLandingParts splits the warm plain GOCACHE's files into landingParts
// tar.zst objects of about equal size (each file to the smallest part so
// far, the largest first) and uploads them straight to MinIO, outside any
// timing.
func (b *s3Bench) packLandingParts() error {
	type file struct {
		rel  string
		size int64
	}
	var files []file
	err := filepath.WalkDir(b.plainWarm, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(b.plainWarm, p)
		files = append(files, file{rel, info.Size()})
		return err
	})
	if err != nil {
		return err
	}
	slices.SortFunc(files, func(x, y file) int { return int(y.size - x.size) })
	part := make(map[string]int, len(files))
	var sizes [landingParts]int64
	for _, f := range files {
		i := slices.Index(sizes[:], slices.Min(sizes[:]))
		part[f.rel] = i
		sizes[i] += f.size
	}
	for i := range landingParts {
		path := filepath.Join(b.work, fmt.Sprintf("landing-%d.tar.zst", i))
		if _, err := packFiles(b.plainWarm, path, func(rel string) bool { return part[rel] == i }); err != nil {
			return fmt.Errorf("packing part %d: %v", i, err)
		}
		err := b.directS3.upload(b.ctx, b.bucket, b.landingKey(i), path)
		os.Remove(path)
		if err != nil {
			return fmt.Errorf("uploading part %d: %v", i, err)
		}
	}
	return nil
}

func (b *s3Bench) landingKey(i int) string {
	return fmt.Sprintf("gobuildcache-bench/%s/landing/%d.tar.zst", b.runID, i)
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
	go func() { landed <- b.land(filepath.Join(dir, "landed")) }()
	r, err := runWorkload(b.ctx, b.wl, b.floorVM())
	if lerr := <-landed; err == nil && lerr != nil {
		err = fmt.Errorf("landing: %v", lerr)
	}
	r.parts = append(r.parts, partResult{"landing (beside the build)", time.Since(start)})
	r.total = time.Since(start)
	r.serverCPU = b.serverCPU() - cpu
	return r, err
}

// land fetches the landing parts at once through the proxy, over new
// connections, each unpacked into dir and verified as its bytes arrive.
func (b *s3Bench) land(dir string) error {
	b.proxyS3.transport.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Minute)
	defer cancel()
	errs := make([]error, landingParts)
	var wg sync.WaitGroup
	for i := range landingParts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := b.landingKey(i)
			out, err := b.proxyS3.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.bucket, Key: &key})
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
