package test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A container limited to 64 MiB that allocates 200 MiB is OOM-killed in
// the guest, `hull events` reports it, and the VM itself stays healthy:
// its agent still runs processes in the container's sandbox.
func TestEventsOOM(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	limit := int64(64 << 20)
	// The process waits for the go file, so that events is subscribed
	// before anything is allocated; then dd asks for one 200 MiB buffer
	// and fills it. The shell goes on after its child is killed.
	b := makeBundle(t, []string{"sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.1; done; dd if=/dev/zero of=/dev/null bs=200M count=1; touch /tmp/after; while :; do sleep 1; done"}, func(s *specs.Spec) {
		s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
	})
	pidFile := filepath.Join(t.TempDir(), "pid")
	if r := h.run(t, nil, "create", "--bundle", b, "--pid-file", pidFile, "oom"); r.code != 0 {
		t.Fatalf("create: %s", r.stderr)
	}
	defer h.run(t, nil, "delete", "--force", "oom")
	if r := h.run(t, nil, "start", "oom"); r.code != 0 {
		t.Fatalf("start: %s", r.stderr)
	}

	ctx, cancel := context.WithCancel(context.Background())
	events := h.command(ctx, "events", "--interval", "1h", "oom")
	out, err := os.Create(filepath.Join(t.TempDir(), "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	events.Stdout, events.Stderr = out, out
	if err := events.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		_ = events.Wait()
	}()
	// The first stats event says events is attached.
	waitFor(t, "the first stats event", time.Minute, func() bool {
		return strings.Contains(readFile(t, out.Name()), `"type":"stats"`)
	})
	if r := h.run(t, nil, "exec", "oom", "touch", "/tmp/go"); r.code != 0 {
		t.Fatalf("exec: %s", r.stderr)
	}
	waitFor(t, "an oom event", time.Minute, func() bool {
		return strings.Contains(readFile(t, out.Name()), `{"type":"oom","id":"oom"}`)
	})
	for _, l := range strings.Split(readFile(t, out.Name()), "\n") {
		if strings.Contains(l, `"type":"oom"`) {
			t.Logf("hull events printed: %s", l)
		}
	}

	// dd was the victim: the shell lives on, and the guest still runs
	// processes in the container.
	r := h.run(t, nil, "exec", "oom", "sh", "-c", "while [ ! -e /tmp/after ]; do sleep 0.1; done; "+cgroupDir+"; cat $cg/memory.max; grep -w oom_kill $cg/memory.events")
	if r.code != 0 {
		t.Fatalf("exec after the OOM kill: exit %d: %s", r.code, r.stderr)
	}
	t.Logf("after the kill, in the container: %s", strings.ReplaceAll(strings.TrimSpace(r.stdout), "\n", "; "))
	fields := strings.Fields(r.stdout)
	if len(fields) != 3 || fields[0] != strconv.FormatInt(limit, 10) || fields[2] == "0" {
		t.Errorf("memory.max and memory.events in the container: %q", r.stdout)
	}
	if r := h.run(t, nil, "kill", "oom", "KILL"); r.code != 0 {
		t.Fatalf("kill: %s", r.stderr)
	}
	pidb, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(string(pidb))
	waitPidExit(t, pid, time.Minute)
}

// cgroupDir sets $cg to the cgroup v2 directory of the calling process,
// with or without a cgroup namespace.
const cgroupDir = `cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)`

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// `hull update` grows the VM: CPUs and memory are hot-plugged and brought
// online, and the container's cgroup takes the new limits.
func TestUpdateHotplug(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	b := makeBundle(t, []string{"sh", "-c", "while :; do sleep 1; done"}, nil)
	if r := h.run(t, nil, "create", "--bundle", b, "grow"); r.code != 0 {
		t.Fatalf("create: %s", r.stderr)
	}
	defer h.run(t, nil, "delete", "--force", "grow")
	if r := h.run(t, nil, "start", "grow"); r.code != 0 {
		t.Fatalf("start: %s", r.stderr)
	}
	look := func() (nproc int, memKiB int, cpuMax, memMax string) {
		t.Helper()
		r := h.run(t, nil, "exec", "grow", "sh", "-c", cgroupDir+`; nproc; sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo; cat $cg/cpu.max $cg/memory.max`)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) != 4 {
			t.Fatalf("exec: exit %d: %q %s", r.code, r.stdout, r.stderr)
		}
		nproc, _ = strconv.Atoi(lines[0])
		memKiB, _ = strconv.Atoi(lines[1])
		return nproc, memKiB, lines[2], lines[3]
	}
	n0, m0, c0, l0 := look()
	t.Logf("before update: nproc %d, MemTotal %d kB, cpu.max %q, memory.max %q", n0, m0, c0, l0)
	if n0 != 1 || c0 != "max 100000" || l0 != "max" {
		t.Fatalf("before update: nproc %d cpu.max %q memory.max %q", n0, c0, l0)
	}

	// Bad input is refused and changes nothing.
	if r := h.run(t, nil, "update", "--cpus", "lots", "grow"); r.code == 0 || !strings.Contains(r.stderr, "--cpus") {
		t.Errorf("update --cpus lots: exit %d %q", r.code, r.stderr)
	}
	if n, m, c, l := look(); n != n0 || m != m0 || c != c0 || l != l0 {
		t.Errorf("a refused update changed the container: nproc %d MemTotal %d cpu.max %q memory.max %q", n, m, c, l)
	}

	if r := h.run(t, nil, "update", "--cpus", "2", "--memory", "512m", "grow"); r.code != 0 {
		t.Fatalf("update: %s", r.stderr)
	}
	n1, m1, c1, l1 := look()
	t.Logf("after update --cpus 2 --memory 512m: nproc %d, MemTotal %d kB, cpu.max %q, memory.max %q", n1, m1, c1, l1)
	if want := min(2, runtime.NumCPU()); n1 != want {
		t.Errorf("nproc after update: %d, want %d", n1, want)
	}
	if c1 != "200000 100000" || l1 != strconv.Itoa(512<<20) {
		t.Errorf("cgroup after update: cpu.max %q memory.max %q", c1, l1)
	}
	// The base 512 MiB plus the limit, plugged as whole 128 MiB blocks.
	if grew := (m1 - m0) >> 10; grew < 512 {
		t.Errorf("MemTotal grew by %d MiB, want at least 512", grew)
	}
	if r := h.run(t, nil, "kill", "grow", "KILL"); r.code != 0 {
		t.Fatalf("kill: %s", r.stderr)
	}
}
