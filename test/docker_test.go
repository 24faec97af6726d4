package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/busybox"
)

// dockerImage is the image every docker test runs, imported from a busybox
// root filesystem: no registry is involved.
const dockerImage = "hull-busybox"

// dockerd is a private Docker daemon (its own data root, exec root, socket
// and containerd) with hull registered as the runtime "hull". Docker 20.10
// runs it through containerd's runc shim, as runc would be run.
type dockerd struct {
	cli      string // the docker client
	dir      string
	sock     string
	execRoot string
	log      string
}

// requireDocker returns the docker client and daemon, or skips the test.
// Debian's client (docker.io) is preferred over any other on PATH.
func requireDocker(t *testing.T) (cli, daemon string) {
	t.Helper()
	daemon, err := exec.LookPath("dockerd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/dockerd"); serr != nil {
			t.Skip("dockerd not installed (apt-get install docker.io)")
		}
		daemon = "/usr/sbin/dockerd"
	}
	cli = filepath.Join(filepath.Dir(filepath.Dir(daemon)), "bin", "docker") // /usr/sbin -> /usr/bin
	if _, err := os.Stat(cli); err != nil {
		if cli, err = exec.LookPath("docker"); err != nil {
			t.Skip("docker client not installed (apt-get install docker.io)")
		}
	}
	// dockerd starts its own containerd, which runs containers through
	// the runc shim.
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (apt-get install containerd)", bin)
		}
	}
	return cli, daemon
}

// startDocker starts dockerd with hull as runtime "hull" and imports the
// test image. Its cleanup removes what the tests left, stops dockerd and
// checks that nothing of hull, docker or containerd remains.
func startDocker(t *testing.T, e env) *dockerd {
	t.Helper()
	cli, daemon := requireDocker(t)
	dir := t.TempDir()
	d := &dockerd{
		cli:  cli,
		dir:  dir,
		sock: filepath.Join(dir, "docker.sock"),
		// Short: hull's state root, and the VM's sockets, go below it.
		execRoot: filepath.Join(dir, "x"),
		log:      filepath.Join(dir, "dockerd.log"),
	}
	// hull as dockerd runs it: the runc shim passes --root (below the exec
	// root) and --log, but no config, and dockerd's environment may not be
	// the test's, so a wrapper names the config with the guest image.
	cfg := filepath.Join(dir, "hull.toml")
	body := fmt.Sprintf("[runtime]\nroot = %q\n\n[image]\ndir = %q\n", filepath.Join(dir, "hull-unused"), e.imageDir)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "hull")
	script := fmt.Sprintf("#!/bin/sh\nexec %q --config %q \"$@\"\n", e.hull, cfg)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// An empty daemon config, so that /etc/docker/daemon.json is not read.
	daemonCfg := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(daemonCfg, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemon,
		"--config-file", daemonCfg,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", d.execRoot,
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"-H", "unix://"+d.sock,
		// No bridge and no firewall rules: the host's network stays as
		// it is. Containers run with --network none.
		"--bridge=none", "--iptables=false", "--ip-masq=false",
		"--add-runtime", "hull="+wrapper,
	)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.stop(t, cmd)
		log.Close()
		if t.Failed() {
			t.Logf("dockerd log, last warnings and errors:\n%s", problems(readFile(t, d.log), 60))
		}
	})
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(d.sock); err == nil && d.run(t, nil, "version").code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not start: %s", readFile(t, d.log))
		}
	}
	d.importImage(t)
	return d
}

// stop removes any container a test left, stops dockerd (and with it its
// containerd) and checks that no process, mount or hull state remains.
func (d *dockerd) stop(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if ids := strings.Fields(d.run(t, nil, "ps", "--all", "--quiet").stdout); len(ids) > 0 {
		t.Errorf("containers left by the tests: %v", ids)
		d.run(t, nil, append([]string{"rm", "--force"}, ids...)...)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Errorf("dockerd did not stop within a minute of SIGTERM")
		_ = cmd.Process.Kill()
		<-done
	}
	// Shims, hull's monitors, QEMU and virtiofsd all name the temp dir.
	waitNoProcessMentions(t, d.dir, time.Minute)
	for _, m := range mountsUnder(t, d.dir) {
		t.Errorf("leftover mount %s", m)
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}
	for _, root := range d.hullRoots(t) {
		assertNoLeftovers(t, root)
	}
}

// hullRoots are the state roots the runc shim gave hull: one per
// containerd namespace below <exec-root>/runtime-<name>.
func (d *dockerd) hullRoots(t *testing.T) []string {
	t.Helper()
	roots, err := filepath.Glob(filepath.Join(d.execRoot, "runtime-*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	return roots
}

// importImage imports a busybox root filesystem as dockerImage.
func (d *dockerd) importImage(t *testing.T) {
	t.Helper()
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if err := busybox.WriteRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	tarball, err := exec.Command("tar", "-C", rootfs, "-c", ".").Output()
	if err != nil {
		t.Fatalf("tar of the image rootfs: %v", err)
	}
	if r := d.run(t, tarball, "import", "-", dockerImage); r.code != 0 {
		t.Fatalf("docker import: exit %d: %s", r.code, r.stderr)
	}
}

// command is the docker client talking to this daemon.
func (d *dockerd) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, d.cli, append([]string{"--host", "unix://" + d.sock}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(d.dir, "client"))
	return cmd
}

// run runs docker to completion with stdin and returns what it printed.
func (d *dockerd) run(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := d.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running docker %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// mustRun runs docker and fails the test unless it exits 0.
func (d *dockerd) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	r := d.run(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("docker %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// dockerRun is `docker run` of dockerImage with hull and no network (the
// bridge needs libnetwork's veth in a network namespace hull would carry
// into the VM); --cidfile records the id, which --rm leaves nowhere else.
func (d *dockerd) dockerRun(t *testing.T, flags []string, cmd ...string) (result, string) {
	t.Helper()
	cidfile := filepath.Join(t.TempDir(), "cid")
	args := append([]string{"run", "--runtime", "hull", "--network", "none", "--cidfile", cidfile}, flags...)
	r := d.run(t, nil, append(append(args, dockerImage), cmd...)...)
	id, _ := os.ReadFile(cidfile)
	return r, string(id)
}

// waitContainerGone waits until nothing of container id remains: no hull
// state directory (named after the id's first 12 characters), no process
// (shim, monitor, QEMU, virtiofsd) naming it.
func (d *dockerd) waitContainerGone(t *testing.T, id string) {
	t.Helper()
	if len(id) < 12 {
		t.Fatalf("no container id (%q)", id)
	}
	short := id[:12]
	var left []string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		left = left[:0]
		for _, root := range d.hullRoots(t) {
			dirs, _ := filepath.Glob(filepath.Join(root, short+"*"))
			left = append(left, dirs...)
		}
		for _, pid := range pidsMatching(short) {
			if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !bytes.Contains(stat, []byte(") Z ")) {
				left = append(left, fmt.Sprintf("process %d", pid))
			}
		}
		if len(left) == 0 {
			return
		}
	}
	t.Errorf("container %s left %v", short, left)
}

// TestDocker drives Docker with hull as its runtime. The subtests share
// one daemon and image.
func TestDocker(t *testing.T) {
	e := requireEnv(t)
	d := startDocker(t, e)

	t.Run("RunShowsGuestKernel", func(t *testing.T) {
		t.Parallel()
		r, id := d.dockerRun(t, []string{"--rm"}, "uname", "-r")
		if r.code != 0 {
			t.Fatalf("docker run uname -r: exit %d: %s", r.code, r.stderr)
		}
		got := strings.TrimSpace(r.stdout)
		if got == hostKernel(t) {
			t.Fatalf("container sees the host kernel %s: not in a VM", got)
		}
		if want := guestKernel(t, e); got != want {
			t.Fatalf("uname -r = %q, want the guest image's kernel %q", got, want)
		}
		t.Logf("guest kernel %s, host kernel %s", got, hostKernel(t))
		d.waitContainerGone(t, id)
	})

	t.Run("ExitCodeAndStreams", func(t *testing.T) {
		t.Parallel()
		r, id := d.dockerRun(t, []string{"--rm"}, "sh", "-c", "echo out; echo err >&2; exit 3")
		if r.code != 3 {
			t.Fatalf("exit code %d, want 3 (stderr %q)", r.code, r.stderr)
		}
		if r.stdout != "out\n" || r.stderr != "err\n" {
			t.Errorf("stdout %q, stderr %q, want \"out\\n\" and \"err\\n\"", r.stdout, r.stderr)
		}
		d.waitContainerGone(t, id)
	})

	t.Run("RuntimeErrorReachesDocker", func(t *testing.T) {
		t.Parallel()
		// Docker reads hull's error from the --log file, as it does runc's.
		r, id := d.dockerRun(t, []string{"--rm"}, "/no/such/binary")
		if r.code == 0 || !strings.Contains(r.stderr, "/no/such/binary") {
			t.Errorf("exit %d, stderr %q: want hull's error naming the missing executable", r.code, r.stderr)
		}
		if id != "" {
			d.waitContainerGone(t, id)
		}
	})

	t.Run("Stdin", func(t *testing.T) {
		t.Parallel()
		cidfile := filepath.Join(t.TempDir(), "cid")
		r := d.run(t, []byte("through stdin\n"), "run", "--interactive", "--rm", "--runtime", "hull",
			"--network", "none", "--cidfile", cidfile, dockerImage, "sh", "-c", "cat; exit 6")
		if r.code != 6 || r.stdout != "through stdin\n" {
			t.Errorf("docker run -i cat: exit %d, stdout %q, want 6 and the input (stderr %s)", r.code, r.stdout, r.stderr)
		}
		id, _ := os.ReadFile(cidfile)
		d.waitContainerGone(t, string(id))
	})

	t.Run("DetachedLifecycle", func(t *testing.T) {
		t.Parallel()
		const name = "hull-detached"
		r, _ := d.dockerRun(t, []string{"--detach", "--name", name},
			"sh", "-c", "echo hello; trap 'echo bye; exit 0' TERM; while :; do sleep 0.1; done")
		if r.code != 0 {
			t.Fatalf("docker run -d: exit %d: %s", r.code, r.stderr)
		}
		id := strings.TrimSpace(r.stdout)

		// Docker's pid is the one hull reports: hull's monitor, as runc
		// would report the container's init.
		pid := strings.TrimSpace(d.mustRun(t, "inspect", "--format", "{{.State.Pid}}", name))
		roots := d.hullRoots(t)
		if len(roots) != 1 {
			t.Fatalf("hull state roots below %s: %v, want one", d.execRoot, roots)
		}
		h := &hullCmd{e: e, root: roots[0], config: filepath.Join(d.dir, "hull.toml")}
		st := h.run(t, nil, "--root", roots[0], "state", id)
		if st.code != 0 || !strings.Contains(st.stdout, `"status": "running"`) || !strings.Contains(st.stdout, `"pid": `+pid+",") {
			t.Fatalf("hull state %s: exit %d, want running with pid %s: %s%s", id, st.code, pid, st.stdout, st.stderr)
		}

		res := d.run(t, nil, "exec", name, "sh", "-c", "echo in-exec; echo exec-err >&2; exit 5")
		if res.code != 5 || res.stdout != "in-exec\n" || res.stderr != "exec-err\n" {
			t.Errorf("exec: exit %d, stdout %q, stderr %q, want 5, \"in-exec\\n\", \"exec-err\\n\"", res.code, res.stdout, res.stderr)
		}
		res = d.run(t, []byte("exec stdin\n"), "exec", "--interactive", name, "cat")
		if res.code != 0 || res.stdout != "exec stdin\n" {
			t.Errorf("exec -i cat: exit %d, stdout %q (stderr %s)", res.code, res.stdout, res.stderr)
		}
		if out := d.mustRun(t, "exec", name, "cat", "/etc/hostname"); strings.TrimSpace(out) != id[:12] {
			t.Errorf("/etc/hostname %q, want docker's %q", out, id[:12])
		}

		waitDockerLogs(t, d, name, "hello\n")
		start := time.Now()
		d.mustRun(t, "stop", "--time", "30", name)
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("stop took %v: SIGTERM did not reach the container", took)
		}
		if got := strings.TrimSpace(d.mustRun(t, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name)); got != "exited 0" {
			t.Errorf("state after stop %q, want \"exited 0\"", got)
		}
		if logs := d.mustRun(t, "logs", name); logs != "hello\nbye\n" {
			t.Errorf("logs %q, want %q", logs, "hello\nbye\n")
		}
		d.mustRun(t, "rm", name)
		if out := d.mustRun(t, "ps", "--all", "--quiet", "--filter", "name="+name); out != "" {
			t.Errorf("container still listed after rm: %q", out)
		}
		d.waitContainerGone(t, id)
	})

	t.Run("Interactive", func(t *testing.T) {
		t.Parallel()
		cidfile := filepath.Join(t.TempDir(), "cid")
		run := d.command(context.Background(), "run", "--interactive", "--tty", "--rm", "--runtime", "hull",
			"--network", "none", "--cidfile", cidfile, dockerImage, "sh")
		quoted := make([]string, len(run.Args))
		for i, a := range run.Args {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		// script gives docker a terminal of 30 rows and 100 columns; -e
		// makes it exit with docker's status. Its stdin stays open until
		// the end: at EOF script would type an end-of-file into the
		// terminal.
		cmd := exec.CommandContext(ctx, "script", "-qec", "stty rows 30 cols 100; exec "+strings.Join(quoted, " "), "/dev/null")
		cmd.Env = run.Env
		in, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		cmd.Stdin = in
		var out lockedBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		in.Close()
		// Typed before the VM is up: the terminal keeps it for sh. The
		// arithmetic shows that a shell ran it, not the terminal's echo.
		// docker 20.10 sets the container's terminal size only after
		// ContainerStart returns (API 1.41 has no HostConfig.ConsoleSize),
		// so the shell may run before the size arrives, with any runtime:
		// it polls for up to 10 s, and "size 30 100" shows the resize
		// arrived. busybox's stty exits 0 without printing a size while
		// the terminal has none, so the poll looks at what it prints.
		// Then the shell reads its exit status from the terminal: the
		// test types it once it has seen everything it checks, so the
		// checks do not race the end of the container's output.
		const line = "echo hi $((6*7)); tty; i=0; s=$(stty size 2>/dev/null); " +
			"until [ -n \"$s\" ] || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); s=$(stty size 2>/dev/null); done; " +
			"echo \"size $s\"; echo read''y; read x; exit $x\n"
		if _, err := w.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("output %q", out.String())
			}
		})
		// The quotes keep "ready" out of the terminal's echo of the line.
		waitFor(t, "shell at its read", time.Minute, func() bool { return strings.Contains(out.String(), "ready") })
		for _, want := range []string{"hi 42", "/dev/pts/", "size 30 100"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output %q lacks %q", out.String(), want)
			}
		}
		if _, err := w.Write([]byte("7\n")); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 7 {
			t.Errorf("docker run -it: %v, want exit 7 (typed after start); output %q", err, out.String())
		}
		id, _ := os.ReadFile(cidfile)
		d.waitContainerGone(t, string(id))
	})
}

// waitDockerLogs waits until the container's log is want.
func waitDockerLogs(t *testing.T, d *dockerd, name, want string) {
	t.Helper()
	var logs string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if logs = d.mustRun(t, "logs", name); logs == want {
			return
		}
	}
	t.Fatalf("logs %q, want %q", logs, want)
}
