package test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// OCI mounts in the VM: a read-write bind volume whose writes land on the
// host with their content and ownership, a read-only one that refuses
// writes with EROFS, a single-file bind, and a tmpfs with its options.
func TestRunVolumes(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	rw, ro := t.TempDir(), t.TempDir()
	if err := os.Chmod(rw, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ro, "given"), []byte("from-the-host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "config.txt")
	if err := os.WriteFile(file, []byte("key=value\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := makeBundle(t, []string{"sh", "-c", `
echo written-in-the-vm > /data/out && echo rw-ok;
cat /ro/given
echo x > /ro/new 2>/dev/null || echo "ro-refused: $(touch /ro/new 2>&1)"
cat /etc/app.conf
grep ' /scratch ' /proc/mounts
uname -r`}, func(s *specs.Spec) {
		// Not root: files it makes on the volume must be its own on the host.
		s.Process.User = specs.User{UID: 1234, GID: 5678}
		s.Mounts = append(s.Mounts,
			specs.Mount{Destination: "/data", Type: "bind", Source: rw, Options: []string{"rbind", "rw"}},
			specs.Mount{Destination: "/ro", Type: "bind", Source: ro, Options: []string{"rbind", "ro"}},
			specs.Mount{Destination: "/etc/app.conf", Type: "bind", Source: file, Options: []string{"bind", "ro"}},
			specs.Mount{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "noexec", "size=16m"}},
		)
	})
	r := h.run(t, nil, "run", "--bundle", b, "vol")
	t.Logf("in the VM:\n%s%s", r.stdout, r.stderr)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 6 {
		t.Fatalf("output %q", r.stdout)
	}
	if lines[0] != "rw-ok" || lines[1] != "from-the-host" || lines[3] != "key=value" {
		t.Errorf("rw, ro or file bind: %q", lines[:4])
	}
	if !strings.HasPrefix(lines[2], "ro-refused") || !strings.Contains(lines[2], "Read-only file system") {
		t.Errorf("write to the read-only volume: %q, want EROFS", lines[2])
	}
	if f := strings.Fields(lines[4]); len(f) < 4 || f[2] != "tmpfs" || !strings.Contains(f[3], "nosuid") || !strings.Contains(f[3], "nodev") || !strings.Contains(f[3], "noexec") {
		t.Errorf("/scratch mount %q, want tmpfs nosuid,nodev,noexec", lines[4])
	}
	if lines[5] == hostKernel(t) {
		t.Errorf("ran on the host kernel")
	}
	got, err := os.ReadFile(filepath.Join(rw, "out"))
	if err != nil || string(got) != "written-in-the-vm\n" {
		t.Errorf("host sees %q (%v), want the container's write", got, err)
	}
	if fi, err := os.Stat(filepath.Join(rw, "out")); err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("owner on the host %d:%d, want 1234:5678", st.Uid, st.Gid)
		}
	}
	if _, err := os.Stat(filepath.Join(ro, "new")); err == nil {
		t.Errorf("a file appeared in the read-only volume")
	}
}
