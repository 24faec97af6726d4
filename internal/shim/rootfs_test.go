package shim

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/containerd/api/types"
)

func TestBlockRootfs(t *testing.T) {
	var dev string
	names, _ := filepath.Glob("/sys/block/*")
	for _, n := range names {
		d := filepath.Join("/dev", filepath.Base(n))
		if fi, err := os.Stat(d); err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
			dev = d
			break
		}
	}
	if dev == "" {
		t.Skip("no block device to try")
	}
	dir := t.TempDir()
	overlay := &types.Mount{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=" + dir}}
	tests := []struct {
		name   string
		rootfs []*types.Mount
		block  bool
	}{
		{"no rootfs (bundle's own)", nil, false},
		{"devmapper ext4", []*types.Mount{{Type: "ext4", Source: dev}}, true},
		{"devmapper xfs read-only", []*types.Mount{{Type: "xfs", Source: dev, Options: []string{"ro", "nouuid"}}}, true},
		{"overlay snapshot", []*types.Mount{overlay}, false},
		{"bind of a directory", []*types.Mount{{Type: "bind", Source: dir, Options: []string{"rbind"}}}, false},
		{"ext4 from a file", []*types.Mount{{Type: "ext4", Source: filepath.Join(dir, "x")}}, false},
		{"block device, not a block filesystem", []*types.Mount{{Type: "squashfs", Source: dev}}, false},
		{"two mounts", []*types.Mount{{Type: "ext4", Source: dev}, overlay}, false},
		{"mount below the root", []*types.Mount{{Type: "ext4", Source: dev, Target: "data"}}, false},
	}
	for _, tt := range tests {
		b, err := blockRootfs(tt.rootfs)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if (b != nil) != tt.block {
			t.Errorf("%s: block rootfs = %+v, want block %v", tt.name, b, tt.block)
		}
		if b != nil && (b.Device != dev || b.Fstype != tt.rootfs[0].Type) {
			t.Errorf("%s: %+v", tt.name, b)
		}
	}
}
