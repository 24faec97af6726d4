// Package sandbox orchestrates one VM-backed sandbox on the host: it
// composes a VM (hypervisor), the channel and agent client, and the shared
// storage, and owns the sandbox's state directory. Boot is a named list of
// steps so that each can be timed and failures say where they happened.
package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	agent "github.com/hullrt/hull/api/agent/v1"
	"github.com/hullrt/hull/internal/agentclient"
	"github.com/hullrt/hull/internal/channel"
	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/hostcgroup"
	"github.com/hullrt/hull/internal/hypervisor"
	"github.com/hullrt/hull/internal/hypervisor/qemu"
	"github.com/hullrt/hull/internal/network"
	"github.com/hullrt/hull/internal/oci"
	"github.com/hullrt/hull/internal/pool"
	"github.com/hullrt/hull/internal/storage"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ErrExists is returned when a sandbox with the same id already exists.
var ErrExists = errors.New("already exists")

// ErrBoot wraps every failure of the guest to come up.
var ErrBoot = errors.New("guest did not boot")

// Phase is one timed step of a sandbox's life.
type Phase struct {
	Name     string
	Duration time.Duration
}

// Sandbox is a running VM with its agent.
type Sandbox struct {
	ID  string
	Dir string // state directory

	cfg   *config.Config
	vm    hypervisor.Hypervisor
	fsd   *storage.Virtiofsd
	share *storage.Share
	netns string // network namespace carried into the VM, "" for none
	// resources are those of the container the VM is booted for.
	resources *specs.LinuxResources
	size      hypervisor.Size // what the VM was booted with
	// forPool is set for a pool's VM; claimed, for a VM taken from a pool.
	forPool bool
	claimed *pool.VM
	// template is set for a pool's VM that becomes a template or starts
	// as a clone of one (template.go).
	template *hypervisor.Template
	net      *network.Network
	sess     *channel.Session
	// Agent is the client of the guest agent, set once the guest is up.
	Agent *agentclient.Client
	// Guest is what the agent said of itself.
	Guest *agent.VersionResponse
	// Phases records how long each step took.
	Phases []Phase

	// cgroupsPath is the host cgroup of the sandbox's processes, "" for
	// none; cg is that cgroup once joined (cgroup.go).
	cgroupsPath string
	cg          *hostcgroup.Cgroup
	// blocks are the containers with a root disk plugged in (block.go).
	blocks map[string]bool
}

type step struct {
	name string
	fn   func(context.Context) error
}

// Opt is an option of Create.
type Opt func(*Sandbox)

// WithResources sizes the VM for a first container with resources r (see
// SizeFor) instead of booting it at the base size.
func WithResources(r *specs.LinuxResources) Opt { return func(s *Sandbox) { s.resources = r } }

// WithNetNS carries the interfaces, routes and neighbours of the network
// namespace at path into the VM. Without it the guest has loopback only.
func WithNetNS(path string) Opt { return func(s *Sandbox) { s.netns = path } }

// Create boots a sandbox VM whose sockets, logs and shared directory live
// in dir, which must not exist yet, and waits for its agent. On failure
// everything it made is torn down again.
func Create(ctx context.Context, cfg *config.Config, id, dir string, opts ...Opt) (*Sandbox, error) {
	if err := oci.ValidateID(id); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return nil, fmt.Errorf("creating state root: %w", err)
	}
	s := &Sandbox{ID: id, Dir: dir, cfg: cfg}
	for _, o := range opts {
		o(s)
	}
	if err := s.checkCgroupPath(); err != nil {
		return nil, err
	}
	if err := os.Mkdir(s.Dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("container %q: %w", id, ErrExists)
		}
		return nil, fmt.Errorf("creating state dir: %w", err)
	}
	steps := []step{
		{"claim", s.claimVM},
		{"check-image", s.checkImage},
		{"share", s.createShare},
		{"cgroup", s.joinCgroup},
		{"virtiofsd", s.startVirtiofsd},
		{"network", s.setupNetwork},
		{"vmm", s.startVM},
		{"agent-ready", s.waitAgent},
		{"restored", s.restored},
		{"grow", s.growClaimed},
		{"guest-network", s.configureGuestNetwork},
		{"sandbox", s.createSandbox},
	}
	for _, st := range steps {
		if err := ctx.Err(); err != nil {
			s.Destroy(context.Background())
			return nil, fmt.Errorf("boot interrupted: %w", err)
		}
		start := time.Now()
		if err := st.fn(ctx); err != nil {
			s.Destroy(context.Background())
			return nil, err
		}
		s.Phases = append(s.Phases, Phase{st.name, time.Since(start)})
	}
	return s, nil
}

func (s *Sandbox) checkImage(context.Context) error {
	h := s.cfg.Hypervisor
	for _, f := range []string{h.Kernel, h.Initrd} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("guest image: %w (run 'hull image build')", err)
		}
	}
	return nil
}

func (s *Sandbox) createShare(context.Context) error {
	sh, err := storage.NewShare(filepath.Join(s.Dir, "shared"))
	if err != nil {
		return err
	}
	s.share = sh
	return nil
}

func (s *Sandbox) startVirtiofsd(ctx context.Context) error {
	if s.cfg.Storage.SharedFS != string(hypervisor.VirtioFS) {
		return nil
	}
	s.fsd = &storage.Virtiofsd{
		Binary:   s.cfg.Storage.Virtiofsd,
		Source:   s.share.Dir,
		Socket:   filepath.Join(s.Dir, "virtiofsd.sock"),
		Log:      filepath.Join(s.Dir, "virtiofsd.log"),
		Detached: s.forPool,
		Nice:     s.poolNice(),
	}
	if s.claimed != nil && s.claimed.VirtiofsdPid > 0 {
		if err := s.fsd.Adopt(s.claimed.VirtiofsdPid); err != nil {
			return err
		}
		return s.adoptIntoCgroup(s.claimed.VirtiofsdPid)
	}
	return s.fsd.Start(ctx)
}

// Accel resolves the configured acceleration against what the host has.
func Accel(cfg *config.Config) (hypervisor.Accel, error) {
	switch cfg.Hypervisor.Accel {
	case "kvm":
		if err := hypervisor.KVMProbe(); err != nil {
			return "", fmt.Errorf("hypervisor.accel is kvm but KVM is not usable: %w", err)
		}
		return hypervisor.AccelKVM, nil
	case "tcg":
		return hypervisor.AccelTCG, nil
	}
	if hypervisor.KVMUsable() {
		return hypervisor.AccelKVM, nil
	}
	return hypervisor.AccelTCG, nil
}

// Channel resolves the configured agent channel against what the host has.
func Channel(cfg *config.Config) (hypervisor.ChannelKind, error) {
	switch cfg.Agent.Channel {
	case "vsock":
		if !hypervisor.VhostVsockUsable() {
			return "", errors.New("agent.channel is vsock but /dev/vhost-vsock is not usable")
		}
		return hypervisor.ChannelVsock, nil
	case "virtio-serial":
		return hypervisor.ChannelSerial, nil
	}
	if hypervisor.VhostVsockUsable() {
		return hypervisor.ChannelVsock, nil
	}
	return hypervisor.ChannelSerial, nil
}

func (s *Sandbox) startVM(ctx context.Context) error {
	h := s.cfg.Hypervisor
	accel, err := Accel(s.cfg)
	if err != nil {
		return err
	}
	ch, err := Channel(s.cfg)
	if err != nil {
		return err
	}
	size, top := SizeFor(h, s.resources), MaxSize(h)
	if s.forPool || s.claimed != nil {
		// Booted at the base size; a claimer grows it (growClaimed).
		size = SizeFor(h)
	}
	if h.Machine == qemu.Microvm {
		// No hot-plug: the VM has its containers' size from the start,
		// and cannot grow.
		top = size
	}
	s.size = size
	firmware, err := Firmware(h)
	if err != nil {
		return err
	}
	vm := hypervisor.VM{
		Firmware:          firmware,
		ID:                s.ID,
		StateDir:          s.Dir,
		Accel:             accel,
		VCPUs:             size.VCPUs,
		MemoryMiB:         size.MemoryMiB,
		MaxVCPUs:          top.VCPUs,
		MaxMemoryMiB:      top.MemoryMiB,
		TBSizeMiB:         h.TCGTBSizeMiB,
		FreePageReporting: h.FreePageReporting,
		Template:          s.template,
		Kernel:            h.Kernel,
		Initrd:            h.Initrd,
		KernelParams:      s.kernelParams(accel),
		Channel:           ch,
		ChannelSocket:     filepath.Join(s.Dir, "agent.sock"),
		VsockCID:          vsockCID(s.ID),
		HotplugPorts:      h.HotplugPorts,
		SharedFS: []hypervisor.SharedFS{{
			Kind:   hypervisor.SharedFSKind(s.cfg.Storage.SharedFS),
			Source: s.share.Dir,
			Tag:    storage.Tag,
		}},
	}
	if s.fsd != nil {
		vm.SharedFS[0].Socket = s.fsd.Socket
	}
	if s.net != nil {
		for i, tap := range s.net.TapFiles() {
			vm.NICs = append(vm.NICs, hypervisor.NIC{MAC: s.net.Interfaces[i].MAC, Tap: tap})
		}
	}
	vm.Detached, vm.Nice = s.forPool, s.poolNice()
	if s.claimed != nil {
		q, err := qemu.Adopt(ctx, h.Path, h.Machine, vm, s.claimed.QEMUPid)
		if err != nil {
			return fmt.Errorf("adopting the pool's vm: %w", err)
		}
		s.vm = q
		return s.adoptIntoCgroup(s.claimed.QEMUPid)
	}
	q := qemu.New(h.Path, h.Machine, vm)
	s.vm = q
	if err := q.Start(ctx); err != nil {
		return fmt.Errorf("starting vm: %w", err)
	}
	if s.net != nil {
		// The VMM holds the taps now; they go away with it.
		s.net.CloseTaps()
	}
	return nil
}

// vsockCID derives a guest CID from the id; 0-2 are reserved.
func vsockCID(id string) uint32 {
	var h uint32 = 2166136261
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return 3 + h%(1<<30)
}

func (s *Sandbox) waitAgent(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, s.cfg.Hypervisor.BootTimeout.Duration)
	defer cancel()
	// The VMM exiting ends the wait at once.
	go func() {
		select {
		case <-s.vm.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	err := s.connectAgent(ctx)
	for (s.claimed != nil || s.isClone()) && err != nil && ctx.Err() == nil {
		// A pool's VM may still be reading the keeper's old session when
		// the claimer's bytes arrive, and a clone its template's; the
		// agent then reopens its port and the next try finds it.
		s.closeAgent()
		err = s.connectAgent(ctx)
	}
	if err == nil {
		return nil
	}
	if parent.Err() != nil {
		return fmt.Errorf("boot interrupted: %w", parent.Err())
	}
	// A VMM that died closes the channel a moment before its exit is
	// reaped; give the exit the chance to be the reported cause.
	select {
	case <-s.vm.Done():
		return fmt.Errorf("%w: vm exited during boot: %s", ErrBoot, s.consoleTail())
	case <-time.After(time.Second):
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: no answer from the agent within %s: %s", ErrBoot, s.cfg.Hypervisor.BootTimeout.Duration, s.consoleTail())
	}
	return fmt.Errorf("%w: %v", ErrBoot, err)
}

// connectAgent opens the agent channel and waits for the agent's answer;
// for a VM claimed from a pool or started from a template, which has
// booted already, a second at most per try.
func (s *Sandbox) connectAgent(ctx context.Context) error {
	if s.claimed != nil || s.isClone() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Second)
		defer cancel()
	}
	var err error
	switch ch, _ := Channel(s.cfg); ch {
	case hypervisor.ChannelVsock:
		s.sess, err = channel.DialVsock(ctx, vsockCID(s.ID))
	default:
		s.sess, err = channel.DialSerial(ctx, filepath.Join(s.Dir, "agent.sock"))
	}
	if err == nil {
		s.Agent, err = agentclient.New(s.sess, s.cfg.Agent.RequestTimeout.Duration)
	}
	if err == nil {
		s.Guest, err = s.Agent.WaitReady(ctx)
	}
	return err
}

// closeAgent closes the agent client and channel, if open.
func (s *Sandbox) closeAgent() {
	if s.Agent != nil {
		s.Agent.Close()
		s.Agent = nil
	}
	if s.sess != nil {
		s.sess.Close()
		s.sess = nil
	}
}

// ansiEscape matches the terminal control sequences firmware prints.
var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[a-zA-Z]|[a-zA-Z])`)

// consoleTail is the last meaningful line the guest printed, for errors.
func (s *Sandbox) consoleTail() string {
	b, err := os.ReadFile(s.vm.ConsoleLog())
	if err != nil || len(strings.TrimSpace(string(b))) == 0 {
		return "guest console is empty"
	}
	lines := strings.Split(strings.TrimSpace(ansiEscape.ReplaceAllString(string(b), "")), "\n")
	// A panic's reason beats the stack trace printed after it.
	for i := len(lines) - 1; i >= 0; i-- {
		if _, reason, ok := strings.Cut(lines[i], "Kernel panic - "); ok {
			return "guest console: Kernel panic - " + strings.TrimSpace(reason)
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return "guest console: " + l
		}
	}
	return "guest console is empty"
}

// createSandbox mounts the share in the guest and creates the sandbox
// there. A pool's VM only mounts the share, its claimer creates the
// sandbox: the mount (~6 ms under TCG) is no longer part of the claim.
func (s *Sandbox) createSandbox(ctx context.Context) error {
	if s.template != nil && !s.template.Clone {
		// A template's share stays unmounted: each clone mounts its own.
		return nil
	}
	fs := &agent.Storage{Source: storage.Tag, MountPoint: storage.GuestSharedDir}
	switch hypervisor.SharedFSKind(s.cfg.Storage.SharedFS) {
	case hypervisor.Virtio9P:
		fs.Fstype = "9p"
		fs.Options = []string{"trans=virtio", "version=9p2000.L", "msize=262144", "cache=mmap"}
	default:
		fs.Fstype = "virtiofs"
	}
	r := &agent.CreateSandboxRequest{SandboxId: s.ID, Storages: []*agent.Storage{fs}}
	if s.forPool {
		r.SandboxId = ""
	}
	if err := s.Agent.CreateSandbox(ctx, r); err != nil {
		return fmt.Errorf("creating sandbox in guest: %w", err)
	}
	return nil
}

// CreateContainer shares the bundle's rootfs (or plugs in its disk: see
// WithBlockRootfs) and the sources of its bind mounts with the guest and
// creates the container there; its process waits for StartContainer.
func (s *Sandbox) CreateContainer(ctx context.Context, cid string, b *oci.Bundle, opts ...ContainerOpt) (retErr error) {
	guestRoot, storages, err := s.guestRootfs(ctx, cid, b, opts)
	if err != nil {
		return err
	}
	defer func() {
		if retErr != nil {
			_ = s.detachBlock(context.Background(), cid)
		}
	}()
	spec := *b.Spec
	root := *spec.Root
	root.Path = guestRoot
	spec.Root = &root
	if spec.Mounts, err = s.share.BindMounts(cid, b.Dir, spec.Mounts); err != nil {
		return err
	}
	if spec.Hostname == "" {
		spec.Hostname = cid
	}
	raw, err := json.Marshal(&spec)
	if err != nil {
		return err
	}
	if err := s.Agent.CreateContainer(ctx, cid, raw, storages...); err != nil {
		return fmt.Errorf("creating container: %w", err)
	}
	return nil
}

// RemoveContainer removes a container from the guest and its root
// filesystem from the share, or its root disk from the VM.
func (s *Sandbox) RemoveContainer(ctx context.Context, cid string) error {
	err := s.Agent.RemoveContainer(ctx, cid)
	share := storage.Share{Dir: filepath.Join(s.share.Dir, cid)}
	return errors.Join(err, s.detachBlock(ctx, cid), share.Remove())
}

// OpenStream opens a new stream to the agent, for a client in another
// process (see internal/monitor).
func (s *Sandbox) OpenStream() (net.Conn, error) { return s.sess.Open() }

// Done is closed when the VM has gone away.
func (s *Sandbox) Done() <-chan struct{} { return s.vm.Done() }

// Destroy tears the sandbox down: guest, VMM, virtiofsd, mounts and the
// state directory. It is safe to call more than once.
func (s *Sandbox) Destroy(ctx context.Context) error {
	var errs []error
	if s.Agent != nil {
		select {
		case <-s.vm.Done():
		default:
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = s.Agent.DestroySandbox(dctx)
			cancel()
		}
		s.Agent.Close()
		s.Agent = nil
	}
	if s.sess != nil {
		s.sess.Close()
		s.sess = nil
	}
	vmmAlive := false
	if s.vm != nil {
		errs = append(errs, s.vm.Stop(ctx))
		select {
		case <-s.vm.Done():
		default:
			vmmAlive = s.vm.Pid() != 0 // 0: it never started
		}
	}
	if s.fsd != nil {
		s.fsd.Stop()
	}
	errs = append(errs, s.leaveCgroup())
	if s.net != nil {
		errs = append(errs, s.net.Teardown())
		s.net = nil
	}
	if s.share != nil {
		errs = append(errs, s.share.Remove())
	}
	// A VMM that did not stop still names this directory (or, claimed from
	// a pool, the one its origin file names): Cleanup finds it by that.
	if vmmAlive {
		errs = append(errs, fmt.Errorf("the vmm is still running: keeping %s for clean-up", s.Dir))
	} else if err := os.RemoveAll(s.Dir); err != nil {
		errs = append(errs, fmt.Errorf("removing state dir: %w", err))
	}
	return errors.Join(errs...)
}
