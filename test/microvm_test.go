package test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestRunMicrovm runs containers in microvm VMs (hypervisor.machine =
// "microvm"): virtio devices on MMIO, no PCI, and no hot-plug, so that an
// update that would grow the VM is refused and changes nothing.
func TestRunMicrovm(t *testing.T) {
	e := requireEnv(t)
	imageDir := os.Getenv("HULL_TEST_IMAGE_9P_DIR") // a microvm needs 9p
	if imageDir == "" {
		t.Skip("HULL_TEST_IMAGE_9P_DIR not set: a microvm needs an image with 9p (make image-9p)")
	}
	if _, err := os.Stat(filepath.Join(imageDir, "manifest.json")); err != nil {
		t.Skipf("no 9p guest image in %s (make image-9p): %v", imageDir, err)
	}
	t.Parallel()
	h := newHull(t, e, `
[hypervisor]
machine = "microvm"
kernel = "`+filepath.Join(imageDir, "vmlinuz")+`"
initrd = "`+filepath.Join(imageDir, "initrd.img")+`"

[storage]
shared_fs = "virtio-9p"
`)
	b := makeBundle(t, []string{"sh", "-c", `echo pci $(ls /sys/bus/pci/devices 2>/dev/null | wc -l); echo virtio $(ls /sys/bus/virtio/devices | wc -l); echo cpus $(nproc)`}, nil)
	r := h.run(t, nil, "run", "--bundle", b, "mvm")
	t.Logf("in the microvm:\n%s%s", r.stdout, r.stderr)
	if r.code != 0 {
		t.Fatalf("run: exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "pci 0\n") {
		t.Errorf("the guest has PCI devices: %q", r.stdout)
	}
	// The agent's channel and the share, at least, on virtio-mmio.
	n := -1
	for _, l := range strings.Split(r.stdout, "\n") {
		if v, ok := strings.CutPrefix(l, "virtio "); ok {
			n, _ = strconv.Atoi(v)
		}
	}
	if n < 2 {
		t.Errorf("%d virtio devices in the guest, want the channel and the share at least: %q", n, r.stdout)
	}

	idle := makeBundle(t, []string{"sleep", "1000"}, nil)
	if r := h.run(t, nil, "run", "--detach", "--bundle", idle, "idle"); r.code != 0 {
		t.Fatalf("run --detach: exit %d: %s", r.code, r.stderr)
	}
	defer h.run(t, nil, "delete", "--force", "idle")
	r = h.run(t, nil, "update", "--cpus", "2", "idle")
	if r.code == 0 || !strings.Contains(r.stderr, "microvm has no hot-plug") {
		t.Errorf("update --cpus 2 of a microvm: exit %d, %q; want a refusal that names the microvm", r.code, r.stderr)
	}
	t.Logf("update --cpus 2: %s", strings.TrimSpace(r.stderr))
	if r := h.run(t, nil, "exec", "idle", "nproc"); r.code != 0 || strings.TrimSpace(r.stdout) != "1" {
		t.Errorf("after the refused update: exec nproc: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
}
