package guest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	agent "github.com/hullrt/hull/api/agent/v1"
)

// The guest's network is the VM's own (initial) network namespace: every
// container shares it, as a pod's containers share the pod's namespace on
// the host. The host describes the pod's interfaces, routes and neighbours
// and the agent applies them to the virtio-net devices, which it finds by
// MAC address (the host gives each device the MAC of the interface it
// stands for).

// loopbackUp brings up lo, which the kernel leaves down.
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo: %w", err)
	}
	return netlink.LinkSetUp(lo)
}

func (a *Agent) UpdateInterface(ctx context.Context, r *agent.UpdateInterfaceRequest) (*agent.Interface, error) {
	want := r.GetInterface()
	if want == nil {
		return nil, status.Error(codes.InvalidArgument, "no interface given")
	}
	mac, err := net.ParseMAC(want.Mac)
	if err != nil || len(mac) != 6 {
		return nil, status.Errorf(codes.InvalidArgument, "interface mac %q is not an ethernet address", want.Mac)
	}
	if want.Name != "" && !validIfName(want.Name) {
		return nil, status.Errorf(codes.InvalidArgument, "invalid interface name %q", want.Name)
	}
	if want.Mtu != 0 && (want.Mtu < 68 || want.Mtu > 65535) {
		return nil, status.Errorf(codes.InvalidArgument, "mtu %d out of range 68-65535", want.Mtu)
	}
	addrs := make([]*netlink.Addr, 0, len(want.Addresses))
	for _, ip := range want.Addresses {
		ipnet, err := parseIPAddress(ip)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		addrs = append(addrs, &netlink.Addr{IPNet: ipnet})
	}
	a.netMu.Lock()
	defer a.netMu.Unlock()
	link, err := linkByMAC(mac)
	if err != nil {
		return nil, err
	}
	if want.Name != "" && want.Name != link.Attrs().Name {
		if err := netlink.LinkSetDown(link); err != nil {
			return nil, fmt.Errorf("setting %s down: %w", link.Attrs().Name, err)
		}
		if err := netlink.LinkSetName(link, want.Name); err != nil {
			return nil, fmt.Errorf("renaming %s to %s: %w", link.Attrs().Name, want.Name, err)
		}
	}
	if want.Mtu != 0 {
		if err := netlink.LinkSetMTU(link, int(want.Mtu)); err != nil {
			return nil, fmt.Errorf("setting mtu %d: %w", want.Mtu, err)
		}
	}
	if err := replaceAddrs(link, addrs); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("setting %s up: %w", want.Name, err)
	}
	if link, err = netlink.LinkByIndex(link.Attrs().Index); err != nil {
		return nil, err
	}
	return describeLink(link)
}

// replaceAddrs gives link exactly addrs, keeping the IPv6 link-local address
// the kernel made.
func replaceAddrs(link netlink.Link, addrs []*netlink.Addr) error {
	have, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing addresses: %w", err)
	}
	wanted := map[string]bool{}
	for _, a := range addrs {
		wanted[a.IPNet.String()] = true
	}
	for _, h := range have {
		if h.IP.IsLinkLocalUnicast() || wanted[h.IPNet.String()] {
			continue
		}
		if err := netlink.AddrDel(link, &h); err != nil {
			return fmt.Errorf("removing address %s: %w", h.IPNet, err)
		}
	}
	for _, a := range addrs {
		if err := netlink.AddrReplace(link, a); err != nil {
			return fmt.Errorf("adding address %s: %w", a.IPNet, err)
		}
	}
	return nil
}

func (a *Agent) UpdateRoutes(ctx context.Context, r *agent.UpdateRoutesRequest) (*agent.Routes, error) {
	a.netMu.Lock()
	defer a.netMu.Unlock()
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	byName := map[string]netlink.Link{}
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	var routes []*netlink.Route
	for _, rt := range r.GetRoutes().GetRoutes() {
		nr, err := toNetlinkRoute(rt, byName)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		routes = append(routes, nr)
	}
	// Routes through a gateway need the gateway's own (link) route first.
	sort.SliceStable(routes, func(i, j int) bool { return routes[i].Gw == nil && routes[j].Gw != nil })
	for _, l := range links {
		if l.Attrs().Name == "lo" {
			continue
		}
		old, err := netlink.RouteList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing routes of %s: %w", l.Attrs().Name, err)
		}
		for _, o := range old {
			if o.Protocol == unix.RTPROT_KERNEL || (o.Dst != nil && o.Dst.IP.IsLinkLocalUnicast()) {
				continue
			}
			if err := netlink.RouteDel(&o); err != nil && !errors.Is(err, unix.ESRCH) {
				return nil, fmt.Errorf("removing route %s: %w", o, err)
			}
		}
	}
	for _, nr := range routes {
		if err := netlink.RouteReplace(nr); err != nil {
			return nil, fmt.Errorf("adding route %s: %w", nr, err)
		}
	}
	return listRoutes()
}

func toNetlinkRoute(rt *agent.Route, links map[string]netlink.Link) (*netlink.Route, error) {
	link, ok := links[rt.Device]
	if !ok {
		return nil, fmt.Errorf("route to %q: no interface %q in the guest", rt.Destination, rt.Device)
	}
	if rt.Scope > 255 {
		return nil, fmt.Errorf("route to %q: scope %d out of range", rt.Destination, rt.Scope)
	}
	nr := &netlink.Route{LinkIndex: link.Attrs().Index, Scope: netlink.Scope(rt.Scope), Priority: int(rt.Metric)}
	if rt.Destination != "" {
		_, dst, err := net.ParseCIDR(rt.Destination)
		if err != nil {
			return nil, fmt.Errorf("route destination %q is not a CIDR", rt.Destination)
		}
		nr.Dst = dst
	}
	if rt.Gateway != "" {
		if nr.Gw = net.ParseIP(rt.Gateway); nr.Gw == nil {
			return nil, fmt.Errorf("route gateway %q is not an IP address", rt.Gateway)
		}
	}
	if rt.Source != "" {
		if nr.Src = net.ParseIP(rt.Source); nr.Src == nil {
			return nil, fmt.Errorf("route source %q is not an IP address", rt.Source)
		}
	}
	return nr, nil
}

func (a *Agent) AddARPNeighbors(ctx context.Context, r *agent.AddARPNeighborsRequest) (*emptypb.Empty, error) {
	a.netMu.Lock()
	defer a.netMu.Unlock()
	var neighs []*netlink.Neigh
	for _, n := range r.Neighbors {
		ip := net.ParseIP(n.IpAddress)
		if ip == nil {
			return nil, status.Errorf(codes.InvalidArgument, "neighbour address %q is not an IP address", n.IpAddress)
		}
		mac, err := net.ParseMAC(n.Mac)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "neighbour %s: mac %q: %v", n.IpAddress, n.Mac, err)
		}
		link, err := netlink.LinkByName(n.Device)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "neighbour %s: no interface %q in the guest", n.IpAddress, n.Device)
		}
		state := int(n.State)
		if state == 0 {
			state = netlink.NUD_PERMANENT
		}
		family := netlink.FAMILY_V6
		if ip.To4() != nil {
			family = netlink.FAMILY_V4
		}
		neighs = append(neighs, &netlink.Neigh{LinkIndex: link.Attrs().Index, Family: family, State: state, IP: ip, HardwareAddr: mac})
	}
	for _, n := range neighs {
		if err := netlink.NeighSet(n); err != nil {
			return nil, fmt.Errorf("adding neighbour %s: %w", n.IP, err)
		}
	}
	return empty, nil
}

func (a *Agent) ListInterfaces(context.Context, *agent.ListInterfacesRequest) (*agent.Interfaces, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	out := &agent.Interfaces{}
	for _, l := range links {
		i, err := describeLink(l)
		if err != nil {
			return nil, err
		}
		out.Interfaces = append(out.Interfaces, i)
	}
	return out, nil
}

func (a *Agent) ListRoutes(context.Context, *agent.ListRoutesRequest) (*agent.Routes, error) {
	return listRoutes()
}

func listRoutes() (*agent.Routes, error) {
	rs, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	names := map[int]string{}
	out := &agent.Routes{}
	for _, r := range rs {
		name, ok := names[r.LinkIndex]
		if !ok {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			names[r.LinkIndex] = name
		}
		ar := &agent.Route{Device: name, Scope: uint32(r.Scope), Metric: uint32(r.Priority)}
		if r.Dst != nil {
			ar.Destination = r.Dst.String()
		}
		if r.Gw != nil {
			ar.Gateway = r.Gw.String()
		}
		if r.Src != nil {
			ar.Source = r.Src.String()
		}
		out.Routes = append(out.Routes, ar)
	}
	return out, nil
}

func describeLink(l netlink.Link) (*agent.Interface, error) {
	at := l.Attrs()
	i := &agent.Interface{Name: at.Name, Mac: at.HardwareAddr.String(), Mtu: uint32(at.MTU), Up: at.Flags&net.FlagUp != 0}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", at.Name, err)
	}
	for _, a := range addrs {
		ones, _ := a.Mask.Size()
		i.Addresses = append(i.Addresses, &agent.IPAddress{Address: a.IP.String(), PrefixLen: uint32(ones)})
	}
	return i, nil
}

func linkByMAC(mac net.HardwareAddr) (netlink.Link, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if strings.EqualFold(l.Attrs().HardwareAddr.String(), mac.String()) {
			return l, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no network device with mac %s in the guest", mac)
}

func parseIPAddress(a *agent.IPAddress) (*net.IPNet, error) {
	ip := net.ParseIP(a.GetAddress())
	if ip == nil {
		return nil, fmt.Errorf("address %q is not an IP address", a.GetAddress())
	}
	bits := 128
	if v4 := ip.To4(); v4 != nil {
		ip, bits = v4, 32
	}
	if a.PrefixLen > uint32(bits) {
		return nil, fmt.Errorf("address %s/%d: prefix longer than %d bits", a.Address, a.PrefixLen, bits)
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(int(a.PrefixLen), bits)}, nil
}

// validIfName is what the kernel accepts as a network interface name.
func validIfName(n string) bool {
	return n != "" && len(n) < unix.IFNAMSIZ && n != "." && n != ".." && !strings.ContainsAny(n, "/: \t\n")
}
