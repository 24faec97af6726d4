package guest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/runc/libcontainer/specconv"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// warmID names the throwaway container. It is gone before the agent
// serves, so a container of the host's may have the same id.
const warmID = "hull-warm"

// warm creates a container the way CreateContainer does, held at its exec
// fifo, and removes it without starting it (agent.WarmParam). Failing is
// not fatal: the VM only stays cold.
func (a *Agent) warm() {
	t := time.Now()
	if err := a.createWarm(); err != nil {
		logrus.WithError(err).Warn("warming the container path")
		return
	}
	logrus.Debugf("container path warmed in %s", time.Since(t))
}

func (a *Agent) createWarm() error {
	dir, err := os.MkdirTemp("", "hull-warm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"proc", "dev", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	// hull-init looks its executable up before it waits for start: an
	// empty file with the x bit passes, and is never run.
	if err := os.WriteFile(filepath.Join(rootfs, "true"), nil, 0o755); err != nil {
		return err
	}
	s := specconv.Example()
	s.Root.Path, s.Root.Readonly = rootfs, false
	s.Process.Terminal = false
	s.Process.Args = []string{"/true"}
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	spec, _, err := guestSpec(warmID, raw, a.initPid)
	if err != nil {
		return err
	}
	cfg, err := libcontainerConfig(warmID, spec)
	if err != nil {
		return err
	}
	lc, p, err := createContainer(warmID, cfg, spec.Process)
	if err != nil {
		return fmt.Errorf("creating: %w", err)
	}
	_ = lc.Signal(unix.SIGKILL)
	<-p.exited
	p.closeAll()
	if err := lc.Destroy(); err != nil {
		logrus.WithError(err).Debug("removing the warm-up container")
	}
	return nil
}
