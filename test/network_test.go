package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// netnsWithVeth makes a named network namespace holding eth0 (10.99.N.2/24,
// default route via .1), whose veth peer is in a second namespace that
// stands for the host side and answers at 10.99.N.1.
func netnsWithVeth(t *testing.T, n int) (pod, peer string) {
	t.Helper()
	pod, peer = fmt.Sprintf("hullpod%d", n), fmt.Sprintf("hullpeer%d", n)
	for _, ns := range []string{pod, peer} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
		sh(t, "ip", "netns", "add", ns)
		ns := ns
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	sh(t, "ip", "-n", peer, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", pod)
	sh(t, "ip", "-n", peer, "addr", "add", fmt.Sprintf("10.99.%d.1/24", n), "dev", "veth0")
	sh(t, "ip", "-n", peer, "link", "set", "veth0", "up")
	sh(t, "ip", "-n", pod, "addr", "add", fmt.Sprintf("10.99.%d.2/24", n), "dev", "eth0")
	sh(t, "ip", "-n", pod, "link", "set", "eth0", "up")
	sh(t, "ip", "-n", pod, "route", "add", "default", "via", fmt.Sprintf("10.99.%d.1", n))
	return pod, peer
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// assertNetnsClean checks that hull left no tap, and no qdisc or filter of
// its own, in the named network namespace, and that eth0 is still there.
func assertNetnsClean(t *testing.T, ns string) {
	t.Helper()
	links := sh(t, "ip", "-n", ns, "-o", "link")
	if strings.Contains(links, "hulltap") {
		t.Errorf("tap left in %s:\n%s", ns, links)
	}
	if !strings.Contains(links, "eth0") {
		t.Errorf("eth0 of %s is gone: it belongs to whoever made it", ns)
	}
	qdiscs := sh(t, "tc", "-n", ns, "qdisc", "show")
	if strings.Contains(qdiscs, "ingress") {
		t.Errorf("ingress qdisc left in %s:\n%s", ns, qdiscs)
	}
	if f := sh(t, "tc", "-n", ns, "filter", "show", "dev", "eth0", "ingress"); strings.TrimSpace(f) != "" {
		t.Errorf("filters left on eth0 of %s:\n%s", ns, f)
	}
}

// The spec names a network namespace: the container in the VM has its
// interface, address and routes, serves the peer outside the VM, and the
// namespace is left as it was.
func TestRunCarriesNetworkNamespace(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	pod, peer := netnsWithVeth(t, 1)
	mac := strings.TrimSpace(sh(t, "ip", "netns", "exec", pod, "cat", "/sys/class/net/eth0/address"))
	b := makeBundle(t, []string{"sh", "-c", `
mkdir /www && echo served-from-the-vm > /www/index.html
httpd -f -p 8080 -h /www & sleep 600`}, func(s *specs.Spec) {
		for i, ns := range s.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				s.Linux.Namespaces[i].Path = "/var/run/netns/" + pod
			}
		}
	})
	if r := h.run(t, nil, "create", "--bundle", b, "net1"); r.code != 0 {
		t.Fatalf("create: %d %s", r.code, r.stderr)
	}
	defer h.run(t, nil, "delete", "--force", "net1")
	if r := h.run(t, nil, "start", "net1"); r.code != 0 {
		t.Fatalf("start: %d %s", r.code, r.stderr)
	}
	// The peer, outside the VM, fetches from the container's server.
	if got := httpGet(t, []string{"ip", "netns", "exec", peer}, "10.99.1.2", 8080); !strings.HasSuffix(got, "\r\n\r\nserved-from-the-vm\n") {
		t.Errorf("peer fetched %q from the container's server", got)
	}
	r := h.run(t, nil, "exec", "net1", "sh", "-c", "ip -o -4 addr show eth0; ip -o link show eth0; ip route; uname -r")
	if r.code != 0 {
		t.Fatalf("exec: %d %s", r.code, r.stderr)
	}
	t.Logf("in the VM:\n%s", r.stdout)
	for _, want := range []string{"inet 10.99.1.2/24", "link/ether " + mac, "default via 10.99.1.1 dev eth0"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("container network lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, hostKernel(t)) {
		t.Errorf("exec ran on the host kernel")
	}
	if r := h.run(t, nil, "kill", "net1", "KILL"); r.code != 0 {
		t.Errorf("kill: %d %s", r.code, r.stderr)
	}
	waitStatus(t, h, "net1", "stopped")
	if r := h.run(t, nil, "delete", "net1"); r.code != 0 {
		t.Errorf("delete: %d %s", r.code, r.stderr)
	}
	assertNetnsClean(t, pod)
}

// httpGet fetches / from ip:port with busybox nc, run behind the command
// prefix in (e.g. "ip netns exec NS"), retrying for a minute while the
// server comes up, and returns the whole response.
func httpGet(t *testing.T, in []string, ip string, port int) string {
	t.Helper()
	var out []byte
	var err error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		args := append(append([]string{}, in...), "busybox", "nc", "-w", "5", ip, fmt.Sprint(port))
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin = strings.NewReader("GET /index.html HTTP/1.0\r\n\r\n")
		if out, err = cmd.Output(); err == nil && len(out) > 0 {
			break
		}
	}
	return string(out)
}

// waitStatus waits for the container's OCI state to reach status.
func waitStatus(t *testing.T, h *hullCmd, id, status string) {
	t.Helper()
	var st struct{ Status string }
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		r := h.run(t, nil, "state", id)
		if json.Unmarshal([]byte(r.stdout), &st) == nil && st.Status == status {
			return
		}
	}
	t.Fatalf("container %s: status %q, want %q", id, st.Status, status)
}

// A spec without a network namespace would share the host's network, which
// a VM cannot: a clear error, and nothing made.
func TestRunRefusesHostNetwork(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	b := makeBundle(t, []string{"true"}, func(s *specs.Spec) {
		var kept []specs.LinuxNamespace
		for _, ns := range s.Linux.Namespaces {
			if ns.Type != specs.NetworkNamespace {
				kept = append(kept, ns)
			}
		}
		s.Linux.Namespaces = kept
	})
	r := h.run(t, nil, "run", "--bundle", b, "hostnet")
	if r.code == 0 || !strings.Contains(r.stderr, "host networking is not supported") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("run with the host's network: exit %d, stderr %q; want one clear line", r.code, r.stderr)
	}
}

// A crashed VMM and monitor leave redirects in the namespace; delete
// removes them.
func TestNetworkCleanupAfterCrash(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	pod, _ := netnsWithVeth(t, 2)
	b := makeBundle(t, []string{"sleep", "600"}, func(s *specs.Spec) {
		for i, ns := range s.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				s.Linux.Namespaces[i].Path = "/var/run/netns/" + pod
			}
		}
	})
	if r := h.run(t, nil, "create", "--bundle", b, "crash1"); r.code != 0 {
		t.Fatalf("create: %d %s", r.code, r.stderr)
	}
	if q := sh(t, "tc", "-n", pod, "qdisc", "show", "dev", "eth0"); !strings.Contains(q, "ingress") {
		t.Fatalf("no redirect on eth0 while the container exists:\n%s", q)
	}
	var st struct{ Pid int }
	if err := json.Unmarshal([]byte(h.run(t, nil, "state", "crash1").stdout), &st); err != nil || st.Pid == 0 {
		t.Fatalf("state: %v", err)
	}
	// SIGKILL the monitor: its VMM dies with it (PDEATHSIG), nothing cleans.
	if err := exec.Command("kill", "-KILL", fmt.Sprint(st.Pid)).Run(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, "crash1", "stopped")
	if r := h.run(t, nil, "delete", "crash1"); r.code != 0 {
		t.Fatalf("delete: %d %s", r.code, r.stderr)
	}
	assertNetnsClean(t, pod)
}

// podIP is the pod IP that CRI reports (crictl inspectp).
func (c *criEnv) podIP(t *testing.T, p pod) string {
	t.Helper()
	var st struct {
		Status struct {
			Network struct{ IP string }
		}
	}
	out := c.must(t, "inspectp", "-o", "json", p.id)
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Status.Network.IP == "" {
		t.Fatalf("crictl inspectp: no pod ip (%v): %s", err, out)
	}
	return st.Status.Network.IP
}

// Two CRI pods on a CNI bridge: each VM has the IP that CRI reports, the
// pods ping each other, and a server in one answers a client in the other
// and a client on the host side of the bridge.
func TestCRIPodNetwork(t *testing.T) {
	e := requireEnv(t)
	c := startCRI(t, e, "")
	a, b := c.runPod(t, "net-a"), c.runPod(t, "net-b")
	if t.Failed() {
		t.FailNow()
	}
	server := c.startContainer(t, a, "server", "sh", "-c", "mkdir /www && echo hello-from-pod-a > /www/index.html && exec httpd -f -p 8080 -h /www")
	client := c.startContainer(t, b, "client", "sleep", "1000")
	if t.Failed() {
		t.FailNow()
	}
	ipA, ipB := c.podIP(t, a), c.podIP(t, b)
	t.Logf("pod ips: a %s, b %s", ipA, ipB)
	for _, x := range []struct{ ctr, ip string }{{server, ipA}, {client, ipB}} {
		out := c.must(t, "exec", "-s", x.ctr, "ip", "-o", "-4", "addr", "show", "eth0")
		t.Logf("ip addr in %s: %s", x.ctr[:12], out)
		if !strings.Contains(out, "inet "+x.ip+"/") {
			t.Errorf("container %s: eth0 lacks the pod ip %s: %s", x.ctr[:12], x.ip, out)
		}
	}
	if a, b := c.must(t, "exec", "-s", server, "cat", "/proc/sys/kernel/random/boot_id"), c.must(t, "exec", "-s", client, "cat", "/proc/sys/kernel/random/boot_id"); a == b || a == hostBootID(t) {
		t.Errorf("boot ids a %q, b %q: want two VMs", a, b)
	}
	for _, x := range []struct{ from, to string }{{client, ipA}, {server, ipB}} {
		out := c.must(t, "exec", "-s", x.from, "ping", "-c", "2", "-W", "5", x.to)
		if !strings.Contains(out, " 0% packet loss") {
			t.Errorf("ping %s: %s", x.to, out)
		}
	}
	var got string
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		// busybox nc: its wget crashes on some kernels.
		get := fmt.Sprintf(`printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 5 %s 8080`, ipA)
		if r := c.run(t, nil, "exec", "-s", client, "sh", "-c", get); r.code == 0 && r.stdout != "" {
			got = r.stdout
			break
		}
	}
	if !strings.Contains(got, "\r\n\r\nhello-from-pod-a\n") { // crictl appends blank lines
		t.Errorf("pod b fetched %q from pod a", got)
	}
	// The host side: containerd's network namespace holds the bridge.
	hostSide := []string{"nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", c.pid)}
	if got := httpGet(t, hostSide, ipA, 8080); !strings.HasSuffix(got, "\r\n\r\nhello-from-pod-a\n") {
		t.Errorf("host fetched %q from pod a", got)
	}
	for _, p := range []pod{a, b} {
		c.must(t, "stopp", p.id)
		c.must(t, "rmp", p.id)
	}
	c.waitNoShim(t)
	assertNoLeftovers(t, c.hullRoot)
	out, err := exec.Command("nsenter", append(hostSide[1:2], "--", "sh", "-c", "ip -o link; tc qdisc show")...).CombinedOutput()
	if err != nil {
		t.Fatalf("listing the host side: %v: %s", err, out)
	}
	if strings.Contains(string(out), "hulltap") || strings.Contains(string(out), "ingress") {
		t.Errorf("taps or redirects left on the host side:\n%s", out)
	}
}

// A spec that asks for a new network namespace: the monitor, whose pid
// hooks get as the container's, has one of its own, so a hook that
// configures "the container's" network (docker's libnetwork-setkey) never
// touches the host's.
func TestCreateMonitorOwnNetns(t *testing.T) {
	e := requireEnv(t)
	t.Parallel()
	h := newHull(t, e, "")
	b := makeBundle(t, []string{"sleep", "600"}, nil)
	if r := h.run(t, nil, "create", "--bundle", b, "ownns"); r.code != 0 {
		t.Fatalf("create: %d %s", r.code, r.stderr)
	}
	defer h.run(t, nil, "delete", "--force", "ownns")
	var st struct{ Pid int }
	if err := json.Unmarshal([]byte(h.run(t, nil, "state", "ownns").stdout), &st); err != nil || st.Pid == 0 {
		t.Fatalf("state: %v", err)
	}
	mine, err1 := os.Readlink("/proc/self/ns/net")
	its, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", st.Pid))
	if err1 != nil || err2 != nil || mine == its {
		t.Errorf("monitor's network namespace %q (%v), the host's %q (%v): want its own", its, err2, mine, err1)
	}
}
