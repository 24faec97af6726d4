package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/hullrt/hull/internal/config"
	"github.com/hullrt/hull/internal/container"
	"github.com/hullrt/hull/internal/oci"
	"github.com/hullrt/hull/internal/sandbox"
)

var deleteCommand = &cli.Command{
	Name:      "delete",
	Usage:     "delete a container: its VM, its record and everything else it holds",
	ArgsUsage: "<container-id>",
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "kill the container first if it is running; no error if it does not exist"},
	},
	Action: func(c *cli.Context) error {
		cfg, id, err := setup(c)
		if err != nil {
			return err
		}
		return deleteContainer(cfg, id, c.Bool("force"))
	},
}

// monitorExitTimeout is how long delete waits for a killed container's
// monitor to tear its VM down before killing the monitor itself.
const monitorExitTimeout = 10 * time.Second

func deleteContainer(cfg *config.Config, id string, force bool) error {
	root := rootOf(cfg)
	h, err := root.Open(id)
	if errors.Is(err, container.ErrNotExist) && force {
		return nil
	}
	if err != nil {
		return err
	}
	defer func() { h.Close() }()
	h.Refresh()
	switch h.Status {
	case container.Running, container.Paused:
		if !force {
			return fmt.Errorf("cannot delete container %s that is not stopped: %s", id, h.Status)
		}
	}
	// hull run deletes its own record: it is the monitor, already done.
	if h.MonitorAlive() && h.Pid != os.Getpid() {
		// Unlocked meanwhile: the monitor records the exit under the lock.
		st := h.State
		h.Close()
		stopMonitor(cfg, &st)
		if h, err = root.Open(id); errors.Is(err, container.ErrNotExist) {
			return nil
		} else if err != nil {
			return err
		}
	}
	if err := cleanupLeftovers(root, id); err != nil {
		return err
	}
	if h.Spec != nil && h.Spec.Hooks != nil {
		st := h.OCI().State
		st.Status = specs.StateStopped
		if err := oci.RunHooks("poststop", h.Spec.Hooks.Poststop, st); err != nil {
			logrus.WithError(err).Warn("poststop hook failed")
		}
	}
	return h.Remove()
}

// stopMonitor kills the container's processes through the agent, waits for
// the monitor to tear the VM down and exit, and kills the monitor if it
// does not.
func stopMonitor(cfg *config.Config, st *container.State) {
	if client, err := agentFor(cfg, st.ID); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = client.Signal(ctx, st.ID, "", uint32(syscall.SIGKILL), true)
		cancel()
		client.Close()
	}
	if waitExit(st, monitorExitTimeout) {
		return
	}
	_ = unix.Kill(st.Pid, unix.SIGKILL)
	waitExit(st, 5*time.Second)
}

// waitExit waits until the monitor has exited.
func waitExit(st *container.State, timeout time.Duration) bool {
	fd, err := unix.PidfdOpen(st.Pid, 0)
	if err != nil {
		return !st.MonitorAlive()
	}
	defer unix.Close(fd)
	if !st.MonitorAlive() { // the pid was recycled before we opened it
		return true
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return !st.MonitorAlive()
		}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if n > 0 || err != nil {
			// Readable: exited (though perhaps not reaped by its parent).
			return true
		}
	}
}

// cleanupLeftovers removes what a crashed monitor may have left: VMM and
// virtiofsd processes of the container's VM, network redirects, mounts.
func cleanupLeftovers(root container.Root, id string) error {
	return sandbox.Cleanup(root.SandboxDir(id))
}
