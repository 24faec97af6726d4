package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	agent "github.com/hullrt/hull/api/agent/v1"
	"github.com/hullrt/hull/internal/hostcgroup"
	"github.com/hullrt/hull/internal/hypervisor"
	"github.com/hullrt/hull/internal/network"
	"github.com/hullrt/hull/internal/storage"
)

// setupNetwork wires a tap to each interface of the sandbox's network
// namespace, and records what it did for Cleanup.
func (s *Sandbox) setupNetwork(context.Context) error {
	if s.netns == "" {
		return nil
	}
	n, err := network.Setup(s.netns)
	if err != nil {
		return err
	}
	s.net = n
	return n.Save(s.Dir)
}

// configureGuestNetwork gives the guest's devices the addresses, routes and
// neighbours of the interfaces they stand for.
func (s *Sandbox) configureGuestNetwork(ctx context.Context) error {
	if s.net == nil {
		return nil
	}
	req := guestNetwork(s.net)
	for _, i := range req.interfaces {
		if _, err := s.Agent.UpdateInterface(ctx, i); err != nil {
			return fmt.Errorf("configuring guest interface %s: %w", i.Name, err)
		}
	}
	if len(req.routes) > 0 {
		if err := s.Agent.UpdateRoutes(ctx, req.routes); err != nil {
			return fmt.Errorf("configuring guest routes: %w", err)
		}
	}
	if len(req.neighbors) > 0 {
		if err := s.Agent.AddARPNeighbors(ctx, req.neighbors); err != nil {
			return fmt.Errorf("configuring guest neighbours: %w", err)
		}
	}
	return nil
}

type guestNetworkRequest struct {
	interfaces []*agent.Interface
	routes     []*agent.Route
	neighbors  []*agent.ARPNeighbor
}

// guestNetwork is n in the agent API's terms: each guest device takes the
// name, MAC, MTU and addresses of the interface it stands for.
func guestNetwork(n *network.Network) guestNetworkRequest {
	var r guestNetworkRequest
	for _, i := range n.Interfaces {
		ai := &agent.Interface{Name: i.Name, Mac: i.MAC.String(), Mtu: uint32(i.MTU)}
		for _, a := range i.Addrs {
			ones, _ := a.Mask.Size()
			ai.Addresses = append(ai.Addresses, &agent.IPAddress{Address: a.IP.String(), PrefixLen: uint32(ones)})
		}
		r.interfaces = append(r.interfaces, ai)
	}
	for _, rt := range n.Routes {
		ar := &agent.Route{Device: rt.Device, Scope: uint32(rt.Scope), Metric: uint32(rt.Metric)}
		if rt.Dst != nil {
			ar.Destination = rt.Dst.String()
		}
		if rt.Gw != nil {
			ar.Gateway = rt.Gw.String()
		}
		if rt.Src != nil {
			ar.Source = rt.Src.String()
		}
		r.routes = append(r.routes, ar)
	}
	for _, nb := range n.Neighbors {
		r.neighbors = append(r.neighbors, &agent.ARPNeighbor{IpAddress: nb.IP.String(), Mac: nb.MAC.String(), Device: nb.Device})
	}
	return r
}

// Cleanup removes what a sandbox whose runtime crashed left behind in dir:
// its VMM and helper processes, the redirects in its network namespace,
// the mounts of its share and the host cgroup it made. The caller removes
// dir.
//
// The search for processes reads every process's command line (4-11 ms
// here), so it is skipped when dir is gone: Destroy removes dir last, and
// keeps it when its VMM may have outlived it.
func Cleanup(dir string) error {
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		hypervisor.KillReferencing(dir + "/")
		if origin := originOf(dir); origin != "" {
			hypervisor.KillReferencing(origin + "/")
		}
	}
	netErr := network.Cleanup(dir)
	share := storage.Share{Dir: filepath.Join(dir, "shared")}
	if err := share.Remove(); err != nil {
		return err
	}
	return errors.Join(netErr, hostcgroup.Cleanup(dir))
}
