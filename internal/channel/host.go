package channel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/mdlayher/vsock"
)

// Session is the host end of a channel.
type Session struct {
	mux *yamux.Session
}

// New starts the host end of a channel on conn.
func New(conn net.Conn) (*Session, error) {
	mux, err := yamux.Client(conn, config())
	if err != nil {
		return nil, fmt.Errorf("starting channel multiplexer: %w", err)
	}
	return &Session{mux: mux}, nil
}

// DialSerial connects to the unix socket behind the VM's virtio-serial port
// (the VMM listens on it), retrying until ctx ends while the VMM creates it.
func DialSerial(ctx context.Context, path string) (*Session, error) {
	var d net.Dialer
	return dialRetry(ctx, "agent channel "+path, func() (net.Conn, error) {
		return d.DialContext(ctx, "unix", path)
	})
}

// DialVsock connects to the agent over vsock.
func DialVsock(ctx context.Context, cid uint32) (*Session, error) {
	return dialRetry(ctx, fmt.Sprintf("agent over vsock cid %d", cid), func() (net.Conn, error) {
		return vsock.Dial(cid, VsockPort, nil)
	})
}

// dialRetry dials until it succeeds or ctx ends: the VMM creates the
// endpoint a moment after it starts.
func dialRetry(ctx context.Context, what string, dial func() (net.Conn, error)) (*Session, error) {
	for {
		conn, err := dial()
		if err == nil {
			return New(conn)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to %s: %w", what, errors.Join(ctx.Err(), err))
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// Open opens a new stream to the agent.
func (s *Session) Open() (net.Conn, error) {
	c, err := s.mux.Open()
	if err != nil {
		return nil, fmt.Errorf("opening agent stream: %w", err)
	}
	return c, nil
}

// Done is closed when the session ends (the guest or the VMM went away).
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// Close ends the session and every stream on it.
func (s *Session) Close() error { return s.mux.Close() }
