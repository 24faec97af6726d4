package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const fakeRelease = "6.1.999-hull"

// fakeBzImage is the start of a bzImage whose setup header points at a
// version string, as the x86 boot protocol lays it out.
func fakeBzImage(release string) []byte {
	b := make([]byte, 0x300)
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x20e:], 0x100) // the string is at 0x100+0x200
	return append(b, release+" (hull@hull) #1 SMP\x00rest of the kernel"...)
}

// fakeKernelTree is a kernel source tree whose make and merge_config.sh
// do what BuildKernel relies on, in a few milliseconds: tinyconfig writes a
// base, merge_config.sh concatenates and drops CONFIG_NEEDS_MISSING_DEP (an
// option whose dependencies are off), bzImage prints kbuild-like lines and
// writes the kernel, unless FAIL or SLOW is in the fragment.
var fakeKernelTree = map[string]string{
	"Makefile": `tinyconfig:
	printf '# CONFIG_MODULES is not set\nCONFIG_64BIT=y\n' > .config
bzImage:
	@if grep -q FAIL hull.config; then echo "init/main.c:1: error: broken"; exit 2; fi
	@if grep -q SLOW hull.config; then sleep 30; fi
	@echo "  CC      init/main.o"
	@echo "  AS      arch/x86/entry/entry_64.o"
	mkdir -p arch/x86/boot include/config
	cp bzImage.in arch/x86/boot/bzImage
	printf 'ELF... Linux version ` + fakeRelease + ` (hull@hull) #1\0' > vmlinux
	cat patchme >> vmlinux
	echo ` + fakeRelease + ` > include/config/kernel.release
`,
	"patchme":                         "original\n",
	"scripts/kconfig/merge_config.sh": "#!/bin/sh\n[ \"$1\" = -n ] && shift\ncat \"$@\" | grep -v '^CONFIG_NEEDS_MISSING_DEP=' > .config\n",
}

// fakeKernelSource writes fakeKernelTree as a gzipped tarball with a
// top-level directory, as linux-source's is.
func fakeKernelSource(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"make", "tar", "nice"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	files := map[string][]byte{"bzImage.in": fakeBzImage(fakeRelease)}
	for name, data := range fakeKernelTree {
		files[name] = []byte(data)
	}
	for name, data := range files {
		mode := int64(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		hdr := &tar.Header{Name: "linux-source-6.1/" + name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	gz.Close()
	path := filepath.Join(t.TempDir(), "linux-source-6.1.tar.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func fakeKernelOptions(t *testing.T, fragment string) KernelBuildOptions {
	return KernelBuildOptions{
		Source:   fakeKernelSource(t),
		Fragment: []byte(fragment),
		Patches:  []KernelPatch{},
		CacheDir: filepath.Join(t.TempDir(), "cache"),
		Jobs:     1,
	}
}

// cacheFiles lists what the cache holds besides its lock.
func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.Name() != ".lock" {
			names = append(names, e.Name())
		}
	}
	return names
}

// cacheLeftovers lists what the cache holds besides its entries and lock.
func cacheLeftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var extra []string
	for _, e := range ents {
		if e.Name() == ".lock" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), kernelManifest)); err != nil {
			extra = append(extra, e.Name())
		}
	}
	return extra
}

func TestBuildKernel(t *testing.T) {
	const fragment = "CONFIG_64BIT=y\n# CONFIG_MODULES is not set\nCONFIG_VIRTIO_FS=y\nCONFIG_FUSE_FS=y\n"
	o := fakeKernelOptions(t, fragment)
	if _, err := FindKernel(o); !errors.Is(err, ErrKernelNotBuilt) {
		t.Fatalf("FindKernel before building: %v, want ErrKernelNotBuilt", err)
	}
	var progress bytes.Buffer
	o.Progress = &progress
	o.ProgressEvery = time.Nanosecond
	k, err := BuildKernel(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if k.Cached || k.Release != fakeRelease || len(k.Key) != 64 || k.Source != "linux-source-6.1.tar.gz" {
		t.Errorf("kernel = %+v", k)
	}
	if k.Dir != filepath.Join(o.CacheDir, k.Key[:16]) {
		t.Errorf("cache entry %s, key %s", k.Dir, k.Key)
	}
	for _, want := range []string{"extracting", "configuring: tinyconfig + hull.config", "all 4 options of the fragment", "objects compiled (", "tuned kernel " + fakeRelease} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
	if r, err := kernelRelease(k.BzImage); err != nil || r != fakeRelease {
		t.Errorf("bzImage release %q, %v", r, err)
	}
	if r, err := kernelRelease(k.Vmlinux); err != nil || r != fakeRelease {
		t.Errorf("vmlinux release %q, %v", r, err)
	}
	if c, err := readKconfig(k.Config); err != nil || c.value("VIRTIO_FS") != "y" || c.value("MODULES") != "n" {
		t.Errorf("config %v, %v", c, err)
	}
	if extra := cacheLeftovers(t, o.CacheDir); len(extra) > 0 {
		t.Errorf("cache holds leftovers: %v", extra)
	}

	// Same inputs: the cache answers.
	again, err := BuildKernel(context.Background(), o)
	if err != nil || !again.Cached || again.Dir != k.Dir {
		t.Errorf("second build: %+v, %v", again, err)
	}
	found, err := FindKernel(o)
	if err != nil || found.BzImage != k.BzImage {
		t.Errorf("FindKernel = %+v, %v", found, err)
	}
	// Forced: built again, into the same entry.
	o.Force = true
	forced, err := BuildKernel(context.Background(), o)
	if err != nil || forced.Cached || forced.Dir != k.Dir {
		t.Errorf("forced build: %+v, %v", forced, err)
	}
	// Another fragment is another kernel.
	o.Force = false
	o.Fragment = []byte(fragment + "CONFIG_9P_FS=y\n")
	other, err := BuildKernel(context.Background(), o)
	if err != nil || other.Cached || other.Key == k.Key {
		t.Errorf("build with another fragment: %+v, %v", other, err)
	}

	// An image boots the kernel file without modules, and knows from the
	// config what it can mount.
	ho := fakeHost(t)
	ho.KernelPath = k.BzImage
	if _, err := Build(context.Background(), ho); !errors.Is(err, ErrModuleNotFound) || !strings.Contains(err.Error(), `"virtio_pci"`) {
		t.Errorf("image of a kernel without virtio_pci: %v", err)
	}
	ho.Modules = []string{"virtiofs", "fuse", "9p?"}
	img, err := Build(context.Background(), ho)
	if err != nil {
		t.Fatal(err)
	}
	if img.KernelVersion != fakeRelease || len(img.Modules) != 0 || !slices.Equal(img.SharedFS, []string{"virtio-fs"}) {
		t.Errorf("image = %+v", img)
	}
	loaded, err := Load(ho.OutputDir)
	if err != nil || !slices.Equal(loaded.SharedFS, img.SharedFS) {
		t.Errorf("Load = %+v, %v", loaded, err)
	}
	ho.KernelVersion = fakeKver
	if _, err := Build(context.Background(), ho); err == nil {
		t.Error("a kernel file and a kernel version both accepted")
	}
}

func TestBuildKernelFailures(t *testing.T) {
	tests := []struct {
		name     string
		fragment string
		want     []string
		keepLog  bool
	}{
		{
			name:     "dropped option",
			fragment: "CONFIG_64BIT=y\nCONFIG_NEEDS_MISSING_DEP=y\n# CONFIG_MODULES is not set\n",
			want: []string{
				"1 option(s) of the fragment did not make it",
				"CONFIG_NEEDS_MISSING_DEP=y (final: # CONFIG_NEEDS_MISSING_DEP is not set)",
			},
		},
		{
			name:     "compile error",
			fragment: "CONFIG_64BIT=y\n# FAIL\n",
			want:     []string{"compiling the kernel: exit status 2", "init/main.c:1: error: broken", "whole log: "},
			keepLog:  true,
		},
		{
			name:     "bad fragment",
			fragment: "CONFIG_64BIT\n",
			want:     []string{"kernel config fragment: line 1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := fakeKernelOptions(t, tt.fragment)
			_, err := BuildKernel(context.Background(), o)
			if err == nil {
				t.Fatal("build succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			left := cacheFiles(t, o.CacheDir)
			logs, _ := filepath.Glob(filepath.Join(o.CacheDir, "build-*.log"))
			if len(left) != len(logs) || (len(logs) == 1) != tt.keepLog {
				t.Errorf("cache after failure: %v (log kept: %v)", left, tt.keepLog)
			}
		})
	}
}

// patchTheSource changes the fake tree's patchme, whose text the fake
// build appends to vmlinux.
var patchTheSource = KernelPatch{Name: "0001-change.patch", Diff: []byte(`A change, explained here.

--- a/patchme
+++ b/patchme
@@ -1 +1 @@
-original
+patched
`)}

func TestBuildKernelPatches(t *testing.T) {
	o := fakeKernelOptions(t, "CONFIG_64BIT=y\n")
	plain, err := BuildKernel(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	o.Patches = []KernelPatch{patchTheSource}
	k, err := BuildKernel(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if k.Key == plain.Key || k.Dir == plain.Dir {
		t.Errorf("a patch left the key as it was: %s", k.Key)
	}
	if len(k.Patches) != 1 || k.Patches[0] != patchTheSource.Name {
		t.Errorf("manifest patches: %v", k.Patches)
	}
	b, err := os.ReadFile(k.Vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("patched")) {
		t.Errorf("the patch did not reach the build: vmlinux is %q", b)
	}

	// A patch that does not apply fails the build by name, and changes
	// nothing in the cache.
	o.Patches = []KernelPatch{{Name: "0002-stale.patch", Diff: []byte("--- a/patchme\n+++ b/patchme\n@@ -1 +1 @@\n-something else\n+x\n")}}
	if _, err := BuildKernel(context.Background(), o); err == nil || !strings.Contains(err.Error(), "kernel patch 0002-stale.patch does not apply") {
		t.Errorf("stale patch: %v", err)
	}
	if left := cacheLeftovers(t, o.CacheDir); len(left) != 0 {
		t.Errorf("left in the cache after a failed patch: %v", left)
	}
}

func TestHullKernelPatchesAreEmbedded(t *testing.T) {
	ps := HullKernelPatches()
	if len(ps) == 0 {
		t.Fatal("no kernel patches embedded")
	}
	for _, p := range ps {
		if !bytes.Contains(p.Diff, []byte("\n--- a/")) || !strings.HasSuffix(p.Name, ".patch") {
			t.Errorf("%s: not a patch -p1 diff", p.Name)
		}
	}
}

func TestBuildKernelCancel(t *testing.T) {
	o := fakeKernelOptions(t, "CONFIG_64BIT=y\n# SLOW\n")
	ctx, cancel := context.WithCancel(context.Background())
	var progress syncBuffer
	o.Progress = &progress
	go func() {
		for !strings.Contains(progress.String(), "compiling with") {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	_, err := BuildKernel(ctx, o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancelled build took %s", d)
	}
	if left := cacheFiles(t, o.CacheDir); len(left) > 0 {
		t.Errorf("cancelled build left %v", left)
	}
}

func TestFindKernelSource(t *testing.T) {
	dir := t.TempDir()
	if _, err := findKernelSource(dir); err == nil || !strings.Contains(err.Error(), "install-kernel-deps.sh") {
		t.Errorf("no source: %v", err)
	}
	for _, name := range []string{"linux-source-6.1.tar.xz", "linux-source-6.10.tar.xz.away", "linux-source-6.9.tar.gz", "linux-source-7.0"} {
		writeFile(t, filepath.Join(dir, name), "")
	}
	if got, err := findKernelSource(dir); err != nil || filepath.Base(got) != "linux-source-6.9.tar.gz" {
		t.Errorf("findKernelSource = %q, %v; want the newest tarball, linux-source-6.9.tar.gz", got, err)
	}
}

func TestKernelRelease(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"bzImage", fakeBzImage("6.1.192-hull"), "6.1.192-hull"},
		{"vmlinux", []byte("\x7fELF...%s version %s\x00Linux version 6.1.192-hull (hull@hull) (gcc) #1 SMP\x00"), "6.1.192-hull"},
		{"bzImage with a path in its version", fakeBzImage("../../etc"), ""},
		{"neither", []byte("hello"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, "k")
			if err := os.WriteFile(p, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := kernelRelease(p)
			if got != tt.want || (err != nil) != (tt.want == "") {
				t.Errorf("kernelRelease = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestUnmet(t *testing.T) {
	want, err := parseKconfig(strings.NewReader("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"-hull\"\nCONFIG_D=256\n# a comment\n\nCONFIG_E=y\n"))
	if err != nil {
		t.Fatal(err)
	}
	final, err := parseKconfig(strings.NewReader("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=\"-hull\"\nCONFIG_D=64\n# CONFIG_E is not set\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := unmet(want, final)
	exp := []string{
		"# CONFIG_B is not set (final: CONFIG_B=y)",
		"CONFIG_D=256 (final: CONFIG_D=64)",
		"CONFIG_E=y (final: # CONFIG_E is not set)",
	}
	if !slices.Equal(got, exp) {
		t.Errorf("unmet = %q, want %q", got, exp)
	}
	for _, bad := range []string{"CONFIG_A", "A=y", "CONFIG_=y", "CONFIG_A="} {
		if _, err := parseKconfig(strings.NewReader(bad)); err == nil {
			t.Errorf("parseKconfig(%q) accepted", bad)
		}
	}
}

// TestHullKernelConfig checks hull's fragment against what the image
// builder and the guest need of it: every module the image would ask a
// distribution kernel for is built in, and nothing is a module.
func TestHullKernelConfig(t *testing.T) {
	c, err := parseKconfig(bytes.NewReader(HullKernelConfig))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range DefaultModules {
		name := strings.TrimSuffix(w, "?")
		opt, ok := moduleOptions[canonicalName(name)]
		if !ok {
			t.Errorf("module %s has no entry in moduleOptions", name)
			continue
		}
		if c.value(opt) != "y" {
			t.Errorf("module %s: CONFIG_%s is %s in the fragment, want y", name, opt, c.value(opt))
		}
	}
	for name, v := range c {
		if v == "m" {
			t.Errorf("CONFIG_%s=m: the tuned kernel has no modules", name)
		}
	}
	if got := mountable(builtinTable(c).has); !slices.Equal(got, SharedFSKinds()) {
		t.Errorf("shared filesystems %v, want %v", got, SharedFSKinds())
	}
	for _, opt := range []string{"MEMORY_HOTPLUG", "ACPI_HOTPLUG_MEMORY", "ACPI_HOTPLUG_CPU", "PVH", "CGROUP_BPF", "MEMCG", "SECCOMP_FILTER"} {
		if c.value(opt) != "y" {
			t.Errorf("CONFIG_%s is %s, want y", opt, c.value(opt))
		}
	}
	if c.value("MODULES") != "n" {
		t.Error("CONFIG_MODULES is not off")
	}
}

// syncBuffer is a bytes.Buffer that a build and a test goroutine share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
