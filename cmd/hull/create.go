package main

import (
	"errors"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/monitor"
	"github.com/hullrt/hull/internal/oci"
	"github.com/hullrt/hull/internal/stdio"
)

// createFlags are the flags `create` and `run` share with runc.
var createFlags = []cli.Flag{
	&cli.StringFlag{Name: "bundle", Aliases: []string{"b"}, Value: ".", Usage: "path to the OCI bundle"},
	&cli.StringFlag{Name: "pid-file", Usage: "file to write the pid of the process that stands for the container"},
	&cli.StringFlag{Name: "console-socket", Usage: "unix socket that receives the master of the container's pty"},
	&cli.BoolFlag{Name: "no-pivot", Usage: "accepted for runc compatibility (the guest always pivots)"},
	&cli.BoolFlag{Name: "no-new-keyring", Usage: "accepted for runc compatibility (the guest kernel has its own keyrings)"},
	&cli.IntFlag{Name: "preserve-fds", Usage: "extra file descriptors to pass to the container (only 0: a VM cannot receive host descriptors)"},
}

var createCommand = &cli.Command{
	Name:      "create",
	Usage:     "create a container in a new VM; its process waits for start",
	ArgsUsage: "<container-id>",
	Flags:     createFlags,
	Action: func(c *cli.Context) error {
		return createOrRun(c, false)
	},
}

// createOrRun creates a container through a detached monitor, and starts
// it with start; it returns once the container is created (started).
func createOrRun(c *cli.Context, start bool) error {
	cfg, id, b, err := prepareCreate(c)
	if err != nil {
		return err
	}
	if b.Spec.Process.Terminal && c.String("console-socket") == "" {
		return stdio.ErrConsoleSocketNeeded
	}
	args := []string{"_monitor", "--bundle", b.Dir}
	if s := c.String("console-socket"); s != "" {
		args = append(args, "--console-socket", s)
	}
	if start {
		args = append(args, "--start")
	}
	// A spec that asks for a new network namespace gets one for its monitor
	// too: hooks given the monitor's pid as the container's (docker's
	// libnetwork-setkey) then work on a namespace of their own, never the
	// host's.
	var cloneflags uintptr
	if path, err := oci.NetworkNamespace(b.Spec); err == nil && path == "" {
		cloneflags = syscall.CLONE_NEWNET
	}
	pid, err := spawnMonitor(c, cfg, append(args, id), b.Spec.Process.Terminal, cloneflags)
	if err != nil {
		return err
	}
	return writePidFile(c.String("pid-file"), pid)
}

// prepareCreate checks what create and run are given and loads the bundle.
func prepareCreate(c *cli.Context) (*config.Config, string, *oci.Bundle, error) {
	cfg, id, err := setup(c)
	if err != nil {
		return nil, "", nil, err
	}
	if err := oci.ValidateID(id); err != nil {
		return nil, "", nil, err
	}
	if c.Int("preserve-fds") != 0 {
		return nil, "", nil, errors.New("--preserve-fds: host file descriptors cannot be passed into a VM")
	}
	b, err := oci.Load(c.String("bundle"))
	return cfg, id, b, err
}

// monitorCommand is the detached process that stands for a container.
var monitorCommand = &cli.Command{
	Name:      "_monitor",
	Hidden:    true,
	Usage:     "internal: stand for a container on the host (started by create)",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "bundle", Required: true},
		&cli.StringFlag{Name: "console-socket"},
		&cli.BoolFlag{Name: "start"},
	},
	Action: func(c *cli.Context) error {
		keepSyncFromChildren()
		cfg, id, err := setup(c)
		if err != nil {
			reportReady(err)
			return err
		}
		b, err := oci.Load(c.String("bundle"))
		if err != nil {
			reportReady(err)
			return err
		}
		status, err := monitor.RunContainer(monitor.ContainerOptions{
			Config: cfg,
			Root:   rootOf(cfg),
			ID:     id,
			Bundle: b,
			IO:     ownIO(c, b.Spec.Process.Terminal),
			Start:  c.Bool("start"),
			Ready:  reportReady,
		})
		if err != nil {
			return monitorFailed(err)
		}
		return cli.Exit("", status)
	},
}
