// Package shim is hull's containerd runtime v2 shim: the task service that
// containerd (and through its CRI plugin, Kubernetes) drives over ttrpc. One
// shim process serves a whole pod: the sandbox (pause) container boots the
// VM, the pod's other containers are created in the same VM, and the VM goes
// away with the sandbox.
package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/container"
	"github.com/hullrt/hull/internal/sandbox"
	"github.com/hullrt/hull/internal/storage"
)

// CRI annotations that group a pod's containers into one shim and VM.
const (
	annotationContainerType = "io.kubernetes.cri.container-type"
	annotationSandboxID     = "io.kubernetes.cri.sandbox-id"
	containerTypeSandbox    = "sandbox"
)

// manager starts and stops shim processes for containerd.
type manager struct{ name string }

// NewManager returns the shim manager of the runtime called name.
func NewManager(name string) shim.Manager { return manager{name: name} }

func (m manager) Name() string { return m.name }

// sandboxOf is the pod a container belongs to: its own id for a sandbox
// or a lone container.
func sandboxOf(id string, s *specs.Spec) string {
	if s != nil && s.Annotations[annotationContainerType] != containerTypeSandbox {
		if sid := s.Annotations[annotationSandboxID]; sid != "" {
			return sid
		}
	}
	return id
}

func readBundleSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parsing config.json: %w", err)
	}
	return &s, nil
}

// vmDir is where the VM of a pod keeps its sockets, logs and shared dir.
func vmDir(cfg *config.Config, ns, sandboxID string) string {
	return filepath.Join(cfg.Runtime.Root, "pods", ns, container.DirName(sandboxID))
}

// Start starts a shim for container id, or returns the address of the
// running shim of its pod. containerd runs it in the container's bundle.
func (m manager) Start(ctx context.Context, id string, opts shim.StartOpts) (_ string, retErr error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	spec, err := readBundleSpec(".")
	if err != nil {
		return "", err
	}
	address, err := shim.SocketAddress(ctx, opts.Address, sandboxOf(id, spec))
	if err != nil {
		return "", err
	}
	socket, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("creating shim socket: %w", err)
		}
		// The pod's shim runs already: the container joins it.
		if shim.CanConnect(address) {
			return address, shim.WriteAddress("address", address)
		}
		if err := shim.RemoveSocket(address); err != nil {
			return "", fmt.Errorf("removing stale shim socket: %w", err)
		}
		if socket, err = shim.NewSocket(address); err != nil {
			return "", fmt.Errorf("creating shim socket: %w", err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			_ = shim.RemoveSocket(address)
		}
	}()
	if err := shim.WriteAddress("address", address); err != nil {
		return "", err
	}
	f, err := socket.File()
	if err != nil {
		return "", err
	}
	defer f.Close()
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	go cmd.Wait()
	// Without CAP_SYS_RESOURCE a lower OOM score is refused: not fatal.
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		log.G(ctx).WithError(err).Debug("adjusting shim oom score")
	}
	return address, nil
}

// Stop cleans up after a shim that is gone (containerd's `delete` action):
// the pod's VM processes, mounts and state.
func (m manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return shim.StopStatus{}, err
	}
	cfg, err := config.Load("")
	if err != nil {
		return shim.StopStatus{}, err
	}
	spec, err := readBundleSpec(".")
	if err != nil {
		log.G(ctx).WithError(err).Warn("reading bundle spec for cleanup")
	}
	sid := sandboxOf(id, spec)
	if sid == id {
		if err := cleanupVM(vmDir(cfg, ns, sid)); err != nil {
			log.G(ctx).WithError(err).Warn("cleaning up vm")
		}
	} else {
		share := storage.Share{Dir: filepath.Join(vmDir(cfg, ns, sid), "shared", id)}
		if err := share.Remove(); err != nil {
			log.G(ctx).WithError(err).Warn("cleaning up container share")
		}
	}
	if err := mount.UnmountRecursive("rootfs", 0); err != nil {
		log.G(ctx).WithError(err).Warn("unmounting rootfs")
	}
	return shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(unix.SIGKILL)}, nil
}

// cleanupVM removes what is left of a VM (VMM, virtiofsd, network
// redirects, mounts) and its directory.
func cleanupVM(dir string) error {
	if err := sandbox.Cleanup(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	removeEmptyParents(dir)
	return nil
}
