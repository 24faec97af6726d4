package ctr

import (
	"encoding/binary"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/devices"
	"golang.org/x/sys/unix"
)

// planMax is the largest plan hull-init takes (PLAN_MAX in init.c).
const planMax = 4 << 20

// A plan is what hull-init (cinit/init.c) carries out, in order: each
// operation a count of fields, then each field as a length and its bytes.
type plan struct {
	buf []byte
	err error
}

func (p *plan) op(fields ...string) {
	p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(len(fields)))
	for _, f := range fields {
		if strings.IndexByte(f, 0) >= 0 && p.err == nil {
			p.err = fmt.Errorf("%s: %q holds a NUL byte", fields[0], f)
		}
		p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(len(f)))
		p.buf = append(p.buf, f...)
	}
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

// Namespace types as setns and unshare take them.
var nsFlags = map[configs.NamespaceType]uintptr{
	configs.NEWNS:     unix.CLONE_NEWNS,
	configs.NEWUTS:    unix.CLONE_NEWUTS,
	configs.NEWIPC:    unix.CLONE_NEWIPC,
	configs.NEWPID:    unix.CLONE_NEWPID,
	configs.NEWCGROUP: unix.CLONE_NEWCGROUP,
}

// checkConfig refuses what hull-init does not do. The guest is the
// container's isolation boundary: its network is the pod's, seccomp and
// LSMs are not applied inside it (see guest.guestSpec).
func checkConfig(cfg *configs.Config) error {
	if cfg.Rootfs == "" || !filepath.IsAbs(cfg.Rootfs) {
		return fmt.Errorf("rootfs %q is not an absolute path", cfg.Rootfs)
	}
	for _, ns := range cfg.Namespaces {
		if _, ok := nsFlags[ns.Type]; !ok {
			return fmt.Errorf("%s namespaces are not supported in the guest", ns.Type)
		}
	}
	if cfg.NoPivotRoot {
		return fmt.Errorf("no_pivot_root is not supported in the guest")
	}
	for _, m := range cfg.Mounts {
		if m.RecAttr != nil || m.IsIDMapped() {
			return fmt.Errorf("mount %s: recursive attributes and id-mapped mounts are not supported in the guest", m.Destination)
		}
	}
	return nil
}

// rootfsPlan sets up the container's root and mount namespace, from the
// namespaces it has (joined ones come first) to pivot_root, masked paths
// and a read-only root.
func rootfsPlan(p *plan, cfg *configs.Config) error {
	p.op("root", cfg.Rootfs, strconv.Itoa(cfg.RootPropagation))
	var readonlyAfter []string
	dev := false
	for _, m := range cfg.Mounts {
		dest := filepath.Join("/", m.Destination)
		if dest == "/dev" && !m.IsBind() {
			dev = true
		}
		src, fstype, data := m.Source, m.Device, m.Data
		flags := m.Flags
		for _, pf := range m.PropagationFlags {
			flags |= pf
		}
		kind := "dir"
		switch {
		case m.IsBind():
			fi, err := os.Stat(src)
			if err != nil {
				return fmt.Errorf("mount %s: source: %w", dest, err)
			}
			if !fi.IsDir() {
				kind = "file"
			}
		case fstype == "cgroup" || fstype == "cgroup2":
			// The guest is cgroup v2 only; the container's cgroup
			// namespace makes its own cgroup the root it sees.
			src, fstype, data = "cgroup2", "cgroup2", ""
		}
		if dest == "/dev" && !m.IsBind() && flags&unix.MS_RDONLY != 0 {
			// Devices are made in it first.
			flags &^= unix.MS_RDONLY
			readonlyAfter = append(readonlyAfter, dest)
		}
		p.op("mount", src, dest, fstype, u(uint64(flags)), data, kind)
	}
	if dev {
		devicesPlan(p, cfg.Devices)
	}
	if cfg.Namespaces.IsPrivate(configs.NEWUTS) {
		if cfg.Hostname != "" {
			p.op("hostname", cfg.Hostname)
		}
		if cfg.Domainname != "" {
			p.op("domainname", cfg.Domainname)
		}
	}
	p.op("pivot")
	for _, k := range slices.Sorted(maps.Keys(cfg.Sysctl)) {
		p.op("write", "/proc/sys/"+strings.ReplaceAll(k, ".", "/"), cfg.Sysctl[k])
	}
	for _, path := range cfg.ReadonlyPaths {
		p.op("readonly", path)
	}
	for _, path := range cfg.MaskPaths {
		p.op("mask", path)
	}
	for _, path := range readonlyAfter {
		p.op("remountro", path)
	}
	if cfg.Readonlyfs {
		p.op("remountro", "/")
	}
	if cfg.OomScoreAdj != nil {
		p.op("write", "/proc/self/oom_score_adj", strconv.Itoa(*cfg.OomScoreAdj))
	}
	return nil
}

// devicesPlan makes the device nodes of a /dev the spec mounts and the
// links every /dev has, as runc does.
func devicesPlan(p *plan, devs []*devices.Device) {
	for _, d := range devs {
		if d.Path == "" {
			continue
		}
		mode := uint64(d.FileMode.Perm())
		switch d.Type {
		case devices.CharDevice:
			mode |= unix.S_IFCHR
		case devices.BlockDevice:
			mode |= unix.S_IFBLK
		case devices.FifoDevice:
			mode |= unix.S_IFIFO
		default:
			continue
		}
		p.op("mknod", filepath.Join("/", d.Path), u(mode), u(uint64(d.Major)), u(uint64(d.Minor)), u(uint64(d.Uid)), u(uint64(d.Gid)))
	}
	links := [][2]string{
		{"/proc/self/fd", "/dev/fd"},
		{"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"},
		{"/proc/self/fd/2", "/dev/stderr"},
		{"pts/ptmx", "/dev/ptmx"},
	}
	if _, err := os.Stat("/proc/kcore"); err == nil {
		links = append(links, [2]string{"/proc/kcore", "/dev/core"})
	}
	for _, l := range links {
		p.op("symlink", l[0], l[1])
	}
}

// processPlan sets up the process itself and execs it: its terminal, its
// limits, its user and capabilities, and its working directory.
func processPlan(p *plan, proc *Process, consoleFD int) error {
	if proc.Terminal {
		p.op("console", strconv.Itoa(consoleFD), u(uint64(proc.UID)), u(uint64(proc.GID)))
	}
	for _, r := range proc.Rlimits {
		p.op("rlimit", strconv.Itoa(r.Type), u(r.Soft), u(r.Hard))
	}
	caps, err := capMasks(proc.Capabilities)
	if err != nil {
		return err
	}
	if caps != nil {
		p.op("bounding", u(caps.bounding))
	}
	cwd := proc.Cwd
	if cwd == "" {
		cwd = "/"
	}
	p.op("cwd", cwd)
	user := []string{"user", u(uint64(proc.UID)), u(uint64(proc.GID))}
	for _, g := range proc.AdditionalGids {
		user = append(user, u(uint64(g)))
	}
	p.op(user...)
	if caps != nil {
		p.op("caps", u(caps.effective), u(caps.permitted), u(caps.inheritable), u(caps.ambient))
	}
	if proc.NoNewPrivileges {
		p.op("nnp")
	}
	p.op(append([]string{"env"}, proc.Env...)...)
	if len(proc.Args) == 0 {
		return fmt.Errorf("process has no args")
	}
	p.op(append([]string{"exec"}, proc.Args...)...)
	return nil
}
