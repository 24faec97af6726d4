package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"

	"github.com/hullrt/hull/internal/agentclient"
	"github.com/hullrt/hull/internal/container"
	"github.com/hullrt/hull/internal/stdio"
)

// ExecOptions describes a process to run in a running container.
type ExecOptions struct {
	Root    container.Root
	ID      string
	ExecID  string
	Process *specs.Process
	IO      stdio.IO
	Timeout time.Duration // of each control call to the agent
	Ready   func(error)
}

// RunExec runs a process in a running container, through the container's
// monitor, and stands for it until it exits. It returns the exit status.
func RunExec(o ExecOptions) (int, error) {
	ready := once(o.Ready)
	if o.IO.Terminal && o.IO.ConsoleSocket == "" && o.IO.Stdin == nil {
		ready(stdio.ErrConsoleSocketNeeded)
		return 0, stdio.ErrConsoleSocketNeeded
	}
	st, err := o.Root.Load(o.ID)
	if err != nil {
		ready(err)
		return 0, err
	}
	st.Refresh()
	if st.Status != container.Running {
		err := fmt.Errorf("cannot exec in a container that is %s", st.Status)
		ready(err)
		return 0, err
	}
	c, err := agentclient.New(Dial{o.Root.Socket(o.ID)}, o.Timeout)
	if err != nil {
		ready(err)
		return 0, err
	}
	defer c.Close()
	raw, err := json.Marshal(o.Process)
	if err != nil {
		ready(err)
		return 0, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdio.CatchSIGPIPE()
	sigc := make(chan os.Signal, 16)
	signal.Notify(sigc, ForwardedSignals...)
	defer signal.Stop(sigc)
	if err := c.ExecProcess(ctx, o.ID, o.ExecID, raw); err != nil {
		err = fmt.Errorf("exec failed: %w", err)
		ready(err)
		return 0, err
	}
	r, err := stdio.Start(ctx, c, o.ID, o.ExecID, o.IO)
	if err != nil {
		_ = c.Signal(ctx, o.ID, o.ExecID, uint32(syscall.SIGKILL), false)
		ready(err)
		return 0, err
	}
	defer r.Close()
	ready(nil)
	go func() {
		for s := range sigc {
			if err := c.Signal(ctx, o.ID, o.ExecID, uint32(s.(syscall.Signal)), false); err != nil {
				logrus.WithError(err).Debugf("forwarding %v", s)
			}
		}
	}()
	status, _, err := c.Wait(ctx, o.ID, o.ExecID)
	if err != nil {
		// The container (or its VM) went away under the process.
		logrus.WithError(err).Debug("waiting for exec process")
		return 255, nil
	}
	r.Drain(drainTimeout)
	return status, nil
}
