package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const fakeKver = "6.1.0-9-cloud-amd64"

// fakeModulesDep is modules.dep as depmod writes it for a few of the
// modules of a Debian cloud kernel, plus one whose file name has a dash.
const fakeModulesDep = `kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/fuse/virtiofs.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/fs/fuse/fuse.ko
kernel/fs/fuse/fuse.ko:
kernel/fs/overlayfs/overlay.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/drivers/hid/hid-generic.ko:
`

// fakeHost makes a /boot and /lib/modules with fake kernel and modules
// under a temporary directory, and returns options that build from them.
func fakeHost(t *testing.T) Options {
	t.Helper()
	root := t.TempDir()
	modDir := filepath.Join(root, "lib/modules", fakeKver)
	writeFile(t, filepath.Join(root, "boot", "vmlinuz-"+fakeKver), "kernel "+fakeKver)
	writeFile(t, filepath.Join(root, "boot", "vmlinuz-6.1.0-9-amd64"), "generic kernel")
	writeFile(t, filepath.Join(modDir, "modules.dep"), fakeModulesDep)
	writeFile(t, filepath.Join(modDir, "modules.builtin"), "kernel/drivers/virtio/virtio_balloon.ko\n")
	for _, line := range strings.Split(strings.TrimSpace(fakeModulesDep), "\n") {
		p, _, _ := strings.Cut(line, ":")
		writeFile(t, filepath.Join(modDir, p), "module "+p)
	}
	agent := filepath.Join(root, "hull-agent")
	writeFile(t, agent, "agent v1")
	return Options{
		BootDir:    filepath.Join(root, "boot"),
		ModulesDir: filepath.Join(root, "lib/modules"),
		AgentPath:  agent,
		OutputDir:  filepath.Join(root, "out"),
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int // sign
	}{
		{"6.1.0-10-cloud-amd64", "6.1.0-9-cloud-amd64", 1},
		{"6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64", -1},
		{"6.10.0-1-amd64", "6.9.0-1-amd64", 1},
		{"6.1.0-09-amd64", "6.1.0-9-amd64", 0},
		{"6.1.0-9-amd64", "6.1.0-9-amd64", 0},
		{"6.1.0", "6.1.0-1", -1},
	}
	for _, tt := range tests {
		got := compareVersions(tt.a, tt.b)
		if (got > 0) != (tt.want > 0) || (got < 0) != (tt.want < 0) {
			t.Errorf("compareVersions(%q, %q) = %d, want sign %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestFindKernel(t *testing.T) {
	tests := []struct {
		name    string
		files   []string
		version string
		want    string
		wantErr error
	}{
		{
			name:  "cloud kernel preferred over newer generic",
			files: []string{"vmlinuz-6.1.0-9-cloud-amd64", "vmlinuz-6.12.0-1-amd64"},
			want:  "6.1.0-9-cloud-amd64",
		},
		{
			name:  "newest cloud kernel by number",
			files: []string{"vmlinuz-6.1.0-9-cloud-amd64", "vmlinuz-6.1.0-10-cloud-amd64", "config-6.1.0-11-cloud-amd64"},
			want:  "6.1.0-10-cloud-amd64",
		},
		{
			name:  "newest kernel when no cloud one",
			files: []string{"vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64"},
			want:  "6.1.0-10-amd64",
		},
		{
			name:    "explicit version",
			files:   []string{"vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-cloud-amd64"},
			version: "6.1.0-9-amd64",
			want:    "6.1.0-9-amd64",
		},
		{
			name:    "explicit version missing",
			files:   []string{"vmlinuz-6.1.0-9-amd64"},
			version: "6.1.0-10-amd64",
			wantErr: fs.ErrNotExist,
		},
		{
			name:    "no kernel",
			files:   []string{"config-6.1.0-9-amd64"},
			wantErr: ErrNoKernel,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tt.files {
				writeFile(t, filepath.Join(dir, f), "x")
			}
			kver, path, err := findKernel(dir, tt.version)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if kver != tt.want || path != filepath.Join(dir, "vmlinuz-"+tt.want) {
				t.Errorf("got %s %s, want %s", kver, path, tt.want)
			}
		})
	}

	_, _, err := findKernel("/nonexistent/boot", "")
	want := "no kernel found in /nonexistent/boot (install linux-image-cloud-amd64)"
	if !errors.Is(err, ErrNoKernel) || err.Error() != want {
		t.Errorf("missing boot dir: err = %v, want %q", err, want)
	}
}

func TestResolve(t *testing.T) {
	o := fakeHost(t)
	table, err := readModuleTable(filepath.Join(o.ModulesDir, fakeKver))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		wanted   []string
		want     []string
		wantNote string
		wantErr  string
	}{
		{
			name:   "transitive deps first",
			wanted: []string{"virtio_net"},
			want:   []string{"failover", "net_failover", "virtio_ring", "virtio", "virtio_net"},
		},
		{
			name:   "dash in wanted name",
			wanted: []string{"virtio-pci"},
			want:   []string{"virtio_pci_modern_dev", "virtio_ring", "virtio", "virtio_pci"},
		},
		{
			name:   "dash in file name",
			wanted: []string{"hid_generic"},
			want:   []string{"hid_generic"},
		},
		{
			name:   "each module once",
			wanted: []string{"virtiofs", "fuse", "virtio_blk", "virtiofs"},
			want:   []string{"virtio_ring", "virtio", "fuse", "virtiofs", "virtio_blk"},
		},
		{
			name:     "optional module missing",
			wanted:   []string{"overlay", "9p?"},
			want:     []string{"overlay"},
			wantNote: "skipping optional kernel module 9p: not in " + fakeKver,
		},
		{
			name:     "built in",
			wanted:   []string{"virtio-balloon"},
			wantNote: "kernel module virtio-balloon is built into " + fakeKver,
		},
		{
			name:    "required module missing",
			wanted:  []string{"overlay", "9p"},
			wantErr: `kernel module "9p" not found for ` + fakeKver,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var notes []string
			note := func(format string, args ...any) {
				notes = append(notes, fmt.Sprintf(format, args...))
			}
			mods, err := table.resolve(tt.wanted, fakeKver, note)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrModuleNotFound) || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range mods {
				got = append(got, m.name)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("order = %v, want %v", got, tt.want)
			}
			if tt.wantNote != "" && !slices.Contains(notes, tt.wantNote) {
				t.Errorf("notes = %q, want %q", notes, tt.wantNote)
			}
		})
	}
}

func TestBuild(t *testing.T) {
	o := fakeHost(t)
	var progress bytes.Buffer
	o.Progress = &progress
	img, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if img.Cached || img.KernelVersion != fakeKver || len(img.Digest) != 64 {
		t.Errorf("image = %+v", img)
	}
	if img.Kernel != filepath.Join(o.OutputDir, "vmlinuz") || img.Initrd != filepath.Join(o.OutputDir, "initrd.img") {
		t.Errorf("image files = %s %s", img.Kernel, img.Initrd)
	}
	if b, err := os.ReadFile(img.Kernel); err != nil || string(b) != "kernel "+fakeKver {
		t.Errorf("kernel copy = %q, %v", b, err)
	}
	for _, want := range []string{"resolving modules...", "skipping optional kernel module 9p:", "writing initrd ("} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}

	b, err := os.ReadFile(img.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	recs := readNewc(t, b)
	files := make(map[string]newcRecord)
	for i, r := range recs[:len(recs)-1] {
		if i > 0 && recs[i-1].name >= r.name {
			t.Errorf("%s after %s: entries not sorted", r.name, recs[i-1].name)
		}
		if d := filepath.Dir(r.name); d != "." && files[d].mode&modeType != modeDir {
			t.Errorf("%s comes before its directory %s", r.name, d)
		}
		files[r.name] = r
	}
	checkMode := func(name string, mode uint32) {
		t.Helper()
		if r, ok := files[name]; !ok || r.mode != mode {
			t.Errorf("%s: mode %o (present %v), want %o", name, r.mode, ok, mode)
		}
	}
	checkMode("init", modeReg|0o755)
	checkMode("dev/console", modeChar|0o600)
	checkMode("tmp", modeDir|0o1777)
	for _, d := range []string{"dev", "proc", "sys", "run", "etc", "etc/hull", "lib/modules/" + fakeKver + "/kernel"} {
		if files[d].mode&modeType != modeDir {
			t.Errorf("no directory %s", d)
		}
	}
	if c := files["dev/console"]; c.rdevMajor != 5 || c.rdevMinor != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", c.rdevMajor, c.rdevMinor)
	}
	if string(files["init"].data) != "agent v1" {
		t.Errorf("init = %q", files["init"].data)
	}

	// The module list loads each module after its dependencies, and every
	// module it names is in the archive.
	table, err := readModuleTable(filepath.Join(o.ModulesDir, fakeKver))
	if err != nil {
		t.Fatal(err)
	}
	list := strings.Split(strings.TrimSuffix(string(files["etc/hull/modules"].data), "\n"), "\n")
	if len(list) != len(img.Modules) {
		t.Fatalf("module list %q does not match image modules %v", list, img.Modules)
	}
	prefix := "/lib/modules/" + fakeKver + "/"
	loaded := make(map[string]bool)
	for i, p := range list {
		rel, ok := strings.CutPrefix(p, prefix)
		if !ok {
			t.Fatalf("module path %s not under %s", p, prefix)
		}
		m := table.byPath[rel]
		if m == nil || m.name != img.Modules[i] {
			t.Fatalf("module %d is %s, image says %s", i, p, img.Modules[i])
		}
		for _, d := range m.deps {
			if !loaded[d] {
				t.Errorf("%s loads before its dependency %s", rel, d)
			}
		}
		loaded[rel] = true
		if r := files[p[1:]]; string(r.data) != "module "+rel || r.mode != modeReg|0o644 {
			t.Errorf("%s in archive: %q mode %o", p, r.data, r.mode)
		}
	}
	for _, want := range []string{"virtio_pci", "virtiofs", "fuse", "overlay", "vmw_vsock_virtio_transport", "vsock"} {
		if !slices.Contains(img.Modules, want) {
			t.Errorf("modules %v lack %s", img.Modules, want)
		}
	}

	var info guestInfo
	if err := json.Unmarshal(files["etc/hull/image.json"].data, &info); err != nil {
		t.Fatal(err)
	}
	if info.KernelVersion != fakeKver || info.Digest != img.Digest || !slices.Equal(info.Modules, img.Modules) {
		t.Errorf("image.json = %+v, image = %+v", info, img)
	}

	loadedImg, err := Load(o.OutputDir)
	if err != nil {
		t.Fatal(err)
	}
	img.Cached = true
	if !equalImages(loadedImg, img) {
		t.Errorf("Load = %+v, want %+v", loadedImg, img)
	}
}

func equalImages(a, b *Image) bool {
	return a.Kernel == b.Kernel && a.Initrd == b.Initrd && a.KernelVersion == b.KernelVersion &&
		a.Digest == b.Digest && slices.Equal(a.Modules, b.Modules) && a.Cached == b.Cached
}

func TestBuildReproducible(t *testing.T) {
	o := fakeHost(t)
	first, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	o.OutputDir = t.TempDir()
	second, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	a, err := os.ReadFile(first.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(second.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) || first.Digest != second.Digest {
		t.Error("two builds from the same inputs differ")
	}
}

func TestBuildCache(t *testing.T) {
	o := fakeHost(t)
	ctx := context.Background()
	build := func(wantCached bool) *Image {
		t.Helper()
		img, err := Build(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if img.Cached != wantCached {
			t.Fatalf("Cached = %v, want %v", img.Cached, wantCached)
		}
		return img
	}
	first := build(false)
	if build(true).Digest != first.Digest {
		t.Error("cached build has another digest")
	}

	o.Force = true
	if build(false).Digest != first.Digest {
		t.Error("forced build has another digest")
	}
	o.Force = false

	writeFile(t, o.AgentPath, "agent v2")
	second := build(false)
	if second.Digest == first.Digest {
		t.Error("digest unchanged after the agent changed")
	}
	writeFile(t, filepath.Join(o.ModulesDir, fakeKver, "kernel/fs/fuse/fuse.ko"), "fuse v2")
	third := build(false)
	if third.Digest == second.Digest {
		t.Error("digest unchanged after a module changed")
	}
	o.Modules = []string{"overlay"}
	if build(false).Digest == third.Digest {
		t.Error("digest unchanged after the module set changed")
	}

	// A lost initrd is rebuilt even though the manifest matches.
	if err := os.Remove(filepath.Join(o.OutputDir, "initrd.img")); err != nil {
		t.Fatal(err)
	}
	build(false)
	build(true)
}

func TestLoadNotBuilt(t *testing.T) {
	o := fakeHost(t)
	if _, err := Load(o.OutputDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load before Build: err = %v, want fs.ErrNotExist", err)
	}
	if _, err := Build(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(o.OutputDir, "vmlinuz")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(o.OutputDir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load without kernel: err = %v, want fs.ErrNotExist", err)
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name    string
		change  func(o *Options)
		wantErr string
		wantIs  error
	}{
		{
			name:    "missing agent",
			change:  func(o *Options) { o.AgentPath += ".missing" },
			wantErr: "agent binary: open ",
			wantIs:  fs.ErrNotExist,
		},
		{
			name:    "no agent path",
			change:  func(o *Options) { o.AgentPath = "" },
			wantErr: "agent path is required",
		},
		{
			name:    "missing required module",
			change:  func(o *Options) { o.Modules = []string{"virtio_blk", "virtiofs", "9p"} },
			wantErr: `kernel module "9p" not found for ` + fakeKver,
			wantIs:  ErrModuleNotFound,
		},
		{
			name:    "no kernel",
			change:  func(o *Options) { o.BootDir = t.TempDir() },
			wantErr: "no kernel found in ",
			wantIs:  ErrNoKernel,
		},
		{
			name:    "no modules for kernel",
			change:  func(o *Options) { o.KernelVersion = "6.1.0-9-amd64" },
			wantErr: "kernel modules for 6.1.0-9-amd64: open ",
			wantIs:  fs.ErrNotExist,
		},
		{
			name:    "canceled",
			change:  func(o *Options) {},
			wantErr: "context canceled",
			wantIs:  context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := fakeHost(t)
			tt.change(&o)
			ctx, cancel := context.WithCancel(context.Background())
			if tt.wantIs == context.Canceled {
				cancel()
			}
			defer cancel()
			_, err := Build(ctx, o)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want one wrapping %v", err, tt.wantIs)
			}
			if _, err := os.Stat(filepath.Join(o.OutputDir, manifestFile)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("failed build left a manifest (stat: %v)", err)
			}
		})
	}
}

// TestBuildRealKernel builds from the kernel installed on this machine and
// has GNU cpio list the result.
func TestBuildRealKernel(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("skipping: no cpio binary to check the archive with")
	}
	if _, _, err := findKernel("/boot", ""); err != nil {
		t.Skipf("skipping: %v", err)
	}
	agent := filepath.Join(t.TempDir(), "hull-agent")
	writeFile(t, agent, "#!/bin/false\n")
	var progress bytes.Buffer
	img, err := Build(context.Background(), Options{AgentPath: agent, OutputDir: t.TempDir(), Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s with modules %v:\n%s", img.KernelVersion, img.Modules, progress.String())

	f, err := os.Open(img.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(cpio, "-it", "--quiet")
	cmd.Stdin = f
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -it: %v", err)
	}
	names := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"init", "dev/console", "etc/hull/modules", "etc/hull/image.json"}
	for _, m := range img.Modules {
		if !slices.ContainsFunc(names, func(n string) bool { return moduleName(n) == m && strings.Contains(n, ".ko") }) {
			t.Errorf("cpio lists no file for module %s", m)
		}
	}
	for _, w := range want {
		if !slices.Contains(names, w) {
			t.Errorf("cpio does not list %s; it lists %q", w, names)
		}
	}
}
