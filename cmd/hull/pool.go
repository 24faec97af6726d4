package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/hypervisor/qemu"
	"github.com/hullrt/hull/internal/pool"
	"github.com/hullrt/hull/internal/sandbox"
)

var poolCommand = &cli.Command{
	Name:  "pool",
	Usage: "keep VMs booted ahead of need, for create and run to claim",
	Description: "Boots --size empty VMs with this configuration and keeps that many ready until\n" +
		"stopped (SIGINT or SIGTERM), when it stops those nobody claimed. create, run and\n" +
		"the containerd shim with the same --root claim a ready VM instead of booting one,\n" +
		"when its configuration matches theirs and the container needs no network\n" +
		"interfaces (NICs are not hot-plugged yet); the VM grows to the container's limits\n" +
		"by hot-plug. A claimed VM lives on if the pool stops. Progress goes to stderr.\n\n" +
		"A replacement boots once no VM has been claimed for --refill-delay, at low CPU\n" +
		"priority: a boot beside a claimed VM would slow down its container's start.\n\n" +
		"Pooled VMs belong to no pod until claimed: they share nothing with each other,\n" +
		"each boots its own kernel; the trade-off is the memory of VMs kept idle.",
	Flags: []cli.Flag{
		&cli.IntFlag{Name: "size", Value: 2, Usage: "number of ready VMs to keep"},
		&cli.DurationFlag{Name: "refill-delay", Value: time.Second, Usage: "how long claims must have quietened before a replacement boots"},
		&cli.BoolFlag{Name: "template", Usage: "boot one VM, save it as a template, and start the pool's VMs as its clones, which share its unwritten memory (opt-in: see docs/design/017-vm-template.md; needs virtio-9p)"},
	},
	Action: func(c *cli.Context) error {
		if c.NArg() != 0 {
			return fmt.Errorf("%q takes no arguments", c.Command.Name)
		}
		size := c.Int("size")
		if size < 1 || size > 256 {
			return fmt.Errorf("--size must be between 1 and 256, not %d", size)
		}
		refillDelay := c.Duration("refill-delay")
		if refillDelay < 0 || refillDelay > time.Hour {
			return fmt.Errorf("--refill-delay must be between 0 and 1h, not %s", refillDelay)
		}
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		if cfg.Hypervisor.Machine == qemu.Microvm {
			return errors.New(`hull pool needs VMs that can grow by hot-plug to the container that claims them: not hypervisor.machine = "microvm"`)
		}
		if c.Bool("template") {
			if err := sandbox.CanTemplate(cfg); err != nil {
				return fmt.Errorf("--template: %w", err)
			}
		}
		dir := filepath.Join(cfg.Runtime.Root, "pool")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating pool directory: %w", err)
		}
		l, err := pool.Listen(pool.Socket(cfg.Runtime.Root))
		if err != nil {
			return err
		}
		defer os.Remove(pool.Socket(cfg.Runtime.Root))
		defer os.Remove(dir) // once empty
		// Only now, with the socket ours: VMs a crashed pool left behind.
		removePoolLeftovers(dir)
		tm := &templateMaker{cfg: cfg, dir: sandbox.TemplateDir(cfg.Runtime.Root)}
		tm.remove()
		boot := func(ctx context.Context) (*pool.VM, error) { return bootPoolVM(ctx, cfg, dir) }
		if c.Bool("template") {
			defer tm.remove()
			boot = func(ctx context.Context) (*pool.VM, error) {
				t, err := tm.template(ctx)
				if err != nil {
					return nil, err
				}
				return bootPoolVM(ctx, cfg, dir, sandbox.FromTemplate(t))
			}
		}
		ctx, stop, progress := untilInterrupted(c.Context)
		defer stop()
		k := &pool.Keeper{
			Size:        size,
			Key:         sandbox.PoolKey(cfg),
			Boot:        boot,
			Destroy:     destroyPoolVM,
			Log:         progress,
			RefillDelay: refillDelay,
		}
		fmt.Fprintf(progress, "pool: keeping %d vms ready on %s\n", size, pool.Socket(cfg.Runtime.Root))
		err = k.Run(ctx, l)
		fmt.Fprintln(progress, "pool: stopped")
		return err
	},
}

func bootPoolVM(ctx context.Context, cfg *config.Config, dir string, opts ...sandbox.Opt) (*pool.VM, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	id := "pool-" + hex.EncodeToString(b[:])
	sb, err := sandbox.Create(ctx, cfg, id, filepath.Join(dir, id), append(opts, sandbox.ForPool())...)
	if err != nil {
		return nil, err
	}
	vm, err := sb.Release()
	if err != nil {
		return nil, errors.Join(err, sb.Destroy(context.Background()))
	}
	return vm, nil
}

func destroyPoolVM(vm *pool.VM) error {
	return errors.Join(sandbox.Cleanup(vm.Dir), os.RemoveAll(vm.Dir))
}

func removePoolLeftovers(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if err := destroyPoolVM(&pool.VM{Dir: p}); err != nil {
			fmt.Fprintf(os.Stderr, "pool: removing leftover %s: %v\n", p, err)
		}
	}
}
