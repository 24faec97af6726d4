package sandbox

import (
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hullrt/hull/internal/network"
)

func TestGuestNetwork(t *testing.T) {
	_, sub, _ := net.ParseCIDR("192.168.7.0/24")
	n := &network.Network{
		Interfaces: []network.Interface{{
			Name: "eth0", MAC: net.HardwareAddr{0x0a, 0x58, 0x0a, 0x58, 0, 5}, MTU: 1450,
			Addrs: []net.IPNet{{IP: net.ParseIP("10.88.0.5").To4(), Mask: net.CIDRMask(16, 32)}, {IP: net.ParseIP("fd00::5"), Mask: net.CIDRMask(64, 128)}},
		}},
		Routes: []network.Route{
			{Gw: net.ParseIP("10.88.0.1"), Device: "eth0"},
			{Dst: sub, Gw: net.ParseIP("10.88.0.7"), Device: "eth0", Metric: 5},
		},
		Neighbors: []network.Neighbor{{IP: net.ParseIP("10.88.0.9"), MAC: net.HardwareAddr{0x0a, 0x58, 0x0a, 0x58, 0, 9}, Device: "eth0"}},
	}
	r := guestNetwork(n)
	if len(r.interfaces) != 1 {
		t.Fatalf("interfaces %v", r.interfaces)
	}
	i := r.interfaces[0]
	if i.Name != "eth0" || i.Mac != "0a:58:0a:58:00:05" || i.Mtu != 1450 || len(i.Addresses) != 2 ||
		i.Addresses[0].Address != "10.88.0.5" || i.Addresses[0].PrefixLen != 16 ||
		i.Addresses[1].Address != "fd00::5" || i.Addresses[1].PrefixLen != 64 {
		t.Errorf("interface %v", i)
	}
	if len(r.routes) != 2 || r.routes[0].Destination != "" || r.routes[0].Gateway != "10.88.0.1" ||
		r.routes[1].Destination != "192.168.7.0/24" || r.routes[1].Metric != 5 || r.routes[1].Device != "eth0" {
		t.Errorf("routes %v", r.routes)
	}
	if len(r.neighbors) != 1 || r.neighbors[0].IpAddress != "10.88.0.9" || r.neighbors[0].Mac != "0a:58:0a:58:00:09" {
		t.Errorf("neighbours %v", r.neighbors)
	}
}

// Cleanup kills what still names a sandbox's directory, and, the directory
// gone (Destroy got to its end), looks for nothing.
func TestCleanupKillsOnlyForALeftDir(t *testing.T) {
	// start runs a process whose command line names dir, as a VMM's
	// arguments do (sh's $0); the channel closes when it has exited.
	start := func(dir string) <-chan struct{} {
		cmd := exec.Command("sh", "-c", "sleep 60", filepath.Join(dir, "vm", "qemu"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
		return done
	}
	exited := func(done <-chan struct{}) bool {
		select {
		case <-done:
			return true
		case <-time.After(500 * time.Millisecond):
			return false
		}
	}

	left := t.TempDir()
	leftover := start(left)
	if err := Cleanup(left); err != nil {
		t.Fatal(err)
	}
	if !exited(leftover) {
		t.Error("a process naming the directory left behind survived Cleanup")
	}

	gone := filepath.Join(t.TempDir(), "gone")
	other := start(gone)
	if err := Cleanup(gone); err != nil {
		t.Fatal(err)
	}
	if exited(other) {
		t.Error("Cleanup of a directory already removed killed a process")
	}
}
