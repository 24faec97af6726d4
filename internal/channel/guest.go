package channel

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/yamux"
	"github.com/mdlayher/vsock"
)

// ErrNoTransport means the guest has neither the virtio-serial port nor vsock.
var ErrNoTransport = errors.New("no agent channel: neither virtio-serial port " + PortName + " nor vsock found")

// FindPort returns the device node of the virtio-serial port called name,
// looked up in sysfs (no udev in the guest to make /dev/virtio-ports links).
func FindPort(sysfs, name string) (string, error) {
	dirs, err := filepath.Glob(filepath.Join(sysfs, "class/virtio-ports/*/name"))
	if err != nil {
		return "", err
	}
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == name {
			return filepath.Join("/dev", filepath.Base(filepath.Dir(f))), nil
		}
	}
	return "", fmt.Errorf("virtio-serial port %q: %w", name, os.ErrNotExist)
}

// ServeSerialFile returns a listener of the streams the host opens on the
// virtio-serial port f, open already. The listener fails once the host
// hangs up, and closes f; the caller opens the port again for the next
// host.
func ServeSerialFile(f *os.File) (net.Listener, error) {
	mux, err := yamux.Server(f, config())
	if err != nil {
		f.Close()
		return nil, err
	}
	return mux, nil
}

// ListenVsock returns a listener of host connections on the agent's vsock
// port; each connection carries a yamux session of its own.
func ListenVsock() (net.Listener, error) {
	l, err := vsock.Listen(VsockPort, nil)
	if err != nil {
		return nil, fmt.Errorf("listening on vsock port %d: %w", VsockPort, err)
	}
	return l, nil
}

// Accept wraps an accepted vsock connection in a yamux server session.
func Accept(conn net.Conn) (net.Listener, error) {
	return yamux.Server(conn, config())
}
