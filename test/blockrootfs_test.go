package test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/fifo"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// shimNS is the containerd namespace the block rootfs test's tasks live in.
const shimNS = "hullblk"

// shimClient is a shim process started, and spoken to, the way containerd
// 1.6 does it: the `start` action in the bundle prints a ttrpc address,
// and the task API is served there.
type shimClient struct {
	task   taskAPI.TaskService
	conn   *ttrpc.Client
	pid    int           // the shim's
	logBuf *lockedBuffer // what the shim logged
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startShim runs `containerd-shim-hull-v2 ... -id id start` in bundle, as
// containerd's shim manager does, against the private containerd c (which
// receives the shim's events), and connects to the address it prints.
func startShim(t *testing.T, c *containerd, id, bundle string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return "", err
	}
	cmd := shimCommand(c, bundle, "-publish-binary", bin, "-id", id, "start")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("shim start: %v: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// shimCommand is the shim binary run in bundle with containerd's flags
// and environment, then args.
func shimCommand(c *containerd, bundle string, args ...string) *exec.Cmd {
	shim := filepath.Join(filepath.Dir(c.e.hull), "containerd-shim-hull-v2")
	cmd := exec.Command(shim, append([]string{"-namespace", shimNS, "-address", c.sock}, args...)...)
	cmd.Dir = bundle
	cmd.Env = append(os.Environ(), "TTRPC_ADDRESS="+c.sock+".ttrpc", "HULL_CONFIG="+filepath.Join(c.dir, "hull.toml"))
	return cmd
}

func connectShim(t *testing.T, ctx context.Context, address string, log *lockedBuffer) *shimClient {
	t.Helper()
	path, ok := strings.CutPrefix(address, "unix://")
	if !ok {
		t.Fatalf("shim printed %q, want a unix:// address", address)
	}
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &shimClient{conn: ttrpc.NewClient(conn), logBuf: log}
	s.task = taskAPI.NewTaskClient(s.conn)
	r, err := s.task.Connect(ctx, &taskAPI.ConnectRequest{})
	if err != nil {
		t.Fatal(err)
	}
	s.pid = int(r.ShimPid)
	return s
}

// shimLog makes bundle/log the FIFO the shim logs to, as containerd does,
// and collects what comes through it.
func shimLog(t *testing.T, ctx context.Context, bundle string) *lockedBuffer {
	t.Helper()
	f, err := fifo.OpenFifo(ctx, filepath.Join(bundle, "log"), syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	buf := &lockedBuffer{}
	go func() {
		_, _ = io.Copy(buf, f)
		f.Close()
	}()
	return buf
}

// outputFIFO makes a FIFO for a task's stdout and sends its lines on the
// returned channel, which is closed at EOF.
func outputFIFO(t *testing.T, ctx context.Context) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stdout")
	f, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	return path, lines
}

// waitLine collects lines until one contains want.
func waitLine(t *testing.T, lines <-chan string, want string) []string {
	t.Helper()
	var got []string
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended without %q: %q", want, got)
			}
			got = append(got, l)
			if strings.Contains(l, want) {
				return got
			}
		case <-timeout:
			t.Fatalf("no %q in the output within 2 minutes: %q", want, got)
		}
	}
}

// ext4Image makes an ext4 filesystem image of dir's contents and attaches
// it to a loop device, detached again when the test ends.
func ext4Image(t *testing.T, dir string) (img, dev string) {
	t.Helper()
	img = filepath.Join(t.TempDir(), "rootfs.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", dir, img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("detaching %s: %v: %s", dev, err, out)
		}
	})
	return img, dev
}

// blockBundle writes a bundle of pod pod whose busybox rootfs is moved
// into an ext4 image on a loop device; the bundle's rootfs directory stays
// empty, as containerd leaves it for a snapshot it does not mount.
func blockBundle(t *testing.T, pod string, args []string) (bundle, img, dev string) {
	t.Helper()
	bundle = makeBundle(t, args, func(s *specs.Spec) {
		s.Annotations = map[string]string{annotationContainerType: "container", annotationSandboxID: pod}
	})
	rootfs := filepath.Join(bundle, "rootfs")
	img, dev = ext4Image(t, rootfs)
	if err := os.RemoveAll(rootfs); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(rootfs, 0o711); err != nil {
		t.Fatal(err)
	}
	return bundle, img, dev
}

const (
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
)

// hostMountsOf lists the host's mounts of device dev.
func hostMountsOf(t *testing.T, dev string) []string {
	t.Helper()
	var found []string
	for _, l := range strings.Split(readFile(t, "/proc/self/mountinfo"), "\n") {
		if _, post, ok := strings.Cut(l, " - "); ok {
			if f := strings.Fields(post); len(f) > 1 && f[1] == dev {
				found = append(found, l)
			}
		}
	}
	return found
}

// holds reports whether process pid has dev open.
func holds(pid int, dev string) bool {
	fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && target == dev {
			return true
		}
	}
	return false
}

var guestRootLine = regexp.MustCompile(`^/dev/vd[a-z]+ / ext4 rw`)

// TestShimBlockRootfs: containers whose rootfs containerd hands over as a
// block device (what the devmapper snapshotter does, which needs a
// device-mapper this host's kernel lacks; a loop device stands in) get it
// as a hot-plugged virtio-blk disk mounted in the guest, never on the
// host. The pod's sandbox container boots the VM; its block containers
// come and go while it runs, in hypervisor.hotplug_ports = 1.
func TestShimBlockRootfs(t *testing.T) {
	e := requireEnv(t)
	for _, tool := range []string{"mkfs.ext4", "losetup", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s", tool)
		}
	}
	c := launchContainerd(t, e, daemonOpts{hullConfig: "[hypervisor]\nhotplug_ports = 1\n"})
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), shimNS), 10*time.Minute)
	defer cancel()

	// The pod's sandbox container, on a rootfs directory, as CRI makes it.
	pod := "blkpod"
	podBundle := makeBundle(t, []string{"sleep", "1000"}, func(s *specs.Spec) {
		s.Annotations = map[string]string{annotationContainerType: "sandbox", annotationSandboxID: pod}
	})
	log := shimLog(t, ctx, podBundle)
	address, err := startShim(t, c, pod, podBundle)
	if err != nil {
		t.Fatal(err)
	}
	s := connectShim(t, ctx, address, log)
	shimDone := false
	t.Cleanup(func() {
		if !shimDone {
			// Whatever failed: end the shim, then containerd's cleanup
			// (the `delete` action) and its leftover checks.
			_ = syscall.Kill(s.pid, syscall.SIGKILL)
			_ = shimCommand(c, podBundle, "-id", pod, "delete").Run()
		}
		if t.Failed() {
			t.Logf("shim log:\n%s", s.logBuf.String())
		}
	})
	if _, err := s.task.Create(ctx, &taskAPI.CreateTaskRequest{ID: pod, Bundle: podBundle}); err != nil {
		t.Fatalf("creating the pod sandbox: %v", err)
	}
	if _, err := s.task.Start(ctx, &taskAPI.StartRequest{ID: pod}); err != nil {
		t.Fatal(err)
	}

	// For comparison, a pod member on a shared rootfs directory.
	dirBundle := makeBundle(t, []string{"true"}, func(s *specs.Spec) {
		s.Annotations = map[string]string{annotationContainerType: "container", annotationSandboxID: pod}
	})
	start := time.Now()
	if _, err := s.task.Create(ctx, &taskAPI.CreateTaskRequest{ID: "dir1", Bundle: dirBundle}); err != nil {
		t.Fatalf("creating a pod member on a directory: %v", err)
	}
	t.Logf("create with a shared rootfs: %v", time.Since(start))
	if _, err := s.task.Delete(ctx, &taskAPI.DeleteRequest{ID: "dir1"}); err != nil {
		t.Fatal(err)
	}

	// A block container: its root is the disk.
	script := `grep ' / ' /proc/mounts; echo written-in-vm > /from-guest; sync; echo ready; sleep 1000`
	bundle, img, dev := blockBundle(t, pod, []string{"sh", "-c", script})
	// containerd asks the shim for each container; a pod member gets the
	// pod's shim.
	if a, err := startShim(t, c, "blk1", bundle); err != nil || a != address {
		t.Fatalf("shim start for a pod member: %q, %v (pod's shim at %s)", a, err, address)
	}
	stdout, lines := outputFIFO(t, ctx)
	rootfs := []*types.Mount{{Type: "ext4", Source: dev}}
	start = time.Now()
	if _, err := s.task.Create(ctx, &taskAPI.CreateTaskRequest{ID: "blk1", Bundle: bundle, Rootfs: rootfs, Stdout: stdout}); err != nil {
		t.Fatalf("creating the block container: %v", err)
	}
	t.Logf("create with a hot-plugged rootfs: %v", time.Since(start))
	if _, err := s.task.Start(ctx, &taskAPI.StartRequest{ID: "blk1"}); err != nil {
		t.Fatal(err)
	}
	out := waitLine(t, lines, "ready")
	if len(out) < 2 || !guestRootLine.MatchString(out[0]) {
		t.Errorf("the container's root is not a virtio-blk disk: %q", out)
	}
	t.Logf("root in the guest: %s", out[0])
	if m := hostMountsOf(t, dev); len(m) > 0 {
		t.Errorf("%s is mounted on the host while the guest has it: %q", dev, m)
	}
	qemu := pidOf(t, "qemu-system", "hull-"+pod, c.hullRoot+"/")
	if !holds(qemu, dev) {
		t.Errorf("qemu (pid %d) does not hold %s", qemu, dev)
	}

	// No port left for a second disk (hotplug_ports = 1), and a device the
	// host has mounted is refused: clear errors, nothing left behind.
	bundle2, img2, dev2 := blockBundle(t, pod, []string{"sh", "-c", "grep ' / ' /proc/mounts; cat /from-guest 2>/dev/null || echo no-file; touch /x 2>&1"})
	_, err = s.task.Create(ctx, &taskAPI.CreateTaskRequest{ID: "blk2", Bundle: bundle2, Rootfs: []*types.Mount{{Type: "ext4", Source: dev2}}})
	if err == nil || !strings.Contains(err.Error(), "no free hot-plug port in the vm: all 1 are in use (hypervisor.hotplug_ports)") {
		t.Errorf("a second disk in one port: %v", err)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "ro", dev2, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mounting %s: %v: %s", dev2, err, out)
	}
	_, err = s.task.Create(ctx, &taskAPI.CreateTaskRequest{ID: "blk2", Bundle: bundle2, Rootfs: []*types.Mount{{Type: "ext4", Source: dev2}}})
	if umount := exec.Command("umount", mnt).Run(); umount != nil {
		t.Fatal(umount)
	}
	if err == nil || !strings.Contains(err.Error(), "block device "+dev2+" is in use on the host") {
		t.Errorf("a disk mounted on the host: %v", err)
	}

	// Removing the container unplugs its disk while the VM runs on: what
	// the guest wrote is in the image, cleanly unmounted.
	if _, err := s.task.Kill(ctx, &taskAPI.KillRequest{ID: "blk1", Signal: uint32(syscall.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if w, err := s.task.Wait(ctx, &taskAPI.WaitRequest{ID: "blk1"}); err != nil || w.ExitStatus != 137 {
		t.Fatalf("wait: %v, %v", w, err)
	}
	start = time.Now()
	if _, err := s.task.Delete(ctx, &taskAPI.DeleteRequest{ID: "blk1"}); err != nil {
		t.Fatal(err)
	}
	t.Logf("delete with the unplug: %v", time.Since(start))
	if holds(qemu, dev) {
		t.Errorf("qemu still holds %s after the container was deleted", dev)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("the image is not clean after the guest let go: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "ro", dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mounting %s on the host: %v: %s", dev, err, out)
	}
	written, readErr := os.ReadFile(filepath.Join(mnt, "from-guest"))
	if err := exec.Command("umount", mnt).Run(); err != nil {
		t.Fatal(err)
	}
	if readErr != nil || string(written) != "written-in-vm\n" {
		t.Errorf("file the guest wrote to its root: %q, %v", written, readErr)
	}

	// The freed port takes the next disk, read-only this time.
	stdout2, lines2 := outputFIFO(t, ctx)
	rootfs2 := []*types.Mount{{Type: "ext4", Source: dev2, Options: []string{"ro"}}}
	if _, err := s.task.Create(ctx, &taskAPI.CreateTaskRequest{ID: "blk2", Bundle: bundle2, Rootfs: rootfs2, Stdout: stdout2}); err != nil {
		t.Fatalf("creating a block container in the freed port: %v", err)
	}
	if _, err := s.task.Start(ctx, &taskAPI.StartRequest{ID: "blk2"}); err != nil {
		t.Fatal(err)
	}
	if w, err := s.task.Wait(ctx, &taskAPI.WaitRequest{ID: "blk2"}); err != nil || w.ExitStatus != 1 {
		t.Errorf("blk2: %v, %v", w, err)
	}
	var out2 []string
	for l := range lines2 {
		out2 = append(out2, l)
	}
	if len(out2) != 3 || !regexp.MustCompile(`^/dev/vd[a-z]+ / ext4 ro`).MatchString(out2[0]) || out2[1] != "no-file" || !strings.Contains(out2[2], "Read-only file system") {
		t.Errorf("blk2 saw: %q", out2)
	}
	if _, err := s.task.Delete(ctx, &taskAPI.DeleteRequest{ID: "blk2"}); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fn", img2).CombinedOutput(); err != nil {
		t.Errorf("read-only image changed: %v: %s", err, out)
	}

	// The pod goes: VM, shim, socket, state.
	if _, err := s.task.Kill(ctx, &taskAPI.KillRequest{ID: pod, Signal: uint32(syscall.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Wait(ctx, &taskAPI.WaitRequest{ID: pod}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.task.Delete(ctx, &taskAPI.DeleteRequest{ID: pod}); err != nil {
		t.Fatal(err)
	}
	_, _ = s.task.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: pod})
	s.conn.Close()
	waitPidExit(t, s.pid, 30*time.Second)
	shimDone = true
	if _, err := os.Stat(strings.TrimPrefix(address, "unix://")); !os.IsNotExist(err) {
		t.Errorf("shim socket left: %v", err)
	}
	for _, d := range []string{dev, dev2} {
		if m := hostMountsOf(t, d); len(m) > 0 {
			t.Errorf("%s left mounted: %q", d, m)
		}
	}
	if l := s.logBuf.String(); strings.Contains(l, "level=warning") || strings.Contains(l, "level=error") {
		t.Errorf("the shim complained:\n%s", l)
	}
}

// TestShimBlockRootfsCrash: a lone container booted on a block rootfs,
// whose shim is killed: containerd's cleanup (the shim's `delete` action)
// leaves no VMM holding the device and nothing mounted, and what the
// guest synced is in the image.
func TestShimBlockRootfsCrash(t *testing.T) {
	e := requireEnv(t)
	for _, tool := range []string{"mkfs.ext4", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s", tool)
		}
	}
	c := launchContainerd(t, e, daemonOpts{})
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), shimNS), 5*time.Minute)
	defer cancel()
	id := "blkcrash"
	bundle, _, dev := blockBundle(t, id, []string{"sh", "-c", "echo synced > /from-guest; sync; echo ready; sleep 1000"})
	log := shimLog(t, ctx, bundle)
	address, err := startShim(t, c, id, bundle)
	if err != nil {
		t.Fatal(err)
	}
	s := connectShim(t, ctx, address, log)
	stdout, lines := outputFIFO(t, ctx)
	if _, err := s.task.Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: bundle, Rootfs: []*types.Mount{{Type: "ext4", Source: dev}}, Stdout: stdout}); err != nil {
		_ = syscall.Kill(s.pid, syscall.SIGKILL)
		t.Fatalf("creating a container that boots its vm on a disk: %v\n%s", err, s.logBuf.String())
	}
	if _, err := s.task.Start(ctx, &taskAPI.StartRequest{ID: id}); err != nil {
		t.Fatal(err)
	}
	waitLine(t, lines, "ready")
	qemu := pidOf(t, "qemu-system", "hull-"+id, c.hullRoot+"/")
	if !holds(qemu, dev) {
		t.Errorf("qemu does not hold %s", dev)
	}
	s.conn.Close()
	if err := syscall.Kill(s.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitPidExit(t, s.pid, 30*time.Second)
	if out, err := shimCommand(c, bundle, "-id", id, "delete").CombinedOutput(); err != nil {
		t.Fatalf("shim delete: %v: %s", err, out)
	}
	waitPidExit(t, qemu, 30*time.Second)
	if m := hostMountsOf(t, dev); len(m) > 0 {
		t.Errorf("%s mounted on the host: %q", dev, m)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "ro", dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mounting %s: %v: %s", dev, err, out)
	}
	written, readErr := os.ReadFile(filepath.Join(mnt, "from-guest"))
	if err := exec.Command("umount", mnt).Run(); err != nil {
		t.Fatal(err)
	}
	if readErr != nil || string(written) != "synced\n" {
		t.Errorf("file the guest synced: %q, %v", written, readErr)
	}
	_ = shim.RemoveSocket(address)
}

// TestShimBlockRootfsNoPorts: with hypervisor.hotplug_ports = 0 a block
// rootfs is refused with an error that names the setting, and the VM
// booted for it goes again.
func TestShimBlockRootfsNoPorts(t *testing.T) {
	e := requireEnv(t)
	for _, tool := range []string{"mkfs.ext4", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s", tool)
		}
	}
	c := launchContainerd(t, e, daemonOpts{hullConfig: "[hypervisor]\nhotplug_ports = 0\n"})
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), shimNS), 5*time.Minute)
	defer cancel()
	id := "blknoport"
	bundle, _, dev := blockBundle(t, id, []string{"true"})
	log := shimLog(t, ctx, bundle)
	address, err := startShim(t, c, id, bundle)
	if err != nil {
		t.Fatal(err)
	}
	s := connectShim(t, ctx, address, log)
	_, err = s.task.Create(ctx, &taskAPI.CreateTaskRequest{ID: id, Bundle: bundle, Rootfs: []*types.Mount{{Type: "ext4", Source: dev}}})
	if err == nil || !strings.Contains(err.Error(), "no free hot-plug port in the vm: it has none (hypervisor.hotplug_ports = 0)") {
		t.Errorf("block rootfs without ports: %v", err)
	}
	t.Logf("create refused: %v", err)
	_, _ = s.task.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: id})
	s.conn.Close()
	waitPidExit(t, s.pid, 30*time.Second)
	if _, err := os.Stat(strings.TrimPrefix(address, "unix://")); !os.IsNotExist(err) {
		t.Errorf("shim socket left: %v", err)
	}
}
