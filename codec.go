package main

// Fast paths for the JSON of the protocol. A warm build asks for about a
// thousand entries and waits for each answer, so encoding/json's reflection
// is worth avoiding on the hit path. Both functions here produce or accept
// exactly what encoding/json would; anything unusual falls back to it (the
// fuzz tests hold them to that).

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// appendResponse appends res to b as encoding/json encodes it, followed by
// a newline.
func appendResponse(b []byte, res *Response) []byte {
	b = append(b, `{"ID":`...)
	b = strconv.AppendInt(b, res.ID, 10)
	if res.Err != "" {
		b = append(b, `,"Err":`...)
		b = appendJSONString(b, res.Err)
	}
	if len(res.KnownCommands) > 0 {
		b = append(b, `,"KnownCommands":[`...)
		for i, c := range res.KnownCommands {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, string(c))
		}
		b = append(b, ']')
	}
	if res.Miss {
		b = append(b, `,"Miss":true`...)
	}
	if len(res.OutputID) > 0 {
		b = append(b, `,"OutputID":"`...)
		b = base64.StdEncoding.AppendEncode(b, res.OutputID)
		b = append(b, '"')
	}
	if res.Size != 0 {
		b = append(b, `,"Size":`...)
		b = strconv.AppendInt(b, res.Size, 10)
	}
	if res.Time != nil {
		b = append(b, `,"Time":`...)
		if tb, err := res.Time.MarshalJSON(); err == nil && res.Time.Year() >= 0 && res.Time.Year() <= 9999 {
			b = append(b, tb...)
		} else {
			b = append(b, `"0001-01-01T00:00:00Z"`...)
		}
	}
	if res.DiskPath != "" {
		b = append(b, `,"DiskPath":`...)
		b = appendJSONString(b, res.DiskPath)
	}
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string the way encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			// Rare: let encoding/json do the escaping.
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// parseRequestFast decodes a request line in the form the go command
// writes, fields in order and the optional ones possibly absent:
//
//	{"ID":1,"Command":"put","ActionID":"…","OutputID":"…","BodySize":5}
//
// It reports false for anything else; the caller then uses encoding/json.
func parseRequestFast(line []byte, req *Request) bool {
	p := bytes.TrimRight(line, " \t\r\n")
	var ok bool
	if p, ok = cutPrefix(p, `{"ID":`); !ok {
		return false
	}
	if req.ID, p, ok = cutInt(p); !ok {
		return false
	}
	if p, ok = cutPrefix(p, `,"Command":"`); !ok {
		return false
	}
	i := bytes.IndexByte(p, '"')
	if i < 0 {
		return false
	}
	for _, c := range p[:i] {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	req.Command = Cmd(p[:i])
	p = p[i+1:]
	if req.ActionID, p, ok = cutBase64Field(p, `,"ActionID":"`); !ok {
		return false
	}
	if req.OutputID, p, ok = cutBase64Field(p, `,"OutputID":"`); !ok {
		return false
	}
	if q, found := cutPrefix(p, `,"BodySize":`); found {
		if req.BodySize, p, ok = cutInt(q); !ok {
			return false
		}
	}
	return string(p) == "}"
}

func cutPrefix(p []byte, prefix string) ([]byte, bool) {
	if len(p) < len(prefix) || string(p[:len(prefix)]) != prefix {
		return p, false
	}
	return p[len(prefix):], true
}

// cutInt parses a JSON integer as encoding/json accepts it into an int64.
func cutInt(p []byte) (int64, []byte, bool) {
	i := 0
	if i < len(p) && p[i] == '-' {
		i++
	}
	start := i
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		i++
	}
	digits := p[start:i]
	if len(digits) == 0 || len(digits) > 18 || (len(digits) > 1 && digits[0] == '0') {
		return 0, p, false
	}
	if i < len(p) && (p[i] == '.' || p[i] == 'e' || p[i] == 'E') {
		return 0, p, false
	}
	n, err := strconv.ParseInt(string(p[:i]), 10, 64)
	if err != nil {
		return 0, p, false
	}
	return n, p[i:], true
}

// cutBase64Field parses an optional `,"Name":"<base64>"` field. An absent
// field yields nil.
func cutBase64Field(p []byte, prefix string) ([]byte, []byte, bool) {
	q, found := cutPrefix(p, prefix)
	if !found {
		return nil, p, true
	}
	i := bytes.IndexByte(q, '"')
	if i < 0 {
		return nil, p, false
	}
	enc := q[:i]
	for _, c := range enc {
		if c == '\\' || c == '\r' || c == '\n' {
			return nil, p, false // encoding/json rules apply
		}
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(enc)))
	n, err := base64.StdEncoding.Decode(out, enc)
	if err != nil {
		return nil, p, false
	}
	return out[:n], q[i+1:], true
}
