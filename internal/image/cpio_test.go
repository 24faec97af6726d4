package image

import (
	"bytes"
	"strconv"
	"testing"
)

// newcRecord is one member of an archive as readNewc parses it.
type newcRecord struct {
	ino, mode, uid, gid, nlink, mtime uint32
	rdevMajor, rdevMinor              uint32
	name                              string
	data                              []byte
}

// readNewc parses a newc archive up to and including its trailer, failing
// the test on anything malformed or misaligned.
func readNewc(t *testing.T, b []byte) []newcRecord {
	t.Helper()
	var recs []newcRecord
	off := 0
	for {
		if off%4 != 0 {
			t.Fatalf("header at offset %d is not 4-byte aligned", off)
		}
		if off+newcHeaderLen > len(b) {
			t.Fatalf("archive ends at %d without a trailer", len(b))
		}
		hdr := b[off : off+newcHeaderLen]
		if string(hdr[:6]) != newcMagic {
			t.Fatalf("bad magic %q at offset %d", hdr[:6], off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("header field %d at offset %d: %v", i, off, err)
			}
			f[i] = uint32(v)
		}
		r := newcRecord{
			ino: f[0], mode: f[1], uid: f[2], gid: f[3], nlink: f[4], mtime: f[5],
			rdevMajor: f[9], rdevMinor: f[10],
		}
		size, nameSize := int(f[6]), int(f[11])
		off += newcHeaderLen
		if nameSize < 1 || off+nameSize > len(b) || b[off+nameSize-1] != 0 {
			t.Fatalf("bad name at offset %d", off)
		}
		r.name = string(b[off : off+nameSize-1])
		off = align4(off + nameSize)
		if off+size > len(b) {
			t.Fatalf("%s: data runs past the end", r.name)
		}
		r.data = b[off : off+size]
		off = align4(off + size)
		recs = append(recs, r)
		if r.name == newcTrailer {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return recs
		}
	}
}

func align4(n int) int { return (n + 3) &^ 3 }

func TestCPIORoundTrip(t *testing.T) {
	ents := []cpioEntry{
		{name: "dev", mode: modeDir | 0o755},
		{name: "dev/console", mode: modeChar | 0o600, major: 5, minor: 1},
		{name: "init", mode: modeReg | 0o755, data: []byte("#!agent")},
		{name: "a", mode: modeReg | 0o644, data: []byte("1")},
		{name: "ab", mode: modeReg | 0o644, data: []byte("12")},
		{name: "abc", mode: modeReg | 0o644, data: []byte("123")},
		{name: "abcd", mode: modeReg | 0o644, data: []byte("1234")},
		{name: "empty", mode: modeReg | 0o644},
		{name: "tmp", mode: modeDir | 0o1777},
	}
	var buf bytes.Buffer
	cw := newCPIOWriter(&buf)
	for _, e := range ents {
		if err := cw.writeEntry(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := cw.close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}

	recs := readNewc(t, buf.Bytes())
	if len(recs) != len(ents)+1 {
		t.Fatalf("got %d records, want %d", len(recs), len(ents)+1)
	}
	for i, e := range ents {
		r := recs[i]
		if r.name != e.name || r.mode != e.mode || !bytes.Equal(r.data, e.data) {
			t.Errorf("record %d = %q mode %o data %q, want %q mode %o data %q",
				i, r.name, r.mode, r.data, e.name, e.mode, e.data)
		}
		if r.ino != uint32(i+1) {
			t.Errorf("%s: inode %d, want %d", r.name, r.ino, i+1)
		}
		if r.uid != 0 || r.gid != 0 || r.mtime != 0 {
			t.Errorf("%s: uid %d gid %d mtime %d, want zeros", r.name, r.uid, r.gid, r.mtime)
		}
		if r.rdevMajor != e.major || r.rdevMinor != e.minor {
			t.Errorf("%s: rdev %d:%d, want %d:%d", r.name, r.rdevMajor, r.rdevMinor, e.major, e.minor)
		}
		wantLinks := uint32(1)
		if e.mode&modeType == modeDir {
			wantLinks = 2
		}
		if r.nlink != wantLinks {
			t.Errorf("%s: nlink %d, want %d", r.name, r.nlink, wantLinks)
		}
	}
	if tr := recs[len(recs)-1]; tr.name != newcTrailer || tr.ino != 0 || len(tr.data) != 0 {
		t.Errorf("trailer = %+v", tr)
	}
}

func TestCPIORejectsBadNames(t *testing.T) {
	for _, name := range []string{"", newcTrailer} {
		cw := newCPIOWriter(new(bytes.Buffer))
		if err := cw.writeEntry(cpioEntry{name: name, mode: modeReg | 0o644}); err == nil {
			t.Errorf("writeEntry(%q) succeeded", name)
		}
	}
}
