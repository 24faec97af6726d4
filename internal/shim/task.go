package shim

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/fifo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hullrt/hull/internal/agentclient"
	"github.com/hullrt/hull/internal/stdio"
)

// drainTimeout bounds how long output may trail a process's exit.
const drainTimeout = 5 * time.Second

// task is one container of the pod.
type task struct {
	id     string
	bundle string
	spec   *specs.Spec

	mu     sync.Mutex
	init   *process
	execs  map[string]*process
	paused bool
}

func (t *task) process(execID string) (*process, error) {
	if execID == "" {
		return t.init, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.execs[execID]
	if !ok {
		return nil, fmt.Errorf("exec %s in container %s: %w", execID, t.id, errdefs.ErrNotFound)
	}
	return p, nil
}

func (t *task) processes() []*process {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := []*process{t.init}
	for _, p := range t.execs {
		out = append(out, p)
	}
	return out
}

// process is a container's init or one of its execs.
type process struct {
	cid, execID string
	pid         uint32 // what containerd sees: the shim's pid
	terminal    bool
	stdinPath   string
	stdoutPath  string
	stderrPath  string
	spec        *specs.Process // of an exec

	mu         sync.Mutex
	started    bool
	stdin      io.Closer
	outputs    []io.Closer // output FIFOs: closed after the last byte
	relay      *stdio.Relay
	exited     chan struct{}
	exitStatus uint32
	exitedAt   time.Time
}

func newProcess(cid, execID string, terminal bool, stdin, stdout, stderr string) *process {
	return &process{
		cid: cid, execID: execID, pid: uint32(os.Getpid()), terminal: terminal,
		stdinPath: stdin, stdoutPath: stdout, stderrPath: stderr,
		exited: make(chan struct{}),
	}
}

// openIO opens the FIFOs containerd made for the process and starts
// relaying them to and from the guest.
func (p *process) openIO(ctx context.Context, c *agentclient.Client) error {
	sio := stdio.IO{Terminal: p.terminal}
	if p.stdinPath != "" {
		f, err := fifo.OpenFifo(ctx, p.stdinPath, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("opening stdin fifo: %w", err)
		}
		p.stdin, sio.Stdin = f, f
	}
	for _, out := range []struct {
		path string
		dst  *io.Writer
	}{{p.stdoutPath, &sio.Stdout}, {p.stderrPath, &sio.Stderr}} {
		if out.path == "" {
			continue
		}
		f, err := fifo.OpenFifo(ctx, out.path, syscall.O_WRONLY, 0)
		if err != nil {
			p.closeIO()
			p.closeOutputs()
			return fmt.Errorf("opening output fifo: %w", err)
		}
		*out.dst = f
		p.outputs = append(p.outputs, f)
	}
	r, err := stdio.Start(context.Background(), c, p.cid, p.execID, sio)
	if err != nil {
		p.closeIO()
		p.closeOutputs()
		return err
	}
	p.mu.Lock()
	p.relay = r
	p.mu.Unlock()
	return nil
}

// stdinRelay is the relay of a process with stdin, nil without one.
func (p *process) stdinRelay() *stdio.Relay {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdin == nil {
		return nil
	}
	return p.relay
}

func (p *process) closeIO() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdin != nil {
		p.stdin.Close()
		p.stdin = nil
	}
}

func (p *process) closeOutputs() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.outputs {
		f.Close()
	}
	p.outputs = nil
}

// wait waits for the guest process to exit and reports it.
func (p *process) wait(c *agentclient.Client, send func(any)) {
	status, at, err := c.Wait(context.Background(), p.cid, p.execID)
	if err != nil {
		status, at = 255, time.Now()
	}
	if p.relay != nil {
		p.relay.Drain(drainTimeout)
		p.relay.Close()
	}
	// EOF on the FIFOs tells containerd's readers (ctr, CRI logs) that
	// the output is complete.
	p.closeOutputs()
	if !p.setExited(uint32(status), at) {
		return
	}
	id := p.execID
	if id == "" {
		id = p.cid
	}
	send(&eventstypes.TaskExit{
		ContainerID: p.cid, ID: id, Pid: p.pid,
		ExitStatus: uint32(status), ExitedAt: timestamppb.New(at),
	})
}

// setExited records the exit once; it reports whether this call did.
func (p *process) setExited(status uint32, at time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.exited:
		return false
	default:
	}
	p.exitStatus, p.exitedAt = status, at
	close(p.exited)
	return true
}

func (p *process) status(paused bool) tasktypes.Status {
	select {
	case <-p.exited:
		return tasktypes.Status_STOPPED
	default:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case !p.started:
		return tasktypes.Status_CREATED
	case paused:
		return tasktypes.Status_PAUSED
	}
	return tasktypes.Status_RUNNING
}

func (p *process) exit() (uint32, *timestamppb.Timestamp) {
	select {
	case <-p.exited:
		return p.exitStatus, timestamppb.New(p.exitedAt)
	default:
		return 0, nil
	}
}
