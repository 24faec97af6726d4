package ctr

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// decode reads a plan back as init.c does.
func decode(t *testing.T, b []byte) [][]string {
	t.Helper()
	var ops [][]string
	for len(b) > 0 {
		n := binary.LittleEndian.Uint32(b)
		b = b[4:]
		var op []string
		for range n {
			l := binary.LittleEndian.Uint32(b)
			op = append(op, string(b[4:4+l]))
			b = b[4+l:]
		}
		ops = append(ops, op)
	}
	return ops
}

func TestCapMasks(t *testing.T) {
	s, err := capMasks(&configs.Capabilities{
		Bounding:    []string{"CAP_CHOWN", "CAP_KILL", "CAP_NO_SUCH"},
		Permitted:   []string{"CAP_KILL", "CAP_NET_BIND_SERVICE"},
		Inheritable: []string{"CAP_KILL"},
		Ambient:     []string{"CAP_KILL", "CAP_NET_BIND_SERVICE"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(1<<unix.CAP_CHOWN | 1<<unix.CAP_KILL); s.bounding != want {
		t.Errorf("bounding %#x, want %#x (the unknown name left out)", s.bounding, want)
	}
	if want := uint64(1 << unix.CAP_KILL); s.ambient != want {
		t.Errorf("ambient %#x, want %#x (only what is permitted and inheritable)", s.ambient, want)
	}
	if s, _ := capMasks(nil); s != nil {
		t.Error("nil capabilities gave masks")
	}
}

func TestPlanOrder(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := specconv.Example()
	s.Root.Path = "/r"
	s.Hostname = "h"
	s.Mounts = append(s.Mounts,
		specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: file, Options: []string{"rbind", "ro"}},
		specs.Mount{Destination: "/data", Type: "bind", Source: dir, Options: []string{"rbind"}})
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{CgroupName: "c", Spec: s})
	if err != nil {
		t.Fatal(err)
	}
	p := &plan{}
	if err := rootfsPlan(p, cfg); err != nil {
		t.Fatal(err)
	}
	if err := processPlan(p, &Process{Args: []string{"sh"}, Terminal: true}, 7); err != nil {
		t.Fatal(err)
	}
	ops := decode(t, p.buf)
	index := func(pred func([]string) bool) int { return slices.IndexFunc(ops, pred) }
	opIs := func(name string, args ...string) func([]string) bool {
		return func(op []string) bool {
			return op[0] == name && (len(args) == 0 || slices.Equal(op[1:1+len(args)], args))
		}
	}
	if ops[0][0] != "root" || ops[0][1] != "/r" {
		t.Errorf("first op %v, want root /r", ops[0])
	}
	pivot := index(opIs("pivot"))
	for name, i := range map[string]int{
		"mount /proc":   index(opIs("mount", "proc", "/proc")),
		"cgroup2":       index(opIs("mount", "cgroup2", "/sys/fs/cgroup", "cgroup2")),
		"mknod":         index(opIs("mknod", "/dev/null")),
		"hostname":      index(opIs("hostname", "h")),
		"resolv (file)": index(func(op []string) bool { return op[0] == "mount" && op[2] == "/etc/resolv.conf" && op[6] == "file" }),
		"data (dir)":    index(func(op []string) bool { return op[0] == "mount" && op[2] == "/data" && op[6] == "dir" }),
	} {
		if i < 0 || i > pivot {
			t.Errorf("%s at %d, want before pivot_root at %d", name, i, pivot)
		}
	}
	for name, i := range map[string]int{
		"mask":     index(opIs("mask", "/proc/kcore")),
		"readonly": index(opIs("readonly", "/proc/sys")),
		"console":  index(opIs("console", "7")),
	} {
		if i < pivot {
			t.Errorf("%s at %d, want after pivot_root at %d", name, i, pivot)
		}
	}
	if last := ops[len(ops)-1]; last[0] != "exec" || last[1] != "sh" {
		t.Errorf("last op %v, want exec sh", last)
	}
	if user, caps := index(opIs("user")), index(opIs("bounding")); caps >= 0 {
		t.Errorf("bounding op %d without capabilities (user at %d)", caps, user)
	}

	bad := &plan{}
	bad.op("exec", "a\x00b")
	if bad.err == nil || !strings.Contains(bad.err.Error(), "NUL") {
		t.Errorf("a NUL in a field: %v", bad.err)
	}
}
