package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/busybox"
)

func hostKernel(t *testing.T) string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

func TestRunShowsGuestKernel(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	b := makeBundle(t, []string{"sh", "-c", "uname -r; cat /proc/sys/kernel/random/boot_id"}, nil)
	r := h.run(t, nil, "run", "--bundle", b, "uname")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("unexpected output %q", r.stdout)
	}
	guest := lines[0]
	if guest == "" || guest == hostKernel(t) {
		t.Fatalf("guest kernel %q must differ from host kernel %q", guest, hostKernel(t))
	}
	hostBoot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if lines[1] == strings.TrimSpace(string(hostBoot)) {
		t.Fatal("container sees the host's boot id: not in a VM")
	}
	t.Logf("guest kernel %s, host kernel %s", guest, hostKernel(t))
}

// The share's read-ahead, as the agent sets it (docs/design/004).
func TestRunShareReadAhead(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	script := `cat /sys/class/bdi/$(awk '$5 == "/" {print $3}' /proc/self/mountinfo)/read_ahead_kb`
	b := makeBundle(t, []string{"sh", "-c", script}, nil)
	r := h.run(t, nil, "run", "--bundle", b, "tuning")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	if got := strings.TrimSpace(r.stdout); got != "1024" {
		t.Fatalf("read-ahead of the rootfs %q KiB, want 1024", got)
	}
}

func TestRunStdioAndExitCode(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	b := makeBundle(t, []string{"sh", "-c", "echo out; echo err >&2; exit 7"}, nil)
	r := h.run(t, nil, "run", "--bundle", b, "stdio")
	if r.code != 7 {
		t.Errorf("exit code %d, want 7 (stderr %q)", r.code, r.stderr)
	}
	if r.stdout != "out\n" {
		t.Errorf("stdout %q, want %q", r.stdout, "out\n")
	}
	if r.stderr != "err\n" {
		t.Errorf("stderr %q, want %q", r.stderr, "err\n")
	}
}

func TestRunStdinRoundTrip(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	data := make([]byte, 10<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	b := makeBundle(t, []string{"cat"}, nil)
	r := h.run(t, data, "run", "--bundle", b, "cat")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	if !bytes.Equal([]byte(r.stdout), data) {
		t.Fatalf("stdin came back altered: %d bytes in, %d out", len(data), len(r.stdout))
	}
}

func TestRunForwardsSigterm(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	b := makeBundle(t, []string{"sh", "-c", "echo ready; exec sleep 1000"}, busybox.WithoutPIDNamespace)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd, stdout, stderr := h.start(t, ctx, "run", "--bundle", b, "sigterm")
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("container did not start: %q %v (stderr %s)", line, err, stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 143 {
		t.Fatalf("hull run after SIGTERM: %v, want exit 143 (stderr %s)", err, stderr.String())
	}
}

// TestRunOutputReaderGoes: `hull run ... | head -1`. As with runc, whose
// container writes to the pipe itself, the container's next write fails
// with SIGPIPE, and hull run waits for it, removes it and exits with its
// status, instead of dying of the signal itself and leaving the container
// behind. (yes runs under sh: as the container's PID 1 it would get EPIPE
// instead, SIGPIPE's default action not applying to a namespace's init;
// runc's containers behave alike.)
func TestRunOutputReaderGoes(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	b := makeBundle(t, []string{"sh", "-c", `yes; echo "yes ended: $?" >&2; exit 7`}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd, stdout, stderr := h.start(t, ctx, "run", "--bundle", b, "readergoes")
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "y\n" {
		t.Fatalf("container printed %q (%v); stderr: %s", line, err, stderr.String())
	}
	stdout.Close() // head has its line
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("hull run: %v, want the container's exit status 7 (stderr %s)", err, stderr.String())
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("hull run was killed by %v when its reader went (stderr %s)", ws.Signal(), stderr.String())
	}
	if ee.ExitCode() != 7 {
		t.Fatalf("hull run exited %d, want the container's 7 (stderr %s)", ee.ExitCode(), stderr.String())
	}
	if want := fmt.Sprintf("yes ended: %d\n", 128+int(syscall.SIGPIPE)); !strings.Contains(stderr.String(), want) {
		t.Errorf("the container's yes did not die of SIGPIPE: stderr %q, want %q in it", stderr.String(), want)
	}
	if r := h.run(t, nil, "list", "--quiet"); r.code != 0 || strings.TrimSpace(r.stdout) != "" {
		t.Errorf("hull list after the run: %q (exit %d, %s)", r.stdout, r.code, r.stderr)
	}
}

func TestRunReadonlyRoot(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	ro := makeBundle(t, []string{"sh", "-c", "touch /written"}, func(s *specs.Spec) { s.Root.Readonly = true })
	if r := h.run(t, nil, "run", "--bundle", ro, "ro"); r.code == 0 {
		t.Error("write to a read-only root succeeded")
	}
	if _, err := os.Stat(filepath.Join(ro, "rootfs/written")); err == nil {
		t.Error("file written through a read-only root")
	}
	// rootfsPropagation "rshared" (pivot_root refuses a shared parent
	// unless it is made private first, as runc does) ends with a shared /.
	rw := makeBundle(t, []string{"sh", "-c", `echo persisted > /written; ` +
		`awk '$5 == "/" { for (i = 7; $i != "-"; i++) if ($i ~ /^shared:/) print "root shared" }' /proc/self/mountinfo`},
		func(s *specs.Spec) { s.Linux.RootfsPropagation = "rshared" })
	r := h.run(t, nil, "run", "--bundle", rw, "rw")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if r.stdout != "root shared\n" {
		t.Errorf("with rootfsPropagation rshared, the container printed %q, want a shared /", r.stdout)
	}
	b, err := os.ReadFile(filepath.Join(rw, "rootfs/written"))
	if err != nil || string(b) != "persisted\n" {
		t.Fatalf("write did not reach the host rootfs: %q %v", b, err)
	}
}

// Bad input: one clear line on stderr, a non-zero exit, nothing left.
func TestRunErrors(t *testing.T) {
	e := requireEnv(t)
	tests := []struct {
		name   string
		config string
		bundle func(t *testing.T) string
		want   string
	}{
		{"malformed config.json", "", func(t *testing.T) string {
			b := makeBundle(t, []string{"true"}, nil)
			if err := os.WriteFile(filepath.Join(b, "config.json"), []byte(`{"process": [`), 0o644); err != nil {
				t.Fatal(err)
			}
			return b
		}, "parsing"},
		{"missing rootfs", "", func(t *testing.T) string {
			b := makeBundle(t, []string{"true"}, nil)
			if err := os.RemoveAll(filepath.Join(b, "rootfs")); err != nil {
				t.Fatal(err)
			}
			return b
		}, "rootfs"},
		{"missing executable", "", func(t *testing.T) string {
			return makeBundle(t, []string{"/no/such/binary"}, nil)
		}, "/no/such/binary"},
		{"guest panics at boot", "[hypervisor]\nkernel_params = \"rdinit=/no/such/init\"\n", func(t *testing.T) string {
			return makeBundle(t, []string{"true"}, nil)
		}, "vm exited during boot"},
		{"guest never answers", "[hypervisor]\nboot_timeout = \"200ms\"\n", func(t *testing.T) string {
			return makeBundle(t, []string{"true"}, nil)
		}, "no answer from the agent within 200ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHull(t, e, tt.config)
			r := h.run(t, nil, "run", "--bundle", tt.bundle(t), "bad")
			if r.code == 0 {
				t.Fatal("hull run succeeded")
			}
			msg := strings.TrimSpace(r.stderr)
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "hull: ") || !strings.Contains(msg, tt.want) {
				t.Fatalf("stderr %q, want one line \"hull: ...%s...\"", r.stderr, tt.want)
			}
			t.Logf("%s", msg)
		})
	}
}

// ^C while the VM boots tears everything down and exits 130.
func TestRunInterruptedDuringBoot(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	b := makeBundle(t, []string{"true"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := h.command(ctx, "run", "--bundle", b, "interrupted")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt once the VMM runs: its console log exists.
	console := filepath.Join(h.root, "interrupted", "vm", "console.log")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(console); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("vm never started: %s", stderr.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 130 {
		t.Fatalf("hull run after SIGINT during boot: %v, want exit 130 (stderr %s)", err, stderr.String())
	}
}

// The share keeps a file's pages across opens, yet what the host changes
// in the rootfs reaches the guest: rewritten in place at the same size
// (only the mtime tells), and replaced by a rename (how kubelet updates a
// ConfigMap volume).
func TestRunShareSeesHostChanges(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	script := `wait_for() {
  i=0
  while [ "$(cat /probe)" != "$1" ]; do
    i=$((i+1)); if [ $i -gt 150 ]; then echo "still $(cat /probe), want $1"; exit 1; fi
    sleep 0.1
  done
  echo "saw $1"
}
wait_for AAAA; wait_for BBBB; wait_for CCCC`
	b := makeBundle(t, []string{"sh", "-c", script}, nil)
	probe := filepath.Join(b, "rootfs", "probe")
	if err := os.WriteFile(probe, []byte("AAAA"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd, stdout, stderr := h.start(t, ctx, "run", "--bundle", b, "hostchanges")
	defer func() { _ = cmd.Wait() }()
	out := bufio.NewReader(stdout)
	expect := func(want string) {
		t.Helper()
		line, err := out.ReadString('\n')
		if err != nil || line != want+"\n" {
			t.Fatalf("container printed %q (%v), want %q; stderr: %s", line, err, want, stderr.String())
		}
	}
	expect("saw AAAA")
	time.Sleep(300 * time.Millisecond) // the guest reads it a few more times
	if err := os.WriteFile(probe, []byte("BBBB"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("saw BBBB")
	next := probe + ".new"
	if err := os.WriteFile(next, []byte("CCCC"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(next, probe); err != nil {
		t.Fatal(err)
	}
	expect("saw CCCC")
}
