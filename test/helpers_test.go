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

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// makeBundle writes an OCI bundle with a busybox root filesystem whose
// process runs args; mutate, if given, edits the spec first.
func makeBundle(t *testing.T, args []string, mutate func(*specs.Spec)) string {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	spec := specconv.Example() // what `runc spec` writes
	spec.Process.Terminal = false
	spec.Process.Args = args
	spec.Root.Readonly = false
	if mutate != nil {
		mutate(spec)
	}
	writeSpec(t, dir, spec)
	return dir
}

func writeSpec(t *testing.T, dir string, spec *specs.Spec) {
	t.Helper()
	b, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// withoutPidNamespace makes the process an ordinary process of the guest
// rather than the init of a PID namespace, which the kernel shields from
// signals it has no handler for (as under runc).
func withoutPidNamespace(s *specs.Spec) {
	var ns []specs.LinuxNamespace
	for _, n := range s.Linux.Namespaces {
		if n.Type != specs.PIDNamespace {
			ns = append(ns, n)
		}
	}
	s.Linux.Namespaces = ns
}

// hullCmd is one invocation of hull with a private state root and config.
type hullCmd struct {
	e      env
	root   string
	config string
}

func newHull(t *testing.T, e env, extraConfig string) *hullCmd {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	body := fmt.Sprintf("[runtime]\nroot = %q\n\n[image]\ndir = %q\n%s", filepath.Join(dir, "state"), e.imageDir, extraConfig)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &hullCmd{e: e, root: filepath.Join(dir, "state"), config: cfg}
	t.Cleanup(func() { assertNoLeftovers(t, h.root) })
	return h
}

func (h *hullCmd) command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, h.e.hull, append([]string{"--config", h.config}, args...)...)
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs hull to completion with stdin and returns what it printed.
func (h *hullCmd) run(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := h.command(ctx, args...)
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
		t.Fatalf("running hull %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// assertNoLeftovers checks that nothing of any container remains under
// root: no VMM or virtiofsd process, no mount, no state directory.
func assertNoLeftovers(t *testing.T, root string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(root+"/")) {
			t.Errorf("leftover process %s: %s", filepath.Dir(p), bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], root+"/") {
			t.Errorf("leftover mount %s", f[4])
		}
	}
	entries, err := os.ReadDir(root)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("leftover state %s", filepath.Join(root, e.Name()))
	}
}
