package hypervisor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// KVM ioctls (linux/kvm.h).
const (
	kvmGetAPIVersion     = 0xAE00
	kvmCreateVM          = 0xAE01
	kvmGetSupportedCPUID = 0xC008AE05
	kvmAPIVersion        = 12
)

type kvmCPUIDEntry struct {
	Function, Index, Flags, Eax, Ebx, Ecx, Edx uint32
	_                                          [3]uint32
}

type kvmCPUID struct {
	Nent, _ uint32
	Entries [256]kvmCPUIDEntry
}

// baselineFeatures are CPUID leaf 1 ECX bits that every x86-64 CPU of the
// last fifteen years has, by their /proc/cpuinfo names. A KVM that hides
// some of them while the host CPU has them is a nested KVM that does not
// pass the CPU through: guests start there, then hang in early kernel boot
// (seen on Firecracker-hosted machines), so such a KVM does not count.
var baselineFeatures = []struct {
	flag string
	bit  uint
}{{"pni", 0}, {"ssse3", 9}, {"sse4_1", 19}, {"sse4_2", 20}}

var kvmProbe struct {
	once sync.Once
	err  error
}

// KVMUsable reports whether guests can run with KVM on this host.
func KVMUsable() bool { return KVMProbe() == nil }

// KVMProbe says why KVM cannot run guests here, or nil when it can: the
// device must open, speak API version 12, create a VM, and offer guests the
// baseline CPU features the host CPU has. The answer is computed once.
func KVMProbe() error {
	kvmProbe.once.Do(func() { kvmProbe.err = probeKVM("/dev/kvm", "/proc/cpuinfo") })
	return kvmProbe.err
}

func probeKVM(dev, cpuinfo string) error {
	f, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), kvmGetAPIVersion, 0)
	if errno != 0 {
		return fmt.Errorf("%s: KVM_GET_API_VERSION: %w", dev, errno)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("%s: KVM API version %d, want %d", dev, v, kvmAPIVersion)
	}
	vm, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), kvmCreateVM, 0)
	if errno != 0 {
		return fmt.Errorf("%s: KVM_CREATE_VM: %w", dev, errno)
	}
	unix.Close(int(vm))
	var c kvmCPUID
	c.Nent = uint32(len(c.Entries))
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), kvmGetSupportedCPUID, uintptr(unsafe.Pointer(&c))); errno != 0 {
		return fmt.Errorf("%s: KVM_GET_SUPPORTED_CPUID: %w", dev, errno)
	}
	var ecx uint32
	found := false
	for _, e := range c.Entries[:min(int(c.Nent), len(c.Entries))] {
		if e.Function == 1 && e.Index == 0 {
			ecx, found = e.Ecx, true
		}
	}
	if !found {
		return fmt.Errorf("%s: KVM offers no CPUID leaf 1", dev)
	}
	host, err := cpuFlags(cpuinfo)
	if err != nil {
		return err
	}
	return missingFeatures(ecx, host)
}

// missingFeatures names the baseline features the host CPU has and KVM's
// leaf 1 ECX lacks.
func missingFeatures(ecx uint32, host map[string]bool) error {
	var missing []string
	for _, f := range baselineFeatures {
		if host[f.flag] && ecx&(1<<f.bit) == 0 {
			missing = append(missing, f.flag)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("KVM hides CPU features the host has (%s): a nested KVM that guests hang on", strings.Join(missing, " "))
	}
	return nil
}

// cpuFlags reads the first CPU's flags from /proc/cpuinfo.
func cpuFlags(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "flags" {
			flags := make(map[string]bool)
			for _, fl := range strings.Fields(v) {
				flags[fl] = true
			}
			return flags, nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New(path + ": no flags line")
}
