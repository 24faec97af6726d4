package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// pidOf finds the process whose command line contains all of parts.
func pidOf(t *testing.T, parts ...string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cmd := string(b)
		match := true
		for _, part := range parts {
			match = match && strings.Contains(cmd, part)
		}
		if match {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	t.Fatalf("no process with %q", parts)
	return 0
}

// A crash of the VMM or of the monitor: state says stopped, delete cleans up.
func TestCLICrashes(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	b := makeBundle(t, []string{"sleep", "1000"}, nil)
	for _, victim := range []string{"qemu", "monitor"} {
		t.Run(victim, func(t *testing.T) {
			id := "crash-" + victim
			if r := h.run(t, nil, "run", "-d", "--bundle", b, "--pid-file", filepath.Join(t.TempDir(), "pid"), id); r.code != 0 {
				t.Fatalf("run -d: %s", r.stderr)
			}
			var st specs.State
			if err := json.Unmarshal([]byte(h.run(t, nil, "state", id).stdout), &st); err != nil {
				t.Fatal(err)
			}
			mon := st.Pid
			qemu := pidOf(t, "qemu-system", filepath.Join(h.root, id, "vm")+"/")
			target := qemu
			if victim == "monitor" {
				target = mon
			}
			if err := syscall.Kill(target, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitPidExit(t, mon, time.Minute)
			waitPidExit(t, qemu, time.Minute)
			r := h.run(t, nil, "state", id)
			if r.code != 0 || !strings.Contains(r.stdout, `"stopped"`) {
				t.Fatalf("state after %s crash: exit %d %s %s", victim, r.code, r.stdout, r.stderr)
			}
			if r := h.run(t, nil, "delete", id); r.code != 0 {
				t.Fatalf("delete after %s crash: %s", victim, r.stderr)
			}
			if r := h.run(t, nil, "delete", id); r.code == 0 {
				t.Error("second delete succeeded")
			}
		})
	}
}

// OCI hooks run on the host with the state on stdin, at their points.
func TestCLIHooks(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	logDir := t.TempDir()
	hook := filepath.Join(logDir, "hook.sh")
	script := "#!/bin/sh\ncat > " + logDir + "/$1.json\n"
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	kinds := []string{"createRuntime", "createContainer", "startContainer", "poststart", "poststop"}
	b := makeBundle(t, []string{"sleep", "1000"}, func(s *specs.Spec) {
		mk := func(k string) []specs.Hook { return []specs.Hook{{Path: hook, Args: []string{"hook.sh", k}}} }
		s.Hooks = &specs.Hooks{
			CreateRuntime:   mk("createRuntime"),
			CreateContainer: mk("createContainer"),
			StartContainer:  mk("startContainer"),
			Poststart:       mk("poststart"),
			Poststop:        mk("poststop"),
		}
	})
	if r := h.run(t, nil, "create", "--bundle", b, "hooked"); r.code != 0 {
		t.Fatalf("create: %s", r.stderr)
	}
	if r := h.run(t, nil, "start", "hooked"); r.code != 0 {
		t.Fatalf("start: %s", r.stderr)
	}
	if r := h.run(t, nil, "delete", "--force", "hooked"); r.code != 0 {
		t.Fatalf("delete: %s", r.stderr)
	}
	want := map[string]string{"createRuntime": "created", "createContainer": "created", "startContainer": "created", "poststart": "running", "poststop": "stopped"}
	for _, k := range kinds {
		b, err := os.ReadFile(filepath.Join(logDir, k+".json"))
		if err != nil {
			t.Errorf("%s hook did not run: %v", k, err)
			continue
		}
		var st specs.State
		if err := json.Unmarshal(b, &st); err != nil || st.ID != "hooked" || string(st.Status) != want[k] {
			t.Errorf("%s hook got state %s (%v), want status %s", k, b, err, want[k])
		}
	}
}
