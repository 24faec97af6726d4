package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// pauseImage stands in for registry.k8s.io/pause: busybox sleeping forever.
const pauseImage = "localhost/hull-pause:test"

// cniDir is where Debian's containernetworking-plugins installs them.
const cniDir = "/usr/lib/cni"

// criEnv is a private containerd with its CRI plugin, driven by crictl.
type criEnv struct {
	*containerd
	crictl string
	cfgDir string // pod and container configs, logs
}

// startCRI starts containerd with the CRI plugin and hull as runtime
// handler "hull", in a network namespace of its own with a bridge CNI
// network, and imports the pause and busybox images. hullConfig is TOML
// appended to the shim's config.
func startCRI(t *testing.T, e env, hullConfig string) *criEnv {
	t.Helper()
	crictl := filepath.Join(filepath.Dir(e.hull), "crictl")
	if _, err := os.Stat(crictl); err != nil {
		if crictl, err = exec.LookPath("crictl"); err != nil {
			t.Skip("crictl not found in HULL_TEST_BIN or PATH (scripts/build-crictl.sh builds it into bin/)")
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniDir, p)); err != nil {
			t.Skipf("CNI plugin %s not in %s (apt-get install containernetworking-plugins)", p, cniDir)
		}
	}
	cfgDir := t.TempDir()
	cniConf := filepath.Join(cfgDir, "cni")
	if err := os.Mkdir(cniConf, 0o755); err != nil {
		t.Fatal(err)
	}
	// The bridge lives in containerd's own network namespace; host-local
	// keeps its leases under the test's directory, not /var/lib/cni.
	netConf := fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "hull-test",
  "type": "bridge",
  "bridge": "hullbr%d",
  "isGateway": true,
  "ipMasq": false,
  "ipam": {
    "type": "host-local",
    "dataDir": %q,
    "ranges": [[{"subnet": "10.88.77.0/24"}]],
    "routes": [{"dst": "0.0.0.0/0"}]
  }
}
`, rand.Intn(10000), filepath.Join(cfgDir, "ipam"))
	if err := os.WriteFile(filepath.Join(cniConf, "10-hull-test.conf"), []byte(netConf), 0o644); err != nil {
		t.Fatal(err)
	}
	// At debug level containerd passes the shim's log on into its own.
	config := fmt.Sprintf(`[debug]
  level = "debug"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull]
    runtime_type = "io.containerd.hull.v2"
`, pauseImage, cniDir, cniConf)
	c := launchContainerd(t, e, daemonOpts{config: config, hullConfig: hullConfig, netns: true})
	env := &criEnv{containerd: c, crictl: crictl, cfgDir: cfgDir}
	// Runs before containerd stops: no pod may outlive a failed test.
	t.Cleanup(func() {
		if r := env.run(t, nil, "rmp", "--all", "--force"); r.code != 0 {
			t.Errorf("crictl rmp --all --force: %s", r.stderr)
		}
		env.waitNoShim(t)
	})
	if r := env.run(t, nil, "version"); r.code != 0 {
		t.Fatalf("CRI plugin not serving: %s", r.stderr)
	}
	c.importImage(t, "k8s.io", pauseImage, []string{"sleep", "2147483647"})
	c.importImage(t, "k8s.io", testImage, []string{"sh"})
	return env
}

// run runs crictl in containerd's network namespace, where the CRI
// streaming server (exec, attach) listens on 127.0.0.1. A crictl that
// cannot run is reported as an error and exit code -1, so that run may be
// called from goroutines.
func (c *criEnv) run(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	endpoint := "unix://" + c.sock
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{
		fmt.Sprintf("--net=/proc/%d/ns/net", c.pid), "--", c.crictl,
		"--config", "/dev/null", "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
		// Also each request's deadline: a pod's VM boots in it.
		"--timeout", "10m",
	}, args...)...)
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
		t.Errorf("crictl %v: %v", args, err)
		code = -1
	}
	return result{out.String(), errb.String(), code}
}

// must runs crictl and returns its trimmed stdout, failing the test (from
// any goroutine) when it exits non-zero.
func (c *criEnv) must(t *testing.T, args ...string) string {
	t.Helper()
	r := c.run(t, nil, args...)
	if r.code != 0 {
		t.Errorf("crictl %s: exit %d: %s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

// writeJSON writes v as JSON into the config directory.
func (c *criEnv) writeJSON(t *testing.T, name string, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Error(err)
	}
	p := filepath.Join(c.cfgDir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Error(err)
	}
	return p
}

// pod is a pod sandbox started through CRI.
type pod struct {
	id, config string
}

// runPod starts a pod sandbox with runtime handler hull.
func (c *criEnv) runPod(t *testing.T, name string) pod {
	t.Helper()
	logs := filepath.Join(c.cfgDir, "logs-"+name)
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Error(err)
	}
	cfg := c.writeJSON(t, "pod-"+name+".json", map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "hull-test", "uid": name + "-uid", "attempt": 0},
		"hostname":      name,
		"log_directory": logs,
		"linux":         map[string]any{},
	})
	return pod{id: c.must(t, "runp", "--runtime", "hull", cfg), config: cfg}
}

// startContainer creates and starts a busybox container running cmd in p
// and returns its id.
func (c *criEnv) startContainer(t *testing.T, p pod, name string, cmd ...string) string {
	t.Helper()
	cfg := c.writeJSON(t, "ctr-"+p.id[:12]+"-"+name+".json", map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": testImage},
		"command":  cmd,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	})
	id := c.must(t, "create", "--no-pull", p.id, cfg, p.config)
	if id == "" {
		return ""
	}
	c.must(t, "start", id)
	return id
}

// shims lists the pids of the hull shims serving this containerd.
func (c *criEnv) shims() []int {
	return pidsMatching("containerd-shim-hull-v2", "-address\x00"+c.sock+"\x00")
}

// waitNoShim waits for every shim of this containerd to exit.
func (c *criEnv) waitNoShim(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if len(c.shims()) == 0 {
			return
		}
	}
	t.Errorf("shims still running: %v", c.shims())
}

// pidsMatching lists the processes whose command line contains every part.
func pidsMatching(parts ...string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		match := true
		for _, part := range parts {
			match = match && bytes.Contains(b, []byte(part))
		}
		if match {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	return pids
}

func hostBootID(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(readFile(t, "/proc/sys/kernel/random/boot_id"))
}

// A pod of two containers through CRI: one shim and one VM for the pod,
// exec, logs and stats work, and removing the pod leaves nothing.
func TestCRIPod(t *testing.T) {
	e := requireEnv(t)
	c := startCRI(t, e, "")
	start := time.Now()
	p := c.runPod(t, "hull-pod")
	t.Logf("crictl runp: %s", time.Since(start).Round(time.Millisecond))
	if t.Failed() {
		t.FailNow()
	}
	start = time.Now()
	sleeper := c.startContainer(t, p, "sleeper", "sleep", "1000")
	t.Logf("crictl create + start: %s", time.Since(start).Round(time.Millisecond))
	logger := c.startContainer(t, p, "logger", "sh", "-c", "echo hello-from-hull; echo oops >&2; exec sleep 1000")
	if t.Failed() {
		t.FailNow()
	}

	// One VM for the pod: the containers share its kernel.
	host := hostBootID(t)
	ids := map[string]string{}
	for _, id := range []string{sleeper, logger} {
		ids[id] = c.must(t, "exec", "-s", id, "cat", "/proc/sys/kernel/random/boot_id")
	}
	t.Logf("boot ids: sleeper %s, logger %s, host %s", ids[sleeper], ids[logger], host)
	if ids[sleeper] == "" || ids[sleeper] != ids[logger] || ids[sleeper] == host {
		t.Errorf("boot ids: sleeper %q, logger %q, host %q", ids[sleeper], ids[logger], host)
	}
	if q := pidsMatching("qemu-system", c.hullRoot+"/pods/k8s.io/"); len(q) != 1 {
		t.Errorf("qemu processes for the pod: %v, want one", q)
	}
	if s := c.shims(); len(s) != 1 {
		t.Errorf("shim processes: %v, want one", s)
	}

	// exec: synchronous and streamed, output and exit codes.
	// crictl 1.26 prints a synchronous exec's output only on success and
	// turns a non-zero exit into an error that quotes it and stderr.
	if out := c.must(t, "exec", "-s", sleeper, "sh", "-c", "echo out; echo err >&2"); out != "out\n\nerr" {
		t.Errorf("exec -s: %q", out)
	}
	r := c.run(t, nil, "exec", "-s", sleeper, "sh", "-c", "echo err >&2; exit 3")
	if r.code == 0 || !strings.Contains(r.stderr, "exited with 3: err") {
		t.Errorf("exec -s exit 3: %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = c.run(t, nil, "exec", sleeper, "sh", "-c", "echo streamed; echo err >&2; exit 5")
	if r.code == 0 || r.stdout != "streamed\n" || !strings.Contains(r.stderr, "err") || !strings.Contains(r.stderr, "exit code 5") {
		t.Errorf("exec exit 5: %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = c.run(t, []byte("through stdin\n"), "exec", "-i", logger, "cat")
	if r.code != 0 || r.stdout != "through stdin\n" {
		t.Errorf("exec -i cat: %d %q %q", r.code, r.stdout, r.stderr)
	}
	// CRI asks the shim to close stdin (CloseIO) right after writing the
	// last byte to the FIFO: none of it may be lost.
	r = c.run(t, bytes.Repeat([]byte("x"), 1<<20), "exec", "-i", logger, "wc", "-c")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "1048576" {
		t.Errorf("exec -i wc -c of 1 MiB: %d %q %q", r.code, r.stdout, r.stderr)
	}

	// logs: CRI's log file, written from the container's output.
	var logs result
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if logs = c.run(t, nil, "logs", logger); strings.Contains(logs.stdout, "hello-from-hull") && strings.Contains(logs.stderr, "oops") {
			break
		}
	}
	if logs.code != 0 || logs.stdout != "hello-from-hull\n" || logs.stderr != "oops\n" {
		t.Errorf("crictl logs: %d %q %q", logs.code, logs.stdout, logs.stderr)
	}

	// stats: the guest's cgroup numbers of each container.
	out := c.must(t, "stats", "-o", "json")
	var stats struct {
		Stats []struct {
			Attributes struct{ ID string }
			CPU        struct {
				UsageCoreNanoSeconds struct{ Value string }
			}
			Memory struct {
				WorkingSetBytes struct{ Value string }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &stats); err != nil {
		t.Errorf("crictl stats -o json: %v: %s", err, out)
	}
	seen := map[string]bool{}
	for _, s := range stats.Stats {
		seen[s.Attributes.ID] = true
		cpu, _ := strconv.ParseUint(s.CPU.UsageCoreNanoSeconds.Value, 10, 64)
		mem, _ := strconv.ParseUint(s.Memory.WorkingSetBytes.Value, 10, 64)
		if cpu == 0 || mem == 0 {
			t.Errorf("stats of %s: cpu %d ns, memory %d bytes", s.Attributes.ID, cpu, mem)
		}
	}
	if !seen[sleeper] || !seen[logger] {
		t.Errorf("crictl stats lists %v, want %s and %s", seen, sleeper, logger)
	}
	// update: the pod's VM grows by the container's new limits (CPUs and
	// memory hot-plugged through the shim), its cgroup takes them.
	probe := cgroupDir + `; nproc; sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo; cat $cg/cpu.max $cg/memory.max`
	before := strings.Fields(c.must(t, "exec", "-s", sleeper, "sh", "-c", probe))
	c.must(t, "update", "--cpu-period", "100000", "--cpu-quota", "100000", "--memory", "268435456", sleeper)
	after := strings.Fields(c.must(t, "exec", "-s", sleeper, "sh", "-c", probe))
	t.Logf("crictl update --cpu-quota 100000 --memory 256MiB: nproc, MemTotal kB, cpu.max, memory.max: before %q, after %q", before, after)
	if len(before) != 5 || len(after) != 5 {
		t.Fatalf("probe in the container: before %q after %q", before, after)
	}
	memBefore, _ := strconv.Atoi(before[1])
	memAfter, _ := strconv.Atoi(after[1])
	if wantCPUs := strconv.Itoa(min(2, runtime.NumCPU())); after[0] != wantCPUs || before[0] != "1" {
		t.Errorf("nproc %s before and %s after update, want 1 and %s", before[0], after[0], wantCPUs)
	}
	if (memAfter-memBefore)>>10 < 256 || after[2] != "100000" || after[4] != "268435456" {
		t.Errorf("after update: MemTotal %d -> %d kB, cpu.max %s %s, memory.max %s", memBefore, memAfter, after[2], after[3], after[4])
	}
	t.Logf("crictl stats:\n%s", c.must(t, "stats"))
	t.Logf("crictl pods:\n%s", c.must(t, "pods"))
	t.Logf("crictl ps:\n%s", c.must(t, "ps"))

	start = time.Now()
	c.must(t, "stopp", p.id)
	c.must(t, "rmp", p.id)
	t.Logf("crictl stopp + rmp: %s", time.Since(start).Round(time.Millisecond))
	if out := c.must(t, "pods", "-q"); out != "" {
		t.Errorf("pods left: %q", out)
	}
	c.waitNoShim(t)
	assertNoLeftovers(t, c.hullRoot)
}

// Pods started at the same time through CRI each get their own VM, all
// run, and all go away again.
func TestCRIConcurrentPods(t *testing.T) {
	e := requireEnv(t)
	const n = 10
	// n TCG boots share the host's cores: give them time and less memory.
	c := startCRI(t, e, "[hypervisor]\nboot_timeout = \"600s\"\nmemory_mib = 256\n[agent]\nrequest_timeout = \"300s\"\n")
	pods := make([]pod, n)
	bootIDs := make([]string, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := c.runPod(t, fmt.Sprintf("pod-%d", i))
			if p.id == "" {
				return
			}
			pods[i] = p
			id := c.startContainer(t, p, "sleeper", "sleep", "1000")
			if id == "" {
				return
			}
			bootIDs[i] = c.must(t, "exec", "-s", id, "cat", "/proc/sys/kernel/random/boot_id")
		}(i)
	}
	wg.Wait()
	t.Logf("%d pods up (runp + create + start + exec each, concurrently): %s", n, time.Since(start).Round(time.Millisecond))
	if t.Failed() {
		t.FailNow()
	}
	distinct := map[string]bool{hostBootID(t): true}
	for i, id := range bootIDs {
		if id == "" || distinct[id] {
			t.Errorf("pod %d: boot id %q is empty, the host's or another pod's", i, id)
		}
		distinct[id] = true
	}
	if q := pidsMatching("qemu-system", c.hullRoot+"/"); len(q) != n {
		t.Errorf("%d qemu processes, want %d", len(q), n)
	}
	if s := c.shims(); len(s) != n {
		t.Errorf("%d shims, want %d", len(s), n)
	}
	start = time.Now()
	for _, p := range pods {
		wg.Add(1)
		go func(p pod) {
			defer wg.Done()
			c.must(t, "stopp", p.id)
			c.must(t, "rmp", p.id)
		}(p)
	}
	wg.Wait()
	t.Logf("%d pods stopped and removed concurrently: %s", n, time.Since(start).Round(time.Millisecond))
	c.waitNoShim(t)
	assertNoLeftovers(t, c.hullRoot)
}
