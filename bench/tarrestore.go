package main

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/klauspost/compress/zstd"
)

// The tar-and-restore pattern that CI setups use today: a job downloads a
// tarball of a previous job's GOCACHE, unpacks it, then builds.

// s3Client is a client for endpoint (MinIO, or the proxy in front of it)
// with its own connection pool, so that its idle connections can be closed
// before each timed download.
type s3Client struct {
	*s3.Client
	transport *http.Transport
}

func newS3Client(endpoint, region, accessKey, secretKey string) *s3Client {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}
	c := s3.New(s3.Options{
		Region:                     region,
		BaseEndpoint:               aws.String(endpoint),
		UsePathStyle:               true,
		Credentials:                aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(accessKey, secretKey, "")),
		HTTPClient:                 &http.Client{Transport: tr},
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	return &s3Client{Client: c, transport: tr}
}

// packGocache writes dir as a zstd-compressed tar to path and returns its
// size.
func packGocache(dir, path string) (int64, error) { return packFiles(dir, path, nil) }

// packFiles writes dir as a zstd-compressed tar to path, with every
// directory but only the regular files that keep (a path relative to dir)
// reports true, or all if keep is nil; it returns the tar.zst's size.
func packFiles(dir, path string, keep func(rel string) bool) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	zw, err := zstd.NewWriter(f)
	if err != nil {
		return 0, err
	}
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.IsDir() && (!info.Mode().IsRegular() || keep != nil && !keep(rel)) {
			return nil
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.IsDir() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// upload puts the file at path as bucket/key.
func (c *s3Client) upload(ctx context.Context, bucket, key, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	_, err = c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: f, ContentLength: aws.Int64(st.Size())})
	return err
}

// download gets bucket/key into the file at path, over new connections,
// and returns its size.
func (c *s3Client) download(ctx context.Context, bucket, key, path string) (int64, error) {
	c.transport.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return 0, err
	}
	defer out.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, out.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// unpackGocache extracts the zstd-compressed tar at path into dir, as tar
// does: directories, regular files and their modification times.
func unpackGocache(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unpackTarZst(bufio.NewReaderSize(f, 1<<20), dir, false)
}

// unpackTarZst extracts the zstd-compressed tar read from r into dir, as
// tar does: directories, regular files and their modification times. With
// verify, each output file of a GOCACHE (named <SHA-256 in hex>-d) is
// hashed as it is written and must match its name, as a cache program
// checks each body it lands.
func unpackTarZst(r io.Reader, dir string, verify bool) error {
	zr, err := zstd.NewReader(r)
	if err != nil {
		return err
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	h := sha256.New()
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.FromSlash(strings.TrimSuffix(hdr.Name, "/"))
		if !filepath.IsLocal(name) {
			return fmt.Errorf("unsafe path %q in archive", hdr.Name)
		}
		target := filepath.Join(dir, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, hdr.FileInfo().Mode().Perm())
			if err != nil {
				return err
			}
			want, body := strings.CutSuffix(filepath.Base(name), "-d")
			var w io.Writer = out
			if verify && body {
				h.Reset()
				w = io.MultiWriter(out, h)
			}
			_, err = io.Copy(w, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if verify && body && hex.EncodeToString(h.Sum(nil)) != want {
				return fmt.Errorf("%s: body does not match its name", hdr.Name)
			}
			if err := os.Chtimes(target, hdr.ModTime, hdr.ModTime); err != nil {
				return err
			}
		}
	}
}

// copyPrefix copies every object under prefix src to the same name under
// dst, metadata included, a few at a time, and returns how many it copied.
// The keys must need no escaping (the benchmark's prefixes and hex names).
func (c *s3Client) copyPrefix(ctx context.Context, bucket, src, dst string) (int, error) {
	keys, err := c.listKeys(ctx, bucket, src)
	if err != nil {
		return 0, err
	}
	work := make(chan string)
	errs := make(chan error, 16)
	for i := 0; i < cap(errs); i++ {
		go func() {
			var first error
			for k := range work {
				if first != nil {
					continue
				}
				dstKey := dst + strings.TrimPrefix(k, src)
				_, first = c.CopyObject(ctx, &s3.CopyObjectInput{Bucket: &bucket, Key: &dstKey, CopySource: aws.String(bucket + "/" + k)})
			}
			errs <- first
		}()
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	for i := 0; i < cap(errs); i++ {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	return len(keys), err
}

// listKeys returns the keys of every object under prefix.
func (c *s3Client) listKeys(ctx context.Context, bucket, prefix string) ([]string, error) {
	var keys []string
	p := s3.NewListObjectsV2Paginator(c.Client, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			keys = append(keys, *o.Key)
		}
	}
	return keys, nil
}

// deleteKeys deletes the objects keys, a thousand per request.
func (c *s3Client) deleteKeys(ctx context.Context, bucket string, keys []string) error {
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		objs := make([]types.ObjectIdentifier, n)
		for i, k := range keys[:n] {
			objs[i] = types.ObjectIdentifier{Key: aws.String(k)}
		}
		out, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &bucket, Delete: &types.Delete{Objects: objs, Quiet: aws.Bool(true)}})
		if err != nil {
			return err
		}
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return fmt.Errorf("delete %s: %s", aws.ToString(e.Key), aws.ToString(e.Message))
		}
		keys = keys[n:]
	}
	return nil
}
