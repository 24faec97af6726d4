package main

import (
	"errors"
	"slices"
	"testing"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/image"
)

func TestSharedFSChecks(t *testing.T) {
	cloud := &image.Image{KernelVersion: "6.1.0-56-cloud-amd64", SharedFS: []string{"virtio-fs"}}
	generic := &image.Image{KernelVersion: "6.1.0-56-amd64", SharedFS: []string{"virtio-fs", "virtio-9p"}}
	noVirtiofsd := errors.New("stat /usr/lib/qemu/virtiofsd: no such file or directory")
	const (
		no9p = "the guest kernel 6.1.0-56-cloud-amd64 has no 9p (build an image from linux-image-amd64: " +
			`hull image build --shared-fs virtio-9p --output /var/lib/hull/image-9p, and set image.dir = "/var/lib/hull/image-9p")`
		noDaemon = "virtiofsd not found at /usr/lib/qemu/virtiofsd (storage.virtiofsd; apt-get install qemu-system-x86)"
	)
	for _, tc := range []struct {
		name      string
		sharedFS  string
		img       *image.Image
		virtiofsd error
		want      []finding
	}{
		{
			name: "cloud image", sharedFS: "virtio-fs", img: cloud,
			want: []finding{
				{"ok", "shared filesystems: virtio-fs (virtiofsd /usr/lib/qemu/virtiofsd)"},
				{"info", "virtio-9p not available: " + no9p},
			},
		},
		{
			name: "9p configured, cloud image", sharedFS: "virtio-9p", img: cloud,
			want: []finding{
				{"ok", "shared filesystems: virtio-fs (virtiofsd /usr/lib/qemu/virtiofsd)"},
				{"FAIL", "storage.shared_fs = virtio-9p, which is not available: " + no9p},
			},
		},
		{
			name: "generic image", sharedFS: "virtio-9p", img: generic,
			want: []finding{{"ok", "shared filesystems: virtio-fs (virtiofsd /usr/lib/qemu/virtiofsd), virtio-9p"}},
		},
		{
			name: "generic image, no virtiofsd", sharedFS: "virtio-9p", img: generic, virtiofsd: noVirtiofsd,
			want: []finding{
				{"ok", "shared filesystems: virtio-9p"},
				{"info", "virtio-fs not available: " + noDaemon},
			},
		},
		{
			name: "virtio-fs configured, no virtiofsd", sharedFS: "virtio-fs", img: cloud, virtiofsd: noVirtiofsd,
			want: []finding{
				{"FAIL", "storage.shared_fs = virtio-fs, which is not available: " + noDaemon},
				{"info", "virtio-9p not available: " + no9p},
			},
		},
		{
			name: "kernel of its own", sharedFS: "virtio-9p", img: nil,
			want: []finding{
				{"ok", "shared filesystems: virtio-fs (virtiofsd /usr/lib/qemu/virtiofsd), virtio-9p"},
				{"info", "cannot tell which shared filesystems the guest kernel /boot/my-kernel mounts: not an image from 'hull image build'"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Storage.SharedFS = tc.sharedFS
			cfg.Hypervisor.Kernel = "/boot/my-kernel"
			got := sharedFSChecks(cfg, tc.img, tc.virtiofsd)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}
