package hostcgroup

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Root is where the cgroup hierarchies are mounted.
const Root = "/sys/fs/cgroup"

// recordName is the file in a sandbox directory that records its cgroup,
// for Cleanup after a crash.
const recordName = "cgroup.json"

// removeTimeout bounds how long Remove waits for exiting processes to
// leave a cgroup.
var removeTimeout = 3 * time.Second

// Cgroup is one sandbox's cgroup on the host: a directory in every v1
// hierarchy (and, in hybrid mode, in the unified one, as runc does), or in
// the v2 hierarchy.
type Cgroup struct {
	// Path is the cgroup's path as ParsePath gave it.
	Path string `json:"path"`
	// Dirs are its directories, one per hierarchy.
	Dirs []string `json:"dirs"`
	// Created are those of Dirs that Create made; Remove removes only
	// these. Parents Create had to make are left, as runc leaves them.
	Created []string `json:"created,omitempty"`

	v1    cgroup1.Cgroup
	v2    *cgroup2.Manager
	from1 cgroup1.Cgroup   // where Join found the process, for Leave
	from2 *cgroup2.Manager // likewise
}

// unifiedMount is where the v2 hierarchy is mounted, "" when it is not.
func unifiedMount(mode cgroups.CGMode) string {
	switch mode {
	case cgroups.Unified:
		return Root
	case cgroups.Hybrid:
		return filepath.Join(Root, "unified")
	}
	return ""
}

// placement is where a cgroup path lands in each hierarchy.
type placement struct {
	v1      cgroup1.Path // per v1 subsystem, nil without v1 hierarchies
	v1dirs  []string
	v2mount string // the unified hierarchy, "" without one
	v2group string
}

// resolve places path p (from ParsePath) in every hierarchy: per v1
// subsystem and in the unified hierarchy. A relative p is taken from the
// calling process's own cgroup in each.
func resolve(p string) (*placement, error) {
	mode := cgroups.Mode()
	if mode == cgroups.Unavailable {
		return nil, fmt.Errorf("no cgroup hierarchy is mounted at %s", Root)
	}
	pl := &placement{v2mount: unifiedMount(mode)}
	if mode == cgroups.Legacy || mode == cgroups.Hybrid {
		pl.v1 = cgroup1.StaticPath(p)
		if !filepath.IsAbs(p) {
			pl.v1 = cgroup1.NestedPath(p)
		}
		subs, err := cgroup1.Default()
		if err != nil {
			return nil, fmt.Errorf("listing cgroup v1 hierarchies: %w", err)
		}
		for _, s := range subs {
			ps, ok := s.(interface{ Path(string) string })
			if !ok {
				continue
			}
			sp, err := pl.v1(s.Name())
			if errors.Is(err, cgroup1.ErrControllerNotActive) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("placing cgroup %s in %s: %w", p, s.Name(), err)
			}
			pl.v1dirs = append(pl.v1dirs, ps.Path(sp))
		}
	}
	if pl.v2mount != "" {
		pl.v2group = p
		if !filepath.IsAbs(p) {
			_, own, err := cgroups.ParseCgroupFileUnified("/proc/self/cgroup")
			if err != nil {
				return nil, fmt.Errorf("reading own cgroup: %w", err)
			}
			pl.v2group = filepath.Join("/", own, p)
		}
	}
	return pl, nil
}

// dirs lists the cgroup's directory in every hierarchy.
func (pl *placement) dirs() []string {
	d := append([]string(nil), pl.v1dirs...)
	if pl.v2mount != "" {
		d = append(d, filepath.Join(pl.v2mount, pl.v2group))
	}
	return d
}

// Create makes the cgroup at path p (from ParsePath) in every hierarchy,
// without limits, and records which of its directories were not there
// before. On failure it removes what it made.
func Create(p string) (_ *Cgroup, retErr error) {
	pl, err := resolve(p)
	if err != nil {
		return nil, err
	}
	c := &Cgroup{Path: p, Dirs: pl.dirs()}
	for _, d := range c.Dirs {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			c.Created = append(c.Created, d)
		}
	}
	defer func() {
		if retErr != nil {
			_ = c.Remove()
		}
	}()
	if len(pl.v1dirs) > 0 {
		// cgroup1 also fills a new cpuset's cpus and mems from its parent.
		if c.v1, err = cgroup1.New(pl.v1, &specs.LinuxResources{}); err != nil {
			return nil, fmt.Errorf("creating cgroup %s: %w", p, err)
		}
	}
	if pl.v2mount != "" {
		if c.v2, err = cgroup2.NewManager(pl.v2mount, pl.v2group, &cgroup2.Resources{}); err != nil {
			return nil, fmt.Errorf("creating cgroup %s in %s: %w", pl.v2group, pl.v2mount, err)
		}
	}
	return c, nil
}

// Join moves the calling process, all its threads, into the cgroup: what
// it starts from then on is born there. Leave undoes it.
func (c *Cgroup) Join() (retErr error) {
	pid := os.Getpid()
	defer func() {
		if retErr != nil {
			_ = c.Leave()
		}
	}()
	if c.v1 != nil {
		from, err := cgroup1.Load(cgroup1.PidPath(pid))
		if err != nil {
			return fmt.Errorf("finding own cgroup: %w", err)
		}
		c.from1 = from
		if err := c.v1.Add(cgroup1.Process{Pid: pid}); err != nil {
			return fmt.Errorf("joining cgroup %s: %w", c.Path, err)
		}
	}
	if c.v2 != nil {
		_, own, err := cgroups.ParseCgroupFileUnified("/proc/self/cgroup")
		if err != nil {
			return fmt.Errorf("finding own cgroup: %w", err)
		}
		mount := unifiedMount(cgroups.Mode())
		if c.from2, err = cgroup2.Load(own, cgroup2.WithMountpoint(mount)); err != nil {
			return fmt.Errorf("finding own cgroup: %w", err)
		}
		if err := c.v2.AddProc(uint64(pid)); err != nil {
			return fmt.Errorf("joining cgroup %s: %w", c.Path, err)
		}
	}
	return nil
}

// Leave moves the calling process back to the cgroups Join took it from,
// so that the cgroup can be removed while the process lives on.
func (c *Cgroup) Leave() error {
	pid := os.Getpid()
	var errs []error
	if c.from1 != nil {
		if err := c.from1.Add(cgroup1.Process{Pid: pid}); err != nil {
			errs = append(errs, fmt.Errorf("leaving cgroup %s: %w", c.Path, err))
		}
		c.from1 = nil
	}
	if c.from2 != nil {
		if err := c.from2.AddProc(uint64(pid)); err != nil {
			errs = append(errs, fmt.Errorf("leaving cgroup %s: %w", c.Path, err))
		}
		c.from2 = nil
	}
	return errors.Join(errs...)
}

// Remove removes the directories Create made, each only once it is empty:
// it waits a little for exiting processes, and leaves a cgroup that still
// holds processes or child cgroups in place (the error says which).
func (c *Cgroup) Remove() error {
	var errs []error
	for _, d := range c.Created {
		errs = append(errs, rmdir(d))
	}
	return errors.Join(errs...)
}

func rmdir(dir string) error {
	deadline := time.Now().Add(removeTimeout)
	for {
		err := unix.Rmdir(dir)
		switch {
		case err == nil || errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EBUSY) && time.Now().Before(deadline):
			time.Sleep(20 * time.Millisecond)
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("cgroup %s still holds processes or child cgroups: left in place", dir)
		default:
			return fmt.Errorf("removing cgroup %s: %w", dir, err)
		}
	}
}

// Save records the cgroup in dir, for Cleanup after a crash.
func (c *Cgroup) Save(dir string) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, recordName), b, 0o600); err != nil {
		return fmt.Errorf("recording cgroup: %w", err)
	}
	return nil
}

// Cleanup removes the cgroup recorded in dir, if any, as Remove would: what
// a runtime that crashed (or was killed) left behind.
func Cleanup(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, recordName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading cgroup record: %w", err)
	}
	var c Cgroup
	if err := json.Unmarshal(b, &c); err != nil {
		return fmt.Errorf("reading cgroup record %s: %w", filepath.Join(dir, recordName), err)
	}
	for _, d := range c.Created {
		// The record is ours, but it names directories to remove: only
		// cgroups below the hierarchies' root qualify.
		if filepath.Clean(d) != d || !strings.HasPrefix(d, Root+"/") {
			return fmt.Errorf("cgroup record %s names %q, which is not a cgroup", filepath.Join(dir, recordName), d)
		}
	}
	return c.Remove()
}

// Add moves process pid, all its threads, into the cgroup: for processes
// started elsewhere (a pool's VMM) that the sandbox adopts.
func (c *Cgroup) Add(pid int) error {
	if c.v1 != nil {
		if err := c.v1.Add(cgroup1.Process{Pid: pid}); err != nil {
			return fmt.Errorf("moving process %d into cgroup %s: %w", pid, c.Path, err)
		}
	}
	if c.v2 != nil {
		if err := c.v2.AddProc(uint64(pid)); err != nil {
			return fmt.Errorf("moving process %d into cgroup %s: %w", pid, c.Path, err)
		}
	}
	return nil
}
