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

	"github.com/hullrt/hull/internal/busybox"
)

const testImage = "docker.io/library/hull-busybox:latest"

// containerd is a private containerd daemon whose PATH finds hull's shim.
type containerd struct {
	dir      string
	sock     string
	hullRoot string // hull's state root, in the config the shim reads
	pid      int    // the daemon's
	e        env
}

// daemonOpts are what a test changes in its private containerd.
type daemonOpts struct {
	// config is TOML appended to containerd's config; without a
	// [plugins."io.containerd.grpc.v1.cri"] table the CRI plugin is off.
	config string
	// hullConfig is TOML appended to the config the shim reads.
	hullConfig string
	// netns runs containerd in a network namespace of its own with lo up,
	// so that CNI changes nothing on the host.
	netns bool
}

// startContainerd starts containerd without the CRI plugin and imports
// the busybox test image.
func startContainerd(t *testing.T, e env) *containerd {
	t.Helper()
	c := launchContainerd(t, e, daemonOpts{})
	c.importImage(t, "default", testImage, []string{"sh"})
	return c
}

// launchContainerd starts containerd with its own config, root, state and
// socket under a temp dir. Its cleanup stops containerd and checks that
// hull left nothing behind.
func launchContainerd(t *testing.T, e env, o daemonOpts) *containerd {
	t.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("containerd not installed (apt-get install containerd)")
	}
	shim := filepath.Join(filepath.Dir(e.hull), "containerd-shim-hull-v2")
	if _, err := os.Stat(shim); err != nil {
		t.Fatalf("shim not built: %v", err)
	}
	dir := t.TempDir()
	c := &containerd{dir: dir, sock: filepath.Join(dir, "containerd.sock"), hullRoot: filepath.Join(dir, "hull"), e: e}
	hullCfg := filepath.Join(dir, "hull.toml")
	body := fmt.Sprintf("[runtime]\nroot = %q\n[image]\ndir = %q\n%s", c.hullRoot, e.imageDir, o.hullConfig)
	if err := os.WriteFile(hullCfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	extra := o.config
	if !strings.Contains(extra, `[plugins."io.containerd.grpc.v1.cri"]`) {
		extra = "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n" + extra
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
%s
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), extra, c.sock, c.sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{bin, "--config", filepath.Join(dir, "config.toml")}
	if o.netns {
		// sh execs containerd: the child's pid stays containerd's.
		args = append([]string{"unshare", "--net", "--", "sh", "-c", `ip link set lo up && exec "$@"`, "sh"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(shim)+":"+os.Getenv("PATH"), "HULL_CONFIG="+hullCfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.pid = cmd.Process.Pid
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		log.Close()
		// containerd's own mounts (snapshots, CRI's shm and netns) go with it.
		_ = exec.Command("umount", "-R", filepath.Join(dir, "root")).Run()
		_ = exec.Command("umount", "-R", filepath.Join(dir, "state")).Run()
		assertNoLeftovers(t, c.hullRoot)
		if t.Failed() {
			t.Logf("containerd log, last warnings and errors:\n%s", problems(readFile(t, log.Name()), 80))
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(c.sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not start: %s", readFile(t, log.Name()))
		}
	}
	return c
}

// problems is the last n warnings and errors of a containerd log.
func problems(log string, n int) string {
	var lines []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "level=warning") || strings.Contains(l, "level=error") || strings.Contains(l, "level=fatal") {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// importImage imports a busybox image named ref whose command is cmd into
// containerd namespace ns.
func (c *containerd) importImage(t *testing.T, ns, ref string, cmd []string) {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "image.tar")
	if err := busybox.WriteImageArchive(archive, ref, cmd); err != nil {
		t.Fatal(err)
	}
	if r := c.ctr(t, nil, "-n", ns, "image", "import", archive); r.code != 0 {
		t.Fatalf("importing image %s: %s", ref, r.stderr)
	}
}

// ctr runs a ctr command against the private containerd.
func (c *containerd) ctr(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.sock}, args...)...)
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
		t.Fatalf("ctr %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

func TestContainerdRunRemove(t *testing.T) {
	e := requireEnv(t)
	c := startContainerd(t, e)
	r := c.ctr(t, nil, "run", "--rm", "--runtime", "io.containerd.hull.v2", testImage, "uname", "uname", "-r")
	if r.code != 0 || strings.TrimSpace(r.stdout) == "" || strings.TrimSpace(r.stdout) == hostKernel(t) {
		t.Fatalf("ctr run uname -r: exit %d, %q %q (host %s)", r.code, r.stdout, r.stderr, hostKernel(t))
	}
	r = c.ctr(t, nil, "run", "--rm", "--runtime", "io.containerd.hull.v2", testImage, "exit9", "sh", "-c", "echo err >&2; exit 9")
	if r.code != 9 || !strings.Contains(r.stderr, "err") {
		t.Fatalf("exit code: %d %q", r.code, r.stderr)
	}
	r = c.ctr(t, []byte("through stdin\n"), "run", "--rm", "--runtime", "io.containerd.hull.v2", testImage, "cat", "cat")
	if r.code != 0 || r.stdout != "through stdin\n" {
		t.Fatalf("stdin: %d %q %q", r.code, r.stdout, r.stderr)
	}
}

func TestContainerdTaskVerbs(t *testing.T) {
	e := requireEnv(t)
	c := startContainerd(t, e)
	rt := []string{"--runtime", "io.containerd.hull.v2"}
	if r := c.ctr(t, nil, append(append([]string{"run", "-d"}, rt...), testImage, "verbs", "sleep", "1000")...); r.code != 0 {
		t.Fatalf("run -d: %s", r.stderr)
	}
	r := c.ctr(t, nil, "task", "exec", "--exec-id", "e1", "verbs", "sh", "-c", "echo in-exec; exit 4")
	if r.code != 4 || r.stdout != "in-exec\n" {
		t.Errorf("task exec: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := c.ctr(t, nil, "task", "pause", "verbs"); r.code != 0 {
		t.Errorf("pause: %s", r.stderr)
	}
	if r := c.ctr(t, nil, "task", "ls"); !strings.Contains(r.stdout, "PAUSED") {
		t.Errorf("task ls after pause: %s", r.stdout)
	}
	if r := c.ctr(t, nil, "task", "resume", "verbs"); r.code != 0 {
		t.Errorf("resume: %s", r.stderr)
	}
	r = c.ctr(t, nil, "task", "metrics", "verbs")
	if r.code != 0 || !strings.Contains(r.stdout, "memory.usage") || !strings.Contains(r.stdout, "pids.current") {
		t.Errorf("metrics: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := c.ctr(t, nil, "task", "ps", "verbs"); r.code != 0 || len(strings.Split(strings.TrimSpace(r.stdout), "\n")) < 2 {
		t.Errorf("ps: %q %q", r.stdout, r.stderr)
	}
	if r := c.ctr(t, nil, "task", "kill", "-s", "KILL", "verbs"); r.code != 0 {
		t.Errorf("kill: %s", r.stderr)
	}
	waitTaskStopped(t, c, "verbs")
	if r := c.ctr(t, nil, "task", "rm", "verbs"); r.code != 0 {
		t.Errorf("task rm: %s", r.stderr)
	}
	if r := c.ctr(t, nil, "container", "rm", "verbs"); r.code != 0 {
		t.Errorf("container rm: %s", r.stderr)
	}
}

func waitTaskStopped(t *testing.T, c *containerd, id string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r := c.ctr(t, nil, "task", "ls"); strings.Contains(r.stdout, "STOPPED") {
			return
		}
	}
	t.Fatalf("task %s did not stop", id)
}

func TestContainerdTTY(t *testing.T) {
	e := requireEnv(t)
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("no script(1) to provide a pty")
	}
	c := startContainerd(t, e)
	// ctr sends the terminal's size only once the task has started, so
	// the shell polls for it (busybox's stty prints nothing and exits 0
	// while the terminal has no size).
	const poll = `tty; i=0; s=$(stty size 2>/dev/null); until [ -n "$s" ] || [ $i -ge 100 ]; do ` +
		`sleep 0.1; i=$((i+1)); s=$(stty size 2>/dev/null); done; echo "size $s"`
	cmdline := fmt.Sprintf("stty rows 33 cols 99; ctr --address %s run --rm -t --runtime io.containerd.hull.v2 %s tty sh -c '%s'", c.sock, testImage, poll)
	out, err := exec.Command("script", "-qec", cmdline, "/dev/null").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "/dev/pts/") || !strings.Contains(string(out), "size 33 99") {
		t.Fatalf("ctr run -t: %v: %q", err, out)
	}
}

// A VMM that dies under a running task: the task exits, containerd hears
// of it, and removing the task leaves nothing.
func TestContainerdVMMCrash(t *testing.T) {
	e := requireEnv(t)
	c := startContainerd(t, e)
	if r := c.ctr(t, nil, "run", "-d", "--runtime", "io.containerd.hull.v2", testImage, "crash", "sleep", "1000"); r.code != 0 {
		t.Fatalf("run -d: %s", r.stderr)
	}
	// Scoped to this test's root: other tests (or developers) may run a
	// VM named hull-crash on the same host at the same time.
	qemu := pidOf(t, "qemu-system", "hull-crash", c.hullRoot+"/")
	if err := syscall.Kill(qemu, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitTaskStopped(t, c, "crash")
	if r := c.ctr(t, nil, "task", "rm", "crash"); r.code != 0 {
		t.Fatalf("task rm: %s", r.stderr)
	}
	if r := c.ctr(t, nil, "container", "rm", "crash"); r.code != 0 {
		t.Fatalf("container rm: %s", r.stderr)
	}
}

// The OOM killer in the guest reaches containerd as a TaskOOM event.
func TestContainerdOOMEvent(t *testing.T) {
	e := requireEnv(t)
	c := startContainerd(t, e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := exec.CommandContext(ctx, "ctr", "--address", c.sock, "events")
	out, err := os.Create(filepath.Join(t.TempDir(), "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	events.Stdout = out
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	defer events.Wait()
	time.Sleep(200 * time.Millisecond) // subscribed before the task starts
	r := c.ctr(t, nil, "run", "--rm", "--memory-limit", "33554432", "--runtime", "io.containerd.hull.v2", testImage, "oom",
		"sh", "-c", "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done")
	if r.code != 137 {
		t.Errorf("OOM-killed task exited %d, want 137 (%s)", r.code, r.stderr)
	}
	seen := ""
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(seen, "/tasks/delete") && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		seen = readFile(t, out.Name())
	}
	cancel()
	for _, topic := range []string{"/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit", "/tasks/delete"} {
		if !strings.Contains(seen, topic) {
			t.Errorf("no %s event in:\n%s", topic, seen)
		}
	}
}
