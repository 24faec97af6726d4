// Package test holds hull's integration tests. They drive the real hull
// binary, which boots real QEMU VMs with the guest image, so they need
// root, QEMU and a built image; `make integration` provides the last two.
package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// env is what the integration tests run against.
type env struct {
	hull     string // the hull binary
	imageDir string // the guest image
}

// requireEnv returns the test environment or skips the test, naming what
// the host lacks.
func requireEnv(t *testing.T) env {
	t.Helper()
	bin := os.Getenv("HULL_TEST_BIN")
	if bin == "" {
		t.Skip("HULL_TEST_BIN not set: integration tests need built binaries and a guest image (run `make integration`)")
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: hull needs root to mount and start VMs")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("no qemu-system-x86_64 on this host")
	}
	// Asked for explicitly: from here on a missing piece is a failure.
	e := env{hull: filepath.Join(bin, "hull"), imageDir: os.Getenv("HULL_TEST_IMAGE_DIR")}
	if e.imageDir == "" {
		e.imageDir = "/var/lib/hull/image"
	}
	for _, f := range []string{e.hull, filepath.Join(e.imageDir, "vmlinuz"), filepath.Join(e.imageDir, "initrd.img")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("integration environment incomplete: %v", err)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Fatalf("test bundles need busybox-static: %v", err)
	}
	return e
}
