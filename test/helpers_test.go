package test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/busybox"
)

// makeBundle writes an OCI bundle with a busybox root filesystem whose
// process runs args; mutate, if given, edits the spec first.
func makeBundle(t *testing.T, args []string, mutate func(*specs.Spec)) string {
	t.Helper()
	dir := t.TempDir()
	if err := busybox.WriteBundle(dir, args, mutate); err != nil {
		t.Fatal(err)
	}
	return dir
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

// start starts hull with its stdout on a pipe, for a test that reads what
// the container prints as it prints it, and its stderr collected.
func (h *hullCmd) start(t *testing.T, ctx context.Context, args ...string) (*exec.Cmd, io.ReadCloser, *bytes.Buffer) {
	t.Helper()
	cmd := h.command(ctx, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdout, &stderr
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs hull to completion with stdin and returns what it printed.
// Output goes through files, not pipes: a detached container's monitor
// inherits them and keeps them open, as runc's container process would.
func (h *hullCmd) run(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := h.command(ctx, args...)
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	errf, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	cmd.Stdout, cmd.Stderr = out, errf
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err = cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running hull %v: %v", args, err)
	}
	return result{readFile(t, out.Name()), readFile(t, errf.Name()), code}
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
		if bytes.Contains(b, []byte(root+"/")) || bytes.Contains(b, []byte(root+"\x00")) {
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

func setWinsize(f *os.File, rows, cols uint16) error {
	return unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
}
