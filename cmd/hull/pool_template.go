package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/hypervisor"
	"github.com/hullrt/hull/internal/pool"
	"github.com/hullrt/hull/internal/sandbox"
)

// templateMaker makes a pool's template the first time a VM is asked for:
// it boots one VM, saves it, and keeps its RAM and device state in dir
// until the pool stops.
type templateMaker struct {
	cfg   *config.Config
	dir   string
	saved *hypervisor.Template
}

func (m *templateMaker) template(ctx context.Context) (*hypervisor.Template, error) {
	if m.saved != nil {
		return m.saved, nil
	}
	start := time.Now()
	if err := os.Mkdir(m.dir, 0o700); err != nil {
		return nil, fmt.Errorf("template directory: %w", err)
	}
	t := &hypervisor.Template{RAM: filepath.Join(m.dir, "ram"), State: filepath.Join(m.dir, "state")}
	sb, err := sandbox.Create(ctx, m.cfg, "pool-template", filepath.Join(m.dir, "vm"), sandbox.ForPool(), sandbox.AsTemplate(t))
	if err != nil {
		m.remove()
		return nil, fmt.Errorf("booting the template: %w", err)
	}
	err = sb.SaveTemplate(ctx)
	if err = errors.Join(err, sb.Destroy(context.Background())); err != nil {
		m.remove()
		return nil, fmt.Errorf("saving the template: %w", err)
	}
	fmt.Fprintf(os.Stderr, "pool: template saved in %s (%s)\n", m.dir, time.Since(start).Round(time.Millisecond))
	m.saved = t
	return t, nil
}

// remove deletes the template, and a template VM a crashed pool left
// behind. Clones keep the RAM file's pages mapped: they live on.
func (m *templateMaker) remove() {
	vm := filepath.Join(m.dir, "vm")
	if _, err := os.Stat(vm); err == nil {
		if err := destroyPoolVM(&pool.VM{Dir: vm}); err != nil {
			fmt.Fprintf(os.Stderr, "pool: removing the template vm: %v\n", err)
		}
	}
	if err := os.RemoveAll(m.dir); err != nil {
		fmt.Fprintf(os.Stderr, "pool: removing the template: %v\n", err)
	}
	m.saved = nil
}
