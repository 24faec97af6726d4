package network

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testNetns makes a named network namespace holding eth0, one end of a
// veth pair whose other end stays in this test's namespace, configured as
// CNI's bridge plugin would: an address, a default route, and a static
// neighbour.
func testNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN) to make network namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	name := "hulltest" + strings.ReplaceAll(t.Name(), "/", "")
	if len(name) > 15 {
		name = name[:15]
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	_ = exec.Command("ip", "netns", "del", name).Run()
	run("ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	in := func(args ...string) { run(append([]string{"ip", "netns", "exec", name}, args...)...) }
	in("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
	in("ip", "link", "set", "eth0", "address", "0a:58:0a:58:00:05", "mtu", "1400", "up")
	in("ip", "addr", "add", "10.88.0.5/16", "dev", "eth0")
	in("ip", "route", "add", "default", "via", "10.88.0.1")
	in("ip", "route", "add", "192.168.7.0/24", "via", "10.88.0.7", "metric", "5")
	in("ip", "neigh", "add", "10.88.0.9", "lladdr", "0a:58:0a:58:00:09", "dev", "eth0", "nud", "permanent")
	return "/var/run/netns/" + name
}

func handleAt(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func ingressFilters(t *testing.T, h *netlink.Handle, name string) int {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	fs, err := h.FilterList(l, ingressHandle)
	if err != nil {
		return 0 // no ingress qdisc
	}
	return len(fs)
}

func TestSetupAndTeardown(t *testing.T) {
	path := testNetns(t)
	h := handleAt(t, path)
	n, err := Setup(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Interfaces) != 2 {
		// eth0 and its unplugged veth peer: both are interfaces CNI could use.
		t.Fatalf("interfaces %+v, want eth0 and peer0", n.Interfaces)
	}
	var eth0 *Interface
	for i := range n.Interfaces {
		if n.Interfaces[i].Name == "eth0" {
			eth0 = &n.Interfaces[i]
		}
	}
	if eth0 == nil || eth0.MAC.String() != "0a:58:0a:58:00:05" || eth0.MTU != 1400 ||
		len(eth0.Addrs) != 1 || eth0.Addrs[0].String() != "10.88.0.5/16" {
		t.Fatalf("eth0 = %+v", eth0)
	}
	tap, err := h.LinkByName(eth0.Tap)
	if err != nil {
		t.Fatalf("tap %s: %v", eth0.Tap, err)
	}
	if tap.Attrs().MTU != 1400 || tap.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("tap mtu %d flags %v, want 1400 and up", tap.Attrs().MTU, tap.Attrs().Flags)
	}
	if ingressFilters(t, h, "eth0") != 1 || ingressFilters(t, h, eth0.Tap) != 1 {
		t.Errorf("redirect filters: eth0 %d, tap %d; want 1 each", ingressFilters(t, h, "eth0"), ingressFilters(t, h, eth0.Tap))
	}
	var routes []string
	for _, r := range n.Routes {
		dst := "default"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		routes = append(routes, dst+" via "+r.Gw.String()+" dev "+r.Device)
	}
	want := []string{"default via 10.88.0.1 dev eth0", "192.168.7.0/24 via 10.88.0.7 dev eth0"}
	if strings.Join(routes, ";") != strings.Join(want, ";") {
		t.Errorf("routes %q, want %q (the kernel's subnet route left out)", routes, want)
	}
	if len(n.Neighbors) != 1 || n.Neighbors[0].IP.String() != "10.88.0.9" || n.Neighbors[0].MAC.String() != "0a:58:0a:58:00:09" {
		t.Errorf("neighbours %+v", n.Neighbors)
	}
	if len(n.TapFiles()) != 2 {
		t.Fatalf("%d tap files, want 2", len(n.TapFiles()))
	}

	// A crash: the record survives, the taps' descriptors die.
	dir := t.TempDir()
	if err := n.Save(dir); err != nil {
		t.Fatal(err)
	}
	n.CloseTaps()
	if _, err := h.LinkByName(eth0.Tap); err == nil {
		t.Errorf("tap %s outlived its last descriptor", eth0.Tap)
	}
	if err := Cleanup(dir); err != nil {
		t.Fatal(err)
	}
	if c := ingressFilters(t, h, "eth0"); c != 0 {
		t.Errorf("%d redirect filters left on eth0", c)
	}
	qs, _ := h.QdiscList(nil)
	for _, q := range qs {
		if q.Type() == "ingress" {
			t.Errorf("ingress qdisc left: %+v", q.Attrs())
		}
	}
	if _, err := h.LinkByName("eth0"); err != nil {
		t.Errorf("eth0 belongs to CNI and must stay: %v", err)
	}
	// Teardown again, and Cleanup of a dir without a record, are harmless.
	if err := n.Teardown(); err != nil {
		t.Errorf("second teardown: %v", err)
	}
	if err := Cleanup(t.TempDir()); err != nil {
		t.Errorf("cleanup without a record: %v", err)
	}
}

func TestSetupRefusesBusyIngress(t *testing.T) {
	path := testNetns(t)
	h := handleAt(t, path)
	if out, err := exec.Command("ip", "netns", "exec", path[len("/var/run/netns/"):], "tc", "qdisc", "add", "dev", "eth0", "ingress").CombinedOutput(); err != nil {
		t.Skipf("tc: %v: %s", err, out)
	}
	if _, err := Setup(path); err == nil || !strings.Contains(err.Error(), "ingress qdisc already") {
		t.Fatalf("Setup over someone else's ingress qdisc: %v", err)
	}
	// Nothing of ours is left: no tap, and the other ingress qdisc stays.
	qs, _ := h.QdiscList(nil)
	ingress := 0
	for _, q := range qs {
		if q.Type() == "ingress" {
			ingress++
		}
	}
	if ingress != 1 {
		t.Errorf("%d ingress qdiscs after a failed setup, want the one that was there", ingress)
	}
	links, _ := h.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, tapPrefix) {
			t.Errorf("tap %s left after a failed setup", l.Attrs().Name)
		}
	}
}

func TestSetupMissingNamespace(t *testing.T) {
	if _, err := Setup("/var/run/netns/does-not-exist-hull"); err == nil {
		t.Fatal("want an error")
	}
}
