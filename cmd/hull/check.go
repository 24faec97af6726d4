package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/hypervisor"
	"github.com/hullrt/hull/internal/image"
	"github.com/hullrt/hull/internal/sandbox"
)

// finding is one line of `hull check`.
type finding struct {
	level string // "ok", "info", "FAIL"
	what  string
}

var checkCommand = &cli.Command{
	Name:  "check",
	Usage: "check whether this host can run hull containers, and how",
	Action: func(c *cli.Context) error {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		failed := 0
		for _, f := range hostChecks(cfg) {
			fmt.Printf("%-4s  %s\n", f.level, f.what)
			if f.level == "FAIL" {
				failed++
			}
		}
		if failed > 0 {
			return cli.Exit(fmt.Sprintf("this host cannot run hull: %d check(s) failed", failed), 1)
		}
		fmt.Println("this host can run hull")
		return nil
	},
}

func hostChecks(cfg *config.Config) []finding {
	var out []finding
	add := func(ok bool, good, bad string) {
		if ok {
			out = append(out, finding{"ok", good})
		} else {
			out = append(out, finding{"FAIL", bad})
		}
	}
	add(os.Geteuid() == 0, "running as root", "hull must run as root")

	qemu := firstNonEmpty(cfg.Hypervisor.Path, "qemu-system-x86_64")
	qpath, err := exec.LookPath(qemu)
	add(err == nil, "qemu: "+qpath+" ("+qemuVersion(qpath)+")", "qemu not found: "+qemu+" (apt-get install qemu-system-x86)")

	switch fw, err := sandbox.Firmware(cfg.Hypervisor); {
	case err != nil:
		out = append(out, finding{"FAIL", err.Error()})
	case fw == "" && cfg.Hypervisor.Machine == "microvm":
		out = append(out, finding{"ok", "firmware: QEMU's bios-microvm (machine microvm)"})
	case fw == "":
		out = append(out, finding{"info", "firmware: QEMU's default (SeaBIOS); qboot boots faster (" + sandbox.QbootPath + ")"})
	default:
		out = append(out, finding{"ok", "firmware: " + fw})
	}

	kvmErr := hypervisor.KVMProbe()
	switch {
	case kvmErr == nil:
		out = append(out, finding{"ok", "/dev/kvm usable: guests run with KVM"})
	case cfg.Hypervisor.Accel == "kvm":
		out = append(out, finding{"FAIL", "hypervisor.accel = kvm but KVM is not usable: " + kvmErr.Error()})
	default:
		out = append(out, finding{"info", "KVM not usable (" + kvmErr.Error() + "): guests run with TCG software emulation (slower)"})
	}
	if hypervisor.VhostVsockUsable() {
		out = append(out, finding{"ok", "/dev/vhost-vsock usable: agent channel over vsock"})
	} else if cfg.Agent.Channel == "vsock" {
		out = append(out, finding{"FAIL", "agent.channel = vsock but /dev/vhost-vsock is not usable"})
	} else {
		out = append(out, finding{"info", "no /dev/vhost-vsock: agent channel over virtio-serial"})
	}
	img, err := image.Load(cfg.Image.Dir)
	if err == nil && cfg.Hypervisor.Kernel == img.Kernel {
		out = append(out, finding{"ok", "guest image: kernel " + img.KernelVersion + " in " + cfg.Image.Dir})
	} else {
		img = nil
		for _, f := range []string{cfg.Hypervisor.Kernel, cfg.Hypervisor.Initrd} {
			_, err := os.Stat(f)
			add(err == nil, "guest file: "+f, "guest file missing: "+f+" (run 'hull image build')")
		}
	}
	_, virtiofsdErr := os.Stat(cfg.Storage.Virtiofsd)
	return append(out, sharedFSChecks(cfg, img, virtiofsdErr)...)
}

// sharedFSChecks says which shared filesystems can carry the sandbox's
// share: virtio-fs needs virtiofsd on the host (virtiofsdErr nil) and
// virtiofs in the guest kernel; virtio-9p, served by QEMU itself, needs 9p
// in the guest kernel. img is the configured guest image, nil when the
// kernel is not one that 'hull image build' wrote, whose modules are then
// unknown. The configured filesystem being unavailable is a failure.
func sharedFSChecks(cfg *config.Config, img *image.Image, virtiofsdErr error) []finding {
	var available []string
	var out []finding
	if img == nil {
		out = append(out, finding{"info", "cannot tell which shared filesystems the guest kernel " + cfg.Hypervisor.Kernel + " mounts: not an image from 'hull image build'"})
	}
	for _, kind := range image.SharedFSKinds() {
		var why []string
		if img != nil {
			if err := img.CanMount(kind); err != nil {
				why = append(why, err.Error()+" ("+buildHint(cfg, kind)+")")
			}
		}
		detail := ""
		if kind == string(hypervisor.VirtioFS) {
			if virtiofsdErr != nil {
				why = append(why, "virtiofsd not found at "+cfg.Storage.Virtiofsd+" (storage.virtiofsd; apt-get install qemu-system-x86)")
			} else {
				detail = " (virtiofsd " + cfg.Storage.Virtiofsd + ")"
			}
		}
		switch {
		case len(why) == 0:
			available = append(available, kind+detail)
		case kind == cfg.Storage.SharedFS:
			out = append(out, finding{"FAIL", "storage.shared_fs = " + kind + ", which is not available: " + strings.Join(why, "; ")})
		default:
			out = append(out, finding{"info", kind + " not available: " + strings.Join(why, "; ")})
		}
	}
	if len(available) > 0 {
		out = append([]finding{{"ok", "shared filesystems: " + strings.Join(available, ", ")}}, out...)
	}
	return out
}

// buildHint says how to get an image whose kernel mounts kind.
func buildHint(cfg *config.Config, kind string) string {
	if kind == string(hypervisor.Virtio9P) {
		dir := cfg.Image.Dir + "-9p"
		return "build an image from linux-image-amd64: hull image build --shared-fs virtio-9p --output " + dir + ", and set image.dir = \"" + dir + "\""
	}
	return "build an image with it: hull image build --shared-fs " + kind
}

func qemuVersion(path string) string {
	if path == "" {
		return "?"
	}
	b, err := exec.Command(path, "--version").Output()
	if err != nil {
		return "unknown version"
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line)
}
