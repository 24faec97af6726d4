package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hullrt/hull/internal/agentclient"
	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/hostcgroup"
	"github.com/hullrt/hull/internal/oci"
	"github.com/hullrt/hull/internal/sandbox"
)

func init() {
	plugin.Register(&plugin.Registration{
		Type:     plugin.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugin.EventPlugin, plugin.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (interface{}, error) {
			pp, err := ic.GetByID(plugin.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			return newService(ic.Context, pp.(shim.Publisher), ss.(shutdown.Service))
		},
	})
}

// service is the task service of one pod's shim.
type service struct {
	mu         sync.Mutex
	cfg        *config.Config
	ns         string
	sandboxID  string // the pod's id, "" until the first container
	sb         *sandbox.Sandbox
	containers map[string]*task // by container id
	shutdown   shutdown.Service

	// events go to containerd in order (forward); once the shim shuts
	// down they are closed, which closes the publisher.
	events    chan any
	evMu      sync.Mutex
	evClosed  bool
	forwarded chan struct{}
}

var _ taskAPI.TaskService = (*service)(nil)

func newService(ctx context.Context, publisher shim.Publisher, sd shutdown.Service) (*service, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Load("")
	if err != nil {
		return nil, err
	}
	s := &service{
		cfg:        cfg,
		ns:         ns,
		containers: map[string]*task{},
		events:     make(chan any, 128),
		forwarded:  make(chan struct{}),
		shutdown:   sd,
	}
	go s.forward(ctx, publisher)
	sd.RegisterCallback(func(context.Context) error {
		s.mu.Lock()
		s.destroyVM()
		s.mu.Unlock()
		s.closeEvents()
		return nil
	})
	return s, nil
}

func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, s)
	return nil
}

// forward publishes events to containerd in order.
func (s *service) forward(ctx context.Context, publisher shim.Publisher) {
	ns, _ := namespaces.Namespace(ctx)
	ctx = namespaces.WithNamespace(context.Background(), ns)
	defer close(s.forwarded)
	for e := range s.events {
		if err := publisher.Publish(ctx, topicOf(e), e); err != nil {
			log.G(ctx).WithError(err).Warn("publishing event")
		}
	}
	// containerd's shim waits for this before it exits.
	publisher.Close()
}

// closeEvents ends forward once the events sent so far are published (or
// a few seconds have passed); later events are dropped.
func (s *service) closeEvents() {
	s.evMu.Lock()
	if !s.evClosed {
		s.evClosed = true
		close(s.events)
	}
	s.evMu.Unlock()
	select {
	case <-s.forwarded:
	case <-time.After(3 * time.Second):
	}
}

func topicOf(e any) string {
	switch e.(type) {
	case *eventstypes.TaskCreate:
		return runtime.TaskCreateEventTopic
	case *eventstypes.TaskStart:
		return runtime.TaskStartEventTopic
	case *eventstypes.TaskExit:
		return runtime.TaskExitEventTopic
	case *eventstypes.TaskDelete:
		return runtime.TaskDeleteEventTopic
	case *eventstypes.TaskExecAdded:
		return runtime.TaskExecAddedEventTopic
	case *eventstypes.TaskExecStarted:
		return runtime.TaskExecStartedEventTopic
	case *eventstypes.TaskPaused:
		return runtime.TaskPausedEventTopic
	case *eventstypes.TaskResumed:
		return runtime.TaskResumedEventTopic
	case *eventstypes.TaskOOM:
		return runtime.TaskOOMEventTopic
	}
	return runtime.TaskUnknownTopic
}

func (s *service) send(e any) {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	if !s.evClosed {
		s.events <- e
	}
}

// vm returns the pod's VM, booting it for the pod's first container, whose
// io.hull.config.* annotations may size it and whose network namespace
// (CNI's, for a CRI pod) the VM takes. Called with s.mu held.
func (s *service) vm(ctx context.Context, sandboxID string, spec *specs.Spec) (*sandbox.Sandbox, error) {
	if s.sb != nil {
		if sandboxID != s.sandboxID {
			return nil, fmt.Errorf("container of pod %s sent to the shim of pod %s: %w", sandboxID, s.sandboxID, errdefs.ErrInvalidArgument)
		}
		select {
		case <-s.sb.Done():
			return nil, fmt.Errorf("the pod's vm has exited: %w", errdefs.ErrFailedPrecondition)
		default:
		}
		return s.sb, nil
	}
	cfg, err := s.cfg.WithAnnotations(spec.Annotations)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
	}
	netns, err := oci.NetworkNamespace(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errdefs.ErrNotImplemented, err)
	}
	dir := vmDir(s.cfg, s.ns, sandboxID)
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return nil, err
	}
	// The shim joins the pod's cgroup with its VM (docs/design/009).
	var cgroupsPath string
	var resources *specs.LinuxResources
	if spec.Linux != nil {
		cgroupsPath = spec.Linux.CgroupsPath
		resources = spec.Linux.Resources
	}
	sb, err := sandbox.Create(ctx, cfg, sandboxID, dir, sandbox.WithNetNS(netns), sandbox.WithCgroup(cgroupsPath), sandbox.WithResources(resources))
	if errors.Is(err, hostcgroup.ErrInvalidPath) {
		return nil, fmt.Errorf("%w: %v", errdefs.ErrInvalidArgument, err)
	}
	if err != nil {
		return nil, err
	}
	s.sb, s.sandboxID = sb, sandboxID
	go s.watchVM(sb)
	go s.watchOOM(sb)
	return sb, nil
}

// watchOOM publishes a TaskOOM event for every OOM kill in the pod.
func (s *service) watchOOM(sb *sandbox.Sandbox) {
	agent := sb.Agent
	for {
		id, err := agent.WaitOOM(context.Background())
		if err != nil {
			return // the VM is going away
		}
		s.mu.Lock()
		_, known := s.containers[id]
		s.mu.Unlock()
		if known {
			s.send(&eventstypes.TaskOOM{ContainerID: id})
		}
	}
}

// watchVM reports every process of the pod exited when the VM dies.
func (s *service) watchVM(sb *sandbox.Sandbox) {
	<-sb.Done()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sb != sb {
		return
	}
	for _, t := range s.containers {
		for _, p := range t.processes() {
			p.setExited(255, time.Now())
		}
	}
}

// destroyVM tears the pod's VM down. Called with s.mu held.
func (s *service) destroyVM() {
	if s.sb == nil {
		return
	}
	if err := s.sb.Destroy(context.Background()); err != nil {
		log.L.WithError(err).Warn("tearing the pod's vm down")
	}
	s.sb = nil
	removeEmptyParents(vmDir(s.cfg, s.ns, s.sandboxID))
}

// removeEmptyParents removes the namespace and pods directories above a
// VM's directory once no VM is left in them.
func removeEmptyParents(dir string) {
	for i := 0; i < 2; i++ {
		dir = filepath.Dir(dir)
		if os.Remove(dir) != nil {
			return
		}
	}
}

// agent is the client of the pod's guest agent.
func (s *service) agent() (*agentclient.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sb == nil {
		return nil, fmt.Errorf("the pod's vm is gone: %w", errdefs.ErrFailedPrecondition)
	}
	return s.sb.Agent, nil
}

func (s *service) task(id string) (*task, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, errdefs.ErrNotFound)
	}
	return t, nil
}

func (s *service) process(id, execID string) (*task, *process, error) {
	t, err := s.task(id)
	if err != nil {
		return nil, nil, err
	}
	p, err := t.process(execID)
	return t, p, err
}
