package agentclient

import (
	"context"

	agent "github.com/hullrt/hull/api/agent/v1"
)

// UpdateInterface configures the guest device whose MAC is i.Mac.
func (c *Client) UpdateInterface(ctx context.Context, i *agent.Interface) (*agent.Interface, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	r, err := c.ctl.UpdateInterface(ctx, &agent.UpdateInterfaceRequest{Interface: i})
	return r, fromRPC(err)
}

// UpdateRoutes replaces the guest's routes (but the kernel's own) by routes.
func (c *Client) UpdateRoutes(ctx context.Context, routes []*agent.Route) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.UpdateRoutes(ctx, &agent.UpdateRoutesRequest{Routes: &agent.Routes{Routes: routes}})
	return fromRPC(err)
}

// AddARPNeighbors adds static neighbour entries in the guest.
func (c *Client) AddARPNeighbors(ctx context.Context, neighbors []*agent.ARPNeighbor) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.AddARPNeighbors(ctx, &agent.AddARPNeighborsRequest{Neighbors: neighbors})
	return fromRPC(err)
}

// ListInterfaces is what the guest says of its network interfaces.
func (c *Client) ListInterfaces(ctx context.Context) ([]*agent.Interface, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	r, err := c.ctl.ListInterfaces(ctx, &agent.ListInterfacesRequest{})
	if err != nil {
		return nil, fromRPC(err)
	}
	return r.Interfaces, nil
}

// ListRoutes is what the guest says of its routes.
func (c *Client) ListRoutes(ctx context.Context) ([]*agent.Route, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	r, err := c.ctl.ListRoutes(ctx, &agent.ListRoutesRequest{})
	if err != nil {
		return nil, fromRPC(err)
	}
	return r.Routes, nil
}
