package ctr

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hullrt/hull/internal/busybox"
	_ "github.com/hullrt/hull/internal/guest/ctr/cinit"
)

// These tests run hull-init on the host: it is the same program in the
// guest, and the test binary carries it. They need root and cgroup v2.

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root (namespaces, mounts, cgroups)")
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		t.Skip("needs cgroup v2 at /sys/fs/cgroup (the guest's layout)")
	}
}

// testConfig is a busybox rootfs with runc's default spec, converted as
// the agent converts it.
func testConfig(t *testing.T, mutate func(*specs.Spec)) (*configs.Config, *specs.Spec) {
	t.Helper()
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	if err := busybox.WriteRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	s := specconv.Example()
	s.Root.Path = rootfs
	s.Root.Readonly = false
	s.Process.Terminal = false
	s.Linux.Namespaces = slicesDelete(s.Linux.Namespaces, specs.NetworkNamespace)
	s.Linux.CgroupsPath = "/hull-test/" + filepath.Base(dir)
	if mutate != nil {
		mutate(s)
	}
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: filepath.Base(dir), Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, s
}

func slicesDelete(ns []specs.LinuxNamespace, t specs.LinuxNamespaceType) []specs.LinuxNamespace {
	out := ns[:0]
	for _, n := range ns {
		if n.Type != t {
			out = append(out, n)
		}
	}
	return out
}

func processOf(s *specs.Spec, args ...string) (*Process, *bytes.Buffer) {
	var out bytes.Buffer
	c := s.Process.Capabilities
	return &Process{
		Args: args, Env: s.Process.Env, Cwd: s.Process.Cwd,
		Capabilities: &configs.Capabilities{
			Bounding: c.Bounding, Effective: c.Effective, Permitted: c.Permitted,
			Inheritable: c.Inheritable, Ambient: c.Ambient,
		},
		NoNewPrivileges: s.Process.NoNewPrivileges,
		Stdout:          &out, Stderr: &out,
	}, &out
}

func TestCreateStartExec(t *testing.T) {
	needRoot(t)
	cfg, s := testConfig(t, func(s *specs.Spec) {
		s.Hostname = "inbox"
		s.Root.Readonly = true
		s.Process.User = specs.User{UID: 1000, GID: 1000}
	})
	init, out := processOf(s, "sh", "-c", `echo pid=$$ host=$(hostname) id=$(id -u):$(id -g); grep CapEff /proc/self/status; `+
		`touch /x 2>&1 | grep -q Read-only && echo root-ro; cat /proc/kcore 2>&1 | head -c 0; ls /dev; read line; echo got $line`)
	init.UID, init.GID = 1000, 1000
	r, w, _ := os.Pipe()
	init.Stdin = r
	c, err := Create("t1", cfg, init)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Destroy()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exec, eout := processOf(s, "sh", "-c", "echo exec in $(hostname) as $(id -u); ls /proc | grep -c '^[0-9]'")
	if err := c.Exec(exec); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.Wait(); err != nil {
		t.Fatalf("exec: %v (%s)", err, eout)
	}
	w.Write([]byte("line\n"))
	w.Close()
	if _, err := init.Wait(); err != nil {
		t.Fatalf("init: %v (%s)", err, out)
	}
	got := out.String()
	for _, want := range []string{"pid=1 host=inbox id=1000:1000", "CapEff:\t0000000000000000", "root-ro", "null", "ptmx", "got line"} {
		if !strings.Contains(got, want) {
			t.Errorf("init output lacks %q:\n%s", want, got)
		}
	}
	if !strings.Contains(eout.String(), "exec in inbox as 0") {
		t.Errorf("exec output: %s", eout.String())
	}
	t.Logf("init:\n%s\nexec:\n%s", got, eout.String())
}

// TestCreateFailsCleanly: a process that cannot be executed fails the
// create, with the reason, and leaves no cgroup behind.
func TestCreateFailsCleanly(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct{ arg, want string }{
		{"/no/such/binary", `exec: "/no/such/binary": stat /no/such/binary: No such file or directory`},
		{"nosuch", `exec: "nosuch": executable file not found in $PATH`},
		{"/etc", `exec: "/etc": is a directory`},
	} {
		cfg, s := testConfig(t, nil)
		p, _ := processOf(s, tc.arg)
		_, err := Create("bad", cfg, p)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: error %v, want %q", tc.arg, err, tc.want)
		}
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", cfg.Cgroups.Path)); !os.IsNotExist(err) {
			t.Errorf("%s: the cgroup was left: %v", tc.arg, err)
		}
	}
}

// A plan hull-init would refuse is refused before anything starts, with
// the reason rather than a broken pipe.
func TestCreateRefusesOversizedPlan(t *testing.T) {
	needRoot(t)
	cfg, s := testConfig(t, nil)
	p, _ := processOf(s, "true")
	p.Env = append(p.Env, "BIG="+strings.Repeat("x", planMax))
	_, err := Create("big", cfg, p)
	if err == nil || !strings.Contains(err.Error(), "more than hull-init's limit") {
		t.Errorf("error %v, want the plan's size refused", err)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", cfg.Cgroups.Path)); !os.IsNotExist(err) {
		t.Errorf("the cgroup was left: %v", err)
	}
}

// rootfsPropagation as runc applies it: pivot_root works whatever the
// propagation, and "/" in the container ends with the one asked for.
func TestRootPropagation(t *testing.T) {
	needRoot(t)
	// Whether a slave shows "master:" depends on the test's own mount
	// namespace: only shared or not is checked.
	for _, tc := range []struct {
		prop   string
		shared bool
	}{{"", false}, {"rslave", false}, {"rprivate", false}, {"rshared", true}} {
		name := tc.prop
		if name == "" {
			name = "unset"
		}
		t.Run(name, func(t *testing.T) {
			cfg, s := testConfig(t, func(s *specs.Spec) { s.Linux.RootfsPropagation = tc.prop })
			// The optional fields of / in the container's mountinfo.
			p, out := processOf(s, "sh", "-c", `awk '$5 == "/" { o = ""; for (i = 7; $i != "-"; i++) o = o " " $i; print "opt[" o "]" }' /proc/self/mountinfo`)
			c, err := Create("prop"+tc.prop, cfg, p)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Destroy()
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			if _, err := p.Wait(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			got := out.String()
			if !strings.HasPrefix(got, "opt[") || strings.Contains(got, "shared:") != tc.shared {
				t.Errorf("/ in the container: %q, want shared %v", got, tc.shared)
			}
		})
	}
}
