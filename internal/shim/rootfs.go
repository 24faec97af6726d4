package shim

import (
	"github.com/containerd/containerd/api/types"

	"github.com/hullrt/hull/internal/storage"
)

// blockRootfs returns the disk when containerd hands a container a root
// filesystem that is one block device holding a block filesystem (the
// devmapper snapshotter's thin volumes, a loop device): that goes into
// the VM whole and is never mounted on the host. It returns nil for any
// other rootfs (overlay, bind, several mounts), which the host mounts and
// shares with the guest.
func blockRootfs(rootfs []*types.Mount) (*storage.Block, error) {
	if len(rootfs) != 1 || rootfs[0].Target != "" {
		return nil, nil
	}
	m := rootfs[0]
	return storage.BlockMount(m.Type, m.Source, m.Options)
}
