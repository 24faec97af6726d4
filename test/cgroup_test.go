package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// cgroupDirs lists the directories of cgroup path p (absolute) in every
// hierarchy that has one: each v1 controller's, the unified one.
func cgroupDirs(p string) []string {
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + p)
	if st, err := os.Stat("/sys/fs/cgroup" + p); err == nil && st.IsDir() {
		dirs = append(dirs, "/sys/fs/cgroup"+p)
	}
	return dirs
}

// assertInCgroup checks that process pid is in cgroup p in every hierarchy
// (/proc/PID/cgroup) and listed in each directory's cgroup.procs.
func assertInCgroup(t *testing.T, what string, pid int, p string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Errorf("%s (pid %d): %v", what, pid, err)
		return
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) != 3 || f[2] != p {
			t.Errorf("%s (pid %d) is in %q, want %s in every hierarchy", what, pid, l, p)
		}
	}
	dirs := cgroupDirs(p)
	if len(dirs) == 0 {
		t.Errorf("cgroup %s does not exist", p)
	}
	for _, d := range dirs {
		procs := strings.Fields(readFile(t, filepath.Join(d, "cgroup.procs")))
		if !slices.Contains(procs, strconv.Itoa(pid)) {
			t.Errorf("%s (pid %d) not in %s/cgroup.procs: %v", what, pid, d, procs)
		}
	}
}

// assertNoCgroup checks that cgroup p exists in no hierarchy.
func assertNoCgroup(t *testing.T, p string) {
	t.Helper()
	if dirs := cgroupDirs(p); len(dirs) > 0 {
		t.Errorf("cgroup left behind: %v", dirs)
	}
}

// removeTestCgroups removes cgroups a test had hull make as parents
// (hull, like runc, leaves parents), deepest first. One that is not
// empty holds something hull left.
func removeTestCgroups(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		for _, d := range cgroupDirs(p) {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("removing test cgroup %s: %v", d, err)
			}
		}
	}
}

// The monitor, virtiofsd and QEMU of a CLI container run in the cgroup its
// spec names (cgroupfs and systemd forms), in every hierarchy; the
// cgroup goes with delete, also after a crashed monitor. A bad path is
// refused and changes nothing.
func TestCLIHostCgroup(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	fsParent := fmt.Sprintf("/hull-cli-%d", os.Getpid())
	slice := fmt.Sprintf("hullcli%d-x.slice", os.Getpid())
	sliceDir := fmt.Sprintf("/hullcli%d.slice/hullcli%d-x.slice", os.Getpid(), os.Getpid())
	t.Cleanup(func() { removeTestCgroups(t, fsParent, sliceDir, filepath.Dir(sliceDir)) })

	for _, tc := range []struct {
		name, cgroupsPath, want string
		crash                   bool // SIGKILL the monitor: delete cleans up
	}{
		{"cgroupfs", fsParent + "/cg-fs", fsParent + "/cg-fs", false},
		{"systemd", slice + ":hull:cg-sd", sliceDir + "/hull-cg-sd.scope", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "cg-" + tc.name
			b := makeBundle(t, []string{"sleep", "1000"}, func(s *specs.Spec) {
				s.Linux.CgroupsPath = tc.cgroupsPath
			})
			if r := h.run(t, nil, "run", "-d", "--bundle", b, id); r.code != 0 {
				t.Fatalf("run -d: %s", r.stderr)
			}
			var st specs.State
			if err := json.Unmarshal([]byte(h.run(t, nil, "state", id).stdout), &st); err != nil {
				t.Fatal(err)
			}
			vmDir := filepath.Join(h.root, id, "vm") + "/"
			qemu := pidOf(t, "qemu-system", vmDir)
			assertInCgroup(t, "monitor", st.Pid, tc.want)
			assertInCgroup(t, "qemu", qemu, tc.want)
			assertInCgroup(t, "virtiofsd", pidOf(t, "virtiofsd", vmDir), tc.want)
			if tc.crash {
				// Nothing tears down: delete removes what the record names.
				if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				waitPidExit(t, st.Pid, time.Minute)
				waitPidExit(t, qemu, time.Minute)
				if len(cgroupDirs(tc.want)) == 0 {
					t.Error("cgroup gone before delete: the crash test tests nothing")
				}
			} else {
				// The monitor leaves and removes the cgroup as it exits,
				// before delete, which callers run once it has exited.
				if r := h.run(t, nil, "kill", id, "KILL"); r.code != 0 {
					t.Fatalf("kill: %s", r.stderr)
				}
				waitPidExit(t, st.Pid, time.Minute)
				assertNoCgroup(t, tc.want)
			}
			if r := h.run(t, nil, "delete", id); r.code != 0 {
				t.Fatalf("delete: %s", r.stderr)
			}
			assertNoCgroup(t, tc.want)
		})
	}

	t.Run("bad path", func(t *testing.T) {
		b := makeBundle(t, []string{"true"}, func(s *specs.Spec) {
			s.Linux.CgroupsPath = fsParent + "/../escape"
		})
		r := h.run(t, nil, "run", "--bundle", b, "cg-bad")
		if r.code == 0 || !strings.Contains(r.stderr, `invalid cgroupsPath`) || !strings.Contains(r.stderr, `".." is not allowed`) {
			t.Errorf("run with cgroupsPath %s/../escape: exit %d, %q", fsParent, r.code, r.stderr)
		}
		assertNoCgroup(t, "/escape")
	})
}

// A CRI pod's VMM, virtiofsd and shim run in the cgroup CRI gives the
// pod's sandbox, <cgroup_parent>/<sandbox id> (the kubelet's cgroupfs
// layout); removing the pod removes that cgroup and leaves the parent.
func TestCRIPodCgroup(t *testing.T) {
	e := requireEnv(t)
	top := fmt.Sprintf("/hull-cri-%d", os.Getpid())
	parent := top + "/pod-cg-uid"
	// Registered first, so run last: after the pods and containerd are gone.
	t.Cleanup(func() { removeTestCgroups(t, parent, top) })
	c := startCRI(t, e, "")
	logs := filepath.Join(c.cfgDir, "logs-cg")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := c.writeJSON(t, "pod-cg.json", map[string]any{
		"metadata":      map[string]any{"name": "cg", "namespace": "hull-test", "uid": "cg-uid", "attempt": 0},
		"hostname":      "cg",
		"log_directory": logs,
		"linux":         map[string]any{"cgroup_parent": parent},
	})
	id := c.must(t, "runp", "--runtime", "hull", cfg)
	if t.Failed() {
		t.FailNow()
	}
	want := parent + "/" + id
	vms := c.hullRoot + "/pods/k8s.io/"
	qemu, fsd, shims := pidsMatching("qemu-system", vms), pidsMatching("virtiofsd", "--socket-path="+vms), c.shims()
	if len(qemu) != 1 || len(fsd) != 1 || len(shims) != 1 {
		t.Fatalf("qemu %v, virtiofsd %v, shims %v: want one each", qemu, fsd, shims)
	}
	assertInCgroup(t, "qemu", qemu[0], want)
	assertInCgroup(t, "virtiofsd", fsd[0], want)
	assertInCgroup(t, "shim", shims[0], want)
	c.must(t, "stopp", id)
	c.must(t, "rmp", id)
	assertNoCgroup(t, want)
	if len(cgroupDirs(parent)) == 0 {
		t.Errorf("the pod's parent cgroup %s was removed: it is the kubelet's", parent)
	}
	c.waitNoShim(t)
}
