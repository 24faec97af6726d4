// Package network carries a pod's network namespace into its VM (Kata's
// "tcfilter" model): for every interface that CNI (or podman, or anyone)
// put into the namespace, it creates a tap device beside it in the same
// namespace and joins the two with tc ingress redirects both ways, so that
// frames for the interface reach the guest and the guest's frames leave
// through the interface. The guest's virtio-net device takes the
// interface's MAC and addresses; the namespace's routes and static
// neighbours are described for the guest agent to apply.
//
// The taps are not persistent: the VMM holds their only file descriptors,
// so they disappear with it, even when it crashes. What outlives a crash is
// the redirect on the interface's ingress, which Teardown removes.
package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// tapPrefix names the taps hull makes; interfaces so named are never carried.
const tapPrefix = "hulltap"

// Interface is one interface of the namespace and the tap that stands for it.
type Interface struct {
	Name  string           `json:"name"`
	MAC   net.HardwareAddr `json:"mac"`
	MTU   int              `json:"mtu"`
	Addrs []net.IPNet      `json:"addrs,omitempty"`
	Tap   string           `json:"tap"`
	// Redirected is set once the interface's ingress is ours to remove.
	Redirected bool `json:"redirected"`
}

// Route is a route of the namespace through one of its carried interfaces.
type Route struct {
	Dst    *net.IPNet `json:"dst,omitempty"` // nil: default route
	Gw     net.IP     `json:"gw,omitempty"`
	Src    net.IP     `json:"src,omitempty"`
	Device string     `json:"device"`
	Scope  uint8      `json:"scope"`
	Metric int        `json:"metric,omitempty"`
}

// Neighbor is a static (permanent) neighbour entry of the namespace.
type Neighbor struct {
	IP     net.IP           `json:"ip"`
	MAC    net.HardwareAddr `json:"mac"`
	Device string           `json:"device"`
}

// Network is a namespace made ready for a VM.
type Network struct {
	NSPath     string      `json:"netns"`
	Interfaces []Interface `json:"interfaces"`
	Routes     []Route     `json:"routes,omitempty"`
	Neighbors  []Neighbor  `json:"neighbors,omitempty"`

	taps []*os.File // tap file descriptors, in the order of Interfaces
}

// Carried counts the interfaces of the namespace at nsPath that Setup
// would carry into a VM.
func Carried(nsPath string) (int, error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return 0, fmt.Errorf("opening network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return 0, fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return 0, fmt.Errorf("listing interfaces in %s: %w", nsPath, err)
	}
	n := 0
	for _, l := range links {
		if isCarried(l.Attrs()) {
			n++
		}
	}
	return n, nil
}

// isCarried tells the interfaces a VM takes over: Ethernet ones that are
// not loopback or a tap of ours.
func isCarried(at *netlink.LinkAttrs) bool {
	return at.Flags&net.FlagLoopback == 0 && !strings.HasPrefix(at.Name, tapPrefix) && len(at.HardwareAddr) == 6
}

// Setup scans the namespace at nsPath and wires a tap to each interface.
// On failure it undoes what it did.
func Setup(nsPath string) (_ *Network, err error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	n := &Network{NSPath: nsPath}
	defer func() {
		if err != nil {
			n.CloseTaps()
			_ = n.teardown(h)
		}
	}()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces in %s: %w", nsPath, err)
	}
	carried := map[int]string{}
	for _, l := range links {
		at := l.Attrs()
		if !isCarried(at) {
			continue
		}
		i := Interface{Name: at.Name, MAC: at.HardwareAddr, MTU: at.MTU, Tap: fmt.Sprintf("%s%d", tapPrefix, len(n.Interfaces))}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s: %w", at.Name, err)
		}
		for _, a := range addrs {
			if !a.IP.IsLinkLocalUnicast() {
				i.Addrs = append(i.Addrs, *a.IPNet)
			}
		}
		n.Interfaces = append(n.Interfaces, i)
		carried[at.Index] = at.Name
		if err := n.wire(ns, h, l, &n.Interfaces[len(n.Interfaces)-1]); err != nil {
			return nil, err
		}
	}
	if err := n.scanRoutes(h, carried); err != nil {
		return nil, err
	}
	return n, nil
}

// wire creates the tap for i beside link and redirects each one's ingress
// to the other's egress.
func (n *Network) wire(ns netns.NsHandle, h *netlink.Handle, link netlink.Link, i *Interface) error {
	f, err := openTap(ns, i.Tap)
	if err != nil {
		return fmt.Errorf("creating tap for %s: %w", i.Name, err)
	}
	n.taps = append(n.taps, f)
	tap, err := h.LinkByName(i.Tap)
	if err != nil {
		return fmt.Errorf("finding tap %s: %w", i.Tap, err)
	}
	if err := h.LinkSetMTU(tap, i.MTU); err != nil {
		return fmt.Errorf("setting mtu of %s: %w", i.Tap, err)
	}
	if err := h.LinkSetUp(tap); err != nil {
		return fmt.Errorf("setting %s up: %w", i.Tap, err)
	}
	if err := redirect(h, link, tap); err != nil {
		return fmt.Errorf("redirecting %s to %s: %w", i.Name, i.Tap, err)
	}
	i.Redirected = true
	if err := redirect(h, tap, link); err != nil {
		return fmt.Errorf("redirecting %s to %s: %w", i.Tap, i.Name, err)
	}
	return nil
}

var ingressHandle = netlink.MakeHandle(0xffff, 0)

// redirect sends every frame that from receives out of to.
func redirect(h *netlink.Handle, from, to netlink.Link) error {
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: from.Attrs().Index,
		Parent:    netlink.HANDLE_INGRESS,
		Handle:    ingressHandle,
	}}
	if err := h.QdiscAdd(q); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%s has an ingress qdisc already", from.Attrs().Name)
		}
		return fmt.Errorf("adding ingress qdisc: %w", err)
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: from.Attrs().Index,
			Parent:    ingressHandle,
			Priority:  1,
			Protocol:  unix.ETH_P_ALL,
		},
		Actions: []netlink.Action{&netlink.MirredAction{
			ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_STOLEN},
			MirredAction: netlink.TCA_EGRESS_REDIR,
			Ifindex:      to.Attrs().Index,
		}},
	}
	if err := h.FilterAdd(f); err != nil {
		_ = h.QdiscDel(q)
		return fmt.Errorf("adding redirect filter: %w", err)
	}
	return nil
}

// scanRoutes records the routes and static neighbours of the carried
// interfaces, leaving out what the kernel makes by itself from addresses.
func (n *Network) scanRoutes(h *netlink.Handle, carried map[int]string) error {
	routes, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("listing routes: %w", err)
	}
	for _, r := range routes {
		dev, ok := carried[r.LinkIndex]
		if !ok || r.Protocol == unix.RTPROT_KERNEL || (r.Dst != nil && (r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast())) {
			continue
		}
		n.Routes = append(n.Routes, Route{Dst: r.Dst, Gw: r.Gw, Src: r.Src, Device: dev, Scope: uint8(r.Scope), Metric: r.Priority})
	}
	for idx, dev := range carried {
		neighs, err := h.NeighList(idx, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("listing neighbours of %s: %w", dev, err)
		}
		for _, nb := range neighs {
			if nb.State&netlink.NUD_PERMANENT != 0 && nb.IP != nil && len(nb.HardwareAddr) == 6 {
				n.Neighbors = append(n.Neighbors, Neighbor{IP: nb.IP, MAC: nb.HardwareAddr, Device: dev})
			}
		}
	}
	return nil
}

// TapFiles are the taps' file descriptors, one per interface, for the VMM.
func (n *Network) TapFiles() []*os.File { return n.taps }

// CloseTaps closes this process's tap descriptors; once the VMM has its
// own copies, the taps live exactly as long as the VMM.
func (n *Network) CloseTaps() {
	for _, f := range n.taps {
		f.Close()
	}
	n.taps = nil
}

// Teardown removes the redirects and any tap still there. The interfaces
// themselves belong to whoever made them (CNI) and stay. A namespace that
// is gone already has nothing left to clean.
func (n *Network) Teardown() error {
	n.CloseTaps()
	ns, err := netns.GetFromPath(n.NSPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("opening network namespace %s: %w", n.NSPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", n.NSPath, err)
	}
	defer h.Close()
	return n.teardown(h)
}

func (n *Network) teardown(h *netlink.Handle) error {
	var errs []error
	for _, i := range n.Interfaces {
		for _, name := range []string{i.Name, i.Tap} {
			if name == i.Name && !i.Redirected {
				continue // not ours
			}
			l, err := h.LinkByName(name)
			if err != nil {
				continue // gone
			}
			err = h.QdiscDel(&netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{
				LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_INGRESS, Handle: ingressHandle,
			}})
			if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("removing ingress qdisc of %s: %w", name, err))
			}
			if name == i.Tap {
				if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
					errs = append(errs, fmt.Errorf("removing tap %s: %w", name, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Save records n in dir, for Cleanup after a crash.
func (n *Network) Save(dir string) error {
	b, err := json.Marshal(n)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, recordFile), b, 0o600)
}

const recordFile = "network.json"

// Cleanup tears down the network recorded in dir, if any: what a crashed
// runtime left in the pod's namespace.
func Cleanup(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var n Network
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("reading %s: %w", recordFile, err)
	}
	return n.Teardown()
}
