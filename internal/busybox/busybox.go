// Package busybox writes OCI bundles whose root filesystem is busybox-static
// and whose config is what `runc spec` writes. Tests and `hull bench` use
// them: no image registry is needed.
package busybox

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Binary is where Debian's busybox-static installs busybox.
const Binary = "/bin/busybox"

// WriteBundle creates an OCI bundle in dir (which must exist) running args.
// mutate, if not nil, edits the spec before it is written.
func WriteBundle(dir string, args []string, mutate func(*specs.Spec)) error {
	if err := WriteRootfs(filepath.Join(dir, "rootfs")); err != nil {
		return err
	}
	spec := Spec(args)
	if mutate != nil {
		mutate(spec)
	}
	return WriteSpec(dir, spec)
}

// WriteRootfs fills rootfs with busybox and a link for each of its applets.
func WriteRootfs(rootfs string) error {
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	bb, err := os.ReadFile(Binary)
	if err != nil {
		return fmt.Errorf("reading busybox (apt-get install busybox-static): %w", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755); err != nil {
		return err
	}
	out, err := exec.Command(Binary, "--list").Output()
	if err != nil {
		return fmt.Errorf("listing busybox applets: %w", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	return nil
}

// WriteSpec writes spec as dir/config.json.
func WriteSpec(dir string, spec *specs.Spec) error {
	b, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
}

// WithoutPIDNamespace makes the process an ordinary process rather than
// the init of a PID namespace, which the kernel shields from every signal
// it has no handler for (as under runc).
func WithoutPIDNamespace(s *specs.Spec) {
	var ns []specs.LinuxNamespace
	for _, n := range s.Linux.Namespaces {
		if n.Type != specs.PIDNamespace {
			ns = append(ns, n)
		}
	}
	s.Linux.Namespaces = ns
}

// AddBinary copies the host program at path into rootfs, at the same path,
// with the shared libraries ldd says it needs, so that a dynamically linked
// tool (iperf3, fio) runs on the busybox root filesystem.
func AddBinary(rootfs, path string) error {
	out, err := exec.Command("ldd", path).Output()
	if err != nil {
		// A static binary: "not a dynamic executable", exit 1.
		if _, ok := err.(*exec.ExitError); !ok {
			return fmt.Errorf("ldd %s: %w", path, err)
		}
		out = nil
	}
	files := []string{path}
	for _, line := range strings.Split(string(out), "\n") {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vdso has no file.
		for _, f := range strings.Fields(line) {
			if filepath.IsAbs(f) {
				files = append(files, f)
			}
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		dst := filepath.Join(rootfs, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// Spec is the spec WriteBundle writes: runc's example running args, with a
// writable root.
func Spec(args []string) *specs.Spec {
	spec := specconv.Example()
	spec.Process.Terminal = false
	spec.Process.Args = args
	spec.Root.Readonly = false
	return spec
}
