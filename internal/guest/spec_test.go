package guest

import (
	"encoding/json"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestGuestSpec(t *testing.T) {
	in := specs.Spec{
		Root:    &specs.Root{Path: "/run/hull/shared/c1/rootfs"},
		Process: &specs.Process{Args: []string{"sh"}, SelinuxLabel: "x", ApparmorProfile: "y"},
		Hooks:   &specs.Hooks{Poststop: []specs.Hook{{Path: "/host/bin/hook"}}},
		Linux: &specs.Linux{
			CgroupsPath: "/host/slice",
			Namespaces:  []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: "/var/run/netns/host"}, {Type: specs.PIDNamespace}},
			Seccomp:     &specs.LinuxSeccomp{DefaultAction: specs.ActErrno},
			Sysctl:      map[string]string{"net.ipv4.ping_group_range": "0 0", "net/ipv4/ip_forward": "1", "kernel.msgmax": "8192"},
		},
	}
	raw, _ := json.Marshal(in)
	s, sysctls, err := guestSpec("c1", raw, noSandbox)
	if err != nil {
		t.Fatal(err)
	}
	if len(sysctls) != 2 || sysctls["net.ipv4.ping_group_range"] != "0 0" || sysctls["net.ipv4.ip_forward"] != "1" {
		t.Errorf("network sysctls for the guest %v", sysctls)
	}
	if len(s.Linux.Sysctl) != 1 || s.Linux.Sysctl["kernel.msgmax"] != "8192" {
		t.Errorf("sysctls left to the container %v, want the ipc one", s.Linux.Sysctl)
	}
	if s.Linux.CgroupsPath != "/hull/c1" {
		t.Errorf("cgroups path %q", s.Linux.CgroupsPath)
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Path != "" {
			t.Errorf("host namespace path %q kept", ns.Path)
		}
		if ns.Type == specs.NetworkNamespace {
			t.Error("network namespace kept: containers must use the guest's network")
		}
	}
	if len(s.Linux.Namespaces) != 2 || s.Linux.Namespaces[0].Type != specs.PIDNamespace || s.Linux.Namespaces[1].Type != specs.CgroupNamespace {
		t.Errorf("namespaces %+v, want the pid namespace and a cgroup namespace added", s.Linux.Namespaces)
	}
	if s.Hooks != nil || s.Linux.Seccomp != nil || s.Process.SelinuxLabel != "" || s.Process.ApparmorProfile != "" {
		t.Errorf("host-only settings kept: %+v", s)
	}
}

func TestGuestSpecRejects(t *testing.T) {
	for name, raw := range map[string]string{
		"garbage":           `{"process":`,
		"no process":        `{"root":{"path":"/r"}}`,
		"no args":           `{"root":{"path":"/r"},"process":{"args":[]}}`,
		"relative root":     `{"root":{"path":"r"},"process":{"args":["sh"]}}`,
		"escaping sysctl":   `{"root":{"path":"/r"},"process":{"args":["sh"]},"linux":{"sysctl":{"net/../../kernel/x":"1"}}}`,
		"empty sysctl part": `{"root":{"path":"/r"},"process":{"args":["sh"]},"linux":{"sysctl":{"net..x":"1"}}}`,
	} {
		if _, _, err := guestSpec("c1", []byte(raw), noSandbox); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNewProcess(t *testing.T) {
	p := &specs.Process{
		Args: []string{"sh"}, Env: []string{"A=1"},
		User:            specs.User{UID: 1000, GID: 100, AdditionalGids: []uint32{5, 6}},
		NoNewPrivileges: true,
		Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 512}},
		Capabilities:    &specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}},
	}
	lp, err := newProcess(p)
	if err != nil {
		t.Fatal(err)
	}
	if lp.UID != 1000 || lp.GID != 100 || !lp.NoNewPrivileges || len(lp.AdditionalGids) != 2 || lp.Args[0] != "sh" || lp.Env[0] != "A=1" {
		t.Errorf("converted badly: %+v", lp)
	}
	if len(lp.Rlimits) != 1 || lp.Rlimits[0].Soft != 512 || lp.Capabilities.Bounding[0] != "CAP_KILL" {
		t.Errorf("rlimits/caps: %+v %+v", lp.Rlimits, lp.Capabilities)
	}
	p.Rlimits[0].Type = "RLIMIT_BOGUS"
	if _, err := newProcess(p); err == nil {
		t.Error("unknown rlimit accepted")
	}
}

func noSandbox(string) (int, bool) { return 0, false }

func TestGuestSpecJoinsPodNamespaces(t *testing.T) {
	in := specs.Spec{
		Root:        &specs.Root{Path: "/r"},
		Process:     &specs.Process{Args: []string{"sh"}},
		Annotations: map[string]string{annotationContainerType: "container", annotationSandboxID: "pod1"},
		Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.NetworkNamespace, Path: "/proc/4242/ns/net"},
			{Type: specs.IPCNamespace, Path: "/proc/4242/ns/ipc"},
			{Type: specs.MountNamespace},
			{Type: specs.PIDNamespace},
		}},
	}
	raw, _ := json.Marshal(in)
	s, _, err := guestSpec("c2", raw, func(id string) (int, bool) { return 85, id == "pod1" })
	if err != nil {
		t.Fatal(err)
	}
	want := map[specs.LinuxNamespaceType]string{
		specs.IPCNamespace:    "/proc/85/ns/ipc",
		specs.MountNamespace:  "",
		specs.PIDNamespace:    "", // no path asked: a pid namespace of its own
		specs.CgroupNamespace: "", // always one of its own
	}
	if len(s.Linux.Namespaces) != len(want) {
		t.Errorf("namespaces %+v, want %v (the guest's network shared)", s.Linux.Namespaces, want)
	}
	for _, ns := range s.Linux.Namespaces {
		if p, ok := want[ns.Type]; !ok || ns.Path != p {
			t.Errorf("%s namespace path %q, want %q", ns.Type, ns.Path, p)
		}
	}
	if _, _, err := guestSpec("c2", raw, noSandbox); err == nil {
		t.Error("member of a pod whose sandbox is not in the guest accepted")
	}
}
