// Package monitor is the host process that stands for a container between
// create and delete, or for one process exec'd into it. It owns the VM
// (QEMU and virtiofsd are its children), relays the process's stdio to the
// files or terminal the caller gave the runtime, forwards the signals it
// receives, serves a socket through which other CLI calls reach the agent,
// and exits with the process's exit status, so that callers which wait on
// the pid a runtime reports (conmon, containerd's runc shim) see the
// container's exit.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"

	"github.com/hullrt/hull/internal/agentclient"
	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/container"
	"github.com/hullrt/hull/internal/oci"
	"github.com/hullrt/hull/internal/sandbox"
	"github.com/hullrt/hull/internal/stdio"
)

// ForwardedSignals are relayed to the process a monitor stands for.
var ForwardedSignals = []os.Signal{
	syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGCONT, syscall.SIGALRM,
}

// drainTimeout bounds how long output may trail the process's exit.
const drainTimeout = 5 * time.Second

// ContainerOptions describes the container a monitor runs.
type ContainerOptions struct {
	Config *config.Config
	Root   container.Root
	ID     string
	Bundle *oci.Bundle
	IO     stdio.IO
	// Start starts the process as soon as it is created (hull run);
	// otherwise `hull start` does, through the monitor's socket.
	Start bool
	// Ready is called once: with nil when the container is created (and
	// started, with Start), or with the error that ended the attempt.
	Ready func(error)
}

// InterruptedError reports that a signal cancelled the start of a
// container; the runtime exits 128+signal for it.
type InterruptedError struct{ Signal syscall.Signal }

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("interrupted by %v while starting the container", e.Signal)
}

// RunContainer creates the container in a new VM and stands for it until
// its process exits. It returns the exit status; the container's record is
// left in the Stopped state for `hull delete`.
func RunContainer(o ContainerOptions) (int, error) {
	recordPhase("config", time.Since(processStart))
	// A relayed output whose reader goes must not kill the monitor.
	stdio.CatchSIGPIPE()
	ready := once(o.Ready)
	sigc := make(chan os.Signal, 16)
	signal.Notify(sigc, ForwardedSignals...)
	defer signal.Stop(sigc)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Until the container exists a signal cancels its creation.
	created := make(chan struct{})
	interrupted := make(chan syscall.Signal, 1)
	go func() {
		select {
		case s := <-sigc:
			interrupted <- s.(syscall.Signal)
			cancel()
		case <-created:
		}
	}()
	fail := func(err error) (int, error) {
		select {
		case sig := <-interrupted:
			err = &InterruptedError{Signal: sig}
		default:
		}
		ready(err)
		return 0, err
	}

	self, err := container.ProcessStartTime(os.Getpid())
	if err != nil {
		return fail(err)
	}
	h, err := o.Root.Create(container.State{
		ID:       o.ID,
		Bundle:   o.Bundle.Dir,
		Rootfs:   o.Bundle.Rootfs,
		Created:  time.Now().UTC(),
		Status:   container.Creating,
		Pid:      os.Getpid(),
		PidStart: self,
		Spec:     o.Bundle.Spec,
	})
	if err != nil {
		return fail(err)
	}
	h.Close()
	m := &monitor{o: o}
	defer m.teardown()
	if err := m.create(ctx); err != nil {
		m.removeRecord()
		return fail(err)
	}
	close(created)
	if ctx.Err() != nil {
		m.removeRecord()
		return fail(ctx.Err())
	}
	if o.Start {
		t := time.Now()
		if err := Start(ctx, o.Root, o.ID, m.sb.Agent); err != nil {
			m.removeRecord()
			return fail(err)
		}
		recordPhase("start-process", time.Since(t))
	}
	ready(nil)
	go m.forward(sigc, "")
	status := m.wait(ctx)
	m.setStopped(status)
	return status, nil
}

// monitor is the state of one RunContainer.
type monitor struct {
	o     ContainerOptions
	sb    *sandbox.Sandbox
	relay *stdio.Relay
	proxy net.Listener
}

func (m *monitor) create(ctx context.Context) error {
	o := m.o
	if o.IO.Terminal && o.IO.ConsoleSocket == "" && o.IO.Stdin == nil {
		return stdio.ErrConsoleSocketNeeded
	}
	cfg, err := o.Config.WithAnnotations(o.Bundle.Spec.Annotations)
	if err != nil {
		return err
	}
	netns, err := oci.NetworkNamespace(o.Bundle.Spec)
	if err != nil {
		return err
	}
	var cgroupsPath string
	var resources *specs.LinuxResources
	if o.Bundle.Spec.Linux != nil {
		cgroupsPath = o.Bundle.Spec.Linux.CgroupsPath
		resources = o.Bundle.Spec.Linux.Resources
	}
	sb, err := sandbox.Create(ctx, cfg, o.ID, o.Root.SandboxDir(o.ID), sandbox.WithNetNS(netns), sandbox.WithCgroup(cgroupsPath), sandbox.WithResources(resources))
	if err != nil {
		return err
	}
	m.sb = sb
	for _, p := range sb.Phases {
		recordPhase(p.Name, p.Duration)
	}
	t := time.Now()
	if err := sb.CreateContainer(ctx, o.ID, o.Bundle); err != nil {
		return err
	}
	recordPhase("create-container", time.Since(t))
	if m.relay, err = stdio.Start(ctx, sb.Agent, o.ID, "", o.IO); err != nil {
		return err
	}
	if err := m.serve(); err != nil {
		return err
	}
	state := m.ociState(container.Created)
	hooks := o.Bundle.Spec.Hooks
	if hooks != nil {
		//lint:ignore SA1019 prestart is deprecated, but runc still runs it, and so do we.
		prestart := hooks.Prestart
		// In the spec's order: prestart and createRuntime, then createContainer.
		for _, k := range []struct {
			kind  string
			hooks []specs.Hook
		}{{"prestart", prestart}, {"createRuntime", hooks.CreateRuntime}, {"createContainer", hooks.CreateContainer}} {
			if err := oci.RunHooks(k.kind, k.hooks, state); err != nil {
				return err
			}
		}
	}
	h, err := o.Root.Open(o.ID)
	if err != nil {
		return err
	}
	defer h.Close()
	h.Status = container.Created
	return h.Save()
}

func (m *monitor) ociState(st container.Status) specs.State {
	return specs.State{
		Version:     specs.Version,
		ID:          m.o.ID,
		Status:      specs.ContainerState(st),
		Pid:         os.Getpid(),
		Bundle:      m.o.Bundle.Dir,
		Annotations: m.o.Bundle.Spec.Annotations,
	}
}

// serve accepts connections on the monitor's socket and splices each onto
// a new stream to the agent.
func (m *monitor) serve() error {
	path := m.o.Root.Socket(m.o.ID)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listening on monitor socket: %w", err)
	}
	m.proxy = l
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				s, err := m.sb.OpenStream()
				if err != nil {
					c.Close()
					return
				}
				splice(c, s)
			}()
		}
	}()
	return nil
}

// splice copies both ways between a and b until either side closes.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	a.Close()
	b.Close()
	<-done
}

// forward relays signals to the process until the channel is stopped.
func (m *monitor) forward(sigc <-chan os.Signal, eid string) {
	for s := range sigc {
		logrus.Debugf("forwarding %v to %s/%s", s, m.o.ID, eid)
		if err := m.sb.Agent.Signal(context.Background(), m.o.ID, eid, uint32(s.(syscall.Signal)), false); err != nil {
			logrus.WithError(err).Debugf("forwarding %v", s)
		}
	}
}

// wait returns the exit status of the container's process, or 255 when
// the VM went away under it.
func (m *monitor) wait(ctx context.Context) int {
	type result struct {
		status int
		err    error
	}
	waited := make(chan result, 1)
	t := time.Now()
	go func() {
		st, _, err := m.sb.Agent.Wait(ctx, m.o.ID, "")
		waited <- result{st, err}
	}()
	select {
	case r := <-waited:
		if r.err != nil {
			logrus.WithError(r.err).Warn("waiting for container")
			return 255
		}
		logrus.Debugf("container process exited with status %d", r.status)
		recordPhase("process", time.Since(t))
		t = time.Now()
		m.relay.Drain(drainTimeout)
		recordPhase("drain", time.Since(t))
		return r.status
	case <-m.sb.Done():
		logrus.Warn("vm exited under the container")
		return 255
	}
}

func (m *monitor) setStopped(status int) {
	h, err := m.o.Root.Open(m.o.ID)
	if err != nil {
		return // deleted meanwhile
	}
	defer h.Close()
	h.Status = container.Stopped
	h.ExitStatus = status
	if err := h.Save(); err != nil {
		logrus.WithError(err).Warn("recording container exit")
	}
}

// teardown stops everything the monitor runs; the record stays.
func (m *monitor) teardown() {
	if m.proxy != nil {
		m.proxy.Close()
	}
	if m.relay != nil {
		m.relay.Close()
	}
	if m.sb != nil {
		t := time.Now()
		if err := m.sb.Destroy(context.Background()); err != nil {
			logrus.WithError(err).Warn("tearing the sandbox down")
		}
		recordPhase("teardown", time.Since(t))
	}
}

// removeRecord deletes the record of a container that never got created.
func (m *monitor) removeRecord() {
	m.teardown()
	m.sb = nil
	m.proxy = nil
	m.relay = nil
	if h, err := m.o.Root.Open(m.o.ID); err == nil {
		h.Remove()
	}
}

// Start starts a created container's process and records it running,
// running the startContainer and poststart hooks around it.
func Start(ctx context.Context, root container.Root, id string, c *agentclient.Client) error {
	h, err := root.Open(id)
	if err != nil {
		return err
	}
	defer h.Close()
	h.Refresh()
	if h.Status != container.Created {
		return fmt.Errorf("cannot start a container that is %s", h.Status)
	}
	state := h.OCI().State
	var hooks *specs.Hooks
	if h.Spec != nil {
		hooks = h.Spec.Hooks
	}
	if hooks != nil {
		if err := oci.RunHooks("startContainer", hooks.StartContainer, state); err != nil {
			return err
		}
	}
	if err := c.StartContainer(ctx, id); err != nil {
		return fmt.Errorf("starting container: %w", err)
	}
	h.Status = container.Running
	if err := h.Save(); err != nil {
		return err
	}
	if hooks != nil {
		state.Status = specs.StateRunning
		if err := oci.RunHooks("poststart", hooks.Poststart, state); err != nil {
			logrus.WithError(err).Warn("poststart hook failed")
		}
	}
	return nil
}

func once(f func(error)) func(error) {
	called := false
	return func(err error) {
		if called || f == nil {
			return
		}
		called = true
		f(err)
	}
}

// Dial connects to the monitor of container id, for an agent client.
type Dial struct{ Path string }

// Open implements agentclient.Opener.
func (d Dial) Open() (net.Conn, error) {
	c, err := net.Dial("unix", d.Path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			logrus.WithError(err).Debug("dialling the monitor")
			return nil, errors.New("container is not running")
		}
		return nil, err
	}
	return c, nil
}
