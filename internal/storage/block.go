package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Block is a container root filesystem on a host block device (a loop
// device, a device-mapper thin volume of containerd's devmapper
// snapshotter). It reaches the guest whole, as a hot-plugged virtio-blk
// disk that the guest mounts: the host never mounts it, since a
// filesystem mounted by two kernels at once is corrupted.
type Block struct {
	Device  string   // the host's device node
	Fstype  string   // one of blockFilesystems
	Options []string // mount options, checked again by the guest
}

// blockFilesystems are the filesystems taken on a block device; the guest
// agent accepts the same.
var blockFilesystems = map[string]bool{"ext4": true, "ext3": true, "ext2": true, "xfs": true}

// BlockMount returns the Block for a mount of fstype from source when the
// source is a block device holding a block filesystem, and nil for any
// other mount (a directory, an overlay, a tmpfs, a filesystem type the
// guest does not take on a disk).
func BlockMount(fstype, source string, options []string) (*Block, error) {
	if !blockFilesystems[fstype] {
		return nil, nil
	}
	fi, err := os.Stat(source)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // not a path at all
	}
	if err != nil {
		return nil, fmt.Errorf("rootfs source: %w", err)
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return nil, nil
	}
	return &Block{Device: source, Fstype: fstype, Options: append([]string(nil), options...)}, nil
}

// ReadOnly reports whether the filesystem is mounted read-only, in which
// case the guest gets a read-only disk.
func (b *Block) ReadOnly() bool {
	ro := false
	for _, o := range b.Options {
		switch o {
		case "ro":
			ro = true
		case "rw":
			ro = false
		}
	}
	return ro
}

// CheckUnused fails when the device is mounted on the host, or held
// exclusively by anything else: an exclusive open (O_EXCL on a block
// device) is refused then.
func (b *Block) CheckUnused() error {
	fd, err := unix.Open(b.Device, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("block device %s is in use on the host (mounted?)", b.Device)
	}
	if err != nil {
		return fmt.Errorf("opening block device %s: %w", b.Device, err)
	}
	return unix.Close(fd)
}

// BlockSerial is the virtio-blk serial of container id's root disk: "hull"
// and 16 hex digits of the id's SHA-256, 20 bytes, virtio-blk's limit.
// Derived from the id alone, so that whoever removes the container finds
// the disk again.
func BlockSerial(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "hull" + hex.EncodeToString(sum[:8])
}
