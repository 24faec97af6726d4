package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/hypervisor"
)

type consoleOnly struct {
	hypervisor.Hypervisor
	log string
}

func (c consoleOnly) ConsoleLog() string { return c.log }

func TestConsoleTail(t *testing.T) {
	tests := []struct{ console, want string }{
		{"", "guest console is empty"},
		{"\x1bc\x1b[?7l\x1b[2JSeaBIOS\r\nBooting from ROM...\n", "guest console: Booting from ROM..."},
		{"[ 1.2] Run /nope as init process\n[ 1.3] Kernel panic - not syncing: No working init found.\n[ 1.4] Call Trace:\n[ 1.5]  </TASK>\n",
			"guest console: Kernel panic - not syncing: No working init found."},
	}
	for _, tt := range tests {
		p := filepath.Join(t.TempDir(), "console.log")
		if err := os.WriteFile(p, []byte(tt.console), 0o600); err != nil {
			t.Fatal(err)
		}
		s := &Sandbox{vm: consoleOnly{log: p}}
		if got := s.consoleTail(); got != tt.want {
			t.Errorf("consoleTail(%q) = %q, want %q", tt.console, got, tt.want)
		}
	}
}

func TestKernelParams(t *testing.T) {
	cfg := config.Default()
	cfg.Hypervisor.KernelParams = "foo=1  bar"
	cfg.Agent.Debug = true
	p := strings.Join(KernelParams(cfg, hypervisor.AccelTCG, "extra=1"), " ")
	for _, want := range []string{"console=ttyS0", "panic=-1", "hull.log=debug", "hull.apic_timer_hz=1000000000", "extra=1 foo=1 bar"} {
		if !strings.Contains(p, want) {
			t.Errorf("kernel params %q lack %q", p, want)
		}
	}
	if !strings.HasSuffix(p, "foo=1 bar") {
		t.Errorf("user params must come last to override: %q", p)
	}
	// Under KVM the TSC deadline timer needs no rate, and another APIC's
	// may differ.
	if p := strings.Join(KernelParams(cfg, hypervisor.AccelKVM), " "); strings.Contains(p, "apic_timer_hz") {
		t.Errorf("KVM guest given the TCG APIC's rate: %q", p)
	}
}

func TestAccelAndChannel(t *testing.T) {
	cfg := config.Default()
	cfg.Hypervisor.Accel = "tcg"
	if a, err := Accel(cfg); err != nil || a != hypervisor.AccelTCG {
		t.Errorf("tcg: %v %v", a, err)
	}
	cfg.Hypervisor.Accel = "kvm"
	a, err := Accel(cfg)
	if hypervisor.KVMUsable() != (err == nil) {
		t.Errorf("kvm requested: %v %v with KVMUsable=%v", a, err, hypervisor.KVMUsable())
	}
	cfg.Agent.Channel = "virtio-serial"
	if c, err := Channel(cfg); err != nil || c != hypervisor.ChannelSerial {
		t.Errorf("serial: %v %v", c, err)
	}
}

func TestCreateRejectsBadID(t *testing.T) {
	cfg := config.Default()
	cfg.Runtime.Root = t.TempDir()
	if _, err := Create(t.Context(), cfg, "../escape", filepath.Join(cfg.Runtime.Root, "x")); err == nil {
		t.Fatal("id with a path separator accepted")
	}
	entries, _ := os.ReadDir(cfg.Runtime.Root)
	if len(entries) != 0 {
		t.Fatalf("bad id left state behind: %v", entries)
	}
}

func TestCreateExisting(t *testing.T) {
	cfg := config.Default()
	cfg.Runtime.Root = t.TempDir()
	if err := os.Mkdir(filepath.Join(cfg.Runtime.Root, "c1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(t.Context(), cfg, "c1", filepath.Join(cfg.Runtime.Root, "c1")); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Runtime.Root, "c1")); err != nil {
		t.Fatal("the existing container's state was removed")
	}
}

func TestFirmware(t *testing.T) {
	h := config.Default().Hypervisor
	got, err := Firmware(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, serr := os.Stat(QbootPath); serr == nil && got != QbootPath {
		t.Errorf("auto with qboot installed: %q, want %q", got, QbootPath)
	} else if serr != nil && got != "" {
		t.Errorf("auto without qboot: %q, want QEMU's default", got)
	}
	h.Firmware = "qemu"
	if got, err := Firmware(h); err != nil || got != "" {
		t.Errorf("qemu: %q, %v; want QEMU's default", got, err)
	}
	h.Firmware = filepath.Join(t.TempDir(), "missing.rom")
	if _, err := Firmware(h); err == nil || !strings.Contains(err.Error(), "hypervisor.firmware") {
		t.Errorf("missing firmware file: %v", err)
	}
}
