// Package channel carries the agent API and process I/O between host and
// guest over one transport. Where the host has vhost-vsock the transport is
// a vsock connection; everywhere else it is a virtio-serial port. Either way
// a yamux session runs on top, so that many independent streams (API calls,
// the stdio of many processes) share the one link without a proxy process.
//
// The host is the yamux client and opens every stream; the guest accepts.
package channel

import (
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

// PortName is the name of the virtio-serial port the agent listens on.
const PortName = "agent.channel.0"

// VsockPort is the vsock port the agent listens on when it uses vsock.
const VsockPort = 1024

func config() *yamux.Config {
	c := yamux.DefaultConfig()
	// Liveness comes from the VMM process and RPC deadlines; keepalive pings
	// would only kill sessions of paused VMs.
	c.EnableKeepAlive = false
	c.ConnectionWriteTimeout = 30 * time.Second
	c.MaxStreamWindowSize = 1 << 20
	c.LogOutput = io.Discard
	return c
}
