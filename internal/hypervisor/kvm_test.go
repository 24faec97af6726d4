package hypervisor

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
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

func TestKillReferencing(t *testing.T) {
	token := "hull-kill-test-" + strconv.Itoa(os.Getpid())
	cmd := exec.Command("sleep", "100")
	cmd.Args[0] = token // what KillReferencing finds in its command line
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if gone(cmd.Process.Pid) {
		t.Fatal("a running process counts as gone")
	}
	start := time.Now()
	KillReferencing(token)
	// Our own child stays a zombie until waited for: that is gone too,
	// and KillReferencing did not wait out its deadline for it.
	if !gone(cmd.Process.Pid) {
		t.Errorf("process %d still alive after KillReferencing", cmd.Process.Pid)
	}
	if d := time.Since(start); d >= killWait {
		t.Errorf("KillReferencing waited %v for a zombie", d)
	}
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("child ended with %v, want SIGKILL", err)
	}
	if !gone(1 << 30) {
		t.Error("a pid that does not exist is not gone")
	}
}
