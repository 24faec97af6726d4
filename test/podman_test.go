package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/busybox"
)

// podmanImage is the image every podman test runs, imported from a busybox
// root filesystem: no registry is involved.
const podmanImage = "localhost/hull-busybox"

// podman is a podman with a private store, shared by the subtests of
// TestPodman, whose runtime is hull.
type podman struct {
	bin   string
	store string
}

// podmanRuntime is hull as one subtest's podman runs it: a wrapper that
// gives hull a private configuration and state root. podman 4.3 passes its
// --runtime-flag options to every runtime call but `delete` and gives the
// runtime a cleaned environment, so neither a flag nor $HULL_CONFIG would
// reach every call.
type podmanRuntime struct {
	p       *podman
	h       *hullCmd
	wrapper string
}

// requirePodman skips the test when podman or conmon is missing.
func requirePodman(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman not installed (apt-get install podman)")
	}
	if _, err := exec.LookPath("conmon"); err != nil {
		t.Skip("conmon not installed (apt-get install conmon)")
	}
	return bin
}

// newPodman creates a private podman store and imports the test image.
func newPodman(t *testing.T, bin string) *podman {
	t.Helper()
	p := &podman{bin: bin, store: t.TempDir()}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := busybox.WriteRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	tar := exec.Command("tar", "-C", rootfs, "-c", ".")
	out, err := tar.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	imp := p.command(context.Background(), "", "import", "-", podmanImage)
	imp.Stdin = out
	var stderr bytes.Buffer
	imp.Stderr = &stderr
	if err := tar.Start(); err != nil {
		t.Fatal(err)
	}
	if err := imp.Run(); err != nil {
		t.Fatalf("podman import: %v: %s", err, stderr.String())
	}
	if err := tar.Wait(); err != nil {
		t.Fatalf("tar of the image rootfs: %v", err)
	}
	t.Cleanup(func() {
		for _, m := range mountsUnder(t, p.store) {
			t.Errorf("leftover podman mount %s", m)
			// Detached, so that the temporary directory can go.
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
	})
	return p
}

// command is podman with the store, and runtime unless it is empty.
func (p *podman) command(ctx context.Context, runtime string, args ...string) *exec.Cmd {
	global := []string{
		"--root", filepath.Join(p.store, "root"),
		"--runroot", filepath.Join(p.store, "run"),
		"--tmpdir", filepath.Join(p.store, "tmp"),
		"--network-config-dir", filepath.Join(p.store, "net"),
		"--cgroup-manager", "cgroupfs",
		"--events-backend", "file",
	}
	if runtime != "" {
		global = append(global, "--runtime", runtime)
	}
	return exec.CommandContext(ctx, p.bin, append(global, args...)...)
}

// runtime sets up hull for one subtest.
func (p *podman) runtime(t *testing.T, e env) *podmanRuntime {
	t.Helper()
	h := newHull(t, e, "")
	dir := filepath.Dir(h.config) // the config, the state root, the wrapper
	r := &podmanRuntime{p: p, h: h, wrapper: filepath.Join(dir, "hull")}
	script := fmt.Sprintf("#!/bin/sh\nexec %q --config %q \"$@\"\n", e.hull, h.config)
	if err := os.WriteFile(r.wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// Registered after newHull's check, so it runs first: conmon and
	// podman's cleanup process may still be finishing when podman returns.
	t.Cleanup(func() { waitNoProcessMentions(t, dir, time.Minute) })
	return r
}

// run runs podman to completion and returns what it printed.
func (r *podmanRuntime) run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := r.p.command(ctx, r.wrapper, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running podman %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// mustRun runs podman and fails the test unless it exits 0.
func (r *podmanRuntime) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	res := r.run(t, args...)
	if res.code != 0 {
		t.Fatalf("podman %s: exit %d: %s", strings.Join(args, " "), res.code, res.stderr)
	}
	return res.stdout
}

// runFlags are the flags of most containers the tests run: no network
// (TestPodmanPublishPort has one), and rlimits the host can grant, as runc
// would need them here.
var runFlags = []string{"--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"}

func runArgs(extra ...string) []string {
	return append(append([]string{"run"}, runFlags...), extra...)
}

// guestKernel is the kernel version the guest image was built with.
func guestKernel(t *testing.T, e env) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.imageDir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		KernelVersion string `json:"kernelVersion"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.KernelVersion == "" {
		t.Fatalf("guest image manifest has no kernel version: %v", err)
	}
	return m.KernelVersion
}

// TestPodman drives podman with hull as its runtime. The subtests share one
// store and image; each has its own hull state root.
func TestPodman(t *testing.T) {
	e := requireEnv(t)
	p := newPodman(t, requirePodman(t))

	t.Run("RunShowsGuestKernel", func(t *testing.T) {
		t.Parallel()
		r := p.runtime(t, e)
		got := strings.TrimSpace(r.mustRun(t, runArgs("--rm", podmanImage, "uname", "-r")...))
		if got == hostKernel(t) {
			t.Fatalf("container sees the host kernel %s: not in a VM", got)
		}
		if want := guestKernel(t, e); got != want {
			t.Fatalf("uname -r = %q, want the guest image's kernel %q", got, want)
		}
		t.Logf("guest kernel %s, host kernel %s", got, hostKernel(t))
	})

	t.Run("ExitCode", func(t *testing.T) {
		t.Parallel()
		r := p.runtime(t, e)
		res := r.run(t, runArgs("--rm", podmanImage, "sh", "-c", "echo out; echo err >&2; exit 3")...)
		if res.code != 3 {
			t.Fatalf("exit code %d, want 3 (stderr %q)", res.code, res.stderr)
		}
		if res.stdout != "out\n" || !strings.Contains(res.stderr, "err\n") {
			t.Fatalf("stdout %q, stderr %q", res.stdout, res.stderr)
		}
	})

	t.Run("DetachedLifecycle", func(t *testing.T) {
		t.Parallel()
		r := p.runtime(t, e)
		const name = "hull-detached"
		id := strings.TrimSpace(r.mustRun(t, runArgs("-d", "--name", name, podmanImage,
			"sh", "-c", "echo hello; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done")...))

		// podman's pid is the monitor that hull reports, as runc reports
		// the container's init.
		pid := strings.TrimSpace(r.mustRun(t, "inspect", "--format", "{{.State.Pid}}", name))
		st := r.h.run(t, nil, "state", id)
		if st.code != 0 || !strings.Contains(st.stdout, `"status": "running"`) || !strings.Contains(st.stdout, `"pid": `+pid+",") {
			t.Fatalf("hull state %s: exit %d, want running with pid %s: %s%s", id, st.code, pid, st.stdout, st.stderr)
		}

		res := r.run(t, "exec", name, "sh", "-c", "echo in-exec; exit 5")
		if res.code != 5 || res.stdout != "in-exec\n" {
			t.Fatalf("exec: exit %d, stdout %q, want 5 and \"in-exec\\n\" (stderr %s)", res.code, res.stdout, res.stderr)
		}
		if out := r.mustRun(t, "exec", name, "cat", "/etc/hostname"); strings.TrimSpace(out) != id[:12] {
			t.Errorf("/etc/hostname %q, want podman's %q", out, id[:12])
		}

		waitLogs(t, r, name, "hello\n")
		start := time.Now()
		r.mustRun(t, "stop", "--time", "30", name)
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("stop took %v: SIGTERM did not reach the container", d)
		}
		if got := strings.TrimSpace(r.mustRun(t, "inspect", "--format", "{{.State.ExitCode}}", name)); got != "0" {
			t.Errorf("exit code after stop %s, want 0", got)
		}
		if logs := r.mustRun(t, "logs", name); logs != "hello\nbye\n" {
			t.Errorf("logs %q, want %q", logs, "hello\nbye\n")
		}
		r.mustRun(t, "rm", name)
		if out := r.mustRun(t, "ps", "--all", "--quiet", "--filter", "name="+name); out != "" {
			t.Errorf("container still listed after rm: %q", out)
		}
	})

	t.Run("Interactive", func(t *testing.T) {
		t.Parallel()
		r := p.runtime(t, e)
		podmanRun := r.p.command(context.Background(), r.wrapper,
			runArgs("-it", "--rm", podmanImage, "sh", "-c", "read x; echo got $x; tty; exit 4")...)
		quoted := make([]string, len(podmanRun.Args))
		for i, a := range podmanRun.Args {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// script gives podman a terminal; -e makes it exit with podman's
		// status. Its stdin stays open until the end: at EOF script would
		// type an end-of-file into the terminal.
		cmd := exec.CommandContext(ctx, "script", "-qec", strings.Join(quoted, " "), "/dev/null")
		in, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		cmd.Stdin = in
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		in.Close()
		// Typed before the VM is up: the terminal keeps it for sh.
		if _, err := w.Write([]byte("hello\n")); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 4 {
			t.Errorf("podman run -it: %v, want exit 4; output %q", err, out.String())
		}
		for _, want := range []string{"got hello", "/dev/pts/"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output %q lacks %q", out.String(), want)
			}
		}
	})
}

// TestPodmanPublishPort runs podman with its CNI bridge network in a network
// namespace that stands for the host (podman's iptables rules stay in it),
// and fetches from a container's server through the published port.
func TestPodmanPublishPort(t *testing.T) {
	e := requireEnv(t)
	p := newPodman(t, requirePodman(t))
	r := p.runtime(t, e)
	const ns = "hullpodmanhost"
	_ = exec.Command("ip", "netns", "del", ns).Run()
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	// The host's address: one end of a veth pair inside the namespace.
	sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	sh(t, "ip", "-n", ns, "link", "add", "uplink", "type", "veth", "peer", "name", "uplink1")
	sh(t, "ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "uplink")
	sh(t, "ip", "-n", ns, "link", "set", "uplink", "up")
	sh(t, "ip", "-n", ns, "link", "set", "uplink1", "up")
	inHost := func(args ...string) result {
		t.Helper()
		cmd := r.p.command(context.Background(), r.wrapper, args...)
		cmd.Args = append([]string{"nsenter", "--net=/var/run/netns/" + ns, "--"}, cmd.Args...)
		cmd.Path, _ = exec.LookPath("nsenter")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return result{out.String(), errb.String(), code}
	}
	const name = "hull-web"
	res := inHost("run", "-d", "--name", name, "-p", "8080:80", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
		podmanImage, "sh", "-c", "mkdir -p /www && echo hello-from-podman > /www/index.html && exec httpd -f -p 80 -h /www")
	if res.code != 0 {
		t.Fatalf("podman run -p 8080:80: exit %d: %s", res.code, res.stderr)
	}
	got := httpGet(t, []string{"nsenter", "--net=/var/run/netns/" + ns}, "192.0.2.1", 8080)
	if !strings.HasSuffix(got, "\r\n\r\nhello-from-podman\n") {
		t.Errorf("fetched %q through the published port", got)
	}
	ip := strings.TrimSpace(inHost("inspect", "--format", "{{.NetworkSettings.IPAddress}}", name).stdout)
	addr := inHost("exec", name, "ip", "-o", "-4", "addr", "show", "eth0")
	t.Logf("podman says %s; in the VM: %s", ip, addr.stdout)
	if ip == "" || !strings.Contains(addr.stdout, "inet "+ip+"/") {
		t.Errorf("container ip %q, eth0 in the VM: %q %q", ip, addr.stdout, addr.stderr)
	}
	if res := inHost("rm", "--force", "--time", "5", name); res.code != 0 {
		t.Errorf("podman rm: %s", res.stderr)
	}
}

// waitLogs waits until the container's log is want.
func waitLogs(t *testing.T, r *podmanRuntime, name, want string) {
	t.Helper()
	var logs string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if logs = r.mustRun(t, "logs", name); logs == want {
			return
		}
	}
	t.Fatalf("logs %q, want %q", logs, want)
}

// waitNoProcessMentions waits until no process names dir on its command
// line (hull's monitor, QEMU, virtiofsd, conmon, podman's cleanup), and
// fails the test if one is left after timeout.
func waitNoProcessMentions(t *testing.T, dir string, timeout time.Duration) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		left = left[:0]
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, err := os.ReadFile(p)
			if err != nil || !bytes.Contains(b, []byte(dir)) {
				continue
			}
			if stat, err := os.ReadFile(filepath.Join(filepath.Dir(p), "stat")); err == nil && bytes.Contains(stat, []byte(") Z ")) {
				continue // exited; its parent has yet to reap it
			}
			left = append(left, fmt.Sprintf("%s: %s", filepath.Dir(p), bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
	}
	for _, l := range left {
		t.Errorf("leftover process %s", l)
	}
}

// mountsUnder lists the mount points below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}
