package sandbox

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	agent "github.com/hullrt/hull/api/agent/v1"
	"github.com/hullrt/hull/internal/hypervisor"
	"github.com/hullrt/hull/internal/hypervisor/qemu"
	"github.com/hullrt/hull/internal/oci"
	"github.com/hullrt/hull/internal/storage"
)

// unplugTimeout bounds how long removing a container waits for the guest
// to let its disk go.
const unplugTimeout = 10 * time.Second

// ContainerOpt is an option of CreateContainer.
type ContainerOpt func(*containerOpts)

type containerOpts struct {
	block *storage.Block
}

// WithBlockRootfs gives the container the root filesystem on block device
// b: hot-plugged into the VM as a virtio-blk disk and mounted by the guest
// agent, instead of the bundle's rootfs directory shared with the guest.
// RemoveContainer unplugs it again.
func WithBlockRootfs(b *storage.Block) ContainerOpt {
	return func(o *containerOpts) { o.block = b }
}

// attachBlock plugs container cid's root disk into the VM and returns the
// storage that has the agent mount it.
func (s *Sandbox) attachBlock(ctx context.Context, cid string, b *storage.Block) (*agent.Storage, error) {
	if err := b.CheckUnused(); err != nil {
		return nil, err
	}
	serial := storage.BlockSerial(cid)
	dev := hypervisor.BlockDevice{Path: b.Device, ReadOnly: b.ReadOnly(), Serial: serial}
	if err := qemu.AttachBlock(ctx, s.Dir, s.cfg.Hypervisor.Machine, dev); err != nil {
		return nil, fmt.Errorf("hot-plugging rootfs %s: %w", b.Device, err)
	}
	if s.blocks == nil {
		s.blocks = map[string]bool{}
	}
	s.blocks[cid] = true
	return &agent.Storage{
		Driver:     agent.DriverBlk,
		Source:     serial,
		Fstype:     b.Fstype,
		MountPoint: filepath.Join(agent.StorageDir, cid, "rootfs"),
		Options:    b.Options,
	}, nil
}

// detachBlock unplugs container cid's root disk, if it has one, once the
// guest has unmounted it.
func (s *Sandbox) detachBlock(ctx context.Context, cid string) error {
	if !s.blocks[cid] {
		return nil
	}
	select {
	case <-s.vm.Done():
		delete(s.blocks, cid) // went with the VMM
		return nil
	default:
	}
	ctx, cancel := context.WithTimeout(ctx, unplugTimeout)
	defer cancel()
	if err := qemu.DetachBlock(ctx, s.Dir, storage.BlockSerial(cid)); err != nil {
		return fmt.Errorf("unplugging rootfs of %s: %w", cid, err)
	}
	delete(s.blocks, cid)
	return nil
}

// guestRootfs gets container cid's root filesystem into the guest: the
// bundle's rootfs directory through the share, or the disk of
// WithBlockRootfs. It returns the guest path and the storages the agent is
// to mount for it.
func (s *Sandbox) guestRootfs(ctx context.Context, cid string, b *oci.Bundle, opts []ContainerOpt) (string, []*agent.Storage, error) {
	var o containerOpts
	for _, opt := range opts {
		opt(&o)
	}
	if o.block == nil {
		path, err := s.share.BindRootfs(cid, b.Rootfs)
		return path, nil, err
	}
	st, err := s.attachBlock(ctx, cid, o.block)
	if err != nil {
		return "", nil, err
	}
	return st.MountPoint, []*agent.Storage{st}, nil
}
