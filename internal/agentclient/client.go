// Package agentclient is the host's typed client of the guest agent. It
// runs the agent API over streams of a channel session and checks what the
// guest answers: from the host's side the guest is untrusted.
package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	agent "github.com/hullrt/hull/api/agent/v1"
	"github.com/hullrt/hull/internal/channel"
)

// ioChunk is how much stdio one request carries.
const ioChunk = 256 << 10

// Client talks to one agent.
type Client struct {
	// ctl carries short control calls; io carries the blocking stdio reads
	// and waits, so that they never queue behind (or ahead of) control calls.
	ctl, io agent.AgentService
	conns   []*ttrpc.Client
	timeout time.Duration
}

// Opener opens streams to the agent: a channel session, or the socket of
// the monitor process that holds one.
type Opener interface {
	Open() (net.Conn, error)
}

var _ Opener = (*channel.Session)(nil)

// New opens the client's streams on s. timeout bounds each control call.
func New(s Opener, timeout time.Duration) (*Client, error) {
	c := &Client{timeout: timeout}
	for _, dst := range []*agent.AgentService{&c.ctl, &c.io} {
		conn, err := s.Open()
		if err != nil {
			c.Close()
			return nil, err
		}
		tc := ttrpc.NewClient(conn)
		c.conns = append(c.conns, tc)
		*dst = agent.NewAgentClient(tc)
	}
	return c, nil
}

// Close closes the client's streams.
func (c *Client) Close() error {
	var errs []error
	for _, tc := range c.conns {
		errs = append(errs, tc.Close())
	}
	return errors.Join(errs...)
}

func (c *Client) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

// WaitReady blocks until the agent answers, and checks that it speaks this
// host's API. The Version request is queued in the channel while the guest
// boots and answered as soon as the agent serves, so there is no polling;
// ctx carries the boot deadline. An answer is the health check: a separate
// Check call cost a round trip through the guest.
func (c *Client) WaitReady(ctx context.Context) (*agent.VersionResponse, error) {
	v, err := c.ctl.Version(ctx, &agent.VersionRequest{})
	if err != nil {
		return nil, fmt.Errorf("agent version: %w", fromRPC(err))
	}
	if v.ApiVersion < agent.APIVersion {
		return nil, fmt.Errorf("agent speaks API version %d, need %d: rebuild the guest image", v.ApiVersion, agent.APIVersion)
	}
	return v, nil
}

// Restored tells the agent of a VM started from a template the time and
// fresh entropy; warm has it warm the container path up before it answers.
func (c *Client) Restored(ctx context.Context, now time.Time, entropy []byte, warm bool) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.Restored(ctx, &agent.RestoredRequest{Time: timestamppb.New(now), Entropy: entropy, Warm: warm})
	return fromRPC(err)
}

func (c *Client) CreateSandbox(ctx context.Context, r *agent.CreateSandboxRequest) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.CreateSandbox(ctx, r)
	return fromRPC(err)
}

func (c *Client) DestroySandbox(ctx context.Context) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.DestroySandbox(ctx, &agent.DestroySandboxRequest{})
	return fromRPC(err)
}

// CreateContainer creates container id from its OCI spec, after the agent
// mounted storages, the container's own.
func (c *Client) CreateContainer(ctx context.Context, id string, spec []byte, storages ...*agent.Storage) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: id, OciSpec: spec, Storages: storages})
	return fromRPC(err)
}

func (c *Client) StartContainer(ctx context.Context, id string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.StartContainer(ctx, &agent.StartContainerRequest{ContainerId: id})
	return fromRPC(err)
}

func (c *Client) RemoveContainer(ctx context.Context, id string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.RemoveContainer(ctx, &agent.RemoveContainerRequest{ContainerId: id})
	return fromRPC(err)
}

func (c *Client) ExecProcess(ctx context.Context, cid, eid string, process []byte) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.ExecProcess(ctx, &agent.ExecProcessRequest{ContainerId: cid, ExecId: eid, Process: process})
	return fromRPC(err)
}

func (c *Client) Signal(ctx context.Context, cid, eid string, sig uint32, all bool) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.SignalProcess(ctx, &agent.SignalProcessRequest{ContainerId: cid, ExecId: eid, Signal: sig, All: all})
	return fromRPC(err)
}

func (c *Client) ResizeTTY(ctx context.Context, cid, eid string, rows, cols uint16) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.TtyWinResize(ctx, &agent.TtyWinResizeRequest{ContainerId: cid, ExecId: eid, Rows: uint32(rows), Columns: uint32(cols)})
	return fromRPC(err)
}

// Wait blocks until the process exits and returns its exit status
// (128+signal when it was killed).
func (c *Client) Wait(ctx context.Context, cid, eid string) (int, time.Time, error) {
	r, err := c.io.WaitProcess(ctx, &agent.WaitProcessRequest{ContainerId: cid, ExecId: eid})
	if err != nil {
		return 0, time.Time{}, fromRPC(err)
	}
	if r.ExitStatus < 0 || r.ExitStatus > 255 {
		return 0, time.Time{}, fmt.Errorf("agent sent invalid exit status %d", r.ExitStatus)
	}
	var at time.Time
	if r.ExitedAt != nil {
		at = r.ExitedAt.AsTime()
	}
	return int(r.ExitStatus), at, nil
}

// CopyOut copies the process's stdout (or stderr) to w until the stream
// ends. When w fails (its reader went away: EPIPE), the stream is closed
// in the guest, so that the process's writes fail as they would on a
// pipe whose reader exited, instead of blocking once the stream is full
// with nobody reading it; w's error is returned.
func (c *Client) CopyOut(ctx context.Context, cid, eid string, stderr bool, w io.Writer) error {
	read := c.io.ReadStdout
	if stderr {
		read = c.io.ReadStderr
	}
	for {
		r, err := read(ctx, &agent.ReadStreamRequest{ContainerId: cid, ExecId: eid, Len: ioChunk})
		if err != nil {
			return fromRPC(err)
		}
		if len(r.Data) > ioChunk {
			return fmt.Errorf("agent sent %d bytes for a %d byte read", len(r.Data), ioChunk)
		}
		if len(r.Data) > 0 {
			if _, err := w.Write(r.Data); err != nil {
				_, cerr := c.io.CloseOutput(ctx, &agent.CloseOutputRequest{ContainerId: cid, ExecId: eid, Stderr: stderr})
				if cerr != nil {
					return fmt.Errorf("%w (closing the stream in the guest: %v)", err, fromRPC(cerr))
				}
				return err
			}
		}
		if r.Eof {
			return nil
		}
	}
}

// CopyIn copies r to the process's stdin and closes it at EOF of r.
func (c *Client) CopyIn(ctx context.Context, cid, eid string, r io.Reader) error {
	buf := make([]byte, ioChunk)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			data := buf[:n]
			for len(data) > 0 {
				resp, err := c.io.WriteStdin(ctx, &agent.WriteStreamRequest{ContainerId: cid, ExecId: eid, Data: data})
				if err != nil {
					return fromRPC(err)
				}
				if resp.Len == 0 || int(resp.Len) > len(data) {
					return fmt.Errorf("agent acknowledged %d of %d stdin bytes", resp.Len, len(data))
				}
				data = data[resp.Len:]
			}
		}
		if rerr == io.EOF {
			cctx, cancel := c.call(ctx)
			defer cancel()
			_, err := c.ctl.CloseStdin(cctx, &agent.CloseStdinRequest{ContainerId: cid, ExecId: eid})
			return fromRPC(err)
		}
		if rerr != nil {
			return rerr
		}
	}
}

func (c *Client) ListProcesses(ctx context.Context, cid string) ([]*agent.ProcessInfo, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	r, err := c.ctl.ListProcesses(ctx, &agent.ListProcessesRequest{ContainerId: cid})
	if err != nil {
		return nil, fromRPC(err)
	}
	return r.Processes, nil
}

func (c *Client) Pause(ctx context.Context, cid string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.PauseContainer(ctx, &agent.PauseContainerRequest{ContainerId: cid})
	return fromRPC(err)
}

func (c *Client) Resume(ctx context.Context, cid string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.ResumeContainer(ctx, &agent.ResumeContainerRequest{ContainerId: cid})
	return fromRPC(err)
}

// Update changes the container's resources; resources is OCI
// LinuxResources as JSON.
func (c *Client) Update(ctx context.Context, cid string, resources []byte) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.UpdateContainer(ctx, &agent.UpdateContainerRequest{ContainerId: cid, Resources: resources})
	return fromRPC(err)
}

func (c *Client) Stats(ctx context.Context, cid string) (*agent.StatsContainerResponse, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	r, err := c.ctl.StatsContainer(ctx, &agent.StatsContainerRequest{ContainerId: cid})
	return r, fromRPC(err)
}

// CloseStdin closes the process's stdin in the guest.
func (c *Client) CloseStdin(ctx context.Context, cid, eid string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	_, err := c.ctl.CloseStdin(ctx, &agent.CloseStdinRequest{ContainerId: cid, ExecId: eid})
	return fromRPC(err)
}

// WaitOOM blocks until the OOM killer hits a container of the sandbox and
// returns the container's id.
func (c *Client) WaitOOM(ctx context.Context) (string, error) {
	r, err := c.io.GetOOMEvent(ctx, &agent.GetOOMEventRequest{})
	if err != nil {
		return "", fromRPC(err)
	}
	return r.ContainerId, nil
}

// OnlineCPUMem has the guest bring hot-plugged CPUs and memory online and
// waits until cpus CPUs and memMiB MiB are online in all; it returns what
// is online.
func (c *Client) OnlineCPUMem(ctx context.Context, cpus int, memMiB int) (int, int, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	r, err := c.ctl.OnlineCPUMem(ctx, &agent.OnlineCPUMemRequest{Cpus: uint32(cpus), MemoryMib: uint64(memMiB)})
	if err != nil {
		return 0, 0, fromRPC(err)
	}
	return int(r.Cpus), int(r.MemoryMib), nil
}
