package hostcgroup

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
)

// ownCgroups is /proc/self/cgroup: hierarchy controllers ("" for the
// unified one) to path.
func ownCgroups(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 {
			m[f[1]] = f[2]
		}
	}
	return m
}

func requireCgroups(t *testing.T) {
	t.Helper()
	if cgroups.Mode() == cgroups.Unavailable {
		t.Skip("no cgroups mounted at " + Root)
	}
}

// An absolute path lands at the same place in every hierarchy; a relative
// one below the process's own cgroup in each, as with runc.
func TestResolve(t *testing.T) {
	requireCgroups(t)
	pl, err := resolve("/kubepods/pod1/abc")
	if err != nil {
		t.Fatal(err)
	}
	dirs := pl.dirs()
	if len(dirs) == 0 {
		t.Fatal("no hierarchy")
	}
	for _, d := range dirs {
		if !strings.HasPrefix(d, Root+"/") || !strings.HasSuffix(d, "/kubepods/pod1/abc") {
			t.Errorf("absolute path placed at %s", d)
		}
	}
	own := ownCgroups(t)
	pl, err = resolve("hull/abc")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	switch cgroups.Mode() {
	case cgroups.Unified:
		want = append(want, filepath.Join(Root, own[""], "hull/abc"))
	case cgroups.Hybrid:
		want = append(want, filepath.Join(Root, "unified", own[""], "hull/abc"))
		fallthrough
	default:
		if p, ok := own["memory"]; ok {
			want = append(want, filepath.Join(Root, "memory", p, "hull/abc"))
		}
	}
	for _, w := range want {
		if !slices.Contains(pl.dirs(), w) {
			t.Errorf("relative path placed at %v, want %s among them", pl.dirs(), w)
		}
	}
}

// Create, Join, Leave and Remove on the real hierarchies, below this
// process's own cgroup.
func TestCreateJoinRemove(t *testing.T) {
	requireCgroups(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	parent := fmt.Sprintf("hull-unit-%d", os.Getpid())
	before := ownCgroups(t)
	c, err := Create(parent + "/leaf")
	if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) {
		t.Skipf("cgroups not writable here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Create made the parent too; Remove leaves parents alone.
		pl, _ := resolve(parent)
		for _, d := range pl.dirs() {
			if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
				t.Errorf("removing %s: %v", d, err)
			}
		}
	})
	if len(c.Dirs) == 0 || !slices.Equal(c.Dirs, c.Created) {
		t.Fatalf("dirs %v, created %v: want the same, non-empty", c.Dirs, c.Created)
	}
	for _, d := range c.Dirs {
		if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err != nil {
			t.Errorf("cgroup not made: %v", err)
		}
	}
	if err := c.Join(); err != nil {
		t.Fatal(err)
	}
	for h, p := range ownCgroups(t) {
		if !strings.HasSuffix(p, "/"+parent+"/leaf") {
			t.Errorf("after Join, cgroup %q is %s", h, p)
		}
	}
	// A busy cgroup stays.
	defer func(d time.Duration) { removeTimeout = d }(removeTimeout)
	removeTimeout = 100 * time.Millisecond
	if err := rmdir(c.Dirs[0]); err == nil || !strings.Contains(err.Error(), "left in place") {
		t.Errorf("removing a cgroup this process is in: %v", err)
	}
	dir := t.TempDir()
	if err := c.Save(dir); err != nil {
		t.Fatal(err)
	}
	if err := c.Leave(); err != nil {
		t.Fatal(err)
	}
	if after := ownCgroups(t); !maps.Equal(before, after) {
		t.Errorf("after Leave: %v, want %v", after, before)
	}

	// Someone else's cgroup: Create makes nothing and Remove keeps it.
	again, err := Create(parent + "/leaf")
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Created) != 0 {
		t.Errorf("existing cgroup recorded as created: %v", again.Created)
	}
	if err := again.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dirs[0]); err != nil {
		t.Errorf("Remove took a cgroup it did not make: %v", err)
	}

	// A crashed owner's cgroup goes with Cleanup; a second is harmless.
	for i := 0; i < 2; i++ {
		if err := Cleanup(dir); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range c.Dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Cleanup: %v", d, err)
		}
	}
}

// A record that names something outside the cgroup hierarchies is not
// acted on.
func TestCleanupRejectsForeignRecord(t *testing.T) {
	dir := t.TempDir()
	victim := t.TempDir()
	rec := fmt.Sprintf(`{"path":"/x","dirs":[%q],"created":[%q]}`, victim, victim)
	if err := os.WriteFile(filepath.Join(dir, recordName), []byte(rec), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(dir); err == nil || !strings.Contains(err.Error(), "not a cgroup") {
		t.Errorf("Cleanup of a foreign record: %v", err)
	}
	if _, err := os.Stat(victim); err != nil {
		t.Errorf("Cleanup removed %s: %v", victim, err)
	}
	if err := Cleanup(t.TempDir()); err != nil {
		t.Errorf("Cleanup without a record: %v", err)
	}
}
