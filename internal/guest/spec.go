package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/guest/ctr"
)

// CRI annotations that make a container a member of a pod.
const (
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
)

// podNamespaces are the namespaces a pod's containers share with its
// sandbox container when their spec asks to join one (a path is set).
var podNamespaces = map[specs.LinuxNamespaceType]string{
	specs.IPCNamespace: "ipc",
	specs.UTSNamespace: "uts",
	specs.PIDNamespace: "pid",
}

// guestSpec decodes the spec the host sent and adapts it to the guest: the
// host's namespace paths, cgroup path, hooks and LSM labels mean nothing in
// here, and the network is the guest's own. A pod member's namespaces that name a path join the namespaces of
// its sandbox container in the guest instead, found by sandboxPid.
// Seccomp is not applied inside the guest (the VM is the isolation
// boundary, as in Kata's default disable_guest_seccomp). Every container
// gets a cgroup namespace of its own, as runtimes give it on a cgroup v2
// host (the guest is v2 only): one in the guest's initial namespace that
// mounts cgroup2, as runc's default mounts do, resets the options of the
// guest's whole hierarchy (a pool VM's favordynmods, see boot.go).
func guestSpec(id string, raw []byte, sandboxPid func(id string) (int, bool)) (_ *specs.Spec, netSysctls map[string]string, err error) {
	var s specs.Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, nil, fmt.Errorf("decoding spec: %w", err)
	}
	if s.Process == nil {
		return nil, nil, errors.New("spec has no process")
	}
	if len(s.Process.Args) == 0 {
		return nil, nil, errors.New("spec process has no args")
	}
	if s.Root == nil || !filepath.IsAbs(s.Root.Path) {
		return nil, nil, errors.New("spec root must be an absolute guest path")
	}
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	sandboxInit := 0
	if s.Annotations[annotationContainerType] == "container" {
		if sid := s.Annotations[annotationSandboxID]; sid != "" && sid != id {
			pid, ok := sandboxPid(sid)
			if !ok {
				return nil, nil, fmt.Errorf("pod sandbox %s is not running in this guest", sid)
			}
			sandboxInit = pid
		}
	}
	namespaces := s.Linux.Namespaces[:0]
	for _, ns := range s.Linux.Namespaces {
		// Containers use the guest's own network, where the agent put the
		// pod's interfaces (see network.go).
		if ns.Type == specs.NetworkNamespace {
			continue
		}
		file, shared := podNamespaces[ns.Type]
		if ns.Path != "" && shared && sandboxInit > 0 {
			ns.Path = fmt.Sprintf("/proc/%d/ns/%s", sandboxInit, file)
		} else {
			ns.Path = ""
		}
		namespaces = append(namespaces, ns)
	}
	if !slices.ContainsFunc(namespaces, func(ns specs.LinuxNamespace) bool { return ns.Type == specs.CgroupNamespace }) {
		namespaces = append(namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	s.Linux.Namespaces = namespaces
	// Network sysctls are the guest network's, which every container of
	// the pod shares: applySysctls sets them there, not hull-init.
	for k := range s.Linux.Sysctl {
		// runc takes "net.ipv4.x" and "net/ipv4/x" alike.
		name := strings.ReplaceAll(k, "/", ".")
		if !validSysctl(name) {
			return nil, nil, fmt.Errorf("invalid sysctl name %q", k)
		}
		if strings.HasPrefix(name, "net.") {
			if netSysctls == nil {
				netSysctls = map[string]string{}
			}
			netSysctls[name] = s.Linux.Sysctl[k]
			delete(s.Linux.Sysctl, k)
		}
	}
	s.Linux.CgroupsPath = "/hull/" + id
	s.Linux.Seccomp = nil
	s.Linux.MountLabel = ""
	s.Process.ApparmorProfile = ""
	s.Process.SelinuxLabel = ""
	s.Hooks = nil
	return &s, netSysctls, nil
}

func libcontainerConfig(id string, s *specs.Spec) (*configs.Config, error) {
	return specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName: id,
		Spec:       s,
	})
}

// newProcess converts an OCI process into hull-init's form (stdio is
// newIO's).
func newProcess(p *specs.Process) (*ctr.Process, error) {
	cp := &ctr.Process{
		Args:            p.Args,
		Env:             p.Env,
		Cwd:             p.Cwd,
		UID:             p.User.UID,
		GID:             p.User.GID,
		AdditionalGids:  p.User.AdditionalGids,
		NoNewPrivileges: p.NoNewPrivileges,
	}
	if c := p.Capabilities; c != nil {
		cp.Capabilities = &configs.Capabilities{
			Bounding:    c.Bounding,
			Effective:   c.Effective,
			Inheritable: c.Inheritable,
			Permitted:   c.Permitted,
			Ambient:     c.Ambient,
		}
	}
	for _, r := range p.Rlimits {
		t, ok := rlimits[r.Type]
		if !ok {
			return nil, fmt.Errorf("unknown rlimit type %q", r.Type)
		}
		cp.Rlimits = append(cp.Rlimits, configs.Rlimit{Type: t, Hard: r.Hard, Soft: r.Soft})
	}
	return cp, nil
}

var rlimits = map[string]int{
	"RLIMIT_AS":         unix.RLIMIT_AS,
	"RLIMIT_CORE":       unix.RLIMIT_CORE,
	"RLIMIT_CPU":        unix.RLIMIT_CPU,
	"RLIMIT_DATA":       unix.RLIMIT_DATA,
	"RLIMIT_FSIZE":      unix.RLIMIT_FSIZE,
	"RLIMIT_LOCKS":      unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK":    unix.RLIMIT_MEMLOCK,
	"RLIMIT_MSGQUEUE":   unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE":       unix.RLIMIT_NICE,
	"RLIMIT_NOFILE":     unix.RLIMIT_NOFILE,
	"RLIMIT_NPROC":      unix.RLIMIT_NPROC,
	"RLIMIT_RSS":        unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO":     unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME":     unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK":      unix.RLIMIT_STACK,
}

// validSysctl accepts a dotted sysctl name that stays below /proc/sys:
// no empty part, so no "..", once slashes are read as dots.
func validSysctl(k string) bool {
	if k == "" || strings.ContainsAny(k, "/\x00") {
		return false
	}
	for _, part := range strings.Split(k, ".") {
		if part == "" {
			return false
		}
	}
	return true
}

// applySysctls writes sysctls to /proc/sys of the guest.
func applySysctls(sysctls map[string]string) error {
	for k, v := range sysctls {
		path := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			return fmt.Errorf("setting sysctl %s: %w", k, err)
		}
	}
	return nil
}
