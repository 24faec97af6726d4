package qemu

import (
	"net"
	"strings"
	"testing"

	"github.com/hullrt/hull/internal/hypervisor"
)

func baseVM() hypervisor.VM {
	return hypervisor.VM{
		ID: "c1", StateDir: "/run/hull/c1", Accel: hypervisor.AccelTCG,
		VCPUs: 2, MemoryMiB: 256, Kernel: "/img/vmlinuz", Initrd: "/img/initrd.img",
		KernelParams:  []string{"console=ttyS0", "quiet"},
		Channel:       hypervisor.ChannelSerial,
		ChannelSocket: "/run/hull/c1/agent.sock",
	}
}

// argValues returns the values given to flag, in order.
func argValues(args []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			out = append(out, args[i+1])
		}
	}
	return out
}

func hasArg(args []string, flag, substr string) bool {
	for _, v := range argValues(args, flag) {
		if strings.Contains(v, substr) {
			return true
		}
	}
	return false
}

func TestArgs(t *testing.T) {
	tests := []struct {
		name  string
		vm    func(*hypervisor.VM)
		want  [][2]string // flag, substring of its value
		avoid [][2]string
	}{
		{
			name: "tcg serial",
			want: [][2]string{
				{"-machine", "q35,accel=tcg"}, {"-cpu", "max"}, {"-smp", "2"}, {"-m", "256M"},
				{"-append", "console=ttyS0 quiet"},
				{"-chardev", "socket,id=agent,path=/run/hull/c1/agent.sock,server=on,wait=off"},
				{"-device", "virtserialport,id=agentport,chardev=agent,name=agent.channel.0"},
				{"-qmp", "unix:/run/hull/c1/qmp.sock"},
				{"-chardev", "file,id=console,path=/run/hull/c1/console.log"},
			},
			avoid: [][2]string{{"-device", "vhost-vsock"}, {"-object", "memory-backend"}},
		},
		{
			name: "kvm vsock",
			vm: func(v *hypervisor.VM) {
				v.Accel = hypervisor.AccelKVM
				v.Channel = hypervisor.ChannelVsock
				v.VsockCID = 42
			},
			want:  [][2]string{{"-machine", "accel=kvm"}, {"-cpu", "host"}, {"-device", "vhost-vsock-pci,id=vsock0,guest-cid=42"}},
			avoid: [][2]string{{"-device", "virtserialport"}},
		},
		{
			name: "tcg translation cache capped",
			vm:   func(v *hypervisor.VM) { v.TBSizeMiB = 64 },
			want: [][2]string{{"-machine", "q35"}, {"-accel", "tcg,tb-size=64"}},
			// -accel and -machine accel= are mutually exclusive.
			avoid: [][2]string{{"-machine", "accel="}},
		},
		{
			name: "firmware",
			vm:   func(v *hypervisor.VM) { v.Firmware = "/usr/share/qemu/qboot.rom" },
			want: [][2]string{{"-bios", "/usr/share/qemu/qboot.rom"}},
		},
		{
			name: "free page reporting",
			vm:   func(v *hypervisor.VM) { v.FreePageReporting = true },
			want: [][2]string{{"-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on"}},
		},
		{
			name: "growable",
			vm:   func(v *hypervisor.VM) { v.MaxVCPUs, v.MaxMemoryMiB = 4, 4096 },
			want: [][2]string{{"-smp", "2,maxcpus=4"}, {"-m", "size=256M,slots=16,maxmem=4096M"}, {"-qmp", "unix:/run/hull/c1/qmp-ctl.sock"}},
		},
		{
			name: "virtio-fs needs shared memory",
			vm: func(v *hypervisor.VM) {
				v.SharedFS = []hypervisor.SharedFS{{Kind: hypervisor.VirtioFS, Tag: "hullfs", Socket: "/run/hull/c1/vfs.sock"}}
			},
			want: [][2]string{
				{"-machine", "memory-backend=mem"},
				{"-object", "memory-backend-memfd,id=mem,size=256M,share=on"},
				{"-chardev", "socket,id=fs0,path=/run/hull/c1/vfs.sock"},
				{"-device", "vhost-user-fs-pci,chardev=fs0,tag=hullfs"},
			},
		},
		{
			name: "virtio-9p",
			vm: func(v *hypervisor.VM) {
				v.SharedFS = []hypervisor.SharedFS{{Kind: hypervisor.Virtio9P, Tag: "hullfs", Source: "/run/hull/c1/shared"}}
			},
			want:  [][2]string{{"-fsdev", "local,id=fs0,path=/run/hull/c1/shared,security_model=passthrough"}, {"-device", "virtio-9p-pci,fsdev=fs0,mount_tag=hullfs"}},
			avoid: [][2]string{{"-object", "memory-backend"}},
		},
		{
			name: "template",
			vm: func(v *hypervisor.VM) {
				v.SharedFS = []hypervisor.SharedFS{{Kind: hypervisor.Virtio9P, Tag: "hullfs", Source: "/run/hull/c1/shared"}}
				v.Template = &hypervisor.Template{RAM: "/run/hull/t/ram", State: "/run/hull/t/state"}
			},
			want: [][2]string{
				{"-machine", "memory-backend=mem"},
				{"-object", "memory-backend-file,id=mem,size=256M,mem-path=/run/hull/t/ram,share=on"},
			},
			avoid: [][2]string{{"-incoming", ""}, {"-object", "memory-backend-memfd"}},
		},
		{
			name: "clone of a template",
			vm: func(v *hypervisor.VM) {
				v.Template = &hypervisor.Template{RAM: "/run/hull/t/ram", State: "/run/hull/t/state", Clone: true}
			},
			want: [][2]string{
				{"-machine", "memory-backend=mem"},
				// Copy on write: a clone never writes the template's pages.
				{"-object", "memory-backend-file,id=mem,size=256M,mem-path=/run/hull/t/ram,share=off"},
				{"-incoming", "defer"},
			},
		},
		{
			name: "two nics on inherited taps",
			vm: func(v *hypervisor.VM) {
				v.NICs = []hypervisor.NIC{
					{MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 1}},
					{MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 2}},
				}
			},
			want: [][2]string{
				{"-netdev", "tap,id=net0,fd=3"}, {"-device", "virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01"},
				{"-netdev", "tap,id=net1,fd=4"}, {"-device", "virtio-net-pci,netdev=net1,mac=02:00:00:00:00:02"},
			},
			avoid: [][2]string{{"-netdev", "vhost=on"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := baseVM()
			if tt.vm != nil {
				tt.vm(&vm)
			}
			args := New("", "q35", vm).Args()
			for _, w := range tt.want {
				if !hasArg(args, w[0], w[1]) {
					t.Errorf("missing %s %s in %q", w[0], w[1], args)
				}
			}
			for _, a := range tt.avoid {
				if hasArg(args, a[0], a[1]) {
					t.Errorf("unexpected %s %s in %q", a[0], a[1], args)
				}
			}
			for _, f := range []string{"-nodefaults", "-no-user-config", "-no-reboot"} {
				found := false
				for _, a := range args {
					found = found || a == f
				}
				if !found {
					t.Errorf("missing %s", f)
				}
			}
		})
	}
}

func TestArgsMicrovm(t *testing.T) {
	vm := baseVM()
	vm.FreePageReporting = true
	vm.HotplugPorts = 2
	vm.SharedFS = []hypervisor.SharedFS{{Kind: hypervisor.Virtio9P, Tag: "hullfs", Source: "/run/hull/c1/shared"}}
	vm.NICs = []hypervisor.NIC{{MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 1}}}
	args := New("", Microvm, vm).Args()
	for _, w := range [][2]string{
		{"-machine", "microvm,accel=tcg"},
		{"-device", "virtio-serial-device,id=serial0"},
		{"-device", "virtio-9p-device,fsdev=fs0"},
		{"-device", "virtio-net-device,netdev=net0"},
		{"-device", "virtio-balloon-device"},
	} {
		if !hasArg(args, w[0], w[1]) {
			t.Errorf("missing %s %s in %q", w[0], w[1], args)
		}
	}
	// MMIO only, and no hot-plug ports: a microvm has no PCI.
	for _, a := range [][2]string{{"-device", "-pci"}, {"-device", "pcie-root-port"}} {
		if hasArg(args, a[0], a[1]) {
			t.Errorf("unexpected %s %s in %q", a[0], a[1], args)
		}
	}
}
