package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hullrt/hull/internal/hypervisor"
)

// Virtiofsd is the virtio-fs daemon serving one shared directory to one VM
// over a vhost-user socket. It exits by itself when the VMM disconnects.
type Virtiofsd struct {
	Binary string
	Source string
	Socket string
	Log    string

	// Detached daemons outlive the process that starts them (a pool's).
	Detached bool
	// Nice lowers the daemon's CPU priority (a pool's).
	Nice int

	cmd     *exec.Cmd
	adopted *hypervisor.Adopted
	done    chan struct{}
}

// Adopt takes over the running daemon pid, which another process started
// (a pool) with v's settings.
func (v *Virtiofsd) Adopt(pid int) error {
	a, err := hypervisor.Adopt(pid)
	if err != nil {
		return err
	}
	v.adopted, v.done = a, make(chan struct{})
	go func() {
		<-a.Done()
		close(v.done)
	}()
	return nil
}

// Pid is the daemon's process id, 0 before Start.
func (v *Virtiofsd) Pid() int {
	switch {
	case v.adopted != nil:
		return v.adopted.Pid
	case v.cmd != nil:
		return v.cmd.Process.Pid
	}
	return 0
}

func (v *Virtiofsd) signal(sig syscall.Signal) error {
	if v.adopted != nil {
		return v.adopted.Signal(sig)
	}
	return v.cmd.Process.Signal(sig)
}

// Start launches the daemon and returns once its socket exists, so that the
// VMM can connect to it.
func (v *Virtiofsd) Start(ctx context.Context) error {
	logf, err := os.OpenFile(v.Log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{
		"--socket-path=" + v.Socket,
		"-o", "source=" + v.Source,
		// Keep a file's pages across opens (cache=always), but look again
		// at its attributes and names every second (timeout=1, auto's),
		// and the kernel drops the pages of a file whose size or mtime
		// changed (FUSE's auto_inval_data): what the host changes in a
		// volume still shows within a second, and an exec of a binary no
		// longer reads it again through virtiofsd (docs/design/004).
		"-o", "cache=always",
		"-o", "timeout=1",
		"-o", "sandbox=chroot",
		"-o", "log_level=warn",
	}
	cmd := exec.Command(v.Binary, args...)
	if v.Nice > 0 {
		cmd = exec.Command("nice", append([]string{"-n", strconv.Itoa(v.Nice), v.Binary}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if v.Detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting virtiofsd: %w", err)
	}
	v.cmd = cmd
	v.done = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(v.done)
	}()
	for {
		if _, err := os.Stat(v.Socket); err == nil {
			return nil
		}
		select {
		case <-v.done:
			b, _ := os.ReadFile(v.Log)
			return fmt.Errorf("virtiofsd exited at start: %s", strings.TrimSpace(string(b)))
		case <-ctx.Done():
			v.Stop()
			return fmt.Errorf("waiting for virtiofsd socket: %w", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// Stop ends the daemon if it still runs and waits for it.
func (v *Virtiofsd) Stop() {
	if v.cmd == nil && v.adopted == nil {
		return
	}
	select {
	case <-v.done:
		return
	default:
	}
	if err := v.signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return
	}
	select {
	case <-v.done:
	case <-time.After(2 * time.Second):
		_ = v.signal(syscall.SIGKILL)
		<-v.done
	}
}
