package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFloorServer runs the protocol floor over a GOCACHE holding one entry
// written the go command's way: a hit, a miss, and close.
func TestFloorServer(t *testing.T) {
	dir := t.TempDir()
	action := bytes.Repeat([]byte{0xab}, 32)
	output := bytes.Repeat([]byte{0xcd}, 32)
	a, o := hex.EncodeToString(action), hex.EncodeToString(output)
	for _, sub := range []string{a[:2], o[:2]} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entry := fmt.Sprintf("v1 %s %s %20d %20d\n", a, o, 5, int64(1700000000000000000))
	if err := os.WriteFile(filepath.Join(dir, a[:2], a+"-a"), []byte(entry), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, o[:2], o+"-d"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	other, _ := json.Marshal(bytes.Repeat([]byte{0x01}, 32))
	hit, _ := json.Marshal(action)
	in := fmt.Sprintf(`{"ID":1,"Command":"get","ActionID":%s}`+"\n\n"+`{"ID":2,"Command":"get","ActionID":%s}`+"\n\n"+`{"ID":3,"Command":"close"}`+"\n", hit, other)
	var out bytes.Buffer
	if err := serveFloor(dir, false, strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(&out)
	var got []floorResponse
	for dec.More() {
		var r floorResponse
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if len(got) != 4 {
		t.Fatalf("got %d responses, want 4: %+v", len(got), got)
	}
	if fmt.Sprint(got[0].KnownCommands) != "[get close]" {
		t.Errorf("capabilities: %+v", got[0])
	}
	if r := got[1]; r.ID != 1 || r.Miss || !bytes.Equal(r.OutputID, output) || r.Size != 5 || r.DiskPath != filepath.Join(dir, o[:2], o+"-d") {
		t.Errorf("hit: %+v", r)
	}
	if r := got[2]; r.ID != 2 || !r.Miss {
		t.Errorf("miss: %+v", r)
	}
	if r := got[3]; r.ID != 3 || r.Miss || r.DiskPath != "" {
		t.Errorf("close: %+v", r)
	}
}

// TestFloorServerPuts stores an entry through a floor server with puts and
// finds it through a second one, as a later go command would.
func TestFloorServerPuts(t *testing.T) {
	dir := t.TempDir()
	action, _ := json.Marshal(bytes.Repeat([]byte{0x12}, 32))
	output := bytes.Repeat([]byte{0x34}, 32)
	outJSON, _ := json.Marshal(output)
	body, _ := json.Marshal([]byte("built"))
	serve := func(in string) []floorResponse {
		t.Helper()
		var out bytes.Buffer
		if err := serveFloor(dir, true, strings.NewReader(in), &out); err != nil {
			t.Fatal(err)
		}
		var got []floorResponse
		for dec := json.NewDecoder(&out); dec.More(); {
			var r floorResponse
			if err := dec.Decode(&r); err != nil {
				t.Fatal(err)
			}
			got = append(got, r)
		}
		return got
	}
	o := hex.EncodeToString(output)
	want := filepath.Join(dir, o[:2], o+"-d")
	put := serve(fmt.Sprintf(`{"ID":1,"Command":"put","ActionID":%s,"OutputID":%s,"BodySize":5}`+"\n%s\n", action, outJSON, body))
	if len(put) != 2 || fmt.Sprint(put[0].KnownCommands) != "[get close put]" || put[1].DiskPath != want {
		t.Fatalf("put: %+v", put)
	}
	get := serve(fmt.Sprintf(`{"ID":1,"Command":"get","ActionID":%s}`+"\n", action))
	if len(get) != 2 || get[1].Miss || !bytes.Equal(get[1].OutputID, output) || get[1].Size != 5 || get[1].DiskPath != want {
		t.Fatalf("get after put: %+v", get)
	}
	if b, err := os.ReadFile(want); err != nil || string(b) != "built" {
		t.Fatalf("stored body %q, %v", b, err)
	}
}
