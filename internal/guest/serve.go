package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/sirupsen/logrus"

	agent "github.com/hullrt/hull/api/agent/v1"
	"github.com/hullrt/hull/internal/channel"
)

// Serve serves the agent API to the host until ctx ends. Over
// virtio-serial it serves one host connection at a time and waits for the
// next when the host hangs up; over vsock, every connection concurrently.
func Serve(ctx context.Context, a *Agent) error {
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	agent.RegisterAgentService(srv, a)
	dev, err := channel.FindPort("/sys", channel.PortName)
	if err == nil {
		return serveSerial(ctx, srv, dev)
	}
	logrus.WithError(err).Debug("no virtio-serial agent port, trying vsock")
	l, err := channel.ListenVsock()
	if err != nil {
		return errors.Join(channel.ErrNoTransport, err)
	}
	defer l.Close()
	for {
		conn, err := l.Accept()
		if err != nil {
			return fmt.Errorf("accepting vsock connection: %w", err)
		}
		ml, err := channel.Accept(conn)
		if err != nil {
			conn.Close()
			continue
		}
		go func() {
			_ = srv.Serve(ctx, ml)
			ml.Close()
		}()
	}
}

func serveSerial(ctx context.Context, srv *ttrpc.Server, dev string) error {
	for ctx.Err() == nil {
		l, err := channel.ServeSerial(dev)
		if err != nil {
			return err
		}
		start := time.Now()
		err = srv.Serve(ctx, l)
		l.Close()
		logrus.WithError(err).Debug("host channel closed")
		// A port without a host connection reads EOF at once; do not spin
		// while waiting for the host to come back.
		if time.Since(start) < 50*time.Millisecond {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return ctx.Err()
}

// logLevelFromCmdline reads hull.log=LEVEL from the kernel command line.
func logLevelFromCmdline() logrus.Level {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return logrus.InfoLevel
	}
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, "hull.log="); ok {
			if l, err := logrus.ParseLevel(v); err == nil {
				return l
			}
		}
	}
	return logrus.InfoLevel
}

// Main is the agent's entry point as PID 1 of the guest.
func Main() error {
	if os.Getpid() == 1 {
		if err := Boot(); err != nil {
			return fmt.Errorf("booting guest: %w", err)
		}
	}
	logrus.SetLevel(logLevelFromCmdline())
	logrus.SetOutput(os.Stderr)
	logrus.Debug("hull-agent serving")
	return Serve(context.Background(), NewAgent())
}
