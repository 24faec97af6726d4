// Package hypervisor defines what hull needs from a virtual machine monitor,
// as a small interface with typed devices; each VMM (qemu/, later
// firecracker/ and cloudhypervisor/) implements it in a package of its own.
// Capabilities that not every VMM has (hot-plug, snapshots, pause) are
// separate interfaces, found by type assertion.
package hypervisor

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Hypervisor runs one VM.
type Hypervisor interface {
	// Start launches the VMM and returns once it runs the guest.
	Start(ctx context.Context) error
	// Stop asks the VMM to quit and kills it when it does not in time.
	Stop(ctx context.Context) error
	// Pid is the VMM's process id, 0 before Start.
	Pid() int
	// Done is closed when the VMM process has exited.
	Done() <-chan struct{}
	// ConsoleLog is the file that receives the guest's console output.
	ConsoleLog() string
}

// Accel is how guest code runs.
type Accel string

const (
	AccelKVM Accel = "kvm"
	AccelTCG Accel = "tcg" // software emulation: slow, works everywhere
)

// ChannelKind is the transport of the host<->guest agent channel.
type ChannelKind string

const (
	ChannelSerial ChannelKind = "virtio-serial"
	ChannelVsock  ChannelKind = "vsock"
)

// SharedFSKind is the protocol that shares host directories with the guest.
type SharedFSKind string

const (
	VirtioFS SharedFSKind = "virtio-fs"
	Virtio9P SharedFSKind = "virtio-9p"
)

// SharedFS is a host directory exported to the guest under Tag.
type SharedFS struct {
	Kind   SharedFSKind
	Source string
	Tag    string
	// Socket is the vhost-user socket of the virtio-fs daemon.
	Socket string
}

// NIC is a virtio-net device backed by a tap device the runtime opened.
type NIC struct {
	MAC net.HardwareAddr
	// Tap is the tap's file descriptor, which the VMM inherits.
	Tap *os.File
}

// VM describes the virtual machine to run.
type VM struct {
	ID        string
	StateDir  string // sockets and logs of this VM
	Accel     Accel
	VCPUs     int
	MemoryMiB int
	// MaxVCPUs and MaxMemoryMiB bound what can be hot-plugged later; a
	// value not above VCPUs or MemoryMiB means a VM that cannot grow.
	MaxVCPUs     int
	MaxMemoryMiB int
	// Firmware is the BIOS image to boot; "" is the VMM's default.
	Firmware     string
	Kernel       string
	Initrd       string
	KernelParams []string
	Channel      ChannelKind
	// ChannelSocket is the unix socket behind the virtio-serial agent port.
	ChannelSocket string
	VsockCID      uint32
	SharedFS      []SharedFS
	NICs          []NIC
	// HotplugPorts is how many empty PCIe root ports a q35 VM gets for
	// devices plugged in while it runs (block.go).
	HotplugPorts int
	// Detached VMMs outlive the process that starts them: a pool boots
	// VMs for others to adopt.
	Detached bool
	// TBSizeMiB caps TCG's translation cache; 0 leaves QEMU's default.
	TBSizeMiB int
	// FreePageReporting adds a balloon through which the guest reports
	// the pages it frees, for the VMM to give back to the host.
	FreePageReporting bool
	// Nice lowers the VMM's CPU priority (a pool's VMs boot behind the
	// work of claimed ones); Renice restores it.
	Nice int
	// Template, when set, keeps the guest's RAM in a file: the VM boots to
	// become a template, or starts as a clone of one (docs/design/017).
	Template *Template
}

// Template is a VM saved for others to start from: its RAM, a file on a
// tmpfs, and its device state.
type Template struct {
	RAM, State string
	// Clone starts the VM from the template instead of booting it: RAM is
	// mapped copy-on-write, so clones share the pages none of them wrote,
	// and the device state is loaded from State.
	Clone bool
}

// Size is how many vCPUs and how much memory a VM has.
type Size struct {
	VCPUs     int
	MemoryMiB int
}

// VhostNetUsable reports whether the host can move guest network traffic
// in the kernel (vhost-net) rather than in the VMM.
func VhostNetUsable() bool { return deviceUsable("/dev/vhost-net") }

// VhostVsockUsable reports whether the host can give guests a vsock device.
func VhostVsockUsable() bool { return deviceUsable("/dev/vhost-vsock") }

func deviceUsable(path string) bool {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// ErrNotRunning is returned when the VMM has already exited.
var ErrNotRunning = errors.New("vmm is not running")

// ProcessAlive reports whether pid names a live process.
func ProcessAlive(pid int) bool {
	return pid > 0 && unix.Kill(pid, 0) == nil
}

// KillReferencing SIGKILLs every process (but this one) whose command line
// contains s, such as a VM's state directory: how VMM and virtiofsd
// processes are found after the process that started them crashed. It
// returns once they have exited, or after killWait.
func KillReferencing(s string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var killed []int
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(s)) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err == nil && pid != os.Getpid() && unix.Kill(pid, unix.SIGKILL) == nil {
			killed = append(killed, pid)
		}
	}
	// SIGKILL is delivered at once, but a VMM takes a while to exit (its
	// guest's memory is unmapped): the caller must not find it alive.
	for deadline := time.Now().Add(killWait); len(killed) > 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		killed = slices.DeleteFunc(killed, gone)
	}
}

// killWait bounds how long KillReferencing waits for what it killed.
const killWait = 5 * time.Second

// gone reports whether process pid has exited: it no longer exists, or it
// is a zombie that only its parent's wait would remove.
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}
