// Package image builds what a hull guest boots: a copy of an installed Debian
// kernel and an initrd whose /init is the hull-agent, with the kernel modules
// the agent loads before it does anything else. The initrd is reproducible:
// the same kernel, modules and agent give the same bytes, and a build whose
// inputs have not changed reuses the image already on disk.
//
// It also builds the tuned guest kernel (BuildKernel): Debian's kernel
// source configured by tinyconfig plus hull's fragment, with everything the
// guest needs built in, cached by the digests of source and fragment. An
// image of such a kernel file has no modules.
package image

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// Options says what to build the image from and where to put it.
type Options struct {
	// KernelVersion is the kernel to boot, as in /boot/vmlinuz-<version>.
	// Empty picks the newest cloud kernel (vmlinuz-*-cloud-amd64), or else
	// the newest kernel; with SharedFS set, the first of those that has
	// what SharedFS needs.
	KernelVersion string
	BootDir       string // default "/boot"
	ModulesDir    string // default "/lib/modules"
	AgentPath     string // the hull-agent binary; required
	OutputDir     string // where the image goes; required, created when missing
	// KernelPath, instead of KernelVersion, boots a kernel image file (a
	// bzImage, or a vmlinux with a PVH entry) that has what the guest needs
	// built in, such as `hull image kernel` builds: the initrd gets no
	// modules. Its configuration, in a file named config or .config beside
	// it, says what it has.
	KernelPath string
	// SharedFS, if set, is the shared filesystem ("virtio-fs",
	// "virtio-9p") the guest must be able to mount: its modules become
	// required, and they decide the kernel when KernelVersion is empty.
	SharedFS string
	// Modules names the kernel modules to include; their dependencies are
	// added. A name ending in "?" is optional: it is skipped, with a note,
	// when the kernel lacks it. Nil means DefaultModules.
	Modules  []string
	Force    bool      // rebuild even when the image on disk is up to date
	Progress io.Writer // receives progress lines; may be nil
}

// DefaultModules are the modules a guest needs for its devices and file
// systems. The 9p ones are optional because Debian's cloud kernel lacks
// them (virtiofs serves there); vsock is optional because the agent can talk
// over virtio-serial; the balloon only gives memory back.
var DefaultModules = []string{
	"virtio_pci",
	"virtio_mmio",
	"virtio_console",
	"virtio_blk",
	"virtio_net",
	"virtiofs",
	"fuse",
	"overlay",
	"9p?",
	"9pnet_virtio?",
	"vmw_vsock_virtio_transport?",
	// Free page reporting (hypervisor.free_page_reporting).
	"virtio_balloon?",
}

// Image is a built guest image.
type Image struct {
	Kernel        string   // OutputDir/vmlinuz, a copy of the kernel
	Initrd        string   // OutputDir/initrd.img
	KernelVersion string   // e.g. 6.1.0-56-cloud-amd64
	Digest        string   // SHA-256 (hex) of everything the image is built from
	Modules       []string // modules in the initrd, in load order
	// SharedFS lists the shared filesystems the guest can mount its share
	// with ("virtio-fs", "virtio-9p"): their modules are in the initrd or
	// built into the kernel.
	SharedFS []string
	Cached   bool // true when the image on disk was reused
}

var (
	// ErrNoKernel is wrapped by Build's error when no kernel is installed.
	ErrNoKernel = errors.New("no kernel found")
	// ErrModuleNotFound is wrapped by Build's error when the kernel lacks a
	// required module.
	ErrModuleNotFound = errors.New("kernel module not found")
)

// notFoundError carries a sentinel for errors.Is under a message that says
// more than the sentinel does.
type notFoundError struct {
	msg string
	err error
}

func (e *notFoundError) Error() string { return e.msg }
func (e *notFoundError) Unwrap() error { return e.err }

// Build builds the image described by o into o.OutputDir, or returns the one
// already there when it was built from the same inputs.
func Build(ctx context.Context, o Options) (*Image, error) {
	if o.AgentPath == "" {
		return nil, errors.New("building image: agent path is required")
	}
	if o.OutputDir == "" {
		return nil, errors.New("building image: output directory is required")
	}
	if o.BootDir == "" {
		o.BootDir = "/boot"
	}
	if o.ModulesDir == "" {
		o.ModulesDir = "/lib/modules"
	}
	if o.Modules == nil {
		o.Modules = DefaultModules
	}
	note := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", args...)
		}
	}

	var need *sharedFS
	if o.SharedFS != "" {
		s, err := lookupSharedFS(o.SharedFS)
		if err != nil {
			return nil, err
		}
		need = &s
		o.Modules = requireModules(o.Modules, s.modules)
	}

	var kver, kernelPath string
	var table *moduleTable
	var err error
	switch {
	case o.KernelPath != "":
		if o.KernelVersion != "" {
			return nil, errors.New("building image: a kernel version and a kernel file are mutually exclusive")
		}
		kernelPath = o.KernelPath
		kver, table, err = kernelFileTable(kernelPath)
	case need != nil && o.KernelVersion == "":
		kver, kernelPath, err = kernelFor(o.BootDir, o.ModulesDir, *need)
	default:
		kver, kernelPath, err = findKernel(o.BootDir, o.KernelVersion)
	}
	if err != nil {
		return nil, err
	}
	note("kernel %s", kernelPath)
	note("resolving modules...")
	if table == nil {
		if table, err = readModuleTable(filepath.Join(o.ModulesDir, kver)); err != nil {
			return nil, fmt.Errorf("kernel modules for %s: %w", kver, err)
		}
	}
	mods, err := table.resolve(o.Modules, kver, note)
	switch {
	case o.KernelPath != "" && errors.Is(err, ErrModuleNotFound):
		err = fmt.Errorf("%w (a kernel file must have it built in; see its configuration beside it)", err)
	case need != nil && errors.Is(err, ErrModuleNotFound):
		err = fmt.Errorf("%w (%s needs a kernel with %s, such as %s's)", err, need.kind, need.fs, need.pkg)
	}
	if err != nil {
		return nil, err
	}

	in := digestInput{kver: kver, modules: mods, data: make([][]byte, len(mods))}
	if in.kernelSum, err = hashFile(kernelPath); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	agent, err := os.ReadFile(o.AgentPath)
	if err != nil {
		return nil, fmt.Errorf("agent binary: %w", err)
	}
	in.agentSum = sha256.Sum256(agent)
	modDir := filepath.Join(o.ModulesDir, kver)
	for i, m := range mods {
		if in.data[i], err = os.ReadFile(filepath.Join(modDir, m.path)); err != nil {
			return nil, fmt.Errorf("kernel module %s: %w", m.name, err)
		}
	}
	img := &Image{
		Kernel:        filepath.Join(o.OutputDir, kernelFile),
		Initrd:        filepath.Join(o.OutputDir, initrdFile),
		KernelVersion: kver,
		Digest:        in.digest(),
		Modules:       make([]string, len(mods)),
	}
	for i, m := range mods {
		img.Modules[i] = m.name
	}
	img.SharedFS = mountable(func(m string) bool { return slices.Contains(img.Modules, m) || table.builtin[m] })
	note("%d modules, digest %s", len(mods), img.Digest)

	if !o.Force {
		if cur, err := Load(o.OutputDir); err == nil && cur.Digest == img.Digest {
			note("image in %s is up to date", o.OutputDir)
			img.Cached = true
			return img, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("building image: %w", err)
	}
	initrd, err := buildInitrd(initrdInput{
		kver: kver, digest: img.Digest, agent: agent, modules: mods, data: in.data,
	})
	if err != nil {
		return nil, err
	}
	if err := write(ctx, o.OutputDir, kernelPath, initrd, img, note); err != nil {
		return nil, fmt.Errorf("writing image to %s: %w", o.OutputDir, err)
	}
	return img, nil
}

// write puts the kernel, the initrd and then the manifest in dir. The old
// manifest goes first, so an image half replaced by a crashed build is never
// taken for a complete one.
func write(ctx context.Context, dir, kernelPath string, initrd []byte, img *Image, note func(string, ...any)) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, manifestFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	note("copying kernel")
	if err := copyFile(kernelPath, img.Kernel); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	note("writing initrd (%.1f MiB)", float64(len(initrd))/(1<<20))
	err := writeFileAtomic(img.Initrd, 0o644, func(w io.Writer) error {
		_, err := w.Write(initrd)
		return err
	})
	if err != nil {
		return err
	}
	m := manifest{
		KernelVersion: img.KernelVersion,
		Digest:        img.Digest,
		Modules:       img.Modules,
		SharedFS:      img.SharedFS,
		Kernel:        kernelFile,
		Initrd:        initrdFile,
	}
	err = writeFileAtomic(filepath.Join(dir, manifestFile), 0o644, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "\t")
		return enc.Encode(m)
	})
	if err != nil {
		return err
	}
	return syncDir(dir)
}
