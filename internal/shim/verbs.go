package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/hullrt/hull/internal/oci"
	"github.com/hullrt/hull/internal/sandbox"
)

var empty = &emptypb.Empty{}

// Errors cross the RPC edge as containerd's gRPC codes.
func rpcErr(err error) error { return errdefs.ToGRPC(err) }

func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	defer func() { retErr = rpcErr(retErr) }()
	if r.Checkpoint != "" || r.ParentCheckpoint != "" {
		return nil, fmt.Errorf("restoring from a checkpoint: %w", errdefs.ErrNotImplemented)
	}
	rootfs := filepath.Join(r.Bundle, "rootfs")
	var mounts []mount.Mount
	for _, m := range r.Rootfs {
		mounts = append(mounts, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	// A rootfs on a block device goes to the guest unmounted.
	block, err := blockRootfs(r.Rootfs)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
	}
	if len(mounts) > 0 {
		if err := os.MkdirAll(rootfs, 0o711); err != nil {
			return nil, err
		}
	}
	if len(mounts) > 0 && block == nil {
		if err := mount.All(mounts, rootfs); err != nil {
			return nil, fmt.Errorf("mounting rootfs: %w", err)
		}
		defer func() {
			if retErr != nil {
				_ = mount.UnmountRecursive(rootfs, 0)
			}
		}()
	}
	b, err := oci.Load(r.Bundle)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[r.ID]; ok {
		return nil, fmt.Errorf("container %s: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	sb, err := s.vm(ctx, sandboxOf(r.ID, b.Spec), b.Spec)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil && len(s.containers) == 0 {
			s.destroyVM()
		}
	}()
	if len(s.containers) > 0 {
		// A pod's later containers grow its VM by their limits.
		if _, err := sb.Grow(ctx, append(s.resources(), linuxResources(b.Spec))...); err != nil {
			return nil, err
		}
	}
	var opts []sandbox.ContainerOpt
	if block != nil {
		opts = append(opts, sandbox.WithBlockRootfs(block))
	}
	if err := sb.CreateContainer(ctx, r.ID, b, opts...); err != nil {
		return nil, err
	}
	p := newProcess(r.ID, "", r.Terminal, r.Stdin, r.Stdout, r.Stderr)
	if err := p.openIO(ctx, sb.Agent); err != nil {
		_ = sb.RemoveContainer(ctx, r.ID)
		return nil, err
	}
	t := &task{id: r.ID, bundle: r.Bundle, spec: b.Spec, init: p, execs: map[string]*process{}}
	s.containers[r.ID] = t
	go p.wait(sb.Agent, s.send)
	s.send(&eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs, Pid: p.pid,
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
	})
	return &taskAPI.CreateTaskResponse{Pid: p.pid}, nil
}

func (s *service) Start(ctx context.Context, r *taskAPI.StartRequest) (_ *taskAPI.StartResponse, retErr error) {
	defer func() { retErr = rpcErr(retErr) }()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	started := p.started
	p.mu.Unlock()
	if started {
		return nil, fmt.Errorf("process %s/%s already started: %w", r.ID, r.ExecID, errdefs.ErrFailedPrecondition)
	}
	agent, err := s.agent()
	if err != nil {
		return nil, err
	}
	if r.ExecID == "" {
		if err := agent.StartContainer(ctx, r.ID); err != nil {
			return nil, err
		}
		p.mu.Lock()
		p.started = true
		p.mu.Unlock()
		s.send(&eventstypes.TaskStart{ContainerID: r.ID, Pid: p.pid})
		return &taskAPI.StartResponse{Pid: p.pid}, nil
	}
	raw, err := json.Marshal(p.spec)
	if err != nil {
		return nil, err
	}
	if err := agent.ExecProcess(ctx, r.ID, r.ExecID, raw); err != nil {
		return nil, err
	}
	if err := p.openIO(ctx, agent); err != nil {
		_ = agent.Signal(ctx, r.ID, r.ExecID, uint32(syscall.SIGKILL), false)
		return nil, err
	}
	p.mu.Lock()
	p.started = true
	p.mu.Unlock()
	go p.wait(agent, s.send)
	s.send(&eventstypes.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: p.pid})
	return &taskAPI.StartResponse{Pid: p.pid}, nil
}

func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (_ *taskAPI.DeleteResponse, retErr error) {
	defer func() { retErr = rpcErr(retErr) }()
	t, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.ExecID != "" {
		if p.status(false) == tasktypes.Status_RUNNING {
			return nil, fmt.Errorf("exec %s is running: %w", r.ExecID, errdefs.ErrFailedPrecondition)
		}
		t.mu.Lock()
		delete(t.execs, r.ExecID)
		t.mu.Unlock()
		status, at := p.exit()
		return &taskAPI.DeleteResponse{Pid: p.pid, ExitStatus: status, ExitedAt: at}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.sb != nil {
		errs = append(errs, s.sb.RemoveContainer(ctx, r.ID))
	}
	for _, q := range t.processes() {
		q.closeIO()
		q.setExited(128+uint32(syscall.SIGKILL), time.Now())
	}
	if err := mount.UnmountRecursive(filepath.Join(t.bundle, "rootfs"), 0); err != nil {
		errs = append(errs, fmt.Errorf("unmounting rootfs: %w", err))
	}
	delete(s.containers, r.ID)
	// The pod's VM goes with its sandbox container, or with its last one.
	if r.ID == s.sandboxID || len(s.containers) == 0 {
		s.destroyVM()
	}
	status, at := p.exit()
	s.send(&eventstypes.TaskDelete{ContainerID: r.ID, Pid: p.pid, ExitStatus: status, ExitedAt: at})
	if err := errors.Join(errs...); err != nil {
		log.G(ctx).WithError(err).Warn("deleting container")
	}
	return &taskAPI.DeleteResponse{Pid: p.pid, ExitStatus: status, ExitedAt: at}, nil
}

func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (_ *taskAPI.StateResponse, retErr error) {
	defer func() { retErr = rpcErr(retErr) }()
	t, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	paused := t.paused
	t.mu.Unlock()
	status, at := p.exit()
	return &taskAPI.StateResponse{
		ID: r.ID, ExecID: r.ExecID, Bundle: t.bundle, Pid: p.pid,
		Status: p.status(paused), Terminal: p.terminal,
		Stdin: p.stdinPath, Stdout: p.stdoutPath, Stderr: p.stderrPath,
		ExitStatus: status, ExitedAt: at,
	}, nil
}

func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (_ *emptypb.Empty, retErr error) {
	defer func() { retErr = rpcErr(retErr) }()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if p.status(false) == tasktypes.Status_STOPPED {
		return nil, fmt.Errorf("process %s/%s: %w", r.ID, r.ExecID, errdefs.ErrNotFound)
	}
	if r.Signal == 0 || r.Signal > 64 {
		return nil, fmt.Errorf("signal %d: %w", r.Signal, errdefs.ErrInvalidArgument)
	}
	agent, err := s.agent()
	if err != nil {
		return nil, err
	}
	return empty, agent.Signal(ctx, r.ID, r.ExecID, r.Signal, r.All)
}

func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (_ *emptypb.Empty, retErr error) {
	defer func() { retErr = rpcErr(retErr) }()
	t, err := s.task(r.ID)
	if err != nil {
		return nil, err
	}
	if r.ExecID == "" || r.Spec == nil {
		return nil, fmt.Errorf("exec needs an id and a process: %w", errdefs.ErrInvalidArgument)
	}
	var ps specs.Process
	if err := json.Unmarshal(r.Spec.Value, &ps); err != nil {
		return nil, fmt.Errorf("decoding exec process: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(ps.Args) == 0 {
		return nil, fmt.Errorf("exec process has no args: %w", errdefs.ErrInvalidArgument)
	}
	ps.Terminal = r.Terminal
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.execs[r.ExecID]; ok {
		return nil, fmt.Errorf("exec %s: %w", r.ExecID, errdefs.ErrAlreadyExists)
	}
	p := newProcess(r.ID, r.ExecID, r.Terminal, r.Stdin, r.Stdout, r.Stderr)
	p.spec = &ps
	t.execs[r.ExecID] = p
	s.send(&eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return empty, nil
}

func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (_ *emptypb.Empty, retErr error) {
	defer func() { retErr = rpcErr(retErr) }()
	if _, _, err := s.process(r.ID, r.ExecID); err != nil {
		return nil, err
	}
	if r.Width > 0xffff || r.Height > 0xffff {
		return nil, fmt.Errorf("window size: %w", errdefs.ErrInvalidArgument)
	}
	agent, err := s.agent()
	if err != nil {
		return nil, err
	}
	return empty, agent.ResizeTTY(ctx, r.ID, r.ExecID, uint16(r.Height), uint16(r.Width))
}

func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (_ *emptypb.Empty, retErr error) {
	defer func() { retErr = rpcErr(retErr) }()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Stdin {
		// containerd closed its end of the FIFO before asking: what it
		// wrote may still be in the FIFO or on its way to the guest, and
		// the relay closes the guest's stdin after the last byte. Cut it
		// short only when that does not happen in time.
		if relay := p.stdinRelay(); relay != nil {
			select {
			case <-relay.StdinDone():
				return empty, nil
			case <-time.After(drainTimeout):
			case <-ctx.Done():
			}
		}
		p.closeIO()
		agent, err := s.agent()
		if err != nil {
			return nil, err
		}
		if err := agent.CloseStdin(ctx, r.ID, r.ExecID); err != nil {
			return nil, err
		}
	}
	return empty, nil
}

func (s *service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (_ *taskAPI.PidsResponse, retErr error) {
	defer func() { retErr = rpcErr(retErr) }()
	if _, err := s.task(r.ID); err != nil {
		return nil, err
	}
	agent, err := s.agent()
	if err != nil {
		return nil, err
	}
	procs, err := agent.ListProcesses(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	resp := &taskAPI.PidsResponse{}
	for _, p := range procs {
		resp.Processes = append(resp.Processes, &tasktypes.ProcessInfo{Pid: uint32(p.Pid)})
	}
	return resp, nil
}

func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return empty, rpcErr(s.setPaused(ctx, r.ID, true))
}

func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return empty, rpcErr(s.setPaused(ctx, r.ID, false))
}

// setPaused freezes or thaws a container's cgroup in the guest.
func (s *service) setPaused(ctx context.Context, id string, pause bool) error {
	t, err := s.task(id)
	if err != nil {
		return err
	}
	agent, err := s.agent()
	if err != nil {
		return err
	}
	var event any = &eventstypes.TaskPaused{ContainerID: id}
	if pause {
		err = agent.Pause(ctx, id)
	} else {
		err = agent.Resume(ctx, id)
		event = &eventstypes.TaskResumed{ContainerID: id}
	}
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.paused = pause
	t.mu.Unlock()
	s.send(event)
	return nil
}

func (s *service) Checkpoint(context.Context, *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, rpcErr(fmt.Errorf("checkpointing a VM container: %w", errdefs.ErrNotImplemented))
}

func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (_ *emptypb.Empty, retErr error) {
	defer func() { retErr = rpcErr(retErr) }()
	t, err := s.task(r.ID)
	if err != nil {
		return nil, err
	}
	if r.Resources == nil {
		return empty, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	next, err := oci.MergeResources(linuxResources(t.spec), r.Resources.Value)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	raw, err := json.Marshal(next)
	if err != nil {
		return nil, err
	}
	if s.sb == nil {
		return nil, fmt.Errorf("the pod's vm is gone: %w", errdefs.ErrFailedPrecondition)
	}
	// The guest checks and applies the limits first: what it refuses
	// leaves the VM's size alone.
	if err := s.sb.Agent.Update(ctx, r.ID, raw); err != nil {
		return nil, err
	}
	spec := *t.spec
	var linux specs.Linux
	if spec.Linux != nil {
		linux = *spec.Linux
	}
	linux.Resources = next
	spec.Linux = &linux
	t.spec = &spec
	_, err = s.sb.Grow(ctx, s.resources()...)
	return empty, err
}

// resources lists the resources of every container in the pod. Called
// with s.mu held.
func (s *service) resources() []*specs.LinuxResources {
	var rs []*specs.LinuxResources
	for _, t := range s.containers {
		rs = append(rs, linuxResources(t.spec))
	}
	return rs
}

func linuxResources(spec *specs.Spec) *specs.LinuxResources {
	if spec == nil || spec.Linux == nil {
		return nil
	}
	return spec.Linux.Resources
}

func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (_ *taskAPI.WaitResponse, retErr error) {
	defer func() { retErr = rpcErr(retErr) }()
	_, p, err := s.process(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	status, at := p.exit()
	return &taskAPI.WaitResponse{ExitStatus: status, ExitedAt: at}, nil
}

// Stats reports the container's cgroup statistics from inside the guest
// as containerd's cgroup v2 metrics (the guest runs cgroup v2).
func (s *service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (_ *taskAPI.StatsResponse, retErr error) {
	defer func() { retErr = rpcErr(retErr) }()
	if _, err := s.task(r.ID); err != nil {
		return nil, err
	}
	agent, err := s.agent()
	if err != nil {
		return nil, err
	}
	st, err := agent.Stats(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	m := &v2stats.Metrics{}
	if c := st.GetCpu(); c != nil {
		m.CPU = &v2stats.CPUStat{
			UsageUsec: c.UsageTotalNs / 1000, UserUsec: c.UsageUserNs / 1000, SystemUsec: c.UsageKernelNs / 1000,
			NrThrottled: c.ThrottledPeriods, ThrottledUsec: c.ThrottledTimeNs / 1000,
		}
	}
	if mem := st.GetMemory(); mem != nil {
		m.Memory = &v2stats.MemoryStat{
			Usage: mem.Usage, UsageLimit: mem.Limit, MaxUsage: mem.MaxUsage,
			SwapUsage: mem.SwapUsage, SwapLimit: mem.SwapLimit,
			File: mem.Raw["file"], Anon: mem.Raw["anon"],
		}
		m.MemoryEvents = &v2stats.MemoryEvents{OomKill: mem.OomKill}
	}
	if p := st.GetPids(); p != nil {
		m.Pids = &v2stats.PidsStat{Current: p.Current, Limit: p.Limit}
	}
	a, err := typeurl.MarshalAny(m)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: a.GetValue()}}, nil
}

func (s *service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: uint32(os.Getpid())}, nil
}

// Shutdown ends the shim once it serves no container.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	n := len(s.containers)
	s.mu.Unlock()
	if n > 0 {
		return empty, nil
	}
	s.shutdown.Shutdown()
	return empty, nil
}
