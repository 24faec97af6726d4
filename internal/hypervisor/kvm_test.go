package hypervisor

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMissingFeatures(t *testing.T) {
	all := map[string]bool{"pni": true, "ssse3": true, "sse4_1": true, "sse4_2": true}
	full := uint32(1<<0 | 1<<9 | 1<<19 | 1<<20)
	for _, tc := range []struct {
		name string
		ecx  uint32
		host map[string]bool
		bad  bool
	}{
		{"passes everything through", full, all, false},
		{"hides sse3 the host has", full &^ 1, all, true},
		// A leaf 1 ECX read off a nested KVM whose guests hang at boot.
		{"nested KVM seen in the wild", 0x81202000, all, true},
		{"old host without sse4", 1 | 1<<9, map[string]bool{"pni": true, "ssse3": true}, false},
	} {
		err := missingFeatures(tc.ecx, tc.host)
		if (err != nil) != tc.bad {
			t.Errorf("%s: err = %v, want error %v", tc.name, err, tc.bad)
		}
	}
}

func TestCPUFlags(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cpuinfo")
	os.WriteFile(p, []byte("processor\t: 0\nflags\t\t: fpu pni sse4_2\n\nprocessor\t: 1\nflags\t: fpu\n"), 0o644)
	f, err := cpuFlags(p)
	if err != nil || !f["pni"] || !f["sse4_2"] || f["ssse3"] {
		t.Fatalf("cpuFlags = %v, %v", f, err)
	}
	os.WriteFile(p, []byte("processor: 0\n"), 0o644)
	if _, err := cpuFlags(p); err == nil {
		t.Fatal("no flags line: want an error")
	}
}

func TestProbeKVMNoDevice(t *testing.T) {
	if err := probeKVM(filepath.Join(t.TempDir(), "kvm"), "/proc/cpuinfo"); err == nil {
		t.Fatal("missing device: want an error")
	}
}
