// Package ctr creates and runs the containers of a guest. The agent
// re-executes its own binary as hull-init (package cinit, in C: no Go
// runtime in the container's set-up), hands it a plan of what to do and
// keeps the container's cgroup with libcontainer's cgroup manager. The
// spec is converted and defaulted by libcontainer's specconv before it
// gets here. Design 019 says why this is not libcontainer's own init.
package ctr

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/opencontainers/runc/libcontainer/cgroups"
	// Registers the device-rule manager that Set applies the cgroup's
	// device rules with (eBPF on cgroup v2).
	_ "github.com/opencontainers/runc/libcontainer/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// ErrNotCreated is returned by Start for a container already started.
var ErrNotCreated = errors.New("container is not in the created state")

// Container is a container of the guest.
type Container struct {
	ID     string
	config *configs.Config
	cg     cgroups.Manager
	init   *Process

	mu    sync.Mutex
	start *os.File // write end of the start channel until Start
	syncR *os.File // hull-init's sync channel until Start
}

// Create sets a container up and leaves its init process waiting for
// Start, as runc's create does. The container's cgroup is made and
// given its resources first; the init is forked into it.
func Create(id string, cfg *configs.Config, init *Process) (_ *Container, retErr error) {
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	cg, err := manager.New(cfg.Cgroups)
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	if err := cg.Apply(-1); err != nil {
		return nil, fmt.Errorf("creating the cgroup: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = cg.Destroy()
		}
	}()
	if err := cg.Set(cfg.Cgroups.Resources); err != nil {
		return nil, fmt.Errorf("setting the cgroup's resources: %w", err)
	}
	cgDir, err := os.Open(cg.Path(""))
	if err != nil {
		return nil, fmt.Errorf("opening the cgroup: %w", err)
	}
	defer cgDir.Close()

	pl := &plan{}
	var cloneflags uintptr
	var pidns *os.File
	// extra are hull-init's descriptors from 5 on; owned are closed here.
	var extra, owned []*os.File
	defer func() {
		for _, f := range owned {
			f.Close()
		}
	}()
	startR, startW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	extra, owned = append(extra, startR), append(owned, startR)
	defer func() {
		if retErr != nil {
			startW.Close()
		}
	}()
	// Descriptors: 3 plan, 4 sync, 5 start, then extra's in order.
	nextFD := func(f *os.File) int {
		extra = append(extra, f)
		return 4 + len(extra)
	}
	newCgroupNS := false
	for _, ns := range cfg.Namespaces {
		if ns.Path == "" {
			if ns.Type == configs.NEWCGROUP {
				newCgroupNS = true // unshared once in the cgroup
			} else {
				cloneflags |= nsFlags[ns.Type]
			}
			continue
		}
		f, err := os.Open(ns.Path)
		if err != nil {
			return nil, fmt.Errorf("opening %s namespace: %w", ns.Type, err)
		}
		owned = append(owned, f)
		if ns.Type == configs.NEWPID {
			pidns = f
			continue
		}
		pl.op("setns", strconv.Itoa(nextFD(f)), u(uint64(nsFlags[ns.Type])))
	}
	if cloneflags&unix.CLONE_NEWNS == 0 {
		return nil, errors.New("a container needs a mount namespace of its own")
	}
	if newCgroupNS {
		pl.op("unshare", u(unix.CLONE_NEWCGROUP))
	}
	if err := rootfsPlan(pl, cfg); err != nil {
		return nil, err
	}
	consoleFD := -1
	if init.Terminal {
		consoleFD = nextFD(init.ConsoleSocket)
	}
	if err := processPlan(pl, init, consoleFD); err != nil {
		return nil, err
	}
	syncR, err := spawn("create", pl, init, cloneflags, int(cgDir.Fd()), pidns, extra)
	if err != nil {
		return nil, err
	}
	if err := awaitReady(syncR); err != nil {
		syncR.Close()
		init.kill()
		return nil, err
	}
	return &Container{ID: id, config: cfg, cg: cg, init: init, start: startW, syncR: syncR}, nil
}

// Config is the container's configuration, as created or last Set.
func (c *Container) Config() *configs.Config { return c.config }

// Init is the container's init process.
func (c *Container) Init() *Process { return c.init }

// Start lets the init process exec the container's process.
func (c *Container) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.start == nil {
		return ErrNotCreated
	}
	_, err := c.start.Write([]byte{'S'})
	c.start.Close()
	c.start = nil
	if err == nil {
		err = awaitExec(c.syncR)
	}
	c.syncR.Close()
	c.syncR = nil
	return err
}

// Exec runs proc in the running container: in its namespaces and cgroup.
func (c *Container) Exec(proc *Process) error {
	pid := c.init.Pid()
	nsDir := "/proc/" + strconv.Itoa(pid) + "/ns/"
	pl := &plan{}
	var extra []*os.File
	defer func() {
		for _, f := range extra {
			if f != proc.ConsoleSocket {
				f.Close()
			}
		}
	}()
	var pidns *os.File
	defer func() {
		if pidns != nil {
			pidns.Close()
		}
	}()
	// The mount namespace last: the others are found through /proc.
	for _, t := range []configs.NamespaceType{configs.NEWPID, configs.NEWIPC, configs.NEWUTS, configs.NEWCGROUP, configs.NEWNS} {
		f, err := os.Open(nsDir + configs.NsName(t))
		if err != nil {
			return fmt.Errorf("opening the container's %s namespace: %w", t, err)
		}
		if t == configs.NEWPID {
			pidns = f
			continue
		}
		extra = append(extra, f)
		pl.op("setns", strconv.Itoa(4+len(extra)), u(uint64(nsFlags[t])))
	}
	// hull-init was checked to be the container's init above: the pid
	// cannot have been reused while its namespaces were opened.
	if c.init.exited() {
		return errors.New("the container is not running")
	}
	pl.op("enter")
	consoleFD := -1
	if proc.Terminal {
		extra = append(extra, proc.ConsoleSocket)
		consoleFD = 4 + len(extra)
	}
	if err := processPlan(pl, proc, consoleFD); err != nil {
		return err
	}
	cgDir, err := os.Open(c.cg.Path(""))
	if err != nil {
		return fmt.Errorf("opening the container's cgroup: %w", err)
	}
	defer cgDir.Close()
	// Exec mode has no start channel: extra start at descriptor 5.
	syncR, err := spawn("exec", pl, proc, 0, int(cgDir.Fd()), pidns, extra)
	if err != nil {
		return err
	}
	defer syncR.Close()
	if err := awaitExec(syncR); err != nil {
		proc.kill()
		return err
	}
	return nil
}

// Signal sends sig to the container's init. SIGKILL to a container that
// shares its PID namespace kills every process of its cgroup, as the
// init's death does not take them along.
func (c *Container) Signal(sig unix.Signal) error {
	if sig == unix.SIGKILL && !c.config.Namespaces.IsPrivate(configs.NEWPID) {
		return c.killAll()
	}
	if c.init.exited() {
		return errors.New("the container is not running")
	}
	return c.init.Signal(sig)
}

// killAll kills every process of the container's cgroup (cgroup.kill).
func (c *Container) killAll() error {
	err := os.WriteFile(c.cg.Path("")+"/cgroup.kill", []byte("1"), 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Processes lists the pids of the container's cgroup.
func (c *Container) Processes() ([]int, error) { return c.cg.GetAllPids() }

// Pause freezes the container's cgroup.
func (c *Container) Pause() error { return c.cg.Freeze(configs.Frozen) }

// Resume thaws it.
func (c *Container) Resume() error { return c.cg.Freeze(configs.Thawed) }

// Set applies new cgroup resources.
func (c *Container) Set(r *configs.Resources) error {
	if err := c.cg.Set(r); err != nil {
		return err
	}
	c.config.Cgroups.Resources = r
	return nil
}

// Stats reads the container's cgroup statistics.
func (c *Container) Stats() (*cgroups.Stats, error) { return c.cg.GetStats() }

// Destroy kills what is left of the container and removes its cgroup.
// Its mounts went with its mount namespace.
func (c *Container) Destroy() error {
	c.mu.Lock()
	if c.start != nil {
		c.start.Close() // an init never started exits
		c.start = nil
	}
	if c.syncR != nil {
		c.syncR.Close()
		c.syncR = nil
	}
	c.mu.Unlock()
	if err := c.killAll(); err != nil {
		return err
	}
	return c.cg.Destroy()
}
