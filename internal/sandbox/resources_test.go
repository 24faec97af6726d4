package sandbox

import (
	"runtime"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/hypervisor"
)

func limits(quota int64, period uint64, memory int64) *specs.LinuxResources {
	r := &specs.LinuxResources{CPU: &specs.LinuxCPU{}, Memory: &specs.LinuxMemory{}}
	if quota != 0 {
		r.CPU.Quota, r.CPU.Period = &quota, &period
	}
	if memory != 0 {
		r.Memory.Limit = &memory
	}
	return r
}

func TestSizeFor(t *testing.T) {
	h := config.Hypervisor{VCPUs: 1, MemoryMiB: 512, MaxVCPUs: 4, MaxMemoryMiB: 2048}
	tests := []struct {
		name string
		rs   []*specs.LinuxResources
		want hypervisor.Size
	}{
		{"no containers", nil, hypervisor.Size{VCPUs: 1, MemoryMiB: 512}},
		{"no limits", []*specs.LinuxResources{nil, {}, limits(0, 0, 0)}, hypervisor.Size{VCPUs: 1, MemoryMiB: 512}},
		{"half a cpu and 64 MiB", []*specs.LinuxResources{limits(50000, 100000, 64<<20)}, hypervisor.Size{VCPUs: 2, MemoryMiB: 576}},
		{"memory rounded up to MiB", []*specs.LinuxResources{limits(0, 0, 1)}, hypervisor.Size{VCPUs: 1, MemoryMiB: 513}},
		{"two containers add up", []*specs.LinuxResources{limits(200000, 100000, 256<<20), limits(100000, 100000, 128<<20)}, hypervisor.Size{VCPUs: 4, MemoryMiB: 896}},
		{"capped at the maximum", []*specs.LinuxResources{limits(900000, 100000, 8<<30)}, hypervisor.Size{VCPUs: 4, MemoryMiB: 2048}},
		{"unlimited quota (-1) adds nothing", []*specs.LinuxResources{limits(-1, 100000, -1)}, hypervisor.Size{VCPUs: 1, MemoryMiB: 512}},
	}
	for _, tt := range tests {
		if got := SizeFor(h, tt.rs...); got != tt.want {
			t.Errorf("%s: SizeFor = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestMaxSizeDefaultsToTheHost(t *testing.T) {
	got := MaxSize(config.Hypervisor{VCPUs: 1, MemoryMiB: 512})
	if got.VCPUs != min(runtime.NumCPU(), 255) {
		t.Errorf("max vcpus %d, want the host's %d", got.VCPUs, runtime.NumCPU())
	}
	if got.MemoryMiB < 512 || got.MemoryMiB%128 != 0 {
		t.Errorf("max memory %d MiB: want the host's, in whole 128 MiB blocks", got.MemoryMiB)
	}
	// Never below the base size, even on a host smaller than it.
	if got := MaxSize(config.Hypervisor{VCPUs: 300, MemoryMiB: 1 << 30}); got.VCPUs != 300 || got.MemoryMiB != 1<<30 {
		t.Errorf("max below the base size: %+v", got)
	}
}
