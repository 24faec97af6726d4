package guest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	agent "github.com/hullrt/hull/api/agent/v1"
	"github.com/hullrt/hull/internal/guest/ctr"
)

// Version is the agent's version, set at build time.
var Version = "dev"

var empty = &emptypb.Empty{}

// Agent implements the agent API.
type Agent struct {
	mu         sync.Mutex
	sandboxID  string
	mounts     []*agent.Storage // storages mounted for the sandbox, in mount order
	containers map[string]*container
	// oom carries the ids of containers the OOM killer hit, for GetOOMEvent.
	oom chan string
	// netMu serialises changes to the guest's network.
	netMu sync.Mutex
}

type container struct {
	c     *ctr.Container
	spec  *specs.Spec // as created, with updates applied
	init  *process
	execs map[string]*process
	// storages are the mount points of the container's own storages.
	storages []string
}

var _ agent.AgentService = (*Agent)(nil)

// NewAgent returns an agent with no sandbox.
func NewAgent() *Agent {
	return &Agent{containers: map[string]*container{}, oom: make(chan string, 64)}
}

func (a *Agent) Check(context.Context, *agent.CheckRequest) (*agent.CheckResponse, error) {
	return &agent.CheckResponse{Status: agent.CheckResponse_SERVING}, nil
}

func (a *Agent) Version(context.Context, *agent.VersionRequest) (*agent.VersionResponse, error) {
	var u unix.Utsname
	_ = unix.Uname(&u)
	return &agent.VersionResponse{
		AgentVersion:  Version,
		ApiVersion:    agent.APIVersion,
		KernelRelease: unix.ByteSliceToString(u.Release[:]),
	}, nil
}

// CreateSandbox mounts the sandbox's storages and takes the sandbox's id.
// Without an id it only mounts the storages: a pool's VM mounts its share
// before it is claimed (API version 7). A storage already mounted just as
// asked stays as it is; another one on its mount point is refused.
func (a *Agent) CreateSandbox(ctx context.Context, r *agent.CreateSandboxRequest) (*emptypb.Empty, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sandboxID != "" {
		return nil, status.Errorf(codes.AlreadyExists, "sandbox %s already exists", a.sandboxID)
	}
	asked := map[string]*agent.Storage{}
	for _, s := range r.Storages {
		m := asked[s.MountPoint]
		if m == nil {
			m = a.mounted(s.MountPoint)
		}
		if m != nil && !proto.Equal(m, s) {
			return nil, status.Errorf(codes.InvalidArgument, "%s already holds %s %s", s.MountPoint, m.Fstype, m.Source)
		}
		asked[s.MountPoint] = s
	}
	if r.Hostname != "" {
		if err := unix.Sethostname([]byte(r.Hostname)); err != nil {
			return nil, fmt.Errorf("setting hostname: %w", err)
		}
	}
	for _, s := range r.Storages {
		if a.mounted(s.MountPoint) != nil {
			continue
		}
		if err := mountStorage(s); err != nil {
			a.unmountAll()
			return nil, err
		}
		a.mounts = append(a.mounts, s)
	}
	a.sandboxID = r.SandboxId
	return empty, nil
}

func mountStorage(s *agent.Storage) error {
	if s.Driver != "" {
		return status.Errorf(codes.InvalidArgument, "storage driver %q: only containers take disks", s.Driver)
	}
	if !filepath.IsAbs(s.MountPoint) {
		return status.Errorf(codes.InvalidArgument, "storage mount point %q is not absolute", s.MountPoint)
	}
	if err := os.MkdirAll(s.MountPoint, 0o755); err != nil {
		return err
	}
	var flags uintptr
	var data []string
	for _, o := range s.Options {
		switch o {
		case "ro":
			flags |= unix.MS_RDONLY
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "nodev":
			flags |= unix.MS_NODEV
		default:
			data = append(data, o)
		}
	}
	if err := unix.Mount(s.Source, s.MountPoint, s.Fstype, flags, strings.Join(data, ",")); err != nil {
		return fmt.Errorf("mounting %s %s on %s: %w", s.Fstype, s.Source, s.MountPoint, err)
	}
	if s.Fstype == "virtiofs" {
		if err := setReadAhead(s.MountPoint, virtiofsReadAheadKiB); err != nil {
			logrus.WithError(err).Warnf("setting the read-ahead of %s", s.MountPoint)
		}
	}
	return nil
}

func (a *Agent) unmountAll() {
	for i := len(a.mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(a.mounts[i].MountPoint, unix.MNT_DETACH); err != nil {
			logrus.WithError(err).Warnf("unmounting %s", a.mounts[i].MountPoint)
		}
	}
	a.mounts = nil
}

// mounted is the sandbox storage mounted at mountPoint, nil if none is.
func (a *Agent) mounted(mountPoint string) *agent.Storage {
	for _, m := range a.mounts {
		if m.MountPoint == mountPoint {
			return m
		}
	}
	return nil
}

// DestroySandbox readies the guest for the VMM to stop it: the host calls
// it only right before the VM goes. Every container process is killed,
// the filesystems on the containers' disks are unmounted (left clean), and
// what the guest still holds unwritten goes out. Nothing else is undone:
// cgroups and the shares' mounts live in the guest's
// memory and go with it, and undoing them cost ~10 ms of every teardown.
func (a *Agent) DestroySandbox(context.Context, *agent.DestroySandboxRequest) (*emptypb.Empty, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.containers {
		c.kill()
	}
	for id, c := range a.containers {
		<-c.init.exited
		unmountStorages(id, c.storages)
		c.storages = nil
	}
	a.sandboxID = ""
	unix.Sync()
	return empty, nil
}

func (a *Agent) CreateContainer(ctx context.Context, r *agent.CreateContainerRequest) (_ *emptypb.Empty, retErr error) {
	logrus.Debugf("creating container %s", r.ContainerId)
	defer func(t time.Time) {
		logrus.Debugf("container %s: created in %s (err %v)", r.ContainerId, time.Since(t), retErr)
	}(time.Now())
	// A hot-plugged disk takes a moment to appear: wait for it before
	// holding up the agent's other calls.
	mounts, err := prepareStorages(ctx, r.ContainerId, r.Storages)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.containers[r.ContainerId]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "container %s already exists", r.ContainerId)
	}
	spec, netSysctls, err := guestSpec(r.ContainerId, r.OciSpec, a.initPid)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "container %s: %v", r.ContainerId, err)
	}
	if err := applySysctls(netSysctls); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "container %s: %v", r.ContainerId, err)
	}
	storages, err := mountStorages(r.ContainerId, mounts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			unmountStorages(r.ContainerId, storages)
		}
	}()
	if _, err := os.Stat(spec.Root.Path); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s: rootfs: %v", r.ContainerId, err)
	}
	prefetchEntrypoint(spec)
	cfg, err := libcontainerConfig(r.ContainerId, spec)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "container %s: %v", r.ContainerId, err)
	}
	lc, p, err := createContainer(r.ContainerId, cfg, spec.Process)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "creating container %s: %v", r.ContainerId, err)
	}
	a.containers[r.ContainerId] = &container{c: lc, spec: spec, init: p, execs: map[string]*process{}, storages: storages}
	a.watchOOM(r.ContainerId, lc)
	return empty, nil
}

// createContainer creates a container with sp as its init, held until
// StartContainer.
func createContainer(id string, cfg *configs.Config, sp *specs.Process) (*ctr.Container, *process, error) {
	cp, err := newProcess(sp)
	if err != nil {
		return nil, nil, err
	}
	p, err := newIO(cp, sp)
	if err != nil {
		return nil, nil, err
	}
	c, err := ctr.Create(id, cfg, cp)
	if err == nil {
		err = p.started()
	}
	if err != nil {
		if c != nil {
			_ = c.Destroy()
			_, _ = cp.Wait()
		}
		p.closeAll()
		return nil, nil, err
	}
	go p.wait()
	return c, p, nil
}

// execProcess runs sp in the running container c.
func execProcess(c *ctr.Container, sp *specs.Process) (*process, error) {
	cp, err := newProcess(sp)
	if err != nil {
		return nil, err
	}
	p, err := newIO(cp, sp)
	if err != nil {
		return nil, err
	}
	if err := c.Exec(cp); err != nil {
		p.closeAll()
		return nil, err
	}
	if err := p.started(); err != nil {
		_ = cp.Signal(unix.SIGKILL)
		_, _ = cp.Wait()
		p.closeAll()
		return nil, err
	}
	go p.wait()
	return p, nil
}

func (a *Agent) StartContainer(ctx context.Context, r *agent.StartContainerRequest) (*emptypb.Empty, error) {
	c, err := a.container(r.ContainerId)
	if err != nil {
		return nil, err
	}
	if err := c.c.Start(); err != nil {
		return nil, fmt.Errorf("starting container %s: %w", r.ContainerId, err)
	}
	return empty, nil
}

func (a *Agent) RemoveContainer(ctx context.Context, r *agent.RemoveContainerRequest) (*emptypb.Empty, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.containers[r.ContainerId]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "container %s not found", r.ContainerId)
	}
	a.destroy(r.ContainerId, c)
	return empty, nil
}

// kill sends SIGKILL to what still runs of the container. In a PID
// namespace of its own, everything died with its init, and once that has
// exited there is nothing to do; in a shared one, every process of the
// container's cgroup is killed.
func (c *container) kill() {
	select {
	case <-c.init.exited:
		if c.c.Config().Namespaces.IsPrivate(configs.NEWPID) {
			return
		}
	default:
	}
	_ = c.c.Signal(unix.SIGKILL)
}

// destroy kills what is left of a container and frees it. Called with a.mu.
func (a *Agent) destroy(id string, c *container) {
	c.kill()
	<-c.init.exited
	if err := c.c.Destroy(); err != nil {
		logrus.WithError(err).Warnf("destroying container %s", id)
	}
	c.init.closeAll()
	for _, p := range c.execs {
		p.closeAll()
	}
	unmountStorages(id, c.storages)
	delete(a.containers, id)
}

func (a *Agent) ExecProcess(ctx context.Context, r *agent.ExecProcessRequest) (*emptypb.Empty, error) {
	if r.ExecId == "" {
		return nil, status.Error(codes.InvalidArgument, "exec id must not be empty")
	}
	c, err := a.container(r.ContainerId)
	if err != nil {
		return nil, err
	}
	var sp specs.Process
	if err := json.Unmarshal(r.Process, &sp); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "decoding process: %v", err)
	}
	if len(sp.Args) == 0 {
		return nil, status.Error(codes.InvalidArgument, "process has no args")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := c.execs[r.ExecId]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "exec %s already exists in container %s", r.ExecId, r.ContainerId)
	}
	p, err := execProcess(c.c, &sp)
	if err != nil {
		return nil, fmt.Errorf("exec in container %s: %w", r.ContainerId, err)
	}
	c.execs[r.ExecId] = p
	return empty, nil
}

func (a *Agent) SignalProcess(ctx context.Context, r *agent.SignalProcessRequest) (*emptypb.Empty, error) {
	sig := syscall.Signal(r.Signal)
	if r.Signal == 0 || r.Signal > 64 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid signal %d", r.Signal)
	}
	if r.All {
		c, err := a.container(r.ContainerId)
		if err != nil {
			return nil, err
		}
		pids, err := c.c.Processes()
		if err != nil {
			return nil, err
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, sig)
		}
		return empty, nil
	}
	p, err := a.process(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	if err := p.signal(sig); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "signalling process: %v", err)
	}
	return empty, nil
}

func (a *Agent) WaitProcess(ctx context.Context, r *agent.WaitProcessRequest) (*agent.WaitProcessResponse, error) {
	p, err := a.process(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &agent.WaitProcessResponse{ExitStatus: p.status, ExitedAt: timestamppb.New(p.exitedAt)}, nil
}

func (a *Agent) WriteStdin(ctx context.Context, r *agent.WriteStreamRequest) (*agent.WriteStreamResponse, error) {
	p, err := a.process(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	n, err := p.write(r.Data)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "writing stdin: %v", err)
	}
	return &agent.WriteStreamResponse{Len: uint32(n)}, nil
}

func (a *Agent) CloseStdin(ctx context.Context, r *agent.CloseStdinRequest) (*emptypb.Empty, error) {
	p, err := a.process(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	return empty, p.closeStdin()
}

func (a *Agent) CloseOutput(ctx context.Context, r *agent.CloseOutputRequest) (*emptypb.Empty, error) {
	p, err := a.process(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	return empty, p.closeOutput(r.Stderr)
}

func (a *Agent) ReadStdout(ctx context.Context, r *agent.ReadStreamRequest) (*agent.ReadStreamResponse, error) {
	return a.read(r, false)
}

func (a *Agent) ReadStderr(ctx context.Context, r *agent.ReadStreamRequest) (*agent.ReadStreamResponse, error) {
	return a.read(r, true)
}

func (a *Agent) read(r *agent.ReadStreamRequest, stderr bool) (*agent.ReadStreamResponse, error) {
	p, err := a.process(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	data, eof, err := p.read(stderr, r.Len)
	if err != nil {
		return nil, err
	}
	return &agent.ReadStreamResponse{Data: data, Eof: eof}, nil
}

func (a *Agent) TtyWinResize(ctx context.Context, r *agent.TtyWinResizeRequest) (*emptypb.Empty, error) {
	p, err := a.process(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, err
	}
	if r.Rows > 0xffff || r.Columns > 0xffff {
		return nil, status.Error(codes.InvalidArgument, "window size out of range")
	}
	if err := p.resize(uint16(r.Rows), uint16(r.Columns)); err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return empty, nil
}

// initPid is the guest pid of container id's init. Called with a.mu held.
func (a *Agent) initPid(id string) (int, bool) {
	c, ok := a.containers[id]
	if !ok {
		return 0, false
	}
	pid := c.init.cp.Pid()
	return pid, pid > 0
}

func (a *Agent) container(id string) (*container, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.containers[id]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "container %s not found", id)
	}
	return c, nil
}

func (a *Agent) process(cid, eid string) (*process, error) {
	c, err := a.container(cid)
	if err != nil {
		return nil, err
	}
	if eid == "" {
		return c.init, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := c.execs[eid]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "exec %s not found in container %s", eid, cid)
	}
	return p, nil
}

// watchOOM forwards the OOM kills in container id's cgroup to GetOOMEvent.
// The watch ends when the cgroup goes away.
func (a *Agent) watchOOM(id string, lc *ctr.Container) {
	ch, err := lc.NotifyOOM()
	if err != nil {
		logrus.WithError(err).Warnf("watching %s for OOM kills", id)
		return
	}
	go func() {
		for range ch {
			select {
			case a.oom <- id:
			default: // nobody listening and the queue is full: drop
			}
		}
	}()
}

func (a *Agent) GetOOMEvent(ctx context.Context, r *agent.GetOOMEventRequest) (*agent.OOMEvent, error) {
	select {
	case id := <-a.oom:
		return &agent.OOMEvent{ContainerId: id}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
