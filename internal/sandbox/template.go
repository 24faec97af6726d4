package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/hypervisor"
	"github.com/hullrt/hull/internal/hypervisor/qemu"
)

// AsTemplate boots a pool's VM to become the template t: its RAM in t.RAM,
// its share not mounted (QEMU cannot save a VM with a mounted 9p share).
// SaveTemplate saves it once it is up (docs/design/017).
func AsTemplate(t *hypervisor.Template) Opt {
	return func(s *Sandbox) { s.template = t }
}

// FromTemplate starts a pool's VM from the saved template t instead of
// booting it.
func FromTemplate(t *hypervisor.Template) Opt {
	return func(s *Sandbox) {
		c := *t
		c.Clone = true
		s.template = &c
	}
}

// isClone says the sandbox's VM was started from a template.
func (s *Sandbox) isClone() bool { return s.template != nil && s.template.Clone }

// TemplateDir is where the pool of the runtime root root keeps its
// template: on /dev/shm, because the template's RAM must be in memory (a
// file on disk would be written back as the template VM runs), and the
// runtime root need not be a tmpfs.
func TemplateDir(root string) string {
	sum := sha256.Sum256([]byte(root))
	return "/dev/shm/hull-template-" + hex.EncodeToString(sum[:6])
}

// CanTemplate says why cfg's VMs cannot be saved as templates and cloned,
// or nil if they can. Clones map the template's RAM privately, which a
// vhost-user device (virtio-fs) cannot share; vsock is untried.
func CanTemplate(cfg *config.Config) error {
	if cfg.Storage.SharedFS != string(hypervisor.Virtio9P) {
		return fmt.Errorf(`templates need storage.shared_fs = "virtio-9p", not %q: a clone's memory is private to it, and virtiofsd could not map it`, cfg.Storage.SharedFS)
	}
	if ch, err := Channel(cfg); err != nil || ch != hypervisor.ChannelSerial {
		return errors.New(`templates need the agent channel on virtio-serial (agent.channel = "virtio-serial")`)
	}
	if cfg.Hypervisor.Machine == qemu.Microvm {
		return errors.New(`templates need hypervisor.machine = "q35": a clone grows by hot-plug`)
	}
	dir := filepath.Dir(TemplateDir(cfg.Runtime.Root))
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("a template's memory goes on %s: %w", dir, err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("a template's memory goes on %s, which is not a tmpfs", dir)
	}
	return nil
}

// SaveTemplate saves the template VM once its agent has answered, and has
// let go of its session (hangUpAgent): each clone's agent then serves the
// first host that connects to it. The VM stays stopped; Destroy removes
// it.
func (s *Sandbox) SaveTemplate(ctx context.Context) error {
	q, ok := s.vm.(*qemu.QEMU)
	if !ok || s.template == nil || s.template.Clone {
		return errors.New("the sandbox was not booted as a template")
	}
	s.hangUpAgent()
	return q.SaveTemplate(ctx)
}

// restored tells a clone's agent the time and gives it fresh entropy, and
// has it warm the container path up: the template's translated code did
// not come along under TCG.
func (s *Sandbox) restored(ctx context.Context) error {
	if !s.isClone() {
		return nil
	}
	entropy := make([]byte, 64)
	if _, err := rand.Read(entropy); err != nil {
		return err
	}
	if err := s.Agent.Restored(ctx, time.Now(), entropy, true); err != nil {
		return fmt.Errorf("agent of a vm from a template: %w", err)
	}
	return nil
}
