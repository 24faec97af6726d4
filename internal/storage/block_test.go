package storage

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// someBlockDevice is a block device node of this host, or "" if it has
// none that can be seen.
func someBlockDevice() string {
	names, _ := filepath.Glob("/sys/block/*")
	for _, n := range names {
		dev := filepath.Join("/dev", filepath.Base(n))
		if fi, err := os.Stat(dev); err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0 {
			return dev
		}
	}
	return ""
}

func TestBlockMount(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "image.ext4")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, fstype, source string
	}{
		{"directory", "ext4", dir},
		{"regular file", "ext4", file},
		{"character device", "ext4", "/dev/null"},
		{"missing source", "ext4", filepath.Join(dir, "none")},
		{"overlay", "overlay", "overlay"},
		{"bind", "bind", dir},
		{"tmpfs", "tmpfs", "tmpfs"},
	}
	for _, tt := range tests {
		b, err := BlockMount(tt.fstype, tt.source, nil)
		if err != nil || b != nil {
			t.Errorf("%s: BlockMount(%q, %q) = %+v, %v; want nil, nil", tt.name, tt.fstype, tt.source, b, err)
		}
	}
	dev := someBlockDevice()
	if dev == "" {
		t.Skip("no block device to try")
	}
	for _, fs := range []string{"ext4", "ext3", "ext2", "xfs"} {
		b, err := BlockMount(fs, dev, []string{"ro", "noatime"})
		if err != nil || b == nil || b.Device != dev || b.Fstype != fs || !b.ReadOnly() {
			t.Errorf("%s on %s: %+v, %v", fs, dev, b, err)
		}
	}
	for _, fs := range []string{"btrfs", "vfat", "squashfs", ""} {
		if b, err := BlockMount(fs, dev, nil); b != nil || err != nil {
			t.Errorf("%s on %s taken: %+v, %v", fs, dev, b, err)
		}
	}
}

func TestBlockReadOnly(t *testing.T) {
	for _, tt := range []struct {
		opts []string
		ro   bool
	}{
		{nil, false},
		{[]string{"rw"}, false},
		{[]string{"ro"}, true},
		{[]string{"ro", "rw"}, false},
		{[]string{"rw", "noatime", "ro"}, true},
	} {
		if got := (&Block{Options: tt.opts}).ReadOnly(); got != tt.ro {
			t.Errorf("%q: ReadOnly = %v", tt.opts, got)
		}
	}
}

func TestBlockSerial(t *testing.T) {
	valid := regexp.MustCompile(`^hull[0-9a-f]{16}$`)
	seen := map[string]string{}
	for _, id := range []string{"a", "b", "c1", "my-container", string(make([]byte, 4096)), "x/../y"} {
		s := BlockSerial(id)
		if len(s) != 20 || !valid.MatchString(s) {
			t.Errorf("BlockSerial(%.20q) = %q: want hull + 16 hex digits, 20 bytes", id, s)
		}
		if s != BlockSerial(id) {
			t.Errorf("BlockSerial(%.20q) is not stable", id)
		}
		if other, dup := seen[s]; dup {
			t.Errorf("ids %.20q and %.20q share serial %s", id, other, s)
		}
		seen[s] = id
	}
}

// TestBlockCheckUnused: a device something holds exclusively (a mount
// does) is refused.
func TestBlockCheckUnused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	b := &Block{Device: dev, Fstype: "ext4"}
	if err := b.CheckUnused(); err != nil {
		t.Fatalf("CheckUnused of a free device: %v", err)
	}
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = b.CheckUnused()
	unix.Close(fd)
	if err == nil || !strings.Contains(err.Error(), "in use on the host") {
		t.Errorf("CheckUnused of a held device: %v", err)
	}
	if err := (&Block{Device: "/dev/hull-none"}).CheckUnused(); err == nil {
		t.Error("CheckUnused of a missing device succeeded")
	}
}
