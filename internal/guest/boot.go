// Package guest is the inside of the VM: what hull-agent does as PID 1 of the
// guest. It prepares the guest (mounts, kernel modules, cgroups), serves the
// agent API over the host channel, and runs containers with hull-init
// (package ctr). Nothing here runs on the host.
package guest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ModuleListPath lists, one absolute path a line, the kernel modules the
// image builder put into the initrd, in the order they must be loaded.
const ModuleListPath = "/etc/hull/modules"

type mountPoint struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

var baseMounts = []mountPoint{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", cgroupFlags, ""},
}

// cgroupFlags are the cgroup2 mount's flags, which a remount restates.
const cgroupFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// Boot prepares a freshly started guest for containers. It must run first
// thing in PID 1.
func Boot() error {
	if err := leaveRootfs(); err != nil {
		return fmt.Errorf("leaving initramfs root: %w", err)
	}
	for _, m := range baseMounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mounting %s on %s: %w", m.fstype, m.target, err)
		}
	}
	// /dev/ptmx must point at the devpts instance mounted above.
	_ = os.Remove("/dev/ptmx")
	if err := os.Symlink("pts/ptmx", "/dev/ptmx"); err != nil {
		return err
	}
	if err := loadModules(ModuleListPath); err != nil {
		return err
	}
	if err := loopbackUp(); err != nil {
		return err
	}
	return enableControllers("/sys/fs/cgroup")
}

// leaveRootfs moves the process onto a bind mount of the initramfs. The
// initramfs root has no parent mount, so pivot_root(2) - which hull-init
// uses to enter a container's root - refuses to run from it; a bind mount
// on top of it has one. This costs nothing, unlike copying to a tmpfs.
func leaveRootfs() error {
	if _, err := os.Stat("/.hull-root"); err == nil {
		return nil // already done
	}
	const newRoot = "/newroot"
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("/", newRoot, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := unix.Chdir(newRoot); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return err
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	f, err := os.Create("/.hull-root")
	if err != nil {
		return err
	}
	return f.Close()
}

// loadModules loads the kernel modules listed in path, in order. A module the
// kernel already has (built in, or loaded) is not an error.
func loadModules(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a kernel with everything built in
	} else if err != nil {
		return err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		mod := strings.TrimSpace(s.Text())
		if mod == "" || strings.HasPrefix(mod, "#") {
			continue
		}
		if err := loadModule(mod); err != nil {
			return fmt.Errorf("loading module %s: %w", filepath.Base(mod), err)
		}
	}
	return s.Err()
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// favorDynmods remounts the cgroup hierarchy with favordynmods (Linux
// 6.0), which keeps the threadgroup lock in its slow mode: moving a process
// into a cgroup (a writer) then no longer waits for an RCU grace period
// first, ~6 ms of every container's creation under TCG, and forks and
// exits (readers) pay a few atomic operations more. The switch itself
// waits for one grace period, ~24 ms of a TCG boot: worth it in a pool's
// VM, which boots ahead of need, not in a VM booted for one container.
func favorDynmods() error {
	return unix.Mount("", "/sys/fs/cgroup", "", unix.MS_REMOUNT|cgroupFlags, "favordynmods")
}

// enableControllers delegates every available cgroup v2 controller to
// child cgroups so that containers can be limited.
func enableControllers(root string) error {
	b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("reading cgroup controllers: %w", err)
	}
	var ctrls []string
	for _, c := range strings.Fields(string(b)) {
		ctrls = append(ctrls, "+"+c)
	}
	if len(ctrls) == 0 {
		return nil
	}
	return os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte(strings.Join(ctrls, " ")), 0o644)
}
