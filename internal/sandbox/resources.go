package sandbox

import (
	"context"
	"fmt"
	"runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/agentclient"
	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/hypervisor"
	"github.com/hullrt/hull/internal/hypervisor/qemu"
)

// MaxSize is the most a VM may grow to: hypervisor.max_vcpus and
// max_memory_mib, or by default the host's CPUs and memory (never less
// than the base size).
func MaxSize(h config.Hypervisor) hypervisor.Size {
	top := hypervisor.Size{VCPUs: h.MaxVCPUs, MemoryMiB: h.MaxMemoryMiB}
	if top.VCPUs == 0 {
		top.VCPUs = min(runtime.NumCPU(), 255)
	}
	if top.MemoryMiB == 0 {
		var si unix.Sysinfo_t
		if unix.Sysinfo(&si) == nil {
			total := int(uint64(si.Totalram) * uint64(si.Unit) >> 20)
			top.MemoryMiB = total / qemu.MemoryBlockMiB * qemu.MemoryBlockMiB
		}
	}
	top.VCPUs = max(top.VCPUs, h.VCPUs)
	top.MemoryMiB = max(top.MemoryMiB, h.MemoryMiB)
	return top
}

// SizeFor is the VM size for containers with resources rs, as Kata sizes
// its VMs: the base size (hypervisor.vcpus and memory_mib, what the guest
// kernel and agent need) plus each container's CPU quota, rounded up to
// whole CPUs, and memory limit; capped at MaxSize. Containers without
// limits add nothing and share the base.
func SizeFor(h config.Hypervisor, rs ...*specs.LinuxResources) hypervisor.Size {
	size := hypervisor.Size{VCPUs: h.VCPUs, MemoryMiB: h.MemoryMiB}
	for _, r := range rs {
		if r == nil {
			continue
		}
		if c := r.CPU; c != nil && c.Quota != nil && c.Period != nil && *c.Quota > 0 && *c.Period > 0 {
			period := int64(*c.Period)
			size.VCPUs += int((*c.Quota + period - 1) / period)
		}
		if m := r.Memory; m != nil && m.Limit != nil && *m.Limit > 0 {
			size.MemoryMiB += int((*m.Limit + 1<<20 - 1) >> 20)
		}
	}
	top := MaxSize(h)
	size.VCPUs = min(size.VCPUs, top.VCPUs)
	size.MemoryMiB = min(size.MemoryMiB, top.MemoryMiB)
	return size
}

// Grow fits the running VM whose state directory is dir to containers with
// resources rs: it hot-plugs the vCPUs and memory SizeFor asks beyond what
// the VM has, and waits for the guest to bring them online. It never
// shrinks the VM; limits that go down only tighten the guest's cgroups.
func Grow(ctx context.Context, cfg *config.Config, dir string, ag *agentclient.Client, rs ...*specs.LinuxResources) (hypervisor.Size, error) {
	want := SizeFor(cfg.Hypervisor, rs...)
	if cfg.Hypervisor.Machine == qemu.Microvm {
		return qemu.Fits(ctx, dir, want)
	}
	got, err := qemu.Grow(ctx, dir, want)
	if err != nil {
		return got, fmt.Errorf("growing the vm to %d vcpus and %d MiB: %w", want.VCPUs, want.MemoryMiB, err)
	}
	if _, _, err := ag.OnlineCPUMem(ctx, got.VCPUs, got.MemoryMiB); err != nil {
		return got, fmt.Errorf("onlining %d vcpus and %d MiB in the guest: %w", got.VCPUs, got.MemoryMiB, err)
	}
	return got, nil
}

// Grow fits the sandbox's VM to containers with resources rs (see Grow).
func (s *Sandbox) Grow(ctx context.Context, rs ...*specs.LinuxResources) (hypervisor.Size, error) {
	return Grow(ctx, s.cfg, s.Dir, s.Agent, rs...)
}
