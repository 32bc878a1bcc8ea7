package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The protocol floor: the least any GOCACHEPROG costs the go command.
//
// `bench -floor-server DIR` is a minimal GOCACHEPROG that answers gets from
// a warm plain GOCACHE at DIR (read-only unless -floor-puts) with
// encoding/json and nothing else. Timed beside the plain cache, it shows what
// the protocol itself costs: a process to start before the first lookup,
// and a round trip through two pipes, with JSON both ways, for every get.
// No cache program can go below it; the disk backend is compared with it.
//
// With -floor-puts it also offers put, storing each entry in DIR as the go
// command would: the floor of a job that misses some actions and uses what
// it built in a later go command (the CI replay's run (5); see
// bench-results/HISTORY.md).

type floorRequest struct {
	ID       int64
	Command  string
	ActionID []byte `json:",omitempty"`
	OutputID []byte `json:",omitempty"`
	BodySize int64  `json:",omitempty"`
}

type floorResponse struct {
	ID            int64
	KnownCommands []string   `json:",omitempty"`
	Miss          bool       `json:",omitempty"`
	OutputID      []byte     `json:",omitempty"`
	Size          int64      `json:",omitempty"`
	Time          *time.Time `json:",omitempty"`
	DiskPath      string     `json:",omitempty"`
}

// serveFloor speaks the protocol on stdin and stdout until close or EOF.
// With puts, it offers put as well (floorPut).
func serveFloor(dir string, puts bool, in io.Reader, out io.Writer) error {
	bw := bufio.NewWriter(out)
	enc := json.NewEncoder(bw)
	send := func(r floorResponse) error {
		if err := enc.Encode(r); err != nil {
			return err
		}
		return bw.Flush()
	}
	known := []string{"get", "close"}
	if puts {
		known = append(known, "put")
	}
	if err := send(floorResponse{KnownCommands: known}); err != nil {
		return err
	}
	dec := json.NewDecoder(bufio.NewReader(in))
	for {
		var req floorRequest
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch req.Command {
		case "close":
			return send(floorResponse{ID: req.ID})
		case "get":
			if err := send(floorGet(dir, req)); err != nil {
				return err
			}
		case "put":
			var body []byte
			if req.BodySize > 0 {
				if err := dec.Decode(&body); err != nil {
					return err
				}
			}
			r, err := floorPut(dir, req, body)
			if err != nil {
				return err
			}
			if err := send(r); err != nil {
				return err
			}
		default:
			return errors.New("unexpected command " + strconv.Quote(req.Command))
		}
	}
}

// floorGet looks req's action up in the GOCACHE at dir, whose action
// entries are <dir>/<xx>/<action hex>-a holding
// "v1 <action hex> <output hex> <size> <time>\n" and whose outputs are
// <dir>/<xx>/<output hex>-d.
func floorGet(dir string, req floorRequest) floorResponse {
	miss := floorResponse{ID: req.ID, Miss: true}
	a := hex.EncodeToString(req.ActionID)
	if len(a) < 2 {
		return miss
	}
	b, err := os.ReadFile(filepath.Join(dir, a[:2], a+"-a"))
	if err != nil {
		return miss
	}
	f := strings.Fields(string(b))
	if len(f) != 5 || f[0] != "v1" || f[1] != a || len(f[2]) < 2 {
		return miss
	}
	outputID, err1 := hex.DecodeString(f[2])
	size, err2 := strconv.ParseInt(f[3], 10, 64)
	nanos, err3 := strconv.ParseInt(f[4], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return miss
	}
	path := filepath.Join(dir, f[2][:2], f[2]+"-d")
	if fi, err := os.Stat(path); err != nil || fi.Size() != size {
		return miss
	}
	t := time.Unix(0, nanos)
	return floorResponse{ID: req.ID, OutputID: outputID, Size: size, Time: &t, DiskPath: path}
}

// floorPut stores body as req's output in the GOCACHE at dir, in
// floorGet's layout: the output first, then the action entry.
func floorPut(dir string, req floorRequest, body []byte) (floorResponse, error) {
	a, o := hex.EncodeToString(req.ActionID), hex.EncodeToString(req.OutputID)
	if len(a) < 2 || len(o) < 2 || int64(len(body)) != req.BodySize {
		return floorResponse{}, errors.New("put: malformed request " + strconv.FormatInt(req.ID, 10))
	}
	path := filepath.Join(dir, o[:2], o+"-d")
	entry := "v1 " + a + " " + o + " " + strconv.FormatInt(req.BodySize, 10) + " " + strconv.FormatInt(time.Now().UnixNano(), 10) + "\n"
	for _, f := range []struct {
		path string
		b    []byte
	}{{path, body}, {filepath.Join(dir, a[:2], a+"-a"), []byte(entry)}} {
		err := os.WriteFile(f.path, f.b, 0o666)
		if errors.Is(err, fs.ErrNotExist) { // its <xx> directory, once
			if err = os.MkdirAll(filepath.Dir(f.path), 0o777); err == nil {
				err = os.WriteFile(f.path, f.b, 0o666)
			}
		}
		if err != nil {
			return floorResponse{}, err
		}
	}
	return floorResponse{ID: req.ID, DiskPath: path}, nil
}
