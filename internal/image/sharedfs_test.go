package image

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const genericKver = "6.1.0-9-amd64"

// withGenericKernel gives the fake host's generic kernel a modules
// directory: the cloud kernel's modules plus 9p, or with 9p built in.
func withGenericKernel(t *testing.T, o Options, builtin9p bool) {
	t.Helper()
	dir := filepath.Join(o.ModulesDir, genericKver)
	dep := fakeModulesDep
	builtin := ""
	if builtin9p {
		builtin = "kernel/fs/9p/9p.ko\nkernel/net/9p/9pnet_virtio.ko\nkernel/net/9p/9pnet.ko\n"
	} else {
		dep += "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko\n" +
			"kernel/net/9p/9pnet.ko:\nkernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko\nkernel/fs/netfs/netfs.ko:\n" +
			"kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n"
	}
	writeFile(t, filepath.Join(dir, "modules.dep"), dep)
	writeFile(t, filepath.Join(dir, "modules.builtin"), builtin)
	for _, line := range strings.Split(strings.TrimSpace(dep), "\n") {
		p, _, _ := strings.Cut(line, ":")
		writeFile(t, filepath.Join(dir, p), "module "+p)
	}
}

func TestBuildSharedFS(t *testing.T) {
	ctx := context.Background()
	t.Run("default image: virtio-fs only", func(t *testing.T) {
		o := fakeHost(t)
		withGenericKernel(t, o, false)
		img, err := Build(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if img.KernelVersion != fakeKver || !slices.Equal(img.SharedFS, []string{"virtio-fs"}) {
			t.Fatalf("kernel %s, shared filesystems %v", img.KernelVersion, img.SharedFS)
		}
		if err := img.CanMount("virtio-fs"); err != nil {
			t.Error(err)
		}
		err = img.CanMount("virtio-9p")
		if want := "the guest kernel " + fakeKver + " has no 9p"; err == nil || err.Error() != want || !errors.Is(err, ErrModuleNotFound) {
			t.Errorf("CanMount(virtio-9p) = %v, want %q", err, want)
		}
		if err := img.CanMount("nfs"); err == nil || !strings.Contains(err.Error(), `unknown shared filesystem "nfs"`) {
			t.Errorf("CanMount(nfs) = %v", err)
		}
	})
	t.Run("virtio-9p picks the kernel with 9p", func(t *testing.T) {
		o := fakeHost(t)
		withGenericKernel(t, o, false)
		o.SharedFS = "virtio-9p"
		img, err := Build(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if img.KernelVersion != genericKver || !slices.Equal(img.SharedFS, []string{"virtio-fs", "virtio-9p"}) {
			t.Fatalf("kernel %s, shared filesystems %v", img.KernelVersion, img.SharedFS)
		}
		for _, m := range []string{"netfs", "fscache", "9pnet", "9p", "9pnet_virtio"} {
			if !slices.Contains(img.Modules, m) {
				t.Errorf("modules %v lack %s", img.Modules, m)
			}
		}
		loaded, err := Load(o.OutputDir)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(loaded.SharedFS, img.SharedFS) || loaded.CanMount("virtio-9p") != nil {
			t.Errorf("loaded image mounts %v, built one %v", loaded.SharedFS, img.SharedFS)
		}
	})
	t.Run("9p built in", func(t *testing.T) {
		o := fakeHost(t)
		withGenericKernel(t, o, true)
		o.SharedFS = "virtio-9p"
		img, err := Build(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if img.KernelVersion != genericKver || img.CanMount("virtio-9p") != nil || slices.Contains(img.Modules, "9p") {
			t.Fatalf("kernel %s, modules %v, shared filesystems %v", img.KernelVersion, img.Modules, img.SharedFS)
		}
		loaded, err := Load(o.OutputDir)
		if err != nil || loaded.CanMount("virtio-9p") != nil {
			t.Errorf("loaded image: %v; mounts %v", err, loaded.SharedFS)
		}
	})
	t.Run("no kernel with 9p", func(t *testing.T) {
		o := fakeHost(t)
		o.SharedFS = "virtio-9p"
		_, err := Build(ctx, o)
		want := "no kernel in " + o.BootDir + " has 9p, which virtio-9p needs (install linux-image-amd64)"
		if !errors.Is(err, ErrNoKernel) || err.Error() != want {
			t.Errorf("err = %v, want %q", err, want)
		}
	})
	t.Run("explicit kernel without 9p", func(t *testing.T) {
		o := fakeHost(t)
		withGenericKernel(t, o, false)
		o.SharedFS, o.KernelVersion = "virtio-9p", fakeKver
		_, err := Build(ctx, o)
		want := `kernel module "9p" not found for ` + fakeKver + ` (virtio-9p needs a kernel with 9p, such as linux-image-amd64's)`
		if !errors.Is(err, ErrModuleNotFound) || err.Error() != want {
			t.Errorf("err = %v, want %q", err, want)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		o := fakeHost(t)
		o.SharedFS = "nfs"
		if _, err := Build(ctx, o); err == nil || !strings.Contains(err.Error(), `unknown shared filesystem "nfs"`) {
			t.Errorf("err = %v", err)
		}
	})
}

// An image written before manifests listed shared filesystems gets them
// from its modules.
func TestLoadOldManifest(t *testing.T) {
	o := fakeHost(t)
	withGenericKernel(t, o, false)
	o.SharedFS = "virtio-9p"
	if _, err := Build(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(o.OutputDir, manifestFile)
	var m map[string]any
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "sharedFS")
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(b))
	img, err := Load(o.OutputDir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(img.SharedFS, []string{"virtio-fs", "virtio-9p"}) {
		t.Errorf("shared filesystems %v", img.SharedFS)
	}
}

func TestRequireModules(t *testing.T) {
	wanted := []string{"virtio_pci", "9p?", "vsock?"}
	got := requireModules(wanted, []string{"9p", "9pnet_virtio"})
	want := []string{"virtio_pci", "9p", "vsock?", "9pnet_virtio"}
	if !slices.Equal(got, want) {
		t.Errorf("requireModules = %v, want %v", got, want)
	}
	if wanted[1] != "9p?" {
		t.Errorf("requireModules changed its argument: %v", wanted)
	}
}
