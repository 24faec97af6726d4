package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/hypervisor"
	"github.com/hullrt/hull/internal/hypervisor/qemu"
	"github.com/hullrt/hull/internal/network"
	"github.com/hullrt/hull/internal/pool"
)

// originFile, in a pool VM's state directory, names the directory the VM
// was booted in: its processes' command lines name that one, which is how
// Cleanup finds them after a claimer crashed.
const originFile = "origin"

// ForPool boots the VM for a pool: empty (no sandbox in the guest, no
// network), at the base size, with a VMM and virtiofsd that outlive the
// booting process. Release hands it over.
func ForPool() Opt { return func(s *Sandbox) { s.forPool = true } }

// PoolKey names everything about a VM that a pool VM must share with the
// VM a sandbox would boot to stand in for it: the hypervisor settings, the
// guest image (by size and time, so a rebuilt image retires the pool's
// VMs), the shared file system and the agent channel. Not the agent's log
// level: a --debug run may take a quiet VM.
func PoolKey(cfg *config.Config) string {
	h := cfg.Hypervisor
	h.BootTimeout = config.Duration{}
	h.EnableAnnotations = nil
	stamp := func(f string) string {
		fi, err := os.Stat(f)
		if err != nil {
			return "missing"
		}
		return fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}
	b, _ := json.Marshal(struct {
		H              config.Hypervisor
		S              config.Storage
		Channel        string
		Kernel, Initrd string
	}{h, cfg.Storage, cfg.Agent.Channel, stamp(h.Kernel), stamp(h.Initrd)})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Release lets go of a pool VM without stopping it: the agent session and
// QMP connection close, the processes run on for a claimer to adopt.
func (s *Sandbox) Release() (*pool.VM, error) {
	if !s.forPool {
		return nil, errors.New("only a pool's vm can be released")
	}
	q, ok := s.vm.(interface{ Release() error })
	if !ok {
		return nil, errors.New("the vmm cannot hand its vm over")
	}
	vm := &pool.VM{Dir: s.Dir, QEMUPid: s.vm.Pid(), VCPUs: s.size.VCPUs, MemoryMiB: s.size.MemoryMiB}
	if s.fsd != nil {
		vm.VirtiofsdPid = s.fsd.Pid()
	}
	s.hangUpAgent()
	return vm, q.Release()
}

// hangUpAgent closes the agent session and, on virtio-serial, waits until
// the agent waits for its next host: a claimer that connected sooner
// could have its first bytes read, and dropped, by the session that
// ended (what a template saves must not have that session either). The
// wait is bounded: past it the VM is handed over all the same, and such a
// claimer's agent-ready retries after a second.
func (s *Sandbox) hangUpAgent() {
	q, ok := s.vm.(*qemu.QEMU)
	if ch, _ := Channel(s.cfg); !ok || ch != hypervisor.ChannelSerial {
		s.closeAgent()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangUpWait)
	defer cancel()
	if err := q.HangUpAgent(ctx, s.closeAgent); err != nil {
		s.closeAgent() // if QMP failed before the hang-up
		logrus.WithError(err).Warnf("vm %s: the agent did not reopen its port within %s", s.ID, hangUpWait)
	}
}

// hangUpWait bounds hangUpAgent's wait.
const hangUpWait = 5 * time.Second

// claimVM takes a ready VM from the runtime root's pool, when one serves
// and the sandbox needs nothing a pool VM lacks (network interfaces, for
// now: NICs are not hot-plugged yet), and moves it into the sandbox's
// directory. Without a pool, or with an empty one, the sandbox boots its
// own VM.
func (s *Sandbox) claimVM(ctx context.Context) error {
	if s.forPool {
		return os.WriteFile(filepath.Join(s.Dir, originFile), []byte(s.Dir), 0o600)
	}
	socket := pool.Socket(s.cfg.Runtime.Root)
	if _, err := os.Stat(socket); err != nil {
		return nil
	}
	if s.netns != "" {
		carried, err := network.Carried(s.netns)
		if err != nil {
			return err
		}
		if carried > 0 {
			logrus.Debugf("vm pool: not claiming, %d network interfaces to carry", carried)
			return nil
		}
	}
	vm, err := pool.Claim(ctx, socket, PoolKey(s.cfg))
	if err != nil {
		if !errors.Is(err, pool.ErrEmpty) && !errors.Is(err, pool.ErrNoPool) {
			logrus.WithError(err).Warn("vm pool")
		}
		logrus.WithError(err).Debug("vm pool: booting a vm of our own")
		return nil
	}
	// The VM is ours now: into place with it, or away with it. rename(2)
	// replaces the empty directory Create made (os.Rename refuses to).
	if err := unix.Rename(vm.Dir, s.Dir); err != nil {
		discard(vm)
		logrus.WithError(err).Warnf("moving pool vm %s", vm.Dir)
		return nil
	}
	s.claimed = vm
	return nil
}

// discard kills a claimed VM that could not be used, and removes its files.
func discard(vm *pool.VM) {
	hypervisor.KillReferencing(vm.Dir + "/")
	_ = Cleanup(vm.Dir)
	_ = os.RemoveAll(vm.Dir)
}

// originOf is the directory the VM in dir was booted in, if it came from
// a pool.
func originOf(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, originFile))
	if err != nil {
		return ""
	}
	origin := strings.TrimSpace(string(b))
	if !filepath.IsAbs(origin) || origin == dir {
		return ""
	}
	return origin
}

// growClaimed gives a VM from the pool, booted at the base size, what the
// sandbox's first container asks for.
func (s *Sandbox) growClaimed(ctx context.Context) error {
	if s.claimed == nil || SizeFor(s.cfg.Hypervisor, s.resources) == s.size {
		return nil
	}
	_, err := s.Grow(ctx, s.resources)
	return err
}

// poolNice is the nice value a pool's VMs boot with, the lowest: a
// refill must not slow down the claimed VMs' work.
func (s *Sandbox) poolNice() int {
	if s.forPool {
		return 19
	}
	return 0
}

// adoptIntoCgroup gives a process the pool started a normal priority and
// moves it into the sandbox's cgroup. What it was charged before stays
// with the pool's cgroup.
func (s *Sandbox) adoptIntoCgroup(pid int) error {
	if err := hypervisor.Renice(pid, 0); err != nil {
		return fmt.Errorf("renicing process %d: %w", pid, err)
	}
	if s.cg == nil {
		return nil
	}
	return s.cg.Add(pid)
}
