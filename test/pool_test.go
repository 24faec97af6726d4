package test

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// startPool runs `hull pool` with args until stop is called (or the test
// ends), its output in a file that poolLog reads.
func startPool(t *testing.T, h *hullCmd, args ...string) (poolLog func() string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	keeper := h.command(ctx, append([]string{"pool"}, args...)...)
	keeper.Cancel = func() error { return keeper.Process.Signal(os.Interrupt) }
	logf, err := os.Create(filepath.Join(t.TempDir(), "pool.log"))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	keeper.Stdout, keeper.Stderr = logf, logf
	if err := keeper.Start(); err != nil {
		cancel()
		logf.Close()
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			_ = keeper.Wait()
			logf.Close()
		})
	}
	t.Cleanup(stop)
	return func() string { return readFile(t, logf.Name()) }, stop
}

// `hull pool` keeps a VM booted; `hull run` claims it instead of booting
// one, grows it to the container's limits, and the pool boots a
// replacement. Stopping the pool stops what nobody claimed.
func TestPoolClaim(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	poolLog, stop := startPool(t, h, "--size", "1")
	defer stop()
	waitFor(t, "pool vm ready", 2*time.Minute, func() bool { return strings.Contains(poolLog(), "ready in") })

	limit, quota, period := int64(256<<20), int64(100000), uint64(100000)
	b := makeBundle(t, []string{"sh", "-c", `nproc; sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo; grep -o 'hull.warm=1' /proc/cmdline || echo cold; grep -c 'cgroup2 .*favordynmods' /proc/self/mountinfo`}, func(s *specs.Spec) {
		s.Linux.Resources = &specs.LinuxResources{
			Memory: &specs.LinuxMemory{Limit: &limit},
			CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period},
		}
	})
	r := h.run(t, nil, "--debug", "run", "--bundle", b, "pooled")
	if r.code != 0 {
		t.Fatalf("run: exit %d: %s", r.code, r.stderr)
	}
	var phases []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if _, p, ok := strings.Cut(l, `msg="phase `); ok {
			phases = append(phases, strings.Join(strings.Fields(strings.TrimSuffix(p, `"`)), " "))
		}
	}
	t.Logf("phases of a pooled run: %s", strings.Join(phases, ", "))
	if !strings.Contains(poolLog(), "claimed") {
		t.Errorf("the run did not claim the pool's vm; pool log:\n%s", poolLog())
	}
	out := strings.Fields(r.stdout)
	if len(out) != 4 {
		t.Fatalf("output %q", r.stdout)
	}
	// The pool's VMs create a throwaway container before they are ready.
	if out[2] != "hull.warm=1" {
		t.Errorf("the pool's vm booted without the warm-up (hull.warm=1): %q", out[2])
	}
	// ... and switch cgroup2 to favordynmods, which the container's own
	// cgroup2 mount (in a cgroup namespace of its own) leaves in place.
	if out[3] == "0" {
		t.Error("the claimed vm's cgroup2 is not mounted with favordynmods")
	}
	nproc, _ := strconv.Atoi(out[0])
	memKiB, _ := strconv.Atoi(out[1])
	t.Logf("in the claimed vm: nproc %d, MemTotal %d kB", nproc, memKiB)
	if nproc != min(2, runtime.NumCPU()) || memKiB < (512+256-96)<<10 {
		t.Errorf("the claimed vm was not grown to the container's limits: nproc %d, MemTotal %d kB", nproc, memKiB)
	}
	waitFor(t, "a replacement vm", 2*time.Minute, func() bool { return strings.Count(poolLog(), "ready in") >= 2 })
	stop()
	t.Logf("pool log:\n%s", poolLog())
	if !strings.Contains(poolLog(), "pool: stopped") {
		t.Errorf("the pool did not stop cleanly")
	}
}
