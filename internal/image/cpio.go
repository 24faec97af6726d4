package image

import (
	"fmt"
	"io"
	"math"
)

// File type bits of a cpio mode, as in stat(2).
const (
	modeType = 0o170000
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeChar = 0o020000
)

const (
	newcMagic     = "070701"
	newcHeaderLen = 110
	newcTrailer   = "TRAILER!!!"
)

// cpioEntry is one member of an archive. Only what an initramfs needs is
// modelled: owner, group and mtime are always zero so archives are
// reproducible.
type cpioEntry struct {
	name         string // path inside the archive, without a leading slash
	mode         uint32 // file type and permission bits
	major, minor uint32 // device number of a device node
	data         []byte // contents of a regular file
}

// cpioWriter writes an uncompressed cpio archive in the SVR4 "newc" format,
// the one the kernel unpacks as an initramfs. Inode numbers are assigned in
// write order starting at 1; every entry has its own, since the kernel
// treats regular files sharing an inode number as hard links.
type cpioWriter struct {
	w   io.Writer
	n   int64 // bytes written so far, to pad to 4-byte boundaries
	ino uint32
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: w}
}

// writeEntry appends e to the archive.
func (cw *cpioWriter) writeEntry(e cpioEntry) error {
	if e.name == "" || e.name == newcTrailer {
		return fmt.Errorf("cpio: invalid entry name %q", e.name)
	}
	if len(e.data) > math.MaxUint32 {
		return fmt.Errorf("cpio: %s: file too large (%d bytes)", e.name, len(e.data))
	}
	nlink := uint32(1)
	if e.mode&modeType == modeDir {
		nlink = 2
	}
	cw.ino++
	return cw.write(cw.ino, e, nlink)
}

// close writes the trailer that ends the archive. It does not close the
// underlying writer.
func (cw *cpioWriter) close() error {
	return cw.write(0, cpioEntry{name: newcTrailer}, 1)
}

func (cw *cpioWriter) write(ino uint32, e cpioEntry, nlink uint32) error {
	hdr := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		newcMagic,
		ino,
		e.mode,
		0, // uid
		0, // gid
		nlink,
		0, // mtime
		len(e.data),
		0, 0, // major and minor of the device holding the file
		e.major, e.minor,
		len(e.name)+1, // name size, with its NUL
		0,             // checksum, unused by newc
	)
	if err := cw.put([]byte(hdr + e.name + "\x00")); err != nil {
		return err
	}
	if err := cw.pad(); err != nil {
		return err
	}
	if err := cw.put(e.data); err != nil {
		return err
	}
	return cw.pad()
}

func (cw *cpioWriter) put(b []byte) error {
	n, err := cw.w.Write(b)
	cw.n += int64(n)
	if err != nil {
		return fmt.Errorf("cpio: %w", err)
	}
	return nil
}

// pad aligns the archive to 4 bytes, as newc requires after each name and
// each file's data.
func (cw *cpioWriter) pad() error {
	if r := cw.n % 4; r != 0 {
		return cw.put(make([]byte, 4-r))
	}
	return nil
}
