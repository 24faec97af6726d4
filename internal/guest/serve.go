package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

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
	sigio := make(chan os.Signal, 1)
	signal.Notify(sigio, unix.SIGIO)
	defer signal.Stop(sigio)
	for ctx.Err() == nil {
		port, err := waitHost(ctx, dev, sigio)
		if err != nil {
			return err
		}
		l, err := channel.ServeSerialFile(port)
		if err != nil {
			return err
		}
		err = srv.Serve(ctx, l)
		l.Close()
		logrus.WithError(err).Debug("host channel closed")
	}
	return ctx.Err()
}

// waitHost opens the virtio-serial port dev and returns it once a host is
// connected (a VM in a pool waits for its claimer). A session never starts
// on a port without a host: it would read EOF at once, and closing the
// port then would discard what a host connecting meanwhile had sent. The
// console driver signals SIGIO to the owner of an O_ASYNC port when the
// host end opens; poll cannot wait for it, as it reports POLLHUP for as
// long as no host is there, but it tells whether one is, which is checked
// again every second in case a signal was missed (every 20 ms, where the
// port gives no signals).
func waitHost(ctx context.Context, dev string, sigio <-chan os.Signal) (*os.File, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", dev, err)
	}
	// The descriptor only through withFD: f.Fd() would make the port
	// blocking, and the console driver blocks a write while no host is
	// connected. A session's write racing its host's hang-up then sat in
	// the kernel until the next host came, holding the session open (no
	// reopened port for the pool's hand-over) and then handing that host a
	// stale frame. Non-blocking, such a write waits in the poller, which
	// closing the session ends.
	recheck := time.Second
	var flags int
	err = withFD(f, func(fd int) error {
		var err error
		if flags, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil {
			return err
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETOWN, os.Getpid()); err != nil {
			return err
		}
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_ASYNC)
		return err
	})
	if err != nil {
		logrus.WithError(err).Warnf("no SIGIO from %s: polling it for a host", dev)
		recheck = 20 * time.Millisecond
	} else {
		defer func() { // no signals for data
			_ = withFD(f, func(fd int) error { _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags); return err })
		}()
	}
	hostThere := func(fd int) error {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLOUT}}
		if n, err := unix.Poll(pfd, 0); err != nil || n == 0 || pfd[0].Revents&unix.POLLHUP != 0 {
			return errNoHost
		}
		return nil
	}
	for {
		select {
		case <-sigio: // from before this check
		default:
		}
		if withFD(f, hostThere) == nil {
			return f, nil
		}
		select {
		case <-sigio:
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(recheck):
		}
	}
}

// errNoHost says that no host is connected to the agent's port.
var errNoHost = errors.New("no host on the agent port")

// logLevelFromCmdline reads hull.log=LEVEL from the kernel command line.
func logLevelFromCmdline() logrus.Level {
	if l, err := logrus.ParseLevel(cmdlineValue("hull.log")); err == nil {
		return l
	}
	return logrus.InfoLevel
}

// cmdlineValue is the value of key=value on the kernel command line, ""
// when it is not there.
func cmdlineValue(key string) string {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return ""
	}
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
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
	// To the millisecond: where the time of a start goes.
	logrus.SetFormatter(&logrus.TextFormatter{DisableColors: true, FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	a := NewAgent()
	if cmdlineValue(agent.WarmParam) == "1" {
		if err := favorDynmods(); err != nil {
			logrus.WithError(err).Warn("remounting cgroup2 with favordynmods")
		}
		a.warm()
	}
	logrus.Debugf("hull-agent serving, %s after the kernel started", uptime())
	return Serve(context.Background(), a)
}

// uptime is how long the guest kernel has run, from /proc/uptime.
func uptime() time.Duration {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	s, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}
