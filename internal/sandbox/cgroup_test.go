package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/hostcgroup"
)

// A bad cgroupsPath is refused before anything is made.
func TestCreateRejectsBadCgroupPath(t *testing.T) {
	cfg := config.Default()
	cfg.Runtime.Root = t.TempDir()
	for _, p := range []string{"/kubepods/../escape", "/", "bad--name.slice:cri:x"} {
		_, err := Create(t.Context(), cfg, "c1", filepath.Join(cfg.Runtime.Root, "c1"), WithCgroup(p))
		if !errors.Is(err, hostcgroup.ErrInvalidPath) {
			t.Errorf("cgroupsPath %q: err = %v, want ErrInvalidPath", p, err)
		}
	}
	if entries, _ := os.ReadDir(cfg.Runtime.Root); len(entries) != 0 {
		t.Fatalf("bad cgroupsPath left state behind: %v", entries)
	}
}

// With runtime.sandbox_cgroup off the spec's path is not even looked at.
func TestCgroupOff(t *testing.T) {
	cfg := config.Default()
	cfg.Runtime.SandboxCgroup = false
	s := &Sandbox{cfg: cfg, cgroupsPath: "/kubepods/../escape"}
	if err := s.checkCgroupPath(); err != nil || s.cgroupsPath != "" {
		t.Errorf("sandbox_cgroup off: %v, path %q", err, s.cgroupsPath)
	}
}
