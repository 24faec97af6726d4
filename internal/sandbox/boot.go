package sandbox

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	agent "github.com/hullrt/hull/api/agent/v1"
	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/hypervisor"
	"github.com/hullrt/hull/internal/hypervisor/qemu"
)

// QbootPath is where Debian's QEMU installs qboot, a firmware that only
// loads the kernel QEMU was given: under TCG it reaches the kernel ~0.1 s
// sooner than SeaBIOS.
const QbootPath = "/usr/share/qemu/qboot.rom"

// Firmware is the firmware file the VM boots with ("" for QEMU's default).
func Firmware(h config.Hypervisor) (string, error) {
	switch h.Firmware {
	case "qemu":
		return "", nil
	case "", "auto":
		if h.Machine == qemu.Microvm {
			return "", nil // QEMU's bios-microvm, a qboot already
		}
		if _, err := os.Stat(QbootPath); err == nil {
			return QbootPath, nil
		}
		return "", nil
	}
	if _, err := os.Stat(h.Firmware); err != nil {
		return "", fmt.Errorf("hypervisor.firmware: %w", err)
	}
	return h.Firmware, nil
}

// KernelParams is the guest kernel command line under accel: hull's own
// parameters, then extra, then the configuration's kernel_params, last so
// that they override.
func KernelParams(cfg *config.Config, accel hypervisor.Accel, extra ...string) []string {
	p := []string{
		"console=ttyS0", "quiet", "panic=-1", "rdinit=/init",
		// Skip probes that only cost boot time in a VM.
		"tsc=reliable", "no_timer_check", "noreplace-smp",
		"i8042.noaux", "i8042.nomux", "i8042.nopnp", "i8042.dumbkbd",
		// Memory hot-plug puts possible RAM above 4 GiB, for which the
		// kernel would set 64 MiB aside as DMA bounce buffers; virtio
		// devices without an IOMMU never use them.
		"swiotlb=noforce",
	}
	if cfg.Agent.Debug {
		p = append(p, "hull.log=debug")
	}
	if accel == hypervisor.AccelTCG {
		// QEMU emulates the local APIC timer at 1 GHz. hull's tuned kernel
		// takes that rate instead of timing the timer for 0.11 s (design
		// 011); other kernels drop a hull.* parameter unread.
		p = append(p, "hull.apic_timer_hz="+strconv.Itoa(qemu.APICTimerHz))
		// A microvm has neither HPET nor ACPI PM timer to calibrate the
		// TSC against, and under TCG the PIT calibration fails now and
		// then: the guest then marks its TSC unstable and hangs. A TCG
		// guest's TSC ticks at the host's rate: give it that.
		if cfg.Hypervisor.Machine == qemu.Microvm {
			if khz := hostTSCKHz(); khz > 0 {
				p = append(p, fmt.Sprintf("tsc_early_khz=%d", khz))
			}
		}
	}
	p = append(p, extra...)
	return append(p, strings.Fields(cfg.Hypervisor.KernelParams)...)
}

// kernelParams is the command line of this sandbox's guest: a pool's VMs
// warm the container path up before they are claimed.
func (s *Sandbox) kernelParams(accel hypervisor.Accel) []string {
	if s.forPool {
		return KernelParams(s.cfg, accel, agent.WarmParam+"=1")
	}
	return KernelParams(s.cfg, accel)
}

// hostTSCKHz is the host CPU's frequency in kHz as /proc/cpuinfo gives
// it (the TSC's, where the kernel has no cpufreq driver), 0 if unknown.
func hostTSCKHz() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return cpuinfoKHz(string(b))
}

// cpuinfoKHz reads the first "cpu MHz" of a /proc/cpuinfo.
func cpuinfoKHz(cpuinfo string) int {
	for _, l := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || mhz <= 0 {
			return 0
		}
		return int(mhz * 1000)
	}
	return 0
}
