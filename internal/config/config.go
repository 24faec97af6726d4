// Package config loads hull's configuration: one TOML file whose every value
// has a default that works on a fresh machine, validated as a whole before
// anything uses it.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where hull looks for its configuration file.
const DefaultPath = "/etc/hull/config.toml"

// EnvPath names the environment variable that overrides DefaultPath.
const EnvPath = "HULL_CONFIG"

// Config is hull's effective configuration.
type Config struct {
	Runtime    Runtime    `toml:"runtime"`
	Hypervisor Hypervisor `toml:"hypervisor"`
	Storage    Storage    `toml:"storage"`
	Agent      Agent      `toml:"agent"`
	Image      Image      `toml:"image"`

	// Path is the file the configuration came from, "" for built-in defaults.
	Path string `toml:"-"`
}

// Runtime configures the host side of the runtime.
type Runtime struct {
	// Root holds the state of running sandboxes (runc's --root).
	Root string `toml:"root"`
	// SandboxCgroup puts the VMM, its helpers and the monitor or shim in
	// the host cgroup the sandbox's spec names (linux.cgroupsPath), so that
	// the host's accounting sees what the VM costs.
	SandboxCgroup bool `toml:"sandbox_cgroup"`
}

// Hypervisor configures the VMM and the VM it starts.
type Hypervisor struct {
	// Path of the QEMU binary; "" finds qemu-system-x86_64 in PATH.
	Path string `toml:"path"`
	// Accel is "auto" (KVM when /dev/kvm is usable, TCG otherwise), "kvm" or "tcg".
	Accel   string `toml:"accel"`
	Machine string `toml:"machine"`
	// Firmware is the BIOS the VM boots: "auto" (qboot, which jumps
	// straight to the kernel, when QEMU ships it; QEMU's SeaBIOS
	// otherwise), "qemu" (QEMU's default) or the path of a firmware file.
	Firmware string `toml:"firmware"`
	VCPUs    int    `toml:"vcpus"`
	// MemoryMiB is the guest's memory size.
	MemoryMiB int `toml:"memory_mib"`
	// VCPUs and MemoryMiB are a VM's base size; the CPU quotas and memory
	// limits of its containers are added to it, at boot and by hot-plug,
	// up to MaxVCPUs and MaxMemoryMiB (0: the host's CPUs and memory).
	MaxVCPUs     int `toml:"max_vcpus"`
	MaxMemoryMiB int `toml:"max_memory_mib"`
	// TCGTBSizeMiB caps the translation cache of a TCG guest (QEMU's
	// tb-size), which otherwise grows to 1 GiB: memory per VM against
	// time spent translating code again. 0 leaves QEMU's default.
	TCGTBSizeMiB int `toml:"tcg_tb_size_mib"`
	// FreePageReporting gives the VM a virtio-balloon that reports the
	// memory the guest frees, which QEMU then returns to the host: the
	// VMM's RSS shrinks to what the guest uses.
	FreePageReporting bool `toml:"free_page_reporting"`
	// Kernel and Initrd default to the files `hull image build` writes.
	Kernel       string   `toml:"kernel"`
	Initrd       string   `toml:"initrd"`
	KernelParams string   `toml:"kernel_params"`
	BootTimeout  Duration `toml:"boot_timeout"`
	// HotplugPorts is how many empty PCIe root ports a q35 VM boots with,
	// for the block devices (a container's rootfs on a block device)
	// plugged in while it runs; one each. Each port costs boot time.
	HotplugPorts int `toml:"hotplug_ports"`
	// EnableAnnotations lists the keys (e.g. "vcpus", "memory_mib",
	// "kernel_params", "boot_timeout") that a pod may override with
	// io.hull.config.hypervisor.KEY annotations. None by default.
	EnableAnnotations []string `toml:"enable_annotations"`
}

// Storage configures how container filesystems reach the guest.
type Storage struct {
	// SharedFS is "virtio-fs" (default; works with Debian's cloud kernel) or
	// "virtio-9p" (needs a guest kernel with 9p, e.g. linux-image-amd64).
	SharedFS  string `toml:"shared_fs"`
	Virtiofsd string `toml:"virtiofsd"`
}

// Agent configures the host<->guest channel and the agent.
type Agent struct {
	// Channel is "auto" (vsock when /dev/vhost-vsock exists, else
	// virtio-serial), "virtio-serial" or "vsock".
	Channel string `toml:"channel"`
	// RequestTimeout bounds every agent call that is not a wait.
	RequestTimeout Duration `toml:"request_timeout"`
	// Debug makes the agent log at debug level to the guest console.
	Debug bool `toml:"debug"`
}

// Image configures the guest image that `hull image build` writes.
type Image struct {
	Dir string `toml:"dir"`
	// AgentPath is the hull-agent binary; "" means next to the hull binary.
	AgentPath string `toml:"agent"`
	// KernelVersion picks an installed kernel; "" means the newest cloud kernel.
	KernelVersion string `toml:"kernel_version"`
	// Kernel, instead of KernelVersion, is a kernel file with everything
	// built in: "tuned" for the one `hull image kernel` built, or a path.
	Kernel string `toml:"kernel"`
}

// Duration is a time.Duration written as a string ("30s") in TOML.
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Default returns the built-in configuration.
func Default() *Config {
	return &Config{
		Runtime: Runtime{Root: "/run/hull", SandboxCgroup: true},
		Hypervisor: Hypervisor{
			Accel:             "auto",
			Machine:           "q35",
			Firmware:          "auto",
			VCPUs:             1,
			MemoryMiB:         512,
			BootTimeout:       Duration{30 * time.Second},
			HotplugPorts:      2,
			FreePageReporting: true,
		},
		Storage: Storage{SharedFS: "virtio-fs", Virtiofsd: "/usr/lib/qemu/virtiofsd"},
		Agent:   Agent{Channel: "auto", RequestTimeout: Duration{30 * time.Second}},
		Image:   Image{Dir: "/var/lib/hull/image"},
	}
}

// Load reads the configuration from path, or from $HULL_CONFIG or
// DefaultPath when path is "". A missing default file means built-in
// defaults; a missing file that was asked for is an error.
func Load(path string) (*Config, error) {
	explicit := path != ""
	if !explicit {
		path = os.Getenv(EnvPath)
		explicit = path != ""
	}
	if path == "" {
		path = DefaultPath
	}
	c := Default()
	md, err := toml.DecodeFile(path, c)
	switch {
	case errors.Is(err, os.ErrNotExist) && !explicit:
		c.Path = ""
	case err != nil:
		return nil, fmt.Errorf("loading config %s: %w", path, err)
	default:
		c.Path = path
		if u := md.Undecoded(); len(u) > 0 {
			keys := make([]string, len(u))
			for i, k := range u {
				keys[i] = k.String()
			}
			return nil, fmt.Errorf("config %s: unknown keys: %s", path, strings.Join(keys, ", "))
		}
	}
	c.fill()
	if err := c.Validate(); err != nil {
		if c.Path != "" {
			return nil, fmt.Errorf("config %s: %w", c.Path, err)
		}
		return nil, err
	}
	return c, nil
}

// fill derives the values whose defaults depend on other values.
func (c *Config) fill() {
	if c.Hypervisor.Kernel == "" {
		c.Hypervisor.Kernel = filepath.Join(c.Image.Dir, "vmlinuz")
	}
	if c.Hypervisor.Initrd == "" {
		c.Hypervisor.Initrd = filepath.Join(c.Image.Dir, "initrd.img")
	}
}

// Validate checks every value; the error names the first bad key.
func (c *Config) Validate() error {
	h := c.Hypervisor
	checks := []struct {
		ok  bool
		msg string
	}{
		{filepath.IsAbs(c.Runtime.Root), "runtime.root must be an absolute path"},
		{oneOf(h.Accel, "auto", "kvm", "tcg"), `hypervisor.accel must be "auto", "kvm" or "tcg"`},
		{oneOf(h.Machine, "q35", "pc", "microvm"), `hypervisor.machine must be "q35", "pc" or "microvm"`},
		// QEMU 7.2's virtiofsd refuses microvm's guest memory map.
		{h.Machine != "microvm" || c.Storage.SharedFS == "virtio-9p", `hypervisor.machine = "microvm" needs storage.shared_fs = "virtio-9p" (virtiofsd does not serve a microvm)`},
		{oneOf(h.Firmware, "auto", "qemu") || filepath.IsAbs(h.Firmware), `hypervisor.firmware must be "auto", "qemu" or an absolute path`},
		{h.VCPUs >= 1 && h.VCPUs <= 255, "hypervisor.vcpus must be between 1 and 255"},
		{h.MemoryMiB >= 64 && h.MemoryMiB <= 1<<20, "hypervisor.memory_mib must be between 64 and 1048576"},
		{h.MaxVCPUs == 0 || (h.MaxVCPUs >= h.VCPUs && h.MaxVCPUs <= 255), "hypervisor.max_vcpus must be 0 (the host's CPUs) or between vcpus and 255"},
		{h.MaxMemoryMiB == 0 || (h.MaxMemoryMiB >= h.MemoryMiB && h.MaxMemoryMiB <= 1<<24), "hypervisor.max_memory_mib must be 0 (the host's memory) or between memory_mib and 16777216"},
		{h.TCGTBSizeMiB >= 0 && h.TCGTBSizeMiB <= 4096, "hypervisor.tcg_tb_size_mib must be between 0 (QEMU's default) and 4096"},
		{h.BootTimeout.Duration > 0, "hypervisor.boot_timeout must be positive"},
		{h.HotplugPorts >= 0 && h.HotplugPorts <= 16, "hypervisor.hotplug_ports must be between 0 and 16"},
		{!strings.ContainsAny(h.KernelParams, "\n\x00"), "hypervisor.kernel_params must be one line"},
		{oneOf(c.Storage.SharedFS, "virtio-fs", "virtio-9p"), `storage.shared_fs must be "virtio-fs" or "virtio-9p"`},
		{oneOf(c.Agent.Channel, "auto", "virtio-serial", "vsock"), `agent.channel must be "auto", "virtio-serial" or "vsock"`},
		{c.Agent.RequestTimeout.Duration > 0, "agent.request_timeout must be positive"},
		{filepath.IsAbs(c.Image.Dir), "image.dir must be an absolute path"},
		{c.Image.Kernel == "" || c.Image.Kernel == "tuned" || filepath.IsAbs(c.Image.Kernel), `image.kernel must be "tuned" or an absolute path`},
		{c.Image.Kernel == "" || c.Image.KernelVersion == "", "image.kernel and image.kernel_version are mutually exclusive"},
	}
	for _, ch := range checks {
		if !ch.ok {
			return errors.New(ch.msg)
		}
	}
	return nil
}

func oneOf(v string, allowed ...string) bool {
	for _, a := range allowed {
		if v == a {
			return true
		}
	}
	return false
}

// Encode writes c as TOML.
func (c *Config) Encode(w interface{ Write([]byte) (int, error) }) error {
	return toml.NewEncoder(w).Encode(c)
}
