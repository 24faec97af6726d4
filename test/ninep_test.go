package test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ninePConfig is the configuration of a hull that boots the image in
// imageDir and shares container filesystems over virtio-9p.
func ninePConfig(imageDir string) string {
	return `
[hypervisor]
kernel = "` + filepath.Join(imageDir, "vmlinuz") + `"
initrd = "` + filepath.Join(imageDir, "initrd.img") + `"

[storage]
shared_fs = "virtio-9p"
`
}

// virtio-9p as the shared filesystem: `hull image build --shared-fs
// virtio-9p` picks the generic kernel (the cloud kernel has no 9p), and a
// container booted from that image gets its rootfs and a read-write bind
// volume over 9p, its writes landing on the host with their owner.
func TestRunVirtio9P(t *testing.T) {
	e := requireEnv(t)
	if m, _ := filepath.Glob("/lib/modules/*/kernel/fs/9p/9p.ko*"); len(m) == 0 {
		t.Skip("no installed kernel has 9p: install linux-image-amd64 (Debian's generic kernel; the cloud kernel has no 9p)")
	}
	t.Parallel()
	imageDir := os.Getenv("HULL_TEST_IMAGE_9P_DIR") // make integration builds it there
	if imageDir == "" {
		imageDir = t.TempDir()
	}
	h := newHull(t, e, ninePConfig(imageDir))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := h.command(ctx, "image", "build", "--shared-fs", "virtio-9p", "--output", imageDir).CombinedOutput()
	t.Logf("hull image build:\n%s", out)
	if err != nil {
		t.Fatalf("hull image build --shared-fs virtio-9p: %v", err)
	}
	if !strings.Contains(string(out), "shared filesystems: virtio-fs, virtio-9p") {
		t.Fatalf("the image build does not report 9p")
	}
	vol := t.TempDir()
	if err := os.Chmod(vol, 0o777); err != nil {
		t.Fatal(err)
	}
	b := makeBundle(t, []string{"sh", "-c", `
echo written-over-9p > /data/out && echo rw-ok
grep -E ' (/|/data) ' /proc/mounts
uname -r`}, func(s *specs.Spec) {
		s.Process.User = specs.User{UID: 1234, GID: 5678}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: vol, Options: []string{"rbind", "rw"}})
	})
	r := h.run(t, nil, "run", "--bundle", b, "ninep")
	t.Logf("in the VM:\n%s%s", r.stdout, r.stderr)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || lines[0] != "rw-ok" {
		t.Fatalf("output %q", r.stdout)
	}
	for _, l := range lines[1:3] {
		if f := strings.Fields(l); len(f) < 4 || f[2] != "9p" || !strings.Contains(f[3], "trans=virtio") {
			t.Errorf("guest mount %q, want 9p over virtio", l)
		}
	}
	if lines[3] == hostKernel(t) || strings.HasSuffix(lines[3], "-cloud-amd64") {
		t.Errorf("guest kernel %s, want the generic one", lines[3])
	}
	got, err := os.ReadFile(filepath.Join(vol, "out"))
	if err != nil || string(got) != "written-over-9p\n" {
		t.Errorf("host sees %q (%v), want the container's write", got, err)
	}
	if fi, err := os.Stat(filepath.Join(vol, "out")); err == nil {
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("owner on the host %d:%d, want 1234:5678", st.Uid, st.Gid)
		}
	}
}
