// Package stdio relays the standard I/O of a process in the guest to the
// host: to files or pipes the runtime's caller gave, to a new pty whose
// master goes to a console socket, or to the caller's own terminal.
package stdio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/console"
	"github.com/opencontainers/runc/libcontainer/utils"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/hullrt/hull/internal/agentclient"
)

// IO says where a process's stdio goes on the host.
type IO struct {
	Terminal bool
	// ConsoleSocket, with Terminal, is the unix socket that receives the
	// master of a new host pty (runc's --console-socket). Without it a
	// terminal process uses Stdin/Stdout, which should then be a terminal.
	ConsoleSocket string
	Stdin         io.Reader
	Stdout        io.Writer
	Stderr        io.Writer
}

// ErrConsoleSocketNeeded is runc's refusal to detach a terminal process
// with nowhere to send its terminal.
var ErrConsoleSocketNeeded = errors.New("cannot allocate tty if runtime will detach without setting console socket")

// Relay copies one guest process's stdio to and from the host.
type Relay struct {
	outputs   sync.WaitGroup
	stdinDone chan struct{}
	cleanup   []func()
}

// Start starts copying. The outputs end at EOF of the guest streams.
func Start(ctx context.Context, c *agentclient.Client, cid, eid string, o IO) (*Relay, error) {
	r := &Relay{stdinDone: make(chan struct{})}
	out, errOut, in := io.Writer(o.Stdout), io.Writer(o.Stderr), io.Reader(o.Stdin)
	if o.Terminal {
		tty, err := r.terminal(ctx, c, cid, eid, o)
		if err != nil {
			r.Close()
			return nil, err
		}
		if tty != nil {
			out, in = tty, tty
		}
		errOut = nil // a terminal has one output stream
	}
	copyOut := func(stderr bool, w io.Writer) {
		defer r.outputs.Done()
		if w == nil {
			w = io.Discard
		}
		if err := c.CopyOut(ctx, cid, eid, stderr, w); err != nil && ctx.Err() == nil {
			logrus.WithError(err).Debugf("copying output of %s/%s", cid, eid)
		}
	}
	r.outputs.Add(2)
	go copyOut(false, out)
	go copyOut(true, errOut)
	if in == nil {
		close(r.stdinDone)
	} else {
		go func() {
			defer close(r.stdinDone)
			if err := c.CopyIn(ctx, cid, eid, in); err != nil && ctx.Err() == nil {
				logrus.WithError(err).Debugf("copying stdin of %s/%s", cid, eid)
			}
		}()
	}
	return r, nil
}

// terminal sets up the host end of a terminal process: a new pty whose
// master goes to the console socket, or the caller's own terminal. It
// returns the file to relay through (nil: use Stdin/Stdout as they are).
func (r *Relay) terminal(ctx context.Context, c *agentclient.Client, cid, eid string, o IO) (*os.File, error) {
	if o.ConsoleSocket == "" {
		if in, ok := o.Stdin.(*os.File); ok && term.IsTerminal(int(in.Fd())) {
			fd := int(in.Fd())
			if old, err := term.MakeRaw(fd); err == nil {
				r.cleanup = append(r.cleanup, func() { term.Restore(fd, old) })
			}
			r.watchSize(ctx, c, cid, eid, in)
		}
		return nil, nil
	}
	master, slavePath, err := console.NewPty()
	if err != nil {
		return nil, fmt.Errorf("creating pty: %w", err)
	}
	defer master.Close() // the console socket's receiver holds it now
	if err := sendConsole(o.ConsoleSocket, master); err != nil {
		return nil, err
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening pty slave: %w", err)
	}
	r.cleanup = append(r.cleanup, func() { slave.Close() })
	// Bytes pass through untouched: the guest's pty does the line
	// discipline, echo included.
	if sc, err := console.ConsoleFromFile(slave); err == nil {
		_ = sc.SetRaw()
	}
	// As a session leader (a detached monitor), make the pty our
	// controlling terminal so that resizes of the master raise SIGWINCH.
	_ = unix.IoctlSetInt(int(slave.Fd()), unix.TIOCSCTTY, 0)
	r.watchSize(ctx, c, cid, eid, slave)
	return slave, nil
}

// watchSize copies the window size of tty to the guest now and on SIGWINCH.
func (r *Relay) watchSize(ctx context.Context, c *agentclient.Client, cid, eid string, tty *os.File) {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	done := make(chan struct{})
	r.cleanup = append(r.cleanup, func() { signal.Stop(winch); close(done) })
	var last unix.Winsize
	sync := func() {
		ws, err := unix.IoctlGetWinsize(int(tty.Fd()), unix.TIOCGWINSZ)
		if err != nil || ws.Row == 0 || *ws == last {
			return
		}
		last = *ws
		if err := c.ResizeTTY(ctx, cid, eid, ws.Row, ws.Col); err != nil {
			logrus.WithError(err).Debug("resizing guest terminal")
		}
	}
	sync()
	go func() {
		for {
			select {
			case <-winch:
				sync()
			case <-done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
}

// sendConsole passes the pty master to the console socket, as runc does.
func sendConsole(path string, master console.Console) error {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return fmt.Errorf("connecting to console socket: %w", err)
	}
	defer conn.Close()
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return errors.New("console socket is not a unix socket")
	}
	sock, err := uc.File()
	if err != nil {
		return err
	}
	defer sock.Close()
	// The fd itself, not an os.File made from it: a second owner of the
	// fd would close it again when collected, by then the number of some
	// other file (it was the monitor's socket, which start then found
	// refusing connections).
	if err := utils.SendRawFd(sock, "/dev/ptmx", master.Fd()); err != nil {
		return fmt.Errorf("sending pty master to console socket: %w", err)
	}
	return nil
}

// StdinDone is closed once stdin has been copied to EOF and closed in the
// guest (or the copy failed); at once when there is no stdin.
func (r *Relay) StdinDone() <-chan struct{} { return r.stdinDone }

// Drain waits for the outputs to reach EOF, at most for timeout: a
// process that left children holding its stdout must not hold up the exit.
func (r *Relay) Drain(timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		r.outputs.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		logrus.Debug("output not drained in time")
	}
}

func (r *Relay) Close() {
	for i := len(r.cleanup) - 1; i >= 0; i-- {
		r.cleanup[i]()
	}
	r.cleanup = nil
}
